"""The qemu guest fixture's pure parts: agent line protocol, modprobe/ldd parsers, cpio newc writer."""

from __future__ import annotations

import binascii
import shutil
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.lab.netns import Netns
from tests.lab.qemu_guest import (
    CommandReply,
    CommandResult,
    GuestImage,
    GuestImageUnavailable,
    GuestProtocolError,
    LineSplitter,
    QemuGuest,
    ReadyReply,
    encode_put,
    encode_run,
    new_nonce,
    parse_ldd_untrusted,
    parse_show_depends_untrusted,
    write_cpio_newc,
)

NONCE = "0123456789abcdef"


def agent_answer(nonce: str, output: bytes, exit_code: int) -> list[bytes]:
    """The lines guest/agent.sh writes: busybox base64 wraps at 76 columns."""
    encoded = binascii.b2a_base64(output, newline=False)
    chunks = [encoded[start : start + 76] for start in range(0, len(encoded), 76)]
    return [f"{nonce} begin".encode(), *chunks, f"{nonce} end {exit_code}".encode()]


def feed_all(reply: CommandReply, lines: list[bytes]) -> CommandResult | None:
    result = None
    for line in lines:
        result = reply.feed_line_untrusted(line)
        if result is not None:
            return result
    return result


# --- line splitting ---------------------------------------------------------------------------------------------


