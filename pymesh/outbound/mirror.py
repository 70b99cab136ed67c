"""Fire-and-forget mirroring on a bounded worker.

A mirror must never delay or fail the caller, and a flood of mirrors must be dropped,
not queued without bound: the sync worker is a fixed queue drained by daemon threads;
the async one caps the number of mirror tasks in flight. ``dropped`` counts what was
shed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Callable

__all__ = ["AsyncMirror", "ThreadMirror"]

log = logging.getLogger("pymesh.mirror")


class ThreadMirror:
    def __init__(self, *, capacity: int = 256, workers: int = 2) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=capacity)
        self._threads: list[threading.Thread] = []
        self._workers = workers
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0
        self.sent = 0

    def submit(self, job: Callable[[], None]) -> bool:
        if self._closed:
            return False
        self._start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            return False
        return True

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
            job = self._queue.get()
            if job is None:
                return
            try:
                job()
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


class AsyncMirror:
    def __init__(self, *, capacity: int = 256) -> None:
        self._capacity = capacity
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.sent = 0

    def submit(self, job: Callable[[], Awaitable[None]]) -> bool:
        if len(self._tasks) >= self._capacity:
            self.dropped += 1
            return False
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, job: Callable[[], Awaitable[None]]) -> None:
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
