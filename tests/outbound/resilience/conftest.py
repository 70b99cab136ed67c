"""Test doubles for the resilience core: a clock the test moves, a random source it scripts."""

from __future__ import annotations

import random
from collections.abc import Iterable


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedRandom(random.Random):
    """``random()`` returns the scripted values in order; anything else is a test bug."""

    def __init__(self, values: Iterable[float]) -> None:
        super().__init__(0)
        self._values = list(values)
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        return self._values.pop(0)


class NoRandom(random.Random):
    """Fails the test if a decision draws at all."""

    def random(self) -> float:
        raise AssertionError("no draw expected")
