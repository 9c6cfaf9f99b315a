"""Reconciliation: the pure plan, and the RouteReconciler task against the in-memory manager."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from dmnc.routes import Destination, RouteEvent, RouteOperationError
from dmnc.routes.manager import NextHop, Shadow
from dmnc.routes.policy import (
    FORCE_ROUTES_DEPRECATION,
    HostState,
    NetworkInfo,
    PolicyConfig,
    Skipped,
    SkipReason,
    VmIpv6,
)
from dmnc.routes.reconcile import (
    DECISION_SHADOWED,
    MAX_RESTORES,
    RESTORE_WINDOW_SECONDS,
    RESUBSCRIBE_SECONDS,
    RETRY_AFTER_FAILURE_SECONDS,
    RouteReconciler,
    SubnetStatus,
    describe_sender,
    plan_changes,
)
from tests.fakes.routes import FakeRouteManager, Operation

net = ipaddress.ip_network


def network(name: str, *subnets: str, labels: dict[str, str] | None = None) -> NetworkInfo:
    return NetworkInfo(
        name=name,
        id=f"id-{name}",
        driver="bridge",
        scope="local",
        internal=False,
        labels=labels or {},
        subnets=tuple(net(subnet) for subnet in subnets),
    )


def test_plan_adds_missing_and_deletes_unwanted_only() -> None:
    plan = plan_changes(
        {net("10.1.0.0/24"), net("10.2.0.0/24"), net("fd00::/64")}, {net("10.2.0.0/24"), net("10.3.0.0/24")}
    )
    assert plan.add == (net("10.1.0.0/24"), net("fd00::/64"))
    assert plan.delete == (net("10.3.0.0/24"),)


def test_plan_of_equal_sets_is_empty() -> None:
    routes = {net("10.1.0.0/24"), net("fd00::/64")}
    assert plan_changes(routes, set(routes)).empty


def test_plan_orders_ipv4_before_ipv6_and_by_address() -> None:
    desired = {net("fd00::/64"), net("10.9.0.0/24"), net("10.1.0.0/24")}
    assert plan_changes(desired, set()).add == (net("10.1.0.0/24"), net("10.9.0.0/24"), net("fd00::/64"))


@pytest.fixture
async def fake() -> FakeRouteManager:
    return FakeRouteManager()


@pytest.fixture
async def reconciler(fake: FakeRouteManager, nursery: trio.Nursery) -> RouteReconciler:
    reconciler = RouteReconciler(fake, PolicyConfig())
    await nursery.start(reconciler.run)
    return reconciler


async def ours(fake: FakeRouteManager) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return {route.destination for route in await fake.list_ours()}


async def test_nothing_is_touched_before_the_networks_are_known(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    fake.install_other(net("172.20.0.0/16"), "en0")
    reconciler.trigger()
    await reconciler.settled()
    assert fake.operations == []


async def test_networks_get_routes_and_removed_networks_lose_them(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16", "fd00:a::/64"), network("b", "172.21.0.0/16")])
    await reconciler.settled()
    assert await ours(fake) == {net("172.20.0.0/16"), net("fd00:a::/64"), net("172.21.0.0/16")}
    reconciler.remove_network("id-a")
    await reconciler.settled()
    assert await ours(fake) == {net("172.21.0.0/16")}
    assert reconciler.status().routed == {net("172.21.0.0/16")}


async def test_network_event_changes_only_what_changed(fake: FakeRouteManager, reconciler: RouteReconciler) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    fake.operations.clear()
    reconciler.update_network(network("b", "172.21.0.0/16"))
    await reconciler.settled()
    assert fake.operations == [Operation("add", net("172.21.0.0/16"))]


async def test_full_resync_after_reconnect_handles_networks_changed_while_away(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16"), network("b", "172.21.0.0/16")])
    await reconciler.settled()
    fake.operations.clear()
    # Docker was away: b was removed and c created meanwhile; the resync lists a and c.
    reconciler.set_networks([network("a", "172.20.0.0/16"), network("c", "172.22.0.0/16")])
    await reconciler.settled()
    assert fake.operations == [Operation("delete", net("172.21.0.0/16")), Operation("add", net("172.22.0.0/16"))]


async def test_burst_of_fifty_network_events_coalesces(fake: FakeRouteManager, reconciler: RouteReconciler) -> None:
    reconciler.set_networks([])
    await reconciler.settled()
    passes_before = reconciler.status().passes
    for index in range(50):
        reconciler.update_network(network(f"n{index}", f"10.{index}.0.0/24"))
    await reconciler.settled()
    assert await ours(fake) == {net(f"10.{index}.0.0/24") for index in range(50)}
    assert len(fake.operations) == 50
    assert reconciler.status().passes - passes_before <= 2


async def test_route_deleted_by_another_program_is_restored_and_the_culprit_logged(
    fake: FakeRouteManager, reconciler: RouteReconciler, caplog: pytest.LogCaptureFixture
) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.reconcile"):
        fake.remove_other(net("172.20.0.0/16"), sender_pid=999999999)
        await trio.testing.wait_all_tasks_blocked()
        await reconciler.settled()
    assert await ours(fake) == {net("172.20.0.0/16")}
    assert fake.operations[-1] == Operation("replace", net("172.20.0.0/16"))
    assert any("deleted by pid 999999999" in record.message for record in caplog.records)


@pytest.mark.parametrize("route_over", [False, True], ids=["yielded", "kept-by-route-over"])
async def test_route_taken_over_by_another_program_is_yielded_unless_route_over_names_it(
    fake: FakeRouteManager, reconciler: RouteReconciler, caplog: pytest.LogCaptureFixture, route_over: bool
) -> None:
    if route_over:
        reconciler.set_policy(PolicyConfig.from_strings(over=["172.20.0.0/16"]))
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.reconcile"):
        fake.install_other(net("172.20.0.0/16"), "utun4", sender_pid=999999998)
        await trio.testing.wait_all_tasks_blocked()
        await reconciler.settled()
    messages = [record.message for record in caplog.records]
    assert "pid 999999998 added another route to 172.20.0.0/16, which dmnc routes: 172.20.0.0/16 dev utun4" in messages
    [subnet] = reconciler.status().subnets
    if route_over:
        assert await ours(fake) == {net("172.20.0.0/16")}
        assert subnet.installed
        return
    assert await ours(fake) == set()
    assert [route.interface for route in await fake.list_routes()] == ["utun4"]
    assert not subnet.installed
    assert subnet.decision == "taken"
    assert subnet.reason == (
        "yielded to a route of another program: taken by 172.20.0.0/16 via utun4; "
        "keep it with --route-over 172.20.0.0/16"
    )
    assert any("withdrawing its route" in message for message in messages)


async def test_more_specific_route_of_another_program_makes_dmnc_yield_and_wider_one_does_not(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16"), network("b", "172.21.0.0/16")])
    await reconciler.settled()
    fake.install_other(net("172.16.0.0/12"), "utun4")  # wider: ours still win by longest prefix
    fake.install_other(net("172.21.3.0/24"), "utun4")  # more specific: the VPN decided
    await trio.testing.wait_all_tasks_blocked()
    await reconciler.settled()
    assert await ours(fake) == {net("172.20.0.0/16")}
    reasons = {status.subnet: status.reason for status in reconciler.status().subnets}
    assert "taken by 172.21.3.0/24 via utun4" in (reasons[net("172.21.0.0/16")] or "")
    # The VPN's specific route goes (its wide one stays): the subnet is routed again.
    fake.remove_other(net("172.21.3.0/24"))
    await trio.testing.wait_all_tasks_blocked()
    await reconciler.settled()
    assert await ours(fake) == {net("172.20.0.0/16"), net("172.21.0.0/16")}


async def test_overlapping_route_of_another_program_is_reported_and_left_alone(
    fake: FakeRouteManager, reconciler: RouteReconciler, caplog: pytest.LogCaptureFixture
) -> None:
    lan = fake.install_other(net("172.20.0.0/16"), "en0", gateway=ipaddress.ip_address("192.168.1.1"))
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.reconcile"):
        reconciler.set_networks([network("a", "172.20.0.0/16")])
        await reconciler.settled()
    assert fake.operations == []
    assert await fake.list_routes() == [lan]
    [warning] = [record.message for record in caplog.records]
    assert "172.20.0.0/16 via 192.168.1.1 dev en0" in warning
    assert "network 'a' subnet 172.20.0.0/16" in warning


async def test_overlap_warning_is_logged_once_not_every_pass(
    fake: FakeRouteManager, reconciler: RouteReconciler, caplog: pytest.LogCaptureFixture
) -> None:
    fake.install_other(net("172.16.0.0/12"), "utun4")
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.reconcile"):
        reconciler.set_networks([network("a", "172.20.0.0/16")])
        await reconciler.settled()
        reconciler.trigger()
        await reconciler.settled()
    assert len(caplog.records) == 1
    assert len(reconciler.status().overlaps) == 1


async def test_forced_overlap_is_routed(fake: FakeRouteManager, nursery: trio.Nursery) -> None:
    fake.install_other(net("172.16.0.0/12"), "utun4")
    reconciler = RouteReconciler(fake, PolicyConfig(force=True))
    await nursery.start(reconciler.run)
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    assert await ours(fake) == {net("172.20.0.0/16")}


async def test_vpn_connecting_later_does_not_unroute_an_existing_subnet(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    fake.install_other(net("172.16.0.0/12"), "utun4")
    await trio.testing.wait_all_tasks_blocked()
    await reconciler.settled()
    assert await ours(fake) == {net("172.20.0.0/16")}
    assert len(reconciler.status().overlaps) == 1


async def test_opt_out_label_added_later_removes_the_route(fake: FakeRouteManager, reconciler: RouteReconciler) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    reconciler.update_network(network("a", "172.20.0.0/16", labels={"dmnc.route": "false"}))
    await reconciler.settled()
    assert await ours(fake) == set()


async def test_a_program_fighting_for_a_route_wins_after_the_restore_limit(
    fake: FakeRouteManager, reconciler: RouteReconciler, caplog: pytest.LogCaptureFixture
) -> None:
    reconciler.set_policy(PolicyConfig.from_strings(over=["172.20.0.0/16"]))
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    with caplog.at_level(logging.ERROR, logger="dmnc.routes.reconcile"):
        for _ in range(MAX_RESTORES + 1):
            fake.install_other(net("172.20.0.0/16"), "utun4")
            await trio.testing.wait_all_tasks_blocked()
            await reconciler.settled()
    assert [route.ours for route in await fake.list_routes()] == [False]
    assert any("no longer restoring" in record.message for record in caplog.records)
    # A network event evaluates it afresh, as a new subnet: a new route never replaces another program's.
    reconciler.update_network(network("a", "172.20.0.0/16"))
    await reconciler.settled()
    assert [route.interface for route in await fake.list_routes()] == ["utun4"]
    [subnet] = reconciler.status().subnets
    assert not subnet.installed


async def test_refused_route_is_retried_without_a_new_trigger(
    fake: FakeRouteManager, reconciler: RouteReconciler, autojump_clock: trio.testing.MockClock
) -> None:
    fake.refuse[net("172.20.0.0/16")] = errno.ENETDOWN
    reconciler.set_networks([network("a", "172.20.0.0/16"), network("b", "172.21.0.0/16")])
    await reconciler.settled()
    assert await ours(fake) == {net("172.21.0.0/16")}
    assert "172.20.0.0/16" in (reconciler.status().last_error or "")
    del fake.refuse[net("172.20.0.0/16")]
    await trio.sleep(RETRY_AFTER_FAILURE_SECONDS + 0.1)
    assert await ours(fake) == {net("172.20.0.0/16"), net("172.21.0.0/16")}
    assert reconciler.status().last_error is None


async def test_lost_notifications_cause_a_resync(fake: FakeRouteManager, reconciler: RouteReconciler) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    passes = reconciler.status().passes
    fake.overrun()
    await trio.testing.wait_all_tasks_blocked()
    await reconciler.settled()
    assert reconciler.status().passes == passes + 1


async def test_withdraw_removes_only_our_routes(fake: FakeRouteManager, reconciler: RouteReconciler) -> None:
    lan = fake.install_other(net("192.168.1.0/24"), "en0")
    reconciler.set_networks([network("a", "172.20.0.0/16"), network("b", "fd00:b::/64")])
    await reconciler.settled()
    await reconciler.withdraw()
    assert await fake.list_routes() == [lan]
    assert reconciler.status().routed == frozenset()
    reconciler.trigger()  # a pass after the withdrawal puts nothing back
    await reconciler.settled()
    assert await fake.list_routes() == [lan]


async def test_status_lists_every_subnet_with_why_it_is_not_routed(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    fake.install_other(net("172.16.0.0/12"), "utun4")
    fake.refuse[net("10.22.0.0/16")] = errno.ENETDOWN
    reconciler.set_networks(
        [
            network("a", "10.1.0.0/16", "fd00:a::/64"),
            network("b", "172.20.0.0/16"),
            network("c", "10.3.0.0/16", labels={"dmnc.route": "false"}),
            network("d", "10.22.0.0/16"),
        ]
    )
    await reconciler.settled()
    assert set(reconciler.status().subnets) == {
        SubnetStatus("a", net("10.1.0.0/16"), installed=True),
        SubnetStatus("a", net("fd00:a::/64"), installed=True),
        SubnetStatus(
            "b",
            net("172.20.0.0/16"),
            installed=False,
            reason="overlaps a route dmnc does not own: overlaps 172.16.0.0/12 dev utun4; "
            "route it anyway with --route-over 172.20.0.0/16",
            decision="overlap",
        ),
        SubnetStatus(
            "c",
            net("10.3.0.0/16"),
            installed=False,
            reason="label dmnc.route=false; remove the label dmnc.route=false to route it",
            decision="opted-out",
        ),
        SubnetStatus(
            "d",
            net("10.22.0.0/16"),
            installed=False,
            reason=f"could not install: refused by the test (errno {errno.ENETDOWN})",
            decision="install-failed",
        ),
    }


async def test_routes_lost_with_the_interface_come_back_however_often_it_flaps(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16", "fd00:a::/64")])
    await reconciler.settled()
    for _ in range(MAX_RESTORES * 2):
        fake.interface_down()
        await trio.testing.wait_all_tasks_blocked()
        await reconciler.settled()
        assert await ours(fake) == {net("172.20.0.0/16"), net("fd00:a::/64")}


async def test_new_policy_applies_at_once(fake: FakeRouteManager, reconciler: RouteReconciler) -> None:
    reconciler.set_networks([network("web", "172.20.0.0/16"), network("db", "172.21.0.0/16")])
    await reconciler.settled()
    reconciler.set_policy(PolicyConfig.from_strings(exclude=["db"]))
    await reconciler.settled()
    assert await ours(fake) == {net("172.20.0.0/16")}


async def test_a_lasting_failure_is_logged_once_and_its_end_too(
    fake: FakeRouteManager,
    reconciler: RouteReconciler,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.refuse[net("fd00:a::/64")] = errno.EACCES
    with caplog.at_level(logging.INFO, logger="dmnc.routes.reconcile"):
        reconciler.set_networks([network("a", "fd00:a::/64")])
        await trio.sleep(RETRY_AFTER_FAILURE_SECONDS * 5)
        del fake.refuse[net("fd00:a::/64")]
        await trio.sleep(RETRY_AFTER_FAILURE_SECONDS + 0.1)
    messages = [record.message for record in caplog.records]
    assert len([message for message in messages if "failed" in message]) == 1
    assert messages[-2:] == ["added route fd00:a::/64 dev utun7", "route reconciliation recovered"]


async def test_restore_limit_counts_only_within_its_window(
    fake: FakeRouteManager, reconciler: RouteReconciler, autojump_clock: trio.testing.MockClock
) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    for _ in range(MAX_RESTORES):
        fake.remove_other(net("172.20.0.0/16"))
        await trio.testing.wait_all_tasks_blocked()
        await reconciler.settled()
    await trio.sleep(RESTORE_WINDOW_SECONDS + 1)
    fake.remove_other(net("172.20.0.0/16"))
    await trio.testing.wait_all_tasks_blocked()
    await reconciler.settled()
    assert await ours(fake) == {net("172.20.0.0/16")}


@pytest.mark.skipif(not Path("/proc/self/comm").exists(), reason="needs procfs (Linux)")
def test_sender_is_described_by_pid_and_command_when_still_running() -> None:
    assert describe_sender(os.getpid()) == f"pid {os.getpid()} ({Path('/proc/self/comm').read_text().strip()})"
    assert describe_sender(None) == "the kernel or an unknown process"


async def test_a_failed_monitor_is_subscribed_again_and_a_pass_catches_up(
    fake: FakeRouteManager, reconciler: RouteReconciler, autojump_clock: trio.testing.MockClock
) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    fake.fail_monitors(errno.EIO)
    await trio.testing.wait_all_tasks_blocked()
    fake.remove_other(net("172.20.0.0/16"))  # nobody is listening now
    await trio.sleep(RESUBSCRIBE_SECONDS + 0.1)
    await reconciler.settled()
    assert fake.subscriptions == 2
    assert await ours(fake) == {net("172.20.0.0/16")}


async def test_a_monitor_that_cannot_be_opened_fails_the_start(nursery: trio.Nursery) -> None:
    class NoMonitor(FakeRouteManager):
        def monitor(self) -> AbstractAsyncContextManager[AsyncIterator[RouteEvent]]:  # type: ignore[override]
            raise RouteOperationError("open route monitor", None, errno.EPERM, "Operation not permitted")

    with pytest.raises(RouteOperationError):
        await nursery.start(RouteReconciler(NoMonitor(), PolicyConfig()).run)


async def test_one_refused_route_does_not_hold_up_the_rest_of_its_batch_and_is_retried(
    fake: FakeRouteManager, reconciler: RouteReconciler, autojump_clock: trio.testing.MockClock
) -> None:
    reconciler.set_networks([])
    await reconciler.settled()
    fake.refuse[net("10.2.0.0/16")] = errno.ENETUNREACH
    reconciler.set_networks([network("a", "10.1.0.0/16", "10.2.0.0/16", "fd00:a::/64")])
    await reconciler.settled()
    assert fake.batches == [("add", (net("10.1.0.0/16"), net("10.2.0.0/16"), net("fd00:a::/64")))]
    assert await ours(fake) == {net("10.1.0.0/16"), net("fd00:a::/64")}
    reason = f"could not install: refused by the test (errno {errno.ENETUNREACH})"
    failed = SubnetStatus("a", net("10.2.0.0/16"), installed=False, reason=reason, decision="install-failed")
    assert failed in reconciler.status().subnets
    assert reconciler.status().last_error == (
        f"add route 10.2.0.0/16 failed: refused by the test (errno {errno.ENETUNREACH})"
    )
    del fake.refuse[net("10.2.0.0/16")]
    fake.batches.clear()
    await trio.sleep(RETRY_AFTER_FAILURE_SECONDS + 0.1)
    assert fake.batches == [("add", (net("10.2.0.0/16"),))]
    assert await ours(fake) == {net("10.1.0.0/16"), net("10.2.0.0/16"), net("fd00:a::/64")}
    assert set(reconciler.status().subnets) == {
        SubnetStatus("a", subnet, installed=True)
        for subnet in (net("10.1.0.0/16"), net("10.2.0.0/16"), net("fd00:a::/64"))
    }
    assert reconciler.status().last_error is None


async def test_every_refusal_of_a_pass_is_reported_per_subnet_and_in_the_error(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    fake.refuse[net("10.1.0.0/16")] = errno.EACCES
    fake.refuse[net("10.3.0.0/16")] = errno.ENETDOWN
    reconciler.set_networks([network("a", "10.1.0.0/16"), network("b", "10.2.0.0/16"), network("c", "10.3.0.0/16")])
    await reconciler.settled()
    status = reconciler.status()
    assert {(subnet.network, subnet.installed, subnet.reason) for subnet in status.subnets} == {
        ("a", False, f"could not install: refused by the test (errno {errno.EACCES})"),
        ("b", True, None),
        ("c", False, f"could not install: refused by the test (errno {errno.ENETDOWN})"),
    }
    assert "10.1.0.0/16" in (status.last_error or "")
    assert "10.3.0.0/16" in (status.last_error or "")


async def test_a_refused_delete_does_not_keep_the_other_deletes_from_happening(
    fake: FakeRouteManager, reconciler: RouteReconciler, autojump_clock: trio.testing.MockClock
) -> None:
    reconciler.set_networks([network("a", "10.1.0.0/16"), network("b", "10.2.0.0/16"), network("c", "10.3.0.0/16")])
    await reconciler.settled()
    fake.refuse[net("10.2.0.0/16")] = errno.EBUSY
    reconciler.set_networks([])
    await reconciler.settled()
    assert await ours(fake) == {net("10.2.0.0/16")}
    assert "delete route 10.2.0.0/16 failed" in (reconciler.status().last_error or "")
    del fake.refuse[net("10.2.0.0/16")]
    await trio.sleep(RETRY_AFTER_FAILURE_SECONDS + 0.1)
    assert await ours(fake) == set()
    assert reconciler.status().last_error is None


async def test_withdraw_removes_what_it_can_and_names_what_it_could_not(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    reconciler.set_networks([network("a", "10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16")])
    await reconciler.settled()
    fake.refuse[net("10.2.0.0/16")] = errno.EBUSY
    with pytest.raises(RouteOperationError, match=r"delete route 10\.2\.0\.0/16 failed"):
        await reconciler.withdraw()
    assert await ours(fake) == {net("10.2.0.0/16")}
    assert reconciler.status().routed == {net("10.2.0.0/16")}


async def test_a_pass_applies_its_plan_in_one_batch_per_kind_of_change(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    reconciler.set_networks([network("a", "10.1.0.0/16"), network("b", "10.2.0.0/16")])
    await reconciler.settled()
    fake.remove_other(net("10.1.0.0/16"))  # another program takes one away while the networks change
    reconciler.set_networks([network("a", "10.1.0.0/16"), network("c", "10.3.0.0/16"), network("d", "10.4.0.0/16")])
    await trio.testing.wait_all_tasks_blocked()
    await reconciler.settled()
    assert await ours(fake) == {net("10.1.0.0/16"), net("10.3.0.0/16"), net("10.4.0.0/16")}
    assert fake.batches[-3:] == [
        ("delete", (net("10.2.0.0/16"),)),
        ("add", (net("10.3.0.0/16"), net("10.4.0.0/16"))),
        ("replace", (net("10.1.0.0/16"),)),
    ]


subnet_sets = st.sets(
    st.one_of(
        st.builds(
            lambda a, p: ipaddress.IPv4Network((a, p), strict=False), st.integers(0, 2**32 - 1), st.integers(8, 32)
        ),
        st.builds(
            lambda a, p: ipaddress.IPv6Network((a, p), strict=False), st.integers(0, 2**128 - 1), st.integers(32, 128)
        ),
    ),
    max_size=12,
)


@given(subnet_sets, subnet_sets)
def test_plan_is_the_minimal_change_that_turns_installed_into_desired(
    desired: set[ipaddress.IPv4Network | ipaddress.IPv6Network],
    installed: set[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    plan = plan_changes(desired, installed)
    assert (installed - set(plan.delete)) | set(plan.add) == desired
    assert len(plan.add) + len(plan.delete) == len(desired ^ installed)  # nothing added or deleted needlessly
    assert len(set(plan.add)) == len(plan.add)
    assert len(set(plan.delete)) == len(plan.delete)
    for changes in (plan.add, plan.delete):
        assert list(changes) == sorted(changes, key=lambda subnet: (subnet.version, subnet))
    assert plan.empty == (desired == installed)


async def test_host_state_change_withdraws_a_route_and_reports_it_once(
    fake: FakeRouteManager, nursery: trio.Nursery
) -> None:
    withdrawn: list[Skipped] = []
    reconciler = RouteReconciler(fake, PolicyConfig(), on_withdrawn=withdrawn.append)
    await nursery.start(reconciler.run)
    reconciler.set_networks([network("a", "10.99.0.0/16"), network("b", "172.20.0.0/16")])
    await reconciler.settled()
    assert await ours(fake) == {net("10.99.0.0/16"), net("172.20.0.0/16")}
    # New Wi-Fi: its DNS server sits inside a container subnet.
    reconciler.set_host_state(HostState(dns_servers=(ipaddress.ip_address("10.99.0.53"),)))
    await reconciler.settled()
    reconciler.trigger()
    await reconciler.settled()
    assert await ours(fake) == {net("172.20.0.0/16")}
    assert [(skip.network, skip.reason) for skip in withdrawn] == [("a", SkipReason.DNS_SERVER)]
    statuses = {status.subnet: status for status in reconciler.status().subnets}
    assert statuses[net("10.99.0.0/16")].decision == "dns-server"
    # The DNS server goes away again: routed again.
    reconciler.set_host_state(HostState())
    await reconciler.settled()
    assert await ours(fake) == {net("10.99.0.0/16"), net("172.20.0.0/16")}


@pytest.mark.parametrize("vm_ipv6", [VmIpv6.ON, VmIpv6.OFF])
async def test_an_ipv6_route_waits_for_the_vm_to_say_and_is_never_added_then_withdrawn(
    fake: FakeRouteManager, reconciler: RouteReconciler, vm_ipv6: VmIpv6, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.reconcile"):
        reconciler.set_host_state(HostState(vm_ipv6=VmIpv6.UNKNOWN))
        reconciler.set_networks([network("a", "172.20.0.0/16", "fd00:a::/64")])
        await reconciler.settled()
        assert await ours(fake) == {net("172.20.0.0/16")}
        statuses = {status.subnet: status for status in reconciler.status().subnets}
        assert statuses[net("fd00:a::/64")].decision == "vm-ipv6-unknown"
        reconciler.set_host_state(HostState(vm_ipv6=vm_ipv6))
        await reconciler.settled()
    expected = {net("172.20.0.0/16"), net("fd00:a::/64")} if vm_ipv6 is VmIpv6.ON else {net("172.20.0.0/16")}
    assert await ours(fake) == expected
    assert all(kind == "add" for kind, _ in fake.batches), fake.batches
    assert caplog.records == []  # nothing was withdrawn


async def test_subnet_routed_by_dmnc_0_1_and_left_out_now_warns_once_naming_the_option(
    reconciler: RouteReconciler, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="dmnc.routes.reconcile"):
        reconciler.set_networks([network("public", "8.8.8.0/24")])
        await reconciler.settled()
        reconciler.trigger()
        await reconciler.settled()
    warnings = [record.message for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "network 'public' subnet 8.8.8.0/24 is not routed (dmnc 0.1 routed it): not a private range: outside "
        "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7 and the documentation ranges; "
        "allow it with --route-allow 8.8.8.0/24"
    ]


async def test_force_routes_warns_once(fake: FakeRouteManager, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.reconcile"):
        reconciler = RouteReconciler(fake, PolicyConfig(force=True))
        reconciler.set_policy(PolicyConfig(force=True))
    assert [record.message for record in caplog.records] == [FORCE_ROUTES_DEPRECATION]


class ShadowingFake(FakeRouteManager):
    """A fake whose kernel lookup answers through a policy rule for the subnets in `shadows`."""

    def __init__(self) -> None:
        super().__init__()
        self.shadows: dict[Destination, Shadow] = {}

    async def shadow_of(self, destination: Destination) -> Shadow | None:
        return self.shadows.get(destination)


async def test_a_shadowed_route_is_reported_with_rule_table_and_fix_and_cleared_when_the_rule_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = ShadowingFake()
    reconciler = RouteReconciler(fake, PolicyConfig())
    subnet = net("172.24.1.0/24")
    async with trio.open_nursery() as nursery:
        await nursery.start(reconciler.run)
        reconciler.set_networks([network("a", str(subnet))])
        await reconciler.settled()
        fake.shadows[subnet] = Shadow(5270, 52, "0.0.0.0/0 dev tailscale0")
        with caplog.at_level(logging.INFO):
            reconciler.trigger()
            await reconciler.settled()
        [status] = reconciler.status().subnets
        assert (status.decision, status.installed) == (DECISION_SHADOWED, False)
        assert status.reason == (
            "shadowed by rule 5270 -> table 52 (0.0.0.0/0 dev tailscale0); the route is in the main table, but that "
            "rule is evaluated before it: turn off what installed the rule (a VPN's exit node or full tunnel), or let "
            "the main table win for this subnet with `ip rule add to 172.24.1.0/24 lookup main pref N`, N smaller "
            "than that rule's priority"
        )
        assert await ours(fake) == {subnet}  # the route stays: it works again as soon as the rule goes
        assert [r.levelname for r in caplog.records if "is not used: shadowed" in r.getMessage()] == ["WARNING"]
        del fake.shadows[subnet]
        reconciler.trigger()
        await reconciler.settled()
        assert [(s.decision, s.installed) for s in reconciler.status().subnets] == [("routed", True)]
        nursery.cancel_scope.cancel()


async def test_a_malformed_network_is_counted_in_status_and_warned_about_once(
    reconciler: RouteReconciler, caplog: pytest.LogCaptureFixture
) -> None:
    odd = NetworkInfo("odd", "id-odd", "bridge", "local", False, malformed="IPAM config Subnet: not an IP subnet")
    with caplog.at_level(logging.INFO):
        reconciler.set_networks([odd, network("a", "172.20.0.0/16")])
        await reconciler.settled()
        reconciler.trigger()
        await reconciler.settled()
    status = reconciler.status()
    assert status.routed == {net("172.20.0.0/16")}
    assert status.skipped_networks == {"malformed": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "network 'odd' is not routed: malformed IPAM config: IPAM config Subnet: not an IP subnet; recreate the "
        "network with a valid subnet to route it"
    ]


async def test_a_next_hop_moves_its_familys_routes_in_place_and_back_without_counting_fights(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    hop = NextHop(ipaddress.ip_address("192.168.64.2"), "bridge100")
    reconciler.set_networks([network("a", "172.20.0.0/16", "fd00:a::/64")])
    await reconciler.settled()
    fake.operations.clear()
    for _ in range(MAX_RESTORES + 1):  # more moves than restores may be counted: a move is no fight
        reconciler.set_next_hop(4, hop)
        await reconciler.settled()
        assert {route.destination: route.gateway for route in await fake.list_ours()} == {
            net("172.20.0.0/16"): hop.gateway,
            net("fd00:a::/64"): None,
        }
        reconciler.set_next_hop(4, None)
        await reconciler.settled()
    assert {route.gateway for route in await fake.list_ours()} == {None}
    assert {operation.action for operation in fake.operations} == {"replace"}
    assert {operation.destination for operation in fake.operations} == {net("172.20.0.0/16")}
    assert reconciler.status().routed == {net("172.20.0.0/16"), net("fd00:a::/64")}


async def test_setting_the_same_next_hop_again_triggers_no_pass(
    fake: FakeRouteManager, reconciler: RouteReconciler
) -> None:
    reconciler.set_networks([network("a", "172.20.0.0/16")])
    await reconciler.settled()
    passes = reconciler.status().passes
    reconciler.set_next_hop(4, None)
    reconciler.set_next_hop(6, None)
    await reconciler.settled()
    assert reconciler.status().passes == passes


async def test_routes_the_kernel_drops_with_their_next_hop_go_through_the_tunnel_at_once_without_a_fight(
    fake: FakeRouteManager, reconciler: RouteReconciler, caplog: pytest.LogCaptureFixture
) -> None:
    hop = NextHop(ipaddress.ip_address("fd05::2"), "bridge100")
    reconciler.set_networks([network("a", "fd00:a::/64", "fd00:b::/64")])
    reconciler.set_next_hop(6, hop)
    await reconciler.settled()
    assert {route.gateway for route in await fake.list_ours()} == {hop.gateway}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dmnc.routes.reconcile"):
        fake.gateway_gone(hop.gateway)
        await wait_all_tasks_blocked_and_settled(reconciler)
    assert {route.gateway for route in await fake.list_ours()} == {None}
    assert fake.next_hop(6) is None
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert reconciler.status().routed == {net("fd00:a::/64"), net("fd00:b::/64")}
    assert reconciler.status().last_error is None


async def wait_all_tasks_blocked_and_settled(reconciler: RouteReconciler) -> None:
    await trio.testing.wait_all_tasks_blocked()
    await reconciler.settled()


async def test_routes_the_kernel_flushed_silently_with_their_link_are_added_through_the_tunnel_in_one_pass(
    fake: FakeRouteManager, reconciler: RouteReconciler, caplog: pytest.LogCaptureFixture
) -> None:
    hop = NextHop(ipaddress.ip_address("10.205.0.2"), "dh0")
    reconciler.set_networks([network("a", "172.20.0.0/16", "172.21.0.0/16")])
    reconciler.set_next_hop(4, hop)
    await reconciler.settled()
    # Linux flushes IPv4 routes through a vanished link without a notification; the next pass finds them missing.
    fake.unreachable_gateways.add(hop.gateway)
    for route in await fake.list_ours():
        fake.remove_other(route.destination)
    with caplog.at_level(logging.INFO, logger="dmnc.routes.reconcile"):
        reconciler.trigger()
        await reconciler.settled()
    assert {route.gateway for route in await fake.list_ours()} == {None}
    assert len(await fake.list_ours()) == 2
    assert fake.next_hop(4) is None
    assert reconciler.status().last_error is None
    assert "IPv4 routes via 10.205.0.2 dev dh0 are unreachable: they go through utun7" in caplog.messages
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
