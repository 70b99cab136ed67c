"""One endpoint's connections: who gets which, and when a new one may open. No I/O here.

pymesh keeps its own pools instead of httpcore's ``ConnectionPool`` for two reasons:

- **Envoy's circuit breaker counts connections per cluster**, not per endpoint. A pool asks its
  cluster's ``ConnectionGate`` before opening a connection; a request that finds neither an
  idle connection nor room waits for one of its endpoint's connections (``http1MaxPendingRequests``
  bounds how many wait, at admission). As in Envoy's ``ConnPoolImplBase``, an endpoint that has
  no connection at all may always open one, so a request never waits on an endpoint that
  cannot serve it.
- **A connection belongs to exactly one request at a time.** httpcore's pool hands an idle
  connection to a waiting request but leaves it marked idle until that request's thread runs,
  and a concurrent pass may then judge it expired (idle and readable: the response has
  arrived) and close it under the request (encode/httpcore#1110). Here a connection leaves the
  idle stack under the lock and returns to it only when its response is closed, so nothing
  else can look at it meanwhile.

``PoolState.checkout`` gives a connection to reuse, ``OPEN`` (a new connection may be opened;
it is already counted) or a waiter the driver blocks on until ``checkin`` hands it a
connection or a slot. The sync and async drivers (``engine.py``) differ only in how they wait
and close. Idle connections are reused last-in first-out, so the fewest stay warm.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar, cast

__all__ = ["CLOSED", "OPEN", "Conn", "ConnectionGate", "PoolState", "ThreadWaiter", "Waiter"]


class _Token:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


OPEN: Final = _Token("OPEN")  # open a new connection: its slot is counted already
CLOSED: Final = _Token("CLOSED")  # the pool was closed while the request waited


class Conn(Protocol):
    def expired(self) -> bool: ...


C = TypeVar("C", bound=Conn)
W = TypeVar("W", bound="Waiter")


class Waiter:
    """What a waiting request blocks on. ``grant`` runs under the pool's lock and must not block;
    ``granted`` keeps the grant, so a waiter that gave up at the same moment can hand it back."""

    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted: object = None

    def grant(self, value: object) -> None:
        self.granted = value
        self._signal()

    def _signal(self) -> None:
        raise NotImplementedError


class ThreadWaiter(Waiter):
    __slots__ = ("_event",)

    def __init__(self) -> None:
        super().__init__()
        self._event = threading.Event()

    def _signal(self) -> None:
        self._event.set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)


class ConnectionGate:
    """A cluster's open connections against ``tcp.maxConnections`` (Envoy's ``max_connections``).

    Shared by every endpoint pool of the cluster, across clients; kept across config reloads.
    """

    __slots__ = ("_lock", "_open", "limit")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit  # None: unlimited (Istio's default)
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        return self._open

    def take(self, *, force: bool = False) -> bool:
        """Count one more connection if the limit allows it (or ``force``: an endpoint's first)."""
        with self._lock:
            if not force and self.limit is not None and self._open >= self.limit:
                return False
            self._open += 1
            return True

    def give(self) -> None:
        with self._lock:
            self._open -= 1


_UNGATED = ConnectionGate()


class PoolState(Generic[C]):
    """The bookkeeping of one endpoint's pool. Thread-safe; the lock is never held across I/O."""

    __slots__ = ("_count", "_gate", "_idle", "_lock", "_waiters", "closed")

    def __init__(self, gate: ConnectionGate | None = None) -> None:
        self._gate = gate or _UNGATED
        self._lock = threading.Lock()
        self._idle: list[C] = []
        self._count = 0  # this pool's connections: idle, busy and connecting
        self._waiters: deque[Waiter] = deque()
        self.closed = False

    def stats(self) -> tuple[int, int, int]:
        """(connections, idle, waiting requests)."""
        with self._lock:
            return self._count, len(self._idle), len(self._waiters)

    def checkout(self, waiter: Callable[[], W]) -> tuple[C | _Token | W, list[C]]:
        """A connection, ``OPEN`` or a new waiter (queued); plus expired idle connections to close.

        ``waiter`` makes the waiter only when one is needed: a ``threading.Event`` costs ~2 µs.
        """
        stale: list[C] = []
        with self._lock:
            if self.closed:
                return CLOSED, stale
            idle = self._idle
            while idle:
                conn = idle.pop()
                if not conn.expired():
                    return conn, stale
                stale.append(conn)
                self._forget()
            if self._slot():
                return OPEN, stale
            made = waiter()
            self._waiters.append(made)
            return made, stale

    def checkin(self, conn: C, *, reusable: bool) -> list[C]:
        """A request is done with ``conn``; returns the connections the driver must close."""
        with self._lock:
            if reusable and not self.closed:
                if self._waiters:
                    self._waiters.popleft().grant(conn)
                else:
                    self._idle.append(conn)
                return []
            self._forget()
            self._wake()
            return [conn]

    def abandon(self, waiter: Waiter) -> list[C]:
        """A waiting request gave up (timeout, cancellation): undo whatever it was granted."""
        with self._lock:
            try:
                self._waiters.remove(waiter)
                return []
            except ValueError:
                granted = waiter.granted  # granted just before it gave up
        if granted is OPEN:
            with self._lock:
                self._forget()
                self._wake()
            return []
        if granted is None or isinstance(granted, _Token):
            return []
        return self.checkin(cast(C, granted), reusable=True)

    def close(self) -> list[C]:
        """Refuse new checkouts, wake every waiter with ``CLOSED``; returns idle connections to close."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
            for _ in idle:
                self._forget()
            waiters, self._waiters = list(self._waiters), deque()
        for waiter in waiters:
            waiter.grant(CLOSED)
        return idle

    # -- under the lock ---------------------------------------------------------------------------

    def _slot(self) -> bool:
        if self._gate.take(force=self._count == 0):
            self._count += 1
            return True
        return False

    def _forget(self) -> None:
        self._count -= 1
        self._gate.give()

    def _wake(self) -> None:
        # A connection went away: its slot (or an endpoint's first) goes to the longest waiter.
        if self._waiters and not self.closed and self._slot():
            self._waiters.popleft().grant(OPEN)
