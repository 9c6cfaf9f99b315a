"""Lab fixture: a real Linux kernel WireGuard peer in a qemu guest, attached by a TAP device to a test's namespace.

The lab host's kernel may have no WireGuard module, so the kernel peer runs in Debian's 6.1 cloud kernel
booted by qemu with TCG. `tests/lab/fetch_kernel.sh` (run by tests/lab/install.sh) downloads and unpacks the kernel;
this module builds a small initramfs around it (cached, rebuilt only when its inputs change) and drives the guest.

The guest has: busybox (init and the small tools), dash as /bin/sh, the host's `ip` (iproute2, with wireguard
support), `wg`, iptables/ip6tables in both flavours (`iptables` is the nft one, as on Debian; `iptables-legacy`,
`iptables-nft`, the -save/-restore variants, the xtables extensions and /etc/protocols), the virtio-net and
wireguard modules (loaded at boot), and every netfilter module, tun, veth and bridge (loaded on demand by the
kernel).
busybox provides ping, nc (TCP transfers), sha256sum, base64 and the like; there is no wireguard-go in the guest.

Usage (synchronous, so a module-scoped fixture can share one boot between tests; the `a*` methods run the same call
in a worker thread for trio tests whose own tasks must keep running meanwhile, e.g. an in-process tunnel)::

    with netns("dmncq") as namespace, qemu_guest(namespace) as guest:
        exit_code, output = guest.run("ip link add wg0 type wireguard")
        guest.put_file("/run/wg.key", private_key.encode(), mode=0o600)
        guest.check("wg set wg0 private-key /run/wg.key")   # raises GuestCommandFailed on a non-zero exit
        guest.reboot()                                      # restarts the VM, waits for the new boot
        await guest.arun("ping -c 1 10.33.33.1")            # from a trio test

The guest's eth0 has `guest_addresses` (default 192.168.200.2/24; IPv6 works too) and the namespace's TAP has
`host_addresses` (default 192.168.200.1/24); `gateways` become the guest's default routes. Exiting the context
manager (or `shutdown()`) kills qemu by PID and removes the TAP and the temporary directory, also when the test
failed; the namespace belongs to the caller. A boot takes ~6 s of an idle core (TCG), several times that on a busy
machine; `reboot()` power-cycles the VM on the same TAP (same cost as a boot). `put_file` crosses an emulated UART
(~15-20 KB/s): fine for scripts, keys and configs; move bulk data over the network instead.

Guest control: the kernel console is ttyS0, logged to a file (`console_log()`, quoted in boot errors). A small agent
(guest/agent.sh, respawned by busybox init) serves the second serial port ttyS1, a unix socket on the host, with a
line protocol: every request carries a fresh random nonce, commands and file contents travel as base64 lines after
the request line (no quoting, no echo, nothing of the request is interpolated into the agent's own shell; the
command itself is of course a shell script), output comes back base64-encoded between "NONCE begin" and
"NONCE end EXIT_CODE", so stale or stray lines can never be mistaken for an answer. The guest kills a command at its
timeout; the host gives up a little later (`GuestTimeout`) if no answer arrives at all.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import ipaddress
import lzma
import math
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import trio

from tests.conftest import require_lab
from tests.lab.netns import Netns, run_host, stop_process, unique_name

# --- Errors ------------------------------------------------------------------------------------------------------


class GuestError(RuntimeError):
    """Base of everything the qemu guest fixture raises."""


class GuestImageUnavailable(GuestError):
    """The kernel or a host tool the initramfs needs is missing (tests skip locally / fail in CI on this)."""


class GuestBootError(GuestError):
    """qemu exited or the guest agent did not come up; the message quotes the console and qemu logs."""


class GuestProtocolError(GuestError):
    """The agent's answer broke the line protocol (bad framing, bad base64, overlong line, rejected request)."""


class GuestTimeout(GuestError):
    """No answer from the agent in time, or the guest killed the command at its timeout (`output` is partial)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class GuestCommandFailed(GuestError):
    """`check()`: the command exited non-zero."""

    def __init__(self, command: str, exit_code: int, output: str) -> None:
        super().__init__(f"guest command {command!r} exited {exit_code}: {output.strip()[-2000:]}")
        self.command = command
        self.exit_code = exit_code
        self.output = output


# --- Agent line protocol (sans I/O) -------------------------------------------------------------------------------

# busybox base64 wraps at 76 columns and the other answer lines are short; a longer line means a broken channel.
MAX_LINE_BYTES = 64 * 1024
# SIGKILL is 9 on Linux; a shell reports a child killed by signal N as 128 + N (POSIX "Exit Status").
EXIT_CODE_KILLED = 128 + signal.SIGKILL
NONCE_BYTES = 8
# The request line must fit the guest tty's canonical line buffer (N_TTY_BUF_SIZE 4096, include/linux/tty.h).
MAX_GUEST_PATH_BYTES = 1024


class CommandResult(NamedTuple):
    """What `QemuGuest.run` returns: the exit code and the merged stdout+stderr (UTF-8, undecodable bytes replaced)."""

    exit_code: int
    output: str


def new_nonce() -> str:
    """A fresh request nonce: hex, so it never contains the protocol's separator or base64 characters only."""
    return secrets.token_hex(NONCE_BYTES)


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def encode_hello(nonce: str) -> bytes:
    return f"hello {nonce}\n".encode("ascii")


