"""The VM end of the tunnel: the setup image, the VM-side script, and the runner that drives them through Docker.

Public surface:
- `SetupParams` (public inputs), `ScriptMode`, `IptablesBackend`, `new_run_nonce()`,
  `script_command(params, mode, nonce=...)`;
- the result line: `parse_result_line_untrusted`, `outcome_from_output_untrusted` -> `SetupResult` |
  `KernelWireGuardMissing` | `KernelWireGuardPresent` | `TeardownDone` | `ForeignInterface`, with `VmMode`;
- errors: `VmSetupError` and its subclasses.

The runner that drives all this through Docker is `dmnc.vm.runner.VmSetupRunner`; it is not re-exported here, so
importing the light parts above (e.g. from `dmnc.config` or `dmnc status`) does not load httpx and trio.
"""

from dmnc.vm.errors import (
    ForeignInterfaceError,
    SetupImageError,
    SetupParamsError,
    SetupResultError,
    SetupScriptError,
    VmSetupError,
)
from dmnc.vm.params import (
    DEFAULT_ENDPOINT_CANDIDATES,
    IptablesBackend,
    ScriptMode,
    SetupParams,
    TeardownParams,
    decode_public_key,
    new_run_nonce,
    script_arguments,
    script_command,
)
from dmnc.vm.result import (
    ForeignInterface,
    HostPeerEndpoint,
    KernelWireGuardMissing,
    KernelWireGuardPresent,
    ScriptOutcome,
    SetupResult,
    TeardownDone,
    VmMode,
    outcome_from_output_untrusted,
    parse_result_line_untrusted,
)

__all__ = [
    "DEFAULT_ENDPOINT_CANDIDATES",
    "ForeignInterface",
    "ForeignInterfaceError",
    "HostPeerEndpoint",
    "IptablesBackend",
    "KernelWireGuardMissing",
    "KernelWireGuardPresent",
    "ScriptMode",
    "ScriptOutcome",
    "SetupImageError",
    "SetupParams",
    "SetupParamsError",
    "SetupResult",
    "SetupResultError",
    "SetupScriptError",
    "TeardownDone",
    "TeardownParams",
    "VmMode",
    "VmSetupError",
    "decode_public_key",
    "new_run_nonce",
    "outcome_from_output_untrusted",
    "parse_result_line_untrusted",
    "script_arguments",
    "script_command",
]
