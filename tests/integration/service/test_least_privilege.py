"""The service end to end under the systemd unit's restrictions, applied by other means (systemd is not PID 1 here).

`dmnc run` starts with only the unit's capability bounding set (setpriv), no new privileges, no core dumps
(prlimit) and read-only home folders (a private mount namespace, as ProtectHome=read-only makes one): a container
must still answer by IP, status must answer, and SIGTERM must still clean up.
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

import pytest

from dmnc.system_service import SERVICE_CAPABILITIES
from tests.conftest import dmnc_command, require_tools
from tests.lab.service_lab import (
    ServiceLab,
    dmnc_routes,
    http_get,
    running_dmnc,
    start_web_container,
    status_json,
    vm_leftovers,
)

pytestmark = pytest.mark.lab

# capabilities(7) numbers, <linux/capability.h>.
CAPABILITY_BITS = {"CAP_CHOWN": 0, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12}
READ_ONLY_FOLDERS = ("/home", "/root")


def restricted_command(command: list[str]) -> list[str]:
    """`command` with the unit's restrictions: read-only homes in a private mount namespace, then prlimit and setpriv,
    each exec'ing the next, so the process the test holds is dmnc itself."""
    setpriv_caps = ",".join(["-all", *(f"+{name.removeprefix('CAP_').lower()}" for name in SERVICE_CAPABILITIES)])
    mounts = " && ".join(
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}" for folder in READ_ONLY_FOLDERS
    )
    setpriv = f"setpriv --bounding-set={setpriv_caps} --inh-caps={setpriv_caps} --no-new-privs"
    script = f'{mounts} && exec prlimit --core=0 -- {setpriv} -- "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *command]


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


@pytest.fixture
def restricted_lab(service_lab: ServiceLab) -> ServiceLab:
    """The module's shared service lab, with the tools that apply the unit's restrictions."""
    require_tools("setpriv", "prlimit", "unshare")
    return service_lab


def test_containers_answer_by_ip_with_only_the_units_capabilities(restricted_lab: ServiceLab) -> None:
    address = start_web_container(restricted_lab)
    with running_dmnc(restricted_lab, "--path", "tunnel", command=restricted_command(dmnc_command())) as dmnc:
        http_get(restricted_lab, address)
        pid = dmnc.process.pid
        expected = sum(1 << CAPABILITY_BITS[name] for name in SERVICE_CAPABILITIES)
        assert int(status_field(pid, "CapBnd"), 16) == expected, shlex.join(restricted_command(dmnc_command()))
        assert int(status_field(pid, "CapEff"), 16) == expected
        assert status_field(pid, "NoNewPrivs") == "1"
        core_limit = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if "core" in line)
        assert core_limit.split()[4:6] == ["0", "0"], core_limit
        mounts = [line.split() for line in Path(f"/proc/{pid}/mounts").read_text().splitlines()]
        for folder in READ_ONLY_FOLDERS:
            assert "ro" in [fields[3].split(",") for fields in mounts if fields[1] == folder][-1], folder
        status = status_json(restricted_lab)
        assert status["docker"]["connected"] is True
        assert status["tunnel"]["rx_bytes"] > 0
        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_routes(restricted_lab) == []
    assert vm_leftovers(restricted_lab) == []
    assert "Traceback" not in dmnc.log()
