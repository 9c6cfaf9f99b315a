"""Exception groups, looked into in one way everywhere.

trio nurseries wrap every error that leaves a child task in an exception group (trio's strict exception groups,
PEP 654), however many tasks failed. Code that turns an error into one line for the user, or decides whether a
failure is Docker's (retry) or a bug (crash), needs the errors inside: these helpers walk groups of any depth.
"""

from __future__ import annotations

from typing import TypeVar

_E = TypeVar("_E", bound=BaseException)


def leaf_exceptions(error: BaseException) -> list[BaseException]:
    """Every exception inside `error` that is not itself a group, depth first in the group's order; `[error]` for
    an exception that is not a group."""
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    leaves: list[BaseException] = []
    for inner in error.exceptions:
        leaves.extend(leaf_exceptions(inner))
    return leaves


def sole_exception(error: BaseException) -> BaseException | None:
    """The one exception inside `error` (however deeply grouped), or None when it holds several."""
    leaves = leaf_exceptions(error)
    return leaves[0] if len(leaves) == 1 else None


def first_of(error: BaseException, kinds: type[_E] | tuple[type[_E], ...]) -> _E | None:
    """The first exception of `kinds` inside `error` (itself included), looking into groups of any depth."""
    for leaf in leaf_exceptions(error):
        if isinstance(leaf, kinds):
            return leaf
    return None
