"""Every mirror job either runs or has its on_drop called: refused, left queued at close, or
cancelled before its first step (each holds a circuit-breaker ticket until then)."""

from __future__ import annotations

import asyncio
import functools
import threading

from pymesh.outbound.mirror import AsyncMirror, ThreadMirror


def test_thread_mirror_drops_what_does_not_fit_and_what_is_left_at_close() -> None:
    gate = threading.Event()
    ran: list[int] = []
    dropped: list[int] = []
    mirror = ThreadMirror(capacity=1, workers=1)

    def job(i: int) -> None:
        gate.wait(5)
        ran.append(i)

    accepted = [mirror.submit(functools.partial(job, i), functools.partial(dropped.append, i)) for i in range(5)]
    # One job runs (blocked on the gate), one waits in the queue; the rest are refused at once.
    assert accepted.count(True) in (1, 2)
    assert mirror.dropped == accepted.count(False) == len(dropped)
    mirror._closed = True  # a closing transport refuses new jobs
    assert mirror.submit(lambda: ran.append(99), lambda: dropped.append(99)) is False
    gate.set()
    mirror.close()
    assert sorted(ran + dropped) == [0, 1, 2, 3, 4, 99]
    assert 99 not in ran


def test_async_mirror_cancelled_before_it_starts_is_dropped() -> None:
    ran: list[str] = []
    dropped: list[str] = []

    async def main() -> None:
        mirror = AsyncMirror(capacity=1)

        async def job() -> None:
            ran.append("a")

        assert mirror.submit(job, lambda: dropped.append("a"))
        assert not mirror.submit(job, lambda: dropped.append("b"))  # over capacity
        await mirror.aclose()  # cancels "a" before the loop ever ran it

    asyncio.run(main())
    assert ran == []
    assert sorted(dropped) == ["a", "b"]


def test_async_mirror_job_that_ran_is_not_dropped() -> None:
    dropped: list[str] = []

    async def main() -> int:
        mirror = AsyncMirror(capacity=4)

        async def job() -> None:
            await asyncio.sleep(0)

        mirror.submit(job, lambda: dropped.append("x"))
        await asyncio.sleep(0.01)
        await mirror.aclose()
        return mirror.sent

    assert asyncio.run(main()) == 1
    assert dropped == []
