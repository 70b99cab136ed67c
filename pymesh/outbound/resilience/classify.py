"""THE classifier: one try's result -> an ``Outcome`` that retry, outlier detection, metrics and logs read.

A try ends in a response (``status`` and its ``headers``) or in an error the driver names:

========================  ==========================================================  ====  =====
``error``                 what the driver saw                                         flag  reply
========================  ==========================================================  ====  =====
``"connect-failure"``     TCP/TLS connect failed or timed out (nothing was sent)      UF    503
``"reset"``               the connection closed or was reset before response headers  UC    503
``"refused-stream"``      HTTP/2 ``REFUSED_STREAM`` (the server did not process it)   UR    503
``"timeout"``             the per-try timeout, or the route deadline, cut the try     UT    504
``"overflow"``            local circuit-breaker overflow: nothing was sent            UO    503
========================  ==========================================================  ====  =====

The flags and local-reply bodies are Envoy's (``StreamInfo`` response flags, router local
replies); ``LOCAL_REPLIES`` gives the driver the status and body to answer with when a try
that ended in an error is the final one. An upstream response carries no flag of its own.

The outlier-detection category follows Envoy's ``outlier_detection_impl.cc``:
``"ok"`` (any status below 500: resets the counters), ``"5xx"`` (a non-gateway 5xx),
``"gateway-error"`` (502/503/504), ``"local-origin"`` (connect failure, reset, refused stream,
timeout: counted as gateway errors unless ``splitExternalLocalOriginErrors``) and
``"ignored"`` (overflow: no upstream host was involved). A gRPC trailers-only response
(``grpc-status`` in the headers) of a non-5xx HTTP status is judged by the HTTP status Envoy
maps that gRPC code to (``Grpc::Utility::grpcToHttpStatus``), as Envoy's router does.

Header names are read lower-case (``headers.get("grpc-status")``); a case-insensitive mapping
such as ``httpx.Headers`` works as well, but each of its lookups scans every header, so a driver
holding raw ``(name, value)`` byte pairs should pass ``classified_headers(raw)`` instead: one
pass, and None (nothing to read) for the usual response.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "GRPC_TO_HTTP",
    "LOCAL_REPLIES",
    "OVERLOADED_HEADER",
    "ErrorKind",
    "Outcome",
    "OutlierCategory",
    "classified_headers",
    "classify",
]

ErrorKind = Literal["connect-failure", "reset", "refused-stream", "timeout", "overflow"]
OutlierCategory = Literal["ok", "5xx", "gateway-error", "local-origin", "ignored"]

_FLAGS: Final[Mapping[ErrorKind, str]] = {
    "connect-failure": "UF", "reset": "UC", "refused-stream": "UR", "timeout": "UT", "overflow": "UO",
}
_RESET = "upstream connect error or disconnect/reset before headers. reset reason: "
#: The local reply (status, body) Envoy sends for a flag when no upstream response is returned.
LOCAL_REPLIES: Final[Mapping[str, tuple[int, bytes]]] = {
    "UF": (503, (_RESET + "connection failure").encode()),
    "UC": (503, (_RESET + "connection termination").encode()),
    "UR": (503, (_RESET + "remote refused stream reset").encode()),
    "UT": (504, b"upstream request timeout"),
    "UO": (503, (_RESET + "overflow").encode()),
}
#: Added to the UO local reply, as Envoy does for circuit-breaker overflows.
OVERLOADED_HEADER: Final = ("x-envoy-overloaded", "true")

#: gRPC status code -> the HTTP status Envoy judges it by (google.rpc.Code's mapping).
GRPC_TO_HTTP: Final[Mapping[int, int]] = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one try ended. Build it with ``classify``; never mutate it."""

    status: int | None  # the upstream response status; None when there was no response
    error: ErrorKind | None  # why there was no response
    flag: str  # Envoy response flag ("UF", "UC", "UR", "UT", "UO"), "" for an upstream response
    outlier: OutlierCategory
    grpc_status: int | None = None  # from a grpc-status response header (trailers-only responses)
    ratelimited: bool = False  # the response carries x-envoy-ratelimited

    @property
    def success(self) -> bool:
        """A response below 500 (gRPC: judged by its mapped status); what metrics count as success."""
        return self.outlier == "ok"

    @property
    def reply(self) -> tuple[int, bytes] | None:
        """The local reply (status, body) for an outcome without a response; None for a response."""
        return LOCAL_REPLIES.get(self.flag) if self.error is not None else None


def classify(status: int | None, headers: Mapping[str, str] | None, error: ErrorKind | None) -> Outcome:
    """Classify a response (``status``, ``headers``) or a failure (``error``; status and headers None)."""
    if error is not None:
        return _ERRORS[error]
    if status is None:
        raise ValueError("classify() needs a status or an error")
    grpc: int | None = None
    limited = False
    if headers:
        raw = headers.get("grpc-status")
        if raw is not None and raw.strip().isdigit():
            grpc = int(raw)
        limited = headers.get("x-envoy-ratelimited") is not None
    if grpc is None and not limited:
        plain = _PLAIN.get(status)
        if plain is not None:
            return plain  # the common case: one shared, precomputed Outcome per status
    code = GRPC_TO_HTTP.get(grpc, 500) if grpc is not None and status < 500 else status
    return Outcome(status, None, "", _category(code), grpc, limited)


def classified_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """The response headers ``classify`` reads (grpc-status, x-envoy-ratelimited) from raw pairs."""
    found: dict[str, str] | None = None
    for name, value in raw:
        if len(name) in _WANTED_LENGTHS and (key := name.lower()) in _WANTED:
            if found is None:
                found = {}
            found[_WANTED[key]] = value.decode("latin-1")
    return found


_WANTED: Final[Mapping[bytes, str]] = {b"grpc-status": "grpc-status", b"x-envoy-ratelimited": "x-envoy-ratelimited"}
_WANTED_LENGTHS: Final = frozenset(len(name) for name in _WANTED)


def _category(code: int) -> OutlierCategory:
    if code < 500:
        return "ok"
    return "gateway-error" if code in (502, 503, 504) else "5xx"


_ERRORS: Final[Mapping[ErrorKind, Outcome]] = {
    kind: Outcome(None, kind, flag, "ignored" if kind == "overflow" else "local-origin")
    for kind, flag in _FLAGS.items()
}
_PLAIN: Final[Mapping[int, Outcome]] = {s: Outcome(s, None, "", _category(s)) for s in range(100, 600)}
