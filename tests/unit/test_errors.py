"""Exception groups looked into one way: leaves in order, the sole one, the first of some kinds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dmnc.errors import first_of, leaf_exceptions, sole_exception


class Wanted(Exception):
    pass


def test_leaves_are_flattened_depth_first_in_the_groups_order() -> None:
    first, second, third = Wanted("a"), ValueError("b"), Wanted("c")
    group = ExceptionGroup("outer", [first, ExceptionGroup("inner", [second, third])])
    assert leaf_exceptions(group) == [first, second, third]


def test_a_plain_exception_is_its_own_leaf() -> None:
    error = ValueError("x")
    assert leaf_exceptions(error) == [error]
    assert sole_exception(error) is error


def test_sole_exception_sees_through_nesting_and_refuses_several() -> None:
    inner = Wanted("only")
    assert sole_exception(ExceptionGroup("a", [ExceptionGroup("b", [inner])])) is inner
    assert sole_exception(ExceptionGroup("a", [Wanted("1"), Wanted("2")])) is None


def test_first_of_finds_the_first_matching_leaf_or_none() -> None:
    wanted = Wanted("w")
    group = BaseExceptionGroup("g", [KeyboardInterrupt(), ExceptionGroup("e", [ValueError(), wanted])])
    assert first_of(group, Wanted) is wanted
    assert first_of(group, (TypeError, Wanted)) is wanted
    assert first_of(group, TypeError) is None


def _trees() -> st.SearchStrategy[BaseException]:
    leaves = st.sampled_from([ValueError, Wanted, KeyError]).map(lambda kind: kind("leaf"))
    return st.recursive(
        leaves,
        lambda children: st.lists(children, min_size=1, max_size=4).map(lambda items: ExceptionGroup("g", items)),
        max_leaves=20,
    )


@given(_trees())
def test_every_leaf_is_found_once_and_no_group_is_a_leaf(tree: BaseException) -> None:
    leaves = leaf_exceptions(tree)
    assert leaves
    assert not any(isinstance(leaf, BaseExceptionGroup) for leaf in leaves)
    assert len({id(leaf) for leaf in leaves}) == len(leaves)
    assert first_of(tree, Wanted) is next((leaf for leaf in leaves if isinstance(leaf, Wanted)), None)
    assert sole_exception(tree) is (leaves[0] if len(leaves) == 1 else None)
