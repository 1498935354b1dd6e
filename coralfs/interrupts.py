"""Signals during a commit: the commit either does not happen (the branch is unmoved and
the command says so) or it is reported as completed; never "killed" and landed anyway.

``interruptible()`` (entered by CLI commands that commit) turns SIGTERM, SIGINT and SIGHUP
into an ``Interrupted`` error raised in the main thread, so the command stops with a one-line
message and a non-zero status before anything is published. ``landing()`` wraps the step
that moves the ref: from its first line on, a signal no longer stops anything; it is
recorded in ``late()`` and the command reports the finished commit.

Python runs signal handlers in the main thread only, between bytecodes, so the state the
handler reads is set by the same thread that checks it: there is no window in which a
handler raises after the ref moved.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .objects.errors import CoralError

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Interrupted(CoralError):
    """A signal stopped a command before it published anything."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}: nothing was committed "
                         f"(the branch is unchanged)")


class _State:
    active = False
    landed = False
    late: list[int] = []


def _handler(signum: int, _frame) -> None:
    if _State.landed:
        _State.late.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """Signals raise Interrupted until a ``landing()`` starts (main thread only; elsewhere
    this does nothing, as Python cannot install handlers there)."""
    if threading.current_thread() is not threading.main_thread() or _State.active:
        yield
        return
    old = {s: signal.signal(s, _handler) for s in SIGNALS}
    _State.active, _State.landed, _State.late = True, False, []
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _State.active = False


@contextmanager
def landing() -> Iterator[None]:
    """The publishing step: once entered, signals are recorded, not raised (for the rest
    of the surrounding ``interruptible()``, so the result is still reported)."""
    _State.landed = True
    yield


def late() -> list[str]:
    """Names of the signals that arrived after the commit began landing."""
    return [signal.Signals(s).name for s in _State.late]
