"""The mesh's timeouts as deadlines, not per-read limits.

httpx and httpcore time each socket operation on its own, so an upstream that drips its
response head one byte at a time never trips a read timeout. A route ``timeout`` (and a
``perTryTimeout``) bounds the whole exchange, as Envoy's timers do: the try's deadline
travels in the request extensions under ``DEADLINE_KEY``; the sync engine puts it in a
context variable for the network stream below to read, and the asyncio engine reads it
itself. Each socket operation then waits at most until the deadline. The response body,
read later by the caller at its own pace, is timed per read again, as httpx times it.
"""

from __future__ import annotations

import ssl
import time
import typing
from collections.abc import Iterable
from contextvars import ContextVar

import httpcore

__all__ = ["DEADLINE_KEY", "DeadlineBackend", "active", "bounded"]

DEADLINE_KEY = "pymesh.deadline"  # monotonic seconds; absent: no mesh timeout on this try

#: The deadline of the exchange this thread (or task) is in, while the sync engine sends it.
active: ContextVar[float | None] = ContextVar("pymesh_deadline", default=None)


def bounded(timeout: float | None, deadline: float | None) -> float | None:
    """``timeout`` capped at what is left before ``deadline``; ReadTimeout once it has passed."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0.0:
        raise httpcore.ReadTimeout("the mesh's timeout expired")
    return left if timeout is None or left < timeout else timeout


class _Stream(httpcore.NetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, bounded(timeout, active.get()))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, bounded(timeout, active.get()))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, bounded(timeout, active.get())))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, with every socket operation bounded by the ``active`` deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, bounded(timeout, active.get()), local_address,
                                               socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, bounded(timeout, active.get()), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)