def encode_payload(data: bytes) -> bytes:
    """`data` as base64 lines of at most 76 characters: far below the 4095-byte line limit of the guest's tty."""
    return b"".join(binascii.b2a_base64(data[start : start + 57]) for start in range(0, len(data), 57))


def encode_run(nonce: str, script: str, timeout_seconds: int) -> bytes:
    """A request to run `script` with sh, killed after `timeout_seconds` (a whole number >= 1, busybox timeout)."""
    if timeout_seconds < 1:
        raise ValueError(f"guest timeout must be at least 1 s, got {timeout_seconds}")
    payload = encode_payload(script.encode())
    return f"run {nonce} {timeout_seconds} {len(payload)}\n".encode("ascii") + payload


def encode_put(nonce: str, path: str, data: bytes, mode: int) -> bytes:
    """A request to write `data` to `path` (atomically, via a temporary file) with permission bits `mode`."""
    try:
        encoded_path = path.encode()
    except UnicodeEncodeError:
        raise ValueError(f"guest path is not valid Unicode: {path!r}") from None
    if not path.startswith("/") or "\0" in path or len(encoded_path) > MAX_GUEST_PATH_BYTES:
        raise ValueError(
            f"guest path must be absolute, without NUL bytes, at most {MAX_GUEST_PATH_BYTES} bytes: {path!r}"
        )
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"file mode out of range: {mode:o}")
    payload = encode_payload(data)
    return f"put {nonce} {mode:o} {_b64(encoded_path)} {len(payload)}\n".encode("ascii") + payload


class LineSplitter:
    """Splits the agent's byte stream into lines; raises GuestProtocolError on a line longer than `max_line`."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._max_line = max_line

    def feed_untrusted(self, data: bytes) -> list[bytes]:
        self._buffer += data
        lines: list[bytes] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            if end - start > self._max_line:
                raise GuestProtocolError(f"agent line longer than {self._max_line} bytes")
            lines.append(bytes(self._buffer[start:end]))
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > self._max_line:
            raise GuestProtocolError(f"agent line longer than {self._max_line} bytes")
        return lines


class ReadyReply:
    """Waits for "NONCE ready BOOT_ID" among the agent's lines; everything else is ignored."""

    def __init__(self, nonce: str) -> None:
        self._prefix = f"{nonce} ready ".encode("ascii")

    def feed_line_untrusted(self, line: bytes) -> str | None:
        """The guest's boot id once the answer arrived, else None."""
        if not line.startswith(self._prefix):
            return None
        boot_id = line[len(self._prefix) :].strip()
        if not boot_id or not boot_id.isascii() or not boot_id.decode("ascii").isprintable():
            raise GuestProtocolError(f"malformed ready line from the agent: {line[:200]!r}")
        return boot_id.decode("ascii")


class CommandReply:
    """Collects the answer to one run/put request: "NONCE begin", base64 lines, "NONCE end CODE".

    Lines before "NONCE begin" that do not carry the nonce are ignored (stale answers to requests the host gave up
    on, which the sequential agent always finishes before starting this one). Inside the answer anything but base64
    or the end line is a protocol error.
    """

    def __init__(self, nonce: str) -> None:
        self._nonce = nonce.encode("ascii")
        self._control_prefix = self._nonce + b" "
        self._collecting = False
        self._chunks: list[bytes] = []

    def feed_line_untrusted(self, line: bytes) -> CommandResult | None:
        if line.startswith(self._control_prefix):
            return self._control_line(line[len(self._control_prefix) :])
        if self._collecting:
            self._chunks.append(line)
        return None

    def _control_line(self, body: bytes) -> CommandResult | None:
        word, _, argument = body.partition(b" ")
        if word == b"error":
            raise GuestProtocolError(f"agent rejected the request: {argument[:200]!r}")
        if word == b"begin" and not self._collecting:
            self._collecting = True
            return None
        if word == b"end" and self._collecting:
            return CommandResult(_parse_exit_code(argument), self._decode_output())
        raise GuestProtocolError(f"unexpected agent line: {body[:200]!r}")

    def _decode_output(self) -> str:
        try:
            output = binascii.a2b_base64(b"".join(self._chunks), strict_mode=True)
        except binascii.Error as error:
            raise GuestProtocolError(f"agent output is not base64: {error}") from None
        return output.decode("utf-8", errors="replace")


def _parse_exit_code(text: bytes) -> int:
    # A POSIX shell's $? is 0..255; dash reports 126/127 for exec failures and 128+N for signals.
    if not (text.isdigit() and len(text) <= 3 and int(text) <= 255):
        raise GuestProtocolError(f"bad exit code from the agent: {text[:50]!r}")
    return int(text)


