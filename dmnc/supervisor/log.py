"""The supervisor's log component and event feed: every module of the package logs as `supervisor`, and what users
should see in `dmnc status --follow` is logged and broadcast by one function."""

from __future__ import annotations

import logging

from dmnc.control import EventBroadcaster

logger = logging.getLogger("dmnc.supervisor")


def announce(events: EventBroadcaster, kind: str, message: str, level: int = logging.INFO) -> None:
    """Log `message` and put it on the live event feed as `kind` ("area.what")."""
    logger.log(level, "%s", message)
    events.emit(kind, message)
