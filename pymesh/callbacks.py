"""Bound methods to call later, held weakly: registering one does not keep its object alive."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

__all__ = ["WeakCallbacks"]


class WeakCallbacks:
    __slots__ = ("_lock", "_refs")

    def __init__(self) -> None:
        self._refs: list[weakref.WeakMethod[Callable[[], None]]] = []
        self._lock = threading.Lock()

    def add(self, method: Callable[[], None]) -> None:
        """Remember the bound ``method``; the dead ones are dropped as new ones come."""
        ref = weakref.WeakMethod(method)
        with self._lock:
            self._refs = [r for r in self._refs if r() is not None]
            self._refs.append(ref)

    def call(self, *, forget: bool = False) -> None:
        """Call each method whose object still lives, in the order added; ``forget``: then drop them all."""
        with self._lock:
            refs = list(self._refs)
            if forget:
                self._refs = []
        for ref in refs:
            method = ref()
            if method is not None:
                method()

    def after_fork(self) -> None:
        """In a forked child: a thread of the parent may have held the lock at the fork."""
        self._lock = threading.Lock()
