"""Typed errors of the VM-side setup: everything the setup runner can fail with derives from `VmSetupError`."""

from __future__ import annotations


class VmSetupError(Exception):
    """Base class: the VM end of the tunnel could not be set up or torn down. The message is one readable line."""


class SetupParamsError(VmSetupError, ValueError):
    """A setup input (key, address, port, MTU, endpoint, interface name) is invalid; raised before anything runs."""


class SetupResultError(VmSetupError):
    """The setup script's output has no well-formed result line (truncated, garbled or from another version)."""


class SetupScriptError(VmSetupError):
    """The setup script ran and reported a failure: `reason` is its own one-line explanation."""

    def __init__(self, reason: str, exit_code: int | None) -> None:
        status = "" if exit_code is None else f" (exit {exit_code})"
        super().__init__(f"VM setup failed{status}: {reason}")
        self.reason = reason
        self.exit_code = exit_code


class SetupImageError(VmSetupError):
    """The setup image could neither be found nor built/pulled; the message says what to do about it."""


class ForeignInterfaceError(VmSetupError):
    """The VM's interface of that name is another tool's (no dmnc mark): the setup changed nothing in the VM."""

    def __init__(self, interface: str) -> None:
        super().__init__(
            f"the VM already has an interface {interface} that is not dmnc's (docker-mac-net-connect's?); dmnc left"
            f" it untouched. {foreign_interface_remedy(interface)}"
        )
        self.interface = interface


def foreign_interface_remedy(interface: str) -> str:
    """How a user frees the VM interface another tool holds."""
    return (
        "Stop that tool (sudo brew services stop docker-mac-net-connect), then restart Docker or delete it: docker"
        f" run --rm --net=host --cap-add NET_ADMIN alpine ip link del {interface}"
    )