# --- Guest image (kernel + initramfs) -----------------------------------------------------------------------------

LAB_CACHE = Path(os.environ.get("DMNC_LAB_CACHE", "/var/cache/dmnc-lab"))
GUEST_FILES = Path(__file__).with_name("guest")
# Loaded by the guest's boot script; everything else is loaded on demand through /sbin/modprobe.
BOOT_MODULES = ("virtio_pci", "virtio_net", "wireguard")
# Kernel module directories shipped whole: iptables (legacy and nft) and conntrack/NAT for the VM-side script.
ON_DEMAND_MODULE_DIRECTORIES = ("kernel/net/netfilter", "kernel/net/ipv4/netfilter", "kernel/net/ipv6/netfilter")
# tun for wireguard-go; veth and bridge for a network namespace behind a bridge standing in for a container; ipvlan
# for ipvlan networks and their shims (this lab host's kernel has no ipvlan module).
ON_DEMAND_MODULES = ("tun", "veth", "bridge", "ipvlan")
# Debian's default `iptables` alternative is the nft flavour (update-alternatives in the iptables package).
XTABLES_DEFAULT_FLAVOUR = "nft"
XTABLES_PLUGIN_DIRECTORY = Path("/usr/lib/x86_64-linux-gnu/xtables")
# Guest path -> host path of the tools copied with their shared libraries (`ldd`).
HOST_TOOLS = {
    "/bin/busybox": "busybox",
    "/bin/dash": "dash",
    "/usr/bin/ip": "ip",
    "/usr/bin/wg": "wg",
    "/usr/sbin/xtables-legacy-multi": "xtables-legacy-multi",
    "/usr/sbin/xtables-nft-multi": "xtables-nft-multi",
}
HOST_DATA_FILES = {"/etc/protocols": Path("/etc/protocols")}
# Linux's initramfs format: cpio "newc" (Documentation/driver-api/early-userspace/buffer-format.rst).
_CPIO_NEWC_MAGIC = b"070701"
_CPIO_TRAILER = "TRAILER!!!"
# /dev/console is character device 5:1 (Documentation/admin-guide/devices.txt); the kernel opens it for /init.
_CONSOLE_DEVICE = (5, 1)
_STALE_IMAGE_SECONDS = 3600


@dataclass(frozen=True)
class GuestImage:
    """A bootable kernel and the matching initramfs."""

    kernel_version: str
    kernel: Path
    initramfs: Path


def parse_show_depends_untrusted(text: str) -> list[Path]:
    """The module files in `modprobe --show-depends` output, in load order; built-in modules need no file."""
    modules: list[Path] = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "insmod" and len(words) >= 2 and words[1].startswith("/"):
            modules.append(Path(words[1]))
        elif words[0] == "builtin" and len(words) == 2:
            continue
        else:
            raise GuestImageUnavailable(f"unexpected `modprobe --show-depends` line: {line[:200]!r}")
    return modules


def parse_ldd_untrusted(text: str) -> list[Path]:
    """The shared objects (with the dynamic loader) `ldd` lists for one file; empty for a static binary."""
    libraries: list[Path] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or "statically linked" in stripped or "not a dynamic executable" in stripped:
            continue
        _name, arrow, resolved = stripped.partition(" => ")
        target = resolved if arrow else stripped
        path = target.split(" (0x", 1)[0].strip()
        if path.startswith("/"):
            libraries.append(Path(path))
        elif arrow and path == "not found":
            raise GuestImageUnavailable(f"`ldd` cannot resolve a library: {stripped[:200]!r}")
        elif arrow or not stripped.startswith("linux-vdso"):
            raise GuestImageUnavailable(f"unexpected `ldd` line: {stripped[:200]!r}")
    return libraries


def _cpio_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), inode: int = 0) -> bytes:
    encoded_name = name.encode() + b"\0"
    fields = (
        inode,
        mode,
        0,  # uid: everything belongs to root in the guest
        0,  # gid
        2 if stat.S_ISDIR(mode) else 1,  # nlink
        0,  # mtime: fixed, so identical inputs give an identical image
        len(data),
        0,  # devmajor
        0,  # devminor
        rdev[0],
        rdev[1],
        len(encoded_name),
        0,  # check: only used by the "crc" format
    )
    header = _CPIO_NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
    # The name (after the 110-byte header) and the data are each padded to a multiple of 4 bytes.
    name_part = encoded_name + b"\0" * (-(len(header) + len(encoded_name)) % 4)
    return header + name_part + data + b"\0" * (-len(data) % 4)


