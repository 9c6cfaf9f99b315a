"""JSON from the Docker daemon or a user's Docker files, decoded with a nesting bound.

`json.loads` recurses once per nesting level and raises `RecursionError`, not `ValueError`, on a value nested deeper
than the interpreter's recursion limit (100 000 `[` in a row suffice). Every decoder of text dmnc does not control
goes through `loads_untrusted` or `raw_decode_untrusted`, which turn that, and a value nested deeper than
`MAX_JSON_DEPTH`, into `JsonTooDeep`, a `ValueError` like every other decode failure. Callers translate ValueError
into their own typed error (BadResponse for the daemon), so a hostile daemon never ends the service.
"""

from __future__ import annotations

import json

# The deepest answer dmnc reads (a container inspect: HostConfig.LogConfig.Config, NetworkSettings.Networks.<name>.
# IPAMConfig) nests 5 levels; 64 leaves room for any future field and stays far from the interpreter's recursion limit.
MAX_JSON_DEPTH = 64
_decoder = json.JSONDecoder()


class JsonTooDeep(ValueError):
    """A JSON value nested deeper than the bound."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels")


def loads_untrusted(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> object:
    """`json.loads`, but nesting deeper than `max_depth` raises JsonTooDeep; any failure is a ValueError."""
    try:
        value: object = json.loads(text)
    except RecursionError:
        raise JsonTooDeep(max_depth) from None
    _check_depth(value, max_depth)
    return value


def raw_decode_untrusted(text: str, position: int, *, max_depth: int = MAX_JSON_DEPTH) -> tuple[object, int]:
    """`JSONDecoder.raw_decode` from `position` with the same bound as `loads_untrusted`: (value, end position)."""
    try:
        value, end = _decoder.raw_decode(text, position)
    except RecursionError:
        raise JsonTooDeep(max_depth) from None
    _check_depth(value, max_depth)
    return value, end


def _check_depth(value: object, max_depth: int) -> None:
    """JsonTooDeep if `value` has arrays or objects nested more than `max_depth` deep. Iterative: a value that just
    fit under the recursion limit must not make this check recurse either."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise JsonTooDeep(max_depth)
        pending.extend((child, depth + 1) for child in children)
