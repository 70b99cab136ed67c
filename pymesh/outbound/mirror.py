"""Fire-and-forget mirroring on a bounded worker.

A mirror must never delay or fail the caller, and a flood of mirrors must be dropped,
not queued without bound: the sync worker is a fixed queue drained by daemon threads;
the async one caps the number of mirror tasks in flight. ``dropped`` counts what was
shed. A job holds resources from the moment it is submitted (a circuit-breaker ticket, a
balancer's active count), so every job either runs or has its ``on_drop`` called: when it is
refused, left in the queue at close, or cancelled before it starts.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Callable

__all__ = ["AsyncMirror", "ThreadMirror"]

log = logging.getLogger("pymesh.mirror")


_Job = tuple[Callable[[], None], Callable[[], None]]  # (run, on_drop)


class ThreadMirror:
    def __init__(self, *, capacity: int = 256, workers: int = 2) -> None:
        self.capacity = capacity
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=capacity)
        self._threads: list[threading.Thread] = []
        self._workers = workers
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0
        self.sent = 0

    def submit(self, job: Callable[[], None], on_drop: Callable[[], None]) -> bool:
        if not self._closed:
            self._start()
            try:
                self._queue.put_nowait((job, on_drop))
                return True
            except queue.Full:
                pass
        with self._lock:
            self.dropped += 1
        on_drop()
        return False

    def _start(self) -> None:
        if self._threads:
            return
        with self._lock:
            if not self._threads:
                for i in range(self._workers):
                    t = threading.Thread(target=self._run, name=f"pymesh-mirror-{i}", daemon=True)
                    t.start()
                    self._threads.append(t)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                item[0]()
                with self._lock:  # two workers count
                    self.sent += 1
            except Exception as exc:  # a failing mirror is the mirror's problem only
                log.debug("mirror request failed: %r", exc)

    def close(self, timeout: float = 1.0) -> None:
        self._closed = True
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout)
        while True:  # what no worker took (or, with no worker started, everything queued)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1]()


class AsyncMirror:
    def __init__(self, *, capacity: int = 256) -> None:
        self.capacity = capacity
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.sent = 0

    def submit(self, job: Callable[[], Awaitable[None]], on_drop: Callable[[], None]) -> bool:
        if len(self._tasks) >= self.capacity:
            self.dropped += 1
            on_drop()
            return False
        started = [False]
        task = asyncio.get_running_loop().create_task(self._run(job, started))

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not started[0]:  # cancelled before its first step: the job never ran to release
                on_drop()

        self._tasks.add(task)
        task.add_done_callback(done)
        return True

    async def _run(self, job: Callable[[], Awaitable[None]], started: list[bool]) -> None:
        started[0] = True
        try:
            await job()
            self.sent += 1
        except Exception as exc:
            log.debug("mirror request failed: %r", exc)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