def write_cpio_newc(root: Path) -> bytes:
    """The directory tree `root` as a cpio newc archive (root-owned, mtime 0), plus /dev/console."""
    parts: list[bytes] = []
    inode = 1
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        relative_directory = Path(directory).relative_to(root)
        for name in sorted(subdirectories) + sorted(files):
            path = Path(directory) / name
            info = path.lstat()
            archive_name = str(relative_directory / name)
            inode += 1
            if stat.S_ISDIR(info.st_mode):
                parts.append(_cpio_entry(archive_name, stat.S_IFDIR | 0o755, inode=inode))
            elif stat.S_ISLNK(info.st_mode):
                target = os.readlink(path).encode()
                parts.append(_cpio_entry(archive_name, stat.S_IFLNK | 0o777, target, inode=inode))
            elif stat.S_ISREG(info.st_mode):
                permissions = stat.S_IMODE(info.st_mode)
                parts.append(_cpio_entry(archive_name, stat.S_IFREG | permissions, path.read_bytes(), inode=inode))
            else:
                raise GuestImageUnavailable(f"unexpected file type in the initramfs tree: {path}")
    if not (root / "dev").is_dir():
        raise GuestImageUnavailable(f"the initramfs tree {root} has no /dev for /dev/console")
    parts.append(_cpio_entry("dev/console", stat.S_IFCHR | 0o600, rdev=_CONSOLE_DEVICE, inode=inode + 1))
    parts.append(_cpio_entry(_CPIO_TRAILER, 0))
    return b"".join(parts)


def _host_tool(name: str) -> Path:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise GuestImageUnavailable(f"the `{name}` command (tests/lab/install.sh installs it)")
    return Path(found)


def _installed_kernel(cache: Path) -> tuple[str, Path]:
    marker = cache / "kernel" / "current"
    if not marker.is_file():
        raise GuestImageUnavailable(f"the guest kernel in {cache}/kernel (tests/lab/fetch_kernel.sh fetches it)")
    version = marker.read_text().strip()
    root = cache / "kernel" / version / "root"
    if not (root / "boot" / f"vmlinuz-{version}").is_file():
        raise GuestImageUnavailable(f"the guest kernel {version} in {root} (tests/lab/fetch_kernel.sh fetches it)")
    return version, root


def _image_inputs_digest(version: str, tools: dict[str, Path]) -> str:
    """A digest of everything the initramfs is made from, so it is rebuilt only when one of them changes.

    The tools' shared libraries are left out: a library update without a tool update still leaves a consistent image.
    """
    digest = hashlib.sha256()
    digest.update(version.encode())
    digest.update(Path(__file__).read_bytes())
    for guest_file in sorted(GUEST_FILES.iterdir()):
        digest.update(guest_file.name.encode() + guest_file.read_bytes())
    host_files = [*tools.values(), *HOST_DATA_FILES.values(), *sorted(XTABLES_PLUGIN_DIRECTORY.glob("*.so"))]
    for path in host_files:
        info = path.stat()
        digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def _module_files(kernel_root: Path, version: str) -> list[Path]:
    """The module files of BOOT_MODULES, ON_DEMAND_MODULES and the netfilter directories, with their dependencies."""
    module_root = kernel_root / "lib" / "modules" / version
    names = [*BOOT_MODULES, *ON_DEMAND_MODULES]
    for directory in ON_DEMAND_MODULE_DIRECTORIES:
        names += sorted(path.name.split(".ko")[0] for path in (module_root / directory).glob("*.ko*"))
    files: dict[Path, None] = {}
    for name in names:
        result = run_host(["modprobe", "-d", str(kernel_root), "-S", version, "--show-depends", name])
        files.update(dict.fromkeys(parse_show_depends_untrusted(result.stdout)))
    return list(files)


def _copy_into(tree: Path, guest_path: str, source: Path, mode: int | None = None) -> None:
    destination = tree / guest_path.lstrip("/")
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    os.chmod(destination, mode if mode is not None else stat.S_IMODE(source.stat().st_mode))


def _symlink(tree: Path, guest_path: str, target: str) -> None:
    link = tree / guest_path.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists() and not link.is_symlink():
        link.symlink_to(target)


