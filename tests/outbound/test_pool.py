"""The endpoint pool's bookkeeping (``pool.py``): reuse, the cluster gate, waiters, give-ups, close."""

from __future__ import annotations

import threading

from pymesh.outbound.pool import CLOSED, OPEN, ConnectionGate, PoolState, ThreadWaiter


class FakeConn:
    """A connection stand-in: only whether it has expired matters to the bookkeeping."""

    def __init__(self, name: str, expired: bool = False) -> None:
        self.name = name
        self.is_expired = expired

    def expired(self) -> bool:
        return self.is_expired

    def __repr__(self) -> str:
        return self.name


def test_a_waiter_is_made_only_when_a_request_must_wait() -> None:
    made: list[ThreadWaiter] = []

    def make() -> ThreadWaiter:
        made.append(ThreadWaiter())
        return made[-1]

    state: PoolState[FakeConn] = PoolState(ConnectionGate(1))
    assert state.checkout(make)[0] is OPEN
    assert made == []
    assert state.checkout(make)[0] is made[0]


def test_a_returned_connection_is_reused_last_in_first_out() -> None:
    state: PoolState[FakeConn] = PoolState()
    assert state.checkout(ThreadWaiter) == (OPEN, [])
    assert state.checkout(ThreadWaiter) == (OPEN, [])
    a, b = FakeConn("a"), FakeConn("b")
    assert state.checkin(a, reusable=True) == []
    assert state.checkin(b, reusable=True) == []
    assert state.checkout(ThreadWaiter) == (b, [])
    assert state.stats() == (2, 1, 0)


def test_expired_idle_connections_are_handed_back_for_closing_and_uncounted() -> None:
    gate = ConnectionGate(2)
    state: PoolState[FakeConn] = PoolState(gate)
    state.checkout(ThreadWaiter)
    state.checkout(ThreadWaiter)
    old, fresh = FakeConn("old", expired=True), FakeConn("fresh")
    state.checkin(fresh, reusable=True)
    state.checkin(old, reusable=True)
    assert state.checkout(ThreadWaiter) == (fresh, [old])
    assert (state.stats()[0], gate.open) == (1, 1)


def test_the_gate_is_shared_and_each_endpoint_may_open_its_first_connection() -> None:
    gate = ConnectionGate(1)
    a: PoolState[FakeConn] = PoolState(gate)
    b: PoolState[FakeConn] = PoolState(gate)
    assert a.checkout(ThreadWaiter)[0] is OPEN
    assert b.checkout(ThreadWaiter)[0] is OPEN  # b has none: Envoy's per-host floor
    assert gate.open == 2
    waiter = ThreadWaiter()
    assert a.checkout(lambda: waiter)[0] is waiter  # a has one and the cluster is full: wait
    assert a.stats() == (1, 0, 1)


def test_a_closed_connection_gives_its_slot_to_the_longest_waiter() -> None:
    gate = ConnectionGate(1)
    state: PoolState[FakeConn] = PoolState(gate)
    state.checkout(ThreadWaiter)
    first, second = ThreadWaiter(), ThreadWaiter()
    state.checkout(lambda: first)
    state.checkout(lambda: second)
    broken = FakeConn("broken")
    assert state.checkin(broken, reusable=False) == [broken]
    assert (first.granted, second.granted) == (OPEN, None)
    assert (state.stats(), gate.open) == ((1, 0, 1), 1)


def test_a_reusable_connection_goes_straight_to_a_waiter() -> None:
    state: PoolState[FakeConn] = PoolState(ConnectionGate(1))
    state.checkout(ThreadWaiter)
    waiter = ThreadWaiter()
    state.checkout(lambda: waiter)
    conn = FakeConn("c")
    state.checkin(conn, reusable=True)
    assert waiter.granted is conn
    assert waiter.wait(0)
    assert state.stats() == (1, 0, 0)


def test_a_waiter_that_gives_up_leaves_nothing_behind() -> None:
    gate = ConnectionGate(1)
    state: PoolState[FakeConn] = PoolState(gate)
    state.checkout(ThreadWaiter)
    waiter = ThreadWaiter()
    state.checkout(lambda: waiter)
    assert not waiter.wait(0.01)
    assert state.abandon(waiter) == []
    assert state.stats() == (1, 0, 0)


def test_a_grant_that_races_a_give_up_is_handed_on() -> None:
    gate = ConnectionGate(1)
    state: PoolState[FakeConn] = PoolState(gate)
    state.checkout(ThreadWaiter)
    late, next_ = ThreadWaiter(), ThreadWaiter()
    state.checkout(lambda: late)
    state.checkout(lambda: next_)
    conn = FakeConn("c")
    state.checkin(conn, reusable=True)  # granted to `late` just as it times out
    assert state.abandon(late) == []
    assert next_.granted is conn  # not lost: the next waiter has it
    # An OPEN grant that races a give-up frees its slot for the next waiter.
    gate2 = ConnectionGate(1)
    state2: PoolState[FakeConn] = PoolState(gate2)
    state2.checkout(ThreadWaiter)
    w1, w2 = ThreadWaiter(), ThreadWaiter()
    state2.checkout(lambda: w1)
    state2.checkout(lambda: w2)
    state2.checkin(FakeConn("x"), reusable=False)
    assert w1.granted is OPEN
    state2.abandon(w1)
    assert w2.granted is OPEN
    assert (state2.stats()[0], gate2.open) == (1, 1)


def test_close_wakes_waiters_and_returns_idle_connections() -> None:
    gate = ConnectionGate(2)
    state: PoolState[FakeConn] = PoolState(gate)
    state.checkout(ThreadWaiter)
    state.checkout(ThreadWaiter)
    idle = FakeConn("idle")
    state.checkin(idle, reusable=True)
    waiter = ThreadWaiter()
    state.checkout(ThreadWaiter)  # takes `idle`
    assert state.checkout(lambda: waiter)[0] is waiter
    assert state.close() == []  # nothing idle now
    assert waiter.granted is CLOSED
    assert state.checkout(ThreadWaiter) == (CLOSED, [])
    late = FakeConn("late")
    assert state.checkin(late, reusable=True) == [late]  # returned after close: closed, not kept
    assert state.checkin(idle, reusable=True) == [idle]
    assert (state.stats(), gate.open) == ((0, 0, 0), 0)
    other: PoolState[FakeConn] = PoolState()
    other.checkout(ThreadWaiter)
    kept = FakeConn("kept")
    other.checkin(kept, reusable=True)
    assert other.close() == [kept]
    assert other.stats() == (0, 0, 0)


def test_counts_stay_exact_under_threads() -> None:
    gate = ConnectionGate(4)
    pools: list[PoolState[FakeConn]] = [PoolState(gate) for _ in range(3)]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(300):
                state = pools[(n + i) % 3]
                waiter = ThreadWaiter()
                lease: object = state.checkout(lambda w=waiter: w)[0]  # type: ignore[misc]
                if lease is waiter:
                    if not waiter.wait(5.0):
                        raise AssertionError("starved")
                    lease = waiter.granted
                conn = FakeConn(f"{n}-{i}") if lease is OPEN else lease
                assert isinstance(conn, FakeConn)
                state.checkin(conn, reusable=i % 7 != 0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:1]
    assert all(p.stats()[2] == 0 for p in pools)
    assert gate.open == sum(p.stats()[0] for p in pools)
    assert gate.open <= 4 + len(pools) - 1  # past the limit only by the floor: one each for pools that had none