@given(
    st.lists(st.binary(max_size=100).map(lambda line: line.replace(b"\n", b"")), max_size=20),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
)
def test_line_splitter_yields_the_same_lines_for_any_chunking(lines: list[bytes], sizes: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    splitter = LineSplitter()
    received: list[bytes] = []
    position, turn = 0, 0
    while position < len(stream):
        size = sizes[turn % len(sizes)]
        received += splitter.feed_untrusted(stream[position : position + size])
        position, turn = position + size, turn + 1
    assert received == lines


def test_line_splitter_rejects_an_endless_line() -> None:
    splitter = LineSplitter(max_line=10)
    with pytest.raises(GuestProtocolError):
        splitter.feed_untrusted(b"x" * 11)


def test_line_splitter_rejects_an_overlong_complete_line() -> None:
    with pytest.raises(GuestProtocolError):
        LineSplitter(max_line=10).feed_untrusted(b"x" * 20 + b"\nok\n")


# --- answers ----------------------------------------------------------------------------------------------------


@given(st.text(max_size=500), st.integers(min_value=0, max_value=255))
def test_answer_round_trips_output_and_exit_code(output: str, exit_code: int) -> None:
    reply = CommandReply(NONCE)
    assert feed_all(reply, agent_answer(NONCE, output.encode(), exit_code)) == (exit_code, output)


@given(st.lists(st.binary(max_size=80).filter(lambda line: not line.startswith(NONCE.encode())), max_size=10))
def test_stale_lines_before_the_answer_are_ignored(noise: list[bytes]) -> None:
    stale = agent_answer("fedcba9876543210", b"old answer", 1)
    lines = noise + stale + agent_answer(NONCE, b"mine\n", 0)
    assert feed_all(CommandReply(NONCE), lines) == (0, "mine\n")


def test_undecodable_output_bytes_are_replaced_not_raised() -> None:
    assert feed_all(CommandReply(NONCE), agent_answer(NONCE, b"\xff\xfeok", 0)) == (0, "\ufffd\ufffdok")


@pytest.mark.parametrize(
    "lines",
    [
        [b"0123456789abcdef end 0"],  # end before begin
        [b"0123456789abcdef begin", b"0123456789abcdef begin"],
        [b"0123456789abcdef begin", b"0123456789abcdef end"],
        [b"0123456789abcdef begin", b"0123456789abcdef end 256"],
        [b"0123456789abcdef begin", b"0123456789abcdef end -1"],
        [b"0123456789abcdef begin", b"0123456789abcdef end 0x1"],
        [b"0123456789abcdef begin", b"not base64!", b"0123456789abcdef end 0"],
        [b"0123456789abcdef begin", b"QUJD", b"RA=", b"0123456789abcdef end 0"],  # bad padding
        [b"0123456789abcdef error unknown-request"],
        [b"0123456789abcdef surprise"],
    ],
)
def test_malformed_answers_raise_protocol_error(lines: list[bytes]) -> None:
    with pytest.raises(GuestProtocolError):
        feed_all(CommandReply(NONCE), lines)


@given(st.lists(st.binary(max_size=120), max_size=20))
def test_arbitrary_lines_never_raise_anything_but_protocol_error(lines: list[bytes]) -> None:
    reply = CommandReply(NONCE)
    prefixed = [NONCE.encode() + b" " + line if index % 2 else line for index, line in enumerate(lines)]
    try:
        result = feed_all(reply, prefixed)
    except GuestProtocolError:
        return
    assert result is None or 0 <= result.exit_code <= 255


def test_ready_reply_returns_the_boot_id_of_its_own_nonce_only() -> None:
    reply = ReadyReply(NONCE)
    assert reply.feed_line_untrusted(b"hello 0123456789abcdef") is None  # the echo of our own request
    assert reply.feed_line_untrusted(b"fedcba9876543210 ready other-boot") is None
    assert reply.feed_line_untrusted(b"0123456789abcdef ready 5f0c-boot") == "5f0c-boot"


@given(st.binary(max_size=60))
def test_ready_reply_never_raises_anything_but_protocol_error(tail: bytes) -> None:
    reply = ReadyReply(NONCE)
    try:
        boot_id = reply.feed_line_untrusted(b"0123456789abcdef ready " + tail)
    except GuestProtocolError:
        return
    assert boot_id is None or (boot_id.isprintable() and boot_id)


def test_hellos_to_a_guest_that_does_not_read_never_block_or_raise(tmp_path: Path) -> None:
    # While the guest boots nobody drains its UART; hellos pile up until the socket is full.
    guest = QemuGuest(
        Netns("not-created"),
        image=GuestImage("none", tmp_path / "kernel", tmp_path / "initramfs"),
        guest_addresses=[],
        host_addresses=[],
        gateways=[],
        memory_mb=256,
    )
    host_end, guest_end = socket.socketpair()
    try:
        host_end.settimeout(0.001)  # as left by the last wait for an answer
        guest._channel = host_end
        for _ in range(1000):  # the socket buffer holds ~280 of them
            guest._offer_hello(b"hello 0123456789abcdef\n")
        assert guest_end.recv(64).startswith(b"hello 0123456789abcdef\n")
    finally:
        host_end.close()
        guest_end.close()
        shutil.rmtree(guest.workdir)


# --- requests ---------------------------------------------------------------------------------------------------


def split_request(request: bytes) -> tuple[list[str], bytes]:
    header, _, payload = request.partition(b"\n")
    return header.decode("ascii").split(" "), payload


@given(st.text(max_size=2000), st.integers(min_value=1, max_value=3600))
def test_run_request_carries_the_script_in_short_base64_lines(script: str, timeout: int) -> None:
    nonce = new_nonce()
    fields, payload = split_request(encode_run(nonce, script, timeout))
    assert fields[:3] == ["run", nonce, str(timeout)]
    assert int(fields[3]) == len(payload)
    assert all(len(line) <= 76 for line in payload.split(b"\n"))
    assert binascii.a2b_base64(payload.replace(b"\n", b""), strict_mode=True) == script.encode()


@given(
    st.text(alphabet=st.characters(blacklist_characters="\0", codec="utf-8"), max_size=100).map(
        lambda name: "/" + name
    ),
    st.binary(max_size=2000),
    st.integers(min_value=0, max_value=0o7777),
)
def test_put_request_carries_path_mode_and_data(path: str, data: bytes, mode: int) -> None:
    fields, payload = split_request(encode_put(NONCE, path, data, mode))
    assert fields[:3] == ["put", NONCE, f"{mode:o}"]
    assert binascii.a2b_base64(fields[3]).decode() == path
    assert int(fields[4]) == len(payload)
    assert binascii.a2b_base64(payload.replace(b"\n", b""), strict_mode=True) == data


@pytest.mark.parametrize(
    ("path", "mode"),
    [("relative", 0o644), ("/a\0b", 0o644), ("/x", 0o10000), ("/" * 2000, 0), ("/\ud800", 0o644)],
)
def test_put_request_rejects_bad_paths_and_modes(path: str, mode: int) -> None:
    with pytest.raises(ValueError, match=r"path|mode"):
        encode_put(NONCE, path, b"", mode)


def test_run_request_rejects_a_timeout_below_one_second() -> None:
    with pytest.raises(ValueError, match="timeout"):
        encode_run(NONCE, "true", 0)


def test_nonces_are_hex_and_distinct() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(nonce) == 16 and int(nonce, 16) >= 0 for nonce in nonces)


# --- image build parsers ------------------------------------------------------------------------------------------

# modprobe ends each insmod line with a space (and module options, if any).
SHOW_DEPENDS = (
    "insmod /k/lib/modules/6.1.0-56-cloud-amd64/kernel/lib/crypto/libchacha.ko \n"
    "insmod /k/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/net/wireguard/wireguard.ko.xz foo=1\n"
    "builtin crc32c\n"
)