def _stage_initramfs(tree: Path, kernel_root: Path, version: str, tools: dict[str, Path]) -> None:
    shared_objects: dict[Path, None] = {}
    plugins = sorted(XTABLES_PLUGIN_DIRECTORY.glob("*.so"))
    for guest_path, host_path in tools.items():
        _copy_into(tree, guest_path, host_path)
    for plugin in plugins:
        _copy_into(tree, str(plugin), plugin)
    for elf in [*tools.values(), *plugins]:
        # ldd exits 1 for static binaries (busybox-static), with a message parse_ldd_untrusted skips.
        shared_objects.update(dict.fromkeys(parse_ldd_untrusted(run_host(["ldd", str(elf)], check=False).stdout)))
    for library in shared_objects:
        _copy_into(tree, str(library), library.resolve())
    for guest_path, host_path in HOST_DATA_FILES.items():
        _copy_into(tree, guest_path, host_path, 0o644)

    # Real tools first: busybox applets only fill the names no real tool provides (its `ip` lacks wireguard).
    provided = {Path(guest_path).name for guest_path in tools} | {"sh"}
    _symlink(tree, "/bin/sh", "dash")
    for family in ("iptables", "ip6tables"):
        for suffix in ("", "-save", "-restore"):
            for flavour in ("legacy", "nft"):
                _symlink(tree, f"/usr/sbin/{family}-{flavour}{suffix}", f"xtables-{flavour}-multi")
            _symlink(tree, f"/usr/sbin/{family}{suffix}", f"xtables-{XTABLES_DEFAULT_FLAVOUR}-multi")
    applets = run_host([str(tools["/bin/busybox"]), "--list"]).stdout.split()
    for applet in applets:
        if applet not in provided:
            _symlink(tree, f"/bin/{applet}", "busybox")
    # The kernel runs /init, which busybox treats as its `init` applet; request_module() calls /sbin/modprobe.
    _symlink(tree, "/init", "bin/busybox")
    _symlink(tree, "/sbin/modprobe", "../bin/busybox")
    for directory in ("proc", "sys", "dev", "run", "tmp", "root"):
        (tree / directory).mkdir(exist_ok=True)
    _copy_into(tree, "/etc/inittab", GUEST_FILES / "inittab", 0o644)
    _copy_into(tree, "/etc/dmnc/boot.sh", GUEST_FILES / "boot.sh", 0o755)
    _copy_into(tree, "/sbin/dmnc-agent", GUEST_FILES / "agent.sh", 0o755)
    (tree / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tree / "etc" / "group").write_text("root:x:0:\n")

    module_root = kernel_root / "lib" / "modules" / version
    for module in _module_files(kernel_root, version):
        relative = module.relative_to(module_root)
        destination = tree / "lib" / "modules" / version / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if module.suffix == ".xz":
            # busybox modprobe loads plain .ko files only.
            destination.with_suffix("").write_bytes(lzma.decompress(module.read_bytes()))
        elif module.suffix == ".ko":
            shutil.copyfile(module, destination)
        else:
            raise GuestImageUnavailable(f"unsupported module compression: {module}")
    for metadata in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        source = module_root / metadata
        if source.is_file():
            shutil.copyfile(source, tree / "lib" / "modules" / version / metadata)
    run_host(["depmod", "-b", str(tree), version])


def ensure_guest_image(cache: Path = LAB_CACHE) -> GuestImage:
    """The kernel fetched by fetch_kernel.sh and an initramfs for it, built into `cache`/guest when missing/stale.

    Raises GuestImageUnavailable when the kernel or a host tool is missing. Safe to call concurrently (the image is
    written to a temporary file and renamed into place).
    """
    version, kernel_root = _installed_kernel(cache)
    tools = {guest_path: _host_tool(name) for guest_path, name in HOST_TOOLS.items()}
    for required in ("modprobe", "depmod", "ldd"):
        _host_tool(required)
    image_directory = cache / "guest"
    initramfs = image_directory / f"initramfs-{version}-{_image_inputs_digest(version, tools)}.cpio"
    if not initramfs.is_file():
        image_directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dmnc-initramfs-") as staging:
            tree = Path(staging) / "root"
            tree.mkdir()
            _stage_initramfs(tree, kernel_root, version, tools)
            archive = write_cpio_newc(tree)
        partial = initramfs.with_name(f".{initramfs.name}.{os.getpid()}")
        # Uncompressed: qemu copies it into guest memory on the host side, while decompressing would run on the
        # emulated CPU at every boot.
        partial.write_bytes(archive)
        partial.rename(initramfs)
        # Older images are removed once no boot can still be about to open them (another run may use another
        # version of this module at the same time).
        for stale in image_directory.glob("initramfs-*.cpio*"):
            if stale != initramfs and time.time() - stale.stat().st_mtime > _STALE_IMAGE_SECONDS:
                stale.unlink(missing_ok=True)
    return GuestImage(version, kernel_root / "boot" / f"vmlinuz-{version}", initramfs)


def require_guest_image() -> GuestImage:
    """ensure_guest_image() for tests: a missing prerequisite skips the test locally and fails it in CI."""
    try:
        return ensure_guest_image()
    except GuestImageUnavailable as missing:
        require_lab(False, str(missing))
        raise  # require_lab always raises for a false condition; this keeps the type checker informed


# --- Running guest ------------------------------------------------------------------------------------------------

# A boot takes ~6 s on an idle 2-core machine, several times that when the machine is busy.
DEFAULT_BOOT_TIMEOUT_SECONDS = 120.0
# How long the host waits beyond a command's own timeout: the answer still has to cross the emulated UART.
_ANSWER_MARGIN_SECONDS = 15.0
_HELLO_INTERVAL_SECONDS = 1.0
_EXIT_GRACE_SECONDS = 5.0
_LOG_TAIL_BYTES = 4000
# Kernel parameters: console on the first UART (logged to a file); quiet keeps slow TCG console output short;
# mitigations=off because speculative-execution mitigations only slow down the emulated CPU.
_KERNEL_PARAMETERS = ("console=ttyS0", "quiet", "mitigations=off")

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _qemu_path(path: Path) -> str:
    # qemu's option syntax separates key=value pairs with commas; a literal comma is written twice.
    return str(path).replace(",", ",,")


