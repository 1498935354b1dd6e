"""One trio run for the whole life of an ops-tier mount, as the daemon has: the real
read-ahead and write-behind queue run in its nursery, and every call the test makes runs
inside it (from the test's thread, through trio.from_thread)."""

from __future__ import annotations

import threading

import trio


class Serving:
    def __init__(self, ops) -> None:
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(ops,), daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._token is None:
            raise RuntimeError(f"the serving loop did not start: {self._error!r}")

    def _main(self, ops) -> None:
        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                # What StagingOperations.start does, without the auto-commit loop: the
                # tests drive auto-commits themselves, at the times they choose.
                ops.reads.start(nursery)
                ops.writeback.start(nursery)
                self._token = trio.lowlevel.current_trio_token()
                self._scope = nursery.cancel_scope
                self._ready.set()
                await trio.sleep_forever()
        try:
            trio.run(serve)
        except BaseException as e:  # reported by __init__ or stop()
            self._error = e
            self._ready.set()

    def call(self, fn, *args):
        """``await fn(*args)`` inside the serving run; its result or exception comes back."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        """Cancel the run (as SIGTERM does): the queue applies what it holds, then ends."""
        if self._scope is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(60)
        if self._error is not None:
            raise self._error