def test_show_depends_lists_module_files_in_load_order_and_skips_builtins() -> None:
    assert parse_show_depends_untrusted(SHOW_DEPENDS) == [
        Path("/k/lib/modules/6.1.0-56-cloud-amd64/kernel/lib/crypto/libchacha.ko"),
        Path("/k/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/net/wireguard/wireguard.ko.xz"),
    ]


@pytest.mark.parametrize("line", ["insmod", "insmod relative.ko", "modprobe: FATAL: Module x not found", "builtin"])
def test_show_depends_rejects_unexpected_lines(line: str) -> None:
    with pytest.raises(GuestImageUnavailable):
        parse_show_depends_untrusted(line)


@given(st.text(max_size=300))
def test_show_depends_never_raises_anything_but_image_unavailable(text: str) -> None:
    try:
        modules = parse_show_depends_untrusted(text)
    except GuestImageUnavailable:
        return
    assert all(module.is_absolute() for module in modules)


LDD_IP = """\
\tlinux-vdso.so.1 (0x00007ffd6d5f2000)
\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f7243720000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f72434f7000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f7243883000)
"""


def test_ldd_lists_libraries_and_the_loader() -> None:
    assert parse_ldd_untrusted(LDD_IP) == [
        Path("/lib/x86_64-linux-gnu/libbpf.so.1"),
        Path("/lib/x86_64-linux-gnu/libc.so.6"),
        Path("/lib64/ld-linux-x86-64.so.2"),
    ]


def test_ldd_of_a_static_binary_lists_nothing() -> None:
    assert parse_ldd_untrusted("\tnot a dynamic executable\n") == []
    assert parse_ldd_untrusted("\tstatically linked\n") == []


@pytest.mark.parametrize("line", ["\tlibfoo.so.1 => not found", "\tlibbar.so => ??? (0x1)", "garbage"])
def test_ldd_rejects_missing_or_unexpected_libraries(line: str) -> None:
    with pytest.raises(GuestImageUnavailable):
        parse_ldd_untrusted(line)


@given(st.text(max_size=300))
def test_ldd_never_raises_anything_but_image_unavailable(text: str) -> None:
    try:
        libraries = parse_ldd_untrusted(text)
    except GuestImageUnavailable:
        return
    assert all(library.is_absolute() for library in libraries)


# --- cpio newc ----------------------------------------------------------------------------------------------------


def read_cpio_newc(archive: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)), checking magic, alignment and the trailer on the way."""
    entries: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    offset = 0
    while True:
        assert offset % 4 == 0
        assert archive[offset : offset + 6] == b"070701"
        fields = [int(archive[offset + 6 + 8 * index : offset + 14 + 8 * index], 16) for index in range(13)]
        mode, uid, gid, size, rdev_major, rdev_minor, name_size = (
            fields[1],
            fields[2],
            fields[3],
            fields[6],
            fields[9],
            fields[10],
            fields[11],
        )
        assert (uid, gid) == (0, 0)
        name_start = offset + 110
        name = archive[name_start : name_start + name_size - 1].decode()
        assert archive[name_start + name_size - 1] == 0
        data_start = name_start + name_size + (-(110 + name_size) % 4)
        data = archive[data_start : data_start + size]
        offset = data_start + size + (-size % 4)
        if name == "TRAILER!!!":
            assert offset == len(archive)
            return entries
        entries[name] = (mode, data, (rdev_major, rdev_minor))


def test_cpio_archive_holds_files_links_directories_and_the_console(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(range(256)))
    (tmp_path / "bin" / "tool").chmod(0o755)
    (tmp_path / "bin" / "alias").symlink_to("tool")
    (tmp_path / "odd-size").write_bytes(b"abc")
    entries = read_cpio_newc(write_cpio_newc(tmp_path))
    assert entries["bin"][0] == stat.S_IFDIR | 0o755
    assert entries["bin/tool"] == (stat.S_IFREG | 0o755, b"\x7fELF" + bytes(range(256)), (0, 0))
    assert entries["bin/alias"] == (stat.S_IFLNK | 0o777, b"tool", (0, 0))
    assert entries["odd-size"][1] == b"abc"
    assert entries["dev/console"] == (stat.S_IFCHR | 0o600, b"", (5, 1))


def test_cpio_archive_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "file").write_text("same")
    first = write_cpio_newc(tmp_path)
    (tmp_path / "file").touch()  # a new mtime must not change the archive
    assert write_cpio_newc(tmp_path) == first


def test_cpio_archive_needs_a_dev_directory(tmp_path: Path) -> None:
    with pytest.raises(GuestImageUnavailable, match="/dev"):
        write_cpio_newc(tmp_path)