def _locally_administered_mac() -> str:
    # 52:54:00 is qemu's customary prefix; the 0x02 bit of its first octet marks it locally administered.
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in secrets.token_bytes(3))


class QemuGuest:
    """One running qemu guest and its agent channel. Create it with `qemu_guest()` or `QemuGuest.boot()`.

    Methods are thread-safe (one request at a time); every method may raise a GuestError subclass.
    """

    def __init__(
        self,
        namespace: Netns,
        *,
        image: GuestImage,
        guest_addresses: Sequence[IPInterface],
        host_addresses: Sequence[IPInterface],
        gateways: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
        memory_mb: int,
    ) -> None:
        self.namespace = namespace
        self.image = image
        self.guest_addresses = tuple(guest_addresses)
        self.host_addresses = tuple(host_addresses)
        self.gateways = tuple(gateways)
        self.memory_mb = memory_mb
        self.tap = unique_name("dqtap")
        self.mac = _locally_administered_mac()
        self.workdir = Path(tempfile.mkdtemp(prefix="dmnc-guest-"))
        self.boot_id = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._lines = LineSplitter()
        self._pending: list[bytes] = []
        self._lock = threading.Lock()

    # Lifecycle ------------------------------------------------------------------------------------------------

    @classmethod
    def boot(
        cls,
        namespace: Netns,
        *,
        guest_addresses: Sequence[str] = ("192.168.200.2/24",),
        host_addresses: Sequence[str] = ("192.168.200.1/24",),
        gateways: Sequence[str] = (),
        image: GuestImage | None = None,
        memory_mb: int = 256,
        boot_timeout: float = DEFAULT_BOOT_TIMEOUT_SECONDS,
    ) -> QemuGuest:
        """Create a TAP in `namespace` with `host_addresses`, boot the guest with `guest_addresses` on its eth0
        (and default routes via `gateways`), and wait until its agent answers. Cleans up itself if booting fails."""
        guest = cls(
            namespace,
            image=image if image is not None else ensure_guest_image(),
            guest_addresses=[ipaddress.ip_interface(address) for address in guest_addresses],
            host_addresses=[ipaddress.ip_interface(address) for address in host_addresses],
            gateways=[ipaddress.ip_address(gateway) for gateway in gateways],
            memory_mb=memory_mb,
        )
        try:
            guest._start(boot_timeout)
        except BaseException:
            guest.shutdown()
            raise
        return guest

    def _start(self, boot_timeout: float) -> None:
        self.namespace.run(["ip", "tuntap", "add", "dev", self.tap, "mode", "tap"])
        for address in self.host_addresses:
            extra = ["nodad"] if address.version == 6 else []
            self.namespace.run(["ip", "addr", "add", str(address), "dev", self.tap, *extra])
        self.namespace.run(["ip", "link", "set", self.tap, "up"])
        self._launch(time.monotonic() + boot_timeout, previous_boot_id=None)

    def _launch(self, deadline: float, previous_boot_id: str | None) -> None:
        """Start qemu on the existing TAP and wait for its agent."""
        with (self.workdir / "qemu.log").open("ab") as qemu_log:
            self._process = self.namespace.popen(
                self.qemu_command(), stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT
            )
        self._connect(deadline)
        self.boot_id = self._wait_ready(deadline, previous_boot_id)

    def _stop_qemu(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._lines = LineSplitter()
        self._pending.clear()
        if self._process is not None:
            stop_process(self._process)
            if self._process in self.namespace.processes:
                self.namespace.processes.remove(self._process)
            self._process = None
        self.agent_socket_path.unlink(missing_ok=True)

    def qemu_command(self) -> list[str]:
        """The qemu command line (run inside the namespace, where it opens the TAP)."""
        parameters = [*_KERNEL_PARAMETERS, "dmnc.hostname=dmnc-guest", "dmnc.modules=" + ",".join(BOOT_MODULES)]
        if self.guest_addresses:
            parameters.append("dmnc.addr=" + ",".join(str(address) for address in self.guest_addresses))
        if self.gateways:
            parameters.append("dmnc.gw=" + ",".join(str(gateway) for gateway in self.gateways))
        return [
            "qemu-system-x86_64",
            "-accel", "tcg",
            "-cpu", "max",
            "-m", str(self.memory_mb),
            "-nodefaults",
            "-no-user-config",
            "-display", "none",
            "-kernel", _qemu_path(self.image.kernel),
            "-initrd", _qemu_path(self.image.initramfs),
            "-append", " ".join(parameters),
            "-netdev", f"tap,id=net0,ifname={self.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={self.mac},romfile=",
            # The first -serial is ttyS0 (kernel console), the second ttyS1 (agent).
            # append: the log keeps every boot of this guest (reboot starts a new qemu).
            "-chardev", f"file,id=console,path={_qemu_path(self.console_path)},append=on",
            "-serial", "chardev:console",
            "-chardev", f"socket,id=agent,path={_qemu_path(self.agent_socket_path)},server=on,wait=off",
            "-serial", "chardev:agent",
        ]  # fmt: skip

    @property
    def console_path(self) -> Path:
        return self.workdir / "console.log"

    @property
    def agent_socket_path(self) -> Path:
        return self.workdir / "agent.sock"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def shutdown(self) -> None:
        """Stop qemu (SIGTERM, then SIGKILL, by PID), remove the TAP and the work directory. Idempotent."""
        with self._lock:
            self._stop_qemu()
            # A TAP created with `ip tuntap add` is persistent: it outlives qemu unless deleted.
            self.namespace.run(["ip", "link", "del", self.tap], check=False)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def reboot(self, timeout: float = DEFAULT_BOOT_TIMEOUT_SECONDS) -> None:
        """Restart the VM and wait until the new boot's agent answers: qemu is stopped and started again on the same
        TAP with the same MAC and addresses, as a VM manager stopping and starting the VM does (Docker Desktop's
        Resource Saver). Everything configured in the guest is gone afterwards; `boot_id` changes.

        A power cycle rather than an in-guest `reboot`: under TCG a warm reset costs the emulated CPU several times
        the work of a fresh boot (measured: 8-20 s of CPU against 6-7 s).
        """
        with self._lock:
            previous = self.boot_id
            self._stop_qemu()
            self._launch(time.monotonic() + timeout, previous_boot_id=previous)

    # Commands -------------------------------------------------------------------------------------------------

    def run(self, command: str, timeout: float = 30.0) -> CommandResult:
        """Run `command` with the guest's /bin/sh (dash) as root; stdin is /dev/null, stdout and stderr merged.

        The guest kills it after `timeout` seconds (rounded up), which raises GuestTimeout with the output so far.
        A non-zero exit is not an error here (see `check`). Background processes it starts keep running.
        """
        started = time.monotonic()
        guest_timeout = max(1, math.ceil(timeout))
        nonce = new_nonce()
        with self._lock:
            result = self._exchange(
                encode_run(nonce, command, guest_timeout), nonce, started + guest_timeout + _ANSWER_MARGIN_SECONDS
            )
        if result.exit_code == EXIT_CODE_KILLED and time.monotonic() - started >= guest_timeout:
            raise GuestTimeout(f"guest command {command!r} killed after {guest_timeout} s", result.output)
        return result

    def check(self, command: str, timeout: float = 30.0) -> str:
        """`run` that raises GuestCommandFailed on a non-zero exit; returns the output."""
        result = self.run(command, timeout)
        if result.exit_code != 0:
            raise GuestCommandFailed(command, result.exit_code, result.output)
        return result.output

    def put_file(self, path: str, data: bytes, mode: int = 0o644, timeout: float = 60.0) -> None:
        """Write `data` to the absolute guest `path` (replaced atomically) with permission bits `mode`.

        Meant for small files (scripts, keys, configs): it crosses the emulated serial port base64-encoded.
        """
        nonce = new_nonce()
        with self._lock:
            result = self._exchange(encode_put(nonce, path, data, mode), nonce, time.monotonic() + timeout)
        if result.exit_code != 0:
            raise GuestCommandFailed(f"put {path}", result.exit_code, result.output)

    def console_log(self) -> str:
        """The kernel console (ttyS0) so far: kernel warnings and the boot script's messages."""
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # trio wrappers: the same calls in a worker thread, so the caller's other trio tasks keep running -----------

    async def arun(self, command: str, timeout: float = 30.0) -> CommandResult:
        return await trio.to_thread.run_sync(self.run, command, timeout)

    async def acheck(self, command: str, timeout: float = 30.0) -> str:
        return await trio.to_thread.run_sync(self.check, command, timeout)

    async def aput_file(self, path: str, data: bytes, mode: int = 0o644, timeout: float = 60.0) -> None:
        await trio.to_thread.run_sync(self.put_file, path, data, mode, timeout)

    async def areboot(self, timeout: float = DEFAULT_BOOT_TIMEOUT_SECONDS) -> None:
        await trio.to_thread.run_sync(self.reboot, timeout)

    # Channel --------------------------------------------------------------------------------------------------

    def _connect(self, deadline: float) -> None:
        while True:
            self._require_running("connecting to the agent socket")
            channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                channel.connect(str(self.agent_socket_path))
            except (FileNotFoundError, ConnectionRefusedError):
                channel.close()
                if time.monotonic() > deadline:
                    raise GuestBootError(self._diagnosis("qemu never opened the agent socket")) from None
                time.sleep(0.05)
                continue
            self._channel = channel
            return

    def _send(self, request: bytes, deadline: float) -> None:
        if self._channel is None:
            raise GuestError("the guest is shut down")
        # qemu reads the socket only as fast as the guest drains its UART: a guest that does not read blocks us.
        self._channel.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            self._channel.sendall(request)
        except TimeoutError:
            self._require_running("sending to the agent")
            raise GuestTimeout(f"the guest does not read its serial port (request {request[:60]!r}...)") from None
        except OSError as error:
            self._require_running("sending to the agent", grace=_EXIT_GRACE_SECONDS)
            raise GuestBootError(self._diagnosis(f"agent channel broken while sending: {error}")) from None

    def _offer_hello(self, request: bytes) -> None:
        """Queue a hello unless the channel is full: then earlier hellos still wait for the agent to start reading.

        While the guest boots nobody reads its UART, so hellos pile up in the socket; blocking on them would turn a
        slow boot into an error.
        """
        if self._channel is None:
            raise GuestError("the guest is shut down")
        try:
            # A request this short is queued whole or not at all on a unix stream socket.
            self._channel.send(request, socket.MSG_DONTWAIT)
        except (BlockingIOError, TimeoutError):
            # TimeoutError: with a socket timeout set, Python first waits (that long) for room, then gives up.
            return
        except OSError as error:
            self._require_running("sending to the agent", grace=_EXIT_GRACE_SECONDS)
            raise GuestBootError(self._diagnosis(f"agent channel broken while sending: {error}")) from None

    def _next_line(self, deadline: float) -> bytes | None:
        """The next line from the agent, or None when `deadline` passed first."""
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._channel is None:
                return None
            self._channel.settimeout(min(remaining, 0.5))
            try:
                data = self._channel.recv(65536)
            except TimeoutError:
                self._require_running("waiting for the agent")
                continue
            except OSError as error:
                self._require_running("waiting for the agent", grace=_EXIT_GRACE_SECONDS)
                raise GuestBootError(self._diagnosis(f"agent channel broken: {error}")) from None
            if not data:
                self._require_running("waiting for the agent", grace=_EXIT_GRACE_SECONDS)
                raise GuestBootError(self._diagnosis("qemu closed the agent channel"))
            self._pending.extend(self._lines.feed_untrusted(data))
        return self._pending.pop(0)

    def _exchange(self, request: bytes, nonce: str, deadline: float) -> CommandResult:
        self._send(request, deadline)
        reply = CommandReply(nonce)
        while (line := self._next_line(deadline)) is not None:
            result = reply.feed_line_untrusted(line)
            if result is not None:
                return result
        raise GuestTimeout(f"no answer from the guest agent (request {request[:60]!r}...)")

    def _wait_ready(self, deadline: float, previous_boot_id: str | None) -> str:
        """Say hello until the agent of a boot other than `previous_boot_id` answers; return its boot id."""
        nonce = new_nonce()
        reply = ReadyReply(nonce)
        while time.monotonic() < deadline:
            self._offer_hello(encode_hello(nonce))
            hello_deadline = min(deadline, time.monotonic() + _HELLO_INTERVAL_SECONDS)
            while (line := self._next_line(hello_deadline)) is not None:
                boot_id = reply.feed_line_untrusted(line)
                if boot_id is not None and boot_id != previous_boot_id:
                    return boot_id
        raise GuestBootError(self._diagnosis("the guest agent did not answer in time"))

    def _require_running(self, doing: str, *, grace: float = 0.0) -> None:
        """Raise GuestBootError if qemu has exited, waiting up to `grace` seconds for an exit already under way."""
        if self._process is not None and grace > 0:
            # qemu closes its sockets before it has exited: a broken channel usually means "about to exit".
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=grace)
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            raise GuestBootError(self._diagnosis(f"qemu exited ({code}) while {doing}"))

    def _diagnosis(self, problem: str) -> str:
        qemu_log = ""
        with contextlib.suppress(FileNotFoundError):
            qemu_log = (self.workdir / "qemu.log").read_text(errors="replace")
        return (
            f"{problem}\n--- qemu output ---\n{qemu_log[-_LOG_TAIL_BYTES:]}"
            f"\n--- guest console (tail) ---\n{self.console_log()[-_LOG_TAIL_BYTES:]}"
        )


@contextlib.contextmanager
def qemu_guest(
    namespace: Netns,
    *,
    guest_addresses: Sequence[str] = ("192.168.200.2/24",),
    host_addresses: Sequence[str] = ("192.168.200.1/24",),
    gateways: Sequence[str] = (),
    image: GuestImage | None = None,
    memory_mb: int = 256,
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT_SECONDS,
) -> Iterator[QemuGuest]:
    """A booted guest on a TAP in `namespace` (see QemuGuest.boot); shut down and cleaned up on exit."""
    guest = QemuGuest.boot(
        namespace,
        guest_addresses=guest_addresses,
        host_addresses=host_addresses,
        gateways=gateways,
        image=image,
        memory_mb=memory_mb,
        boot_timeout=boot_timeout,
    )
    try:
        yield guest
    finally:
        guest.shutdown()
