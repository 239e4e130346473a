"""One render worker with per-client "latest request wins" coalescing.

Dragging a slider fires a request per pixel of movement. Rendering them all would queue dozens of
forward passes and leave the image seconds behind the hand, so jobs carry a *key* (the client's id):
a job waiting under a key is replaced — its future resolved with :data:`SUPERSEDED` — by the next job
under the same key. Only the job already running is finished. Jobs without a key (labelling, saving)
are never dropped and run in arrival order. One thread runs everything, so renders never compete for
the CPU (or GPU) with each other, and a label never changes a file mid-render.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from itertools import count
from typing import Any, Callable, Hashable

#: the result of a job that a newer job under the same key replaced before it started
SUPERSEDED = object()


class LatestWins:
    """A single worker thread; :meth:`submit` returns a :class:`~concurrent.futures.Future` per job."""

    def __init__(self, name: str = "latentdirs-explore") -> None:
        self._waiting: OrderedDict[Hashable, tuple[Callable[[], Any], Future[Any]]] = OrderedDict()
        self._condition = threading.Condition()
        self._closed = False
        self._unique = count()  # keys of jobs that must not coalesce
        self.started = 0  # jobs run so far (the benchmark and tests read it)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], Any], key: Hashable | None = None) -> Future[Any]:
        """Queue ``job``; with ``key``, replace (and resolve as :data:`SUPERSEDED`) the job waiting under it."""
        future: Future[Any] = Future()
        with self._condition:
            if self._closed:
                raise RuntimeError("the render worker is closed")
            slot = ("job", next(self._unique)) if key is None else ("client", key)
            replaced = self._waiting.pop(slot, None)
            self._waiting[slot] = (job, future)  # at the end: the newest request renders last
            self._condition.notify()
        if replaced is not None:
            replaced[1].set_result(SUPERSEDED)
        return future

    def close(self) -> None:
        """Stop after the running job; waiting jobs resolve as :data:`SUPERSEDED`."""
        with self._condition:
            self._closed = True
            waiting = list(self._waiting.values())
            self._waiting.clear()
            self._condition.notify()
        for _, future in waiting:
            future.set_result(SUPERSEDED)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiting and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                _, (job, future) = self._waiting.popitem(last=False)
                self.started += 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as error:  # handed to the request that asked; the worker goes on
                future.set_exception(error)


__all__ = ["LatestWins", "SUPERSEDED"]
