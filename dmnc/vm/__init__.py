"""The VM end of the tunnel: the setup image, the VM-side script, and the runner that drives them through Docker.

Public surface:
- `SetupParams` (public inputs), `ScriptMode`, `IptablesBackend`, `script_command(params, mode)`;
- the result line: `parse_result_line_untrusted`, `outcome_from_output_untrusted` -> `SetupResult` |
  `KernelWireGuardMissing` | `TeardownDone`, with `VmMode`;
- errors: `VmSetupError` and its subclasses;
- `VmSetupRunner(docker, setup_image=None, on_progress=None)` with `setup(params)` / `teardown(params)` /
  `ensure_image()`, and `default_setup_image()`.
"""

from dmnc.vm.errors import SetupImageError, SetupParamsError, SetupResultError, SetupScriptError, VmSetupError
from dmnc.vm.params import (
    DEFAULT_ENDPOINT_CANDIDATES,
    IptablesBackend,
    ScriptMode,
    SetupParams,
    TeardownParams,
    decode_public_key,
    script_arguments,
    script_command,
)
from dmnc.vm.result import (
    Endpoint,
    KernelWireGuardMissing,
    ScriptOutcome,
    SetupResult,
    TeardownDone,
    VmMode,
    outcome_from_output_untrusted,
    parse_result_line_untrusted,
)
from dmnc.vm.runner import FALLBACK_CONTAINER_NAME, VmSetupRunner, default_setup_image

__all__ = [
    "DEFAULT_ENDPOINT_CANDIDATES",
    "FALLBACK_CONTAINER_NAME",
    "Endpoint",
    "IptablesBackend",
    "KernelWireGuardMissing",
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
    "VmSetupRunner",
    "decode_public_key",
    "default_setup_image",
    "outcome_from_output_untrusted",
    "parse_result_line_untrusted",
    "script_arguments",
    "script_command",
]
