"""Which netlink ports name a process (pure part of the Linux manager)."""

from __future__ import annotations

from dmnc.routes.linux import PID_MAX_LIMIT, sender_pid


def test_autobound_first_socket_port_is_the_pid() -> None:
    assert sender_pid(4242) == 4242
    assert sender_pid(PID_MAX_LIMIT) == PID_MAX_LIMIT


def test_kernel_and_negative_autobind_ports_name_no_process() -> None:
    assert sender_pid(0) is None
    assert sender_pid(2**32 - 4096) is None  # -4096 as the u32 nlmsg_pid: a process's second socket
    assert sender_pid(PID_MAX_LIMIT + 1) is None
