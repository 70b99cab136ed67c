"""pymesh's exceptions, in one place.

    MeshError
    ├── ConfigError (also ValueError)     bad config; ``.issues`` lists every finding
    ├── NoRouteError (also LookupError)   ``mesh.route()`` found no route for a request
    ├── CertificateError (also ValueError)        a certificate file or PEM is unusable (pymesh.security)
    ├── PeerVerificationError (also ValueError)   a peer's SVID failed SPIFFE verification (pymesh.security)
    └── MeshRequestError (also httpx.RequestError)   a request failed the way a sidecar fails it;
        │                                            raised instead of the response with raise_errors=True
        ├── RouteNotFoundError (also NoRouteError)    404 NR, or 502 under REGISTRY_ONLY
        ├── NoHealthyUpstreamError (also httpx.ConnectError)  503 UH / NC
        ├── UpstreamConnectError (also httpx.ConnectError)    503 UF / UC
        ├── UpstreamTimeoutError (also httpx.TimeoutException) 504 UT
        └── UpstreamOverflowError (also httpx.PoolTimeout)    503 UO: a connection-pool limit

Later parts add their errors under ``MeshError`` here, mixing in the httpx class an
existing handler would catch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import httpx

__all__ = [
    "ConfigError",
    "Issue",
    "MeshError",
    "MeshRequestError",
    "NoHealthyUpstreamError",
    "NoRouteError",
    "RouteNotFoundError",
    "UpstreamConnectError",
    "UpstreamOverflowError",
    "UpstreamTimeoutError",
]

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Issue:
    """One finding about the config: where it is and what is wrong with it."""

    severity: Severity
    message: str
    file: str = "<string>"
    document: int | None = None  # 0-based index of the YAML document in its file
    kind: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # e.g. "spec.http[0].route[1].weight"
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    @property
    def location(self) -> str:
        """``file:line:col``, as editors and compilers print it."""
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    @property
    def resource(self) -> str:
        """``Kind namespace/name`` of the document, when known."""
        if not self.kind:
            return ""
        ident = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {ident}".strip()

    def __str__(self) -> str:
        parts = [self.location]
        if self.document is not None:
            parts.append(f"document {self.document}")
        if self.resource:
            parts.append(self.resource)
        if self.path:
            parts.append(self.path)
        head = ": ".join(parts)
        tag = "" if self.severity == "error" else "warning: "
        return f"{head}: {tag}{self.message}"


class MeshError(Exception):
    """Root of every error pymesh raises on purpose."""


class ConfigError(MeshError, ValueError):
    """The config is invalid; nothing of it was applied.

    ``issues`` holds every error found (not only the first) and the warnings that came
    with them.
    """

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        errors = [i for i in self.issues if i.severity == "error"]
        shown = errors or list(self.issues)
        head = f"{len(errors)} error(s) in mesh config" if errors else "mesh config rejected"
        lines = [str(i) for i in shown[:20]]
        if len(shown) > 20:
            lines.append(f"... and {len(shown) - 20} more")
        super().__init__(head + ":\n  " + "\n  ".join(lines))

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity == "error")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[tuple[Issue, ...]]]:
        # args holds the rendered message, not the issues: rebuild from the issues so the
        # error survives pickling (multiprocessing, concurrent.futures, pytest-xdist).
        return (type(self), (self.issues,))


class NoRouteError(MeshError, LookupError):
    """No route in the mesh serves the request (Envoy would answer 404 NR or 502)."""


class MeshRequestError(MeshError, httpx.RequestError):
    """A request the mesh answered itself with a failure; ``status`` and ``flags`` say which."""

    def __init__(self, message: str, *, request: httpx.Request | None = None, status: int = 503,
                 flags: str = "") -> None:
        httpx.RequestError.__init__(self, message, request=request)
        self.status = status
        self.flags = flags


class RouteNotFoundError(MeshRequestError, NoRouteError):
    """No route: a VirtualService owns the host but nothing matched (NR), or REGISTRY_ONLY."""


class NoHealthyUpstreamError(MeshRequestError, httpx.ConnectError):
    """The destination has no endpoint to send to (UH), or its subset is not defined (NC)."""


class UpstreamConnectError(MeshRequestError, httpx.ConnectError):
    """The upstream could not be reached (UF) or reset before answering (UC)."""


class UpstreamTimeoutError(MeshRequestError, httpx.TimeoutException):
    """The route timeout (or the last per-try timeout) expired (504 UT)."""


class UpstreamOverflowError(MeshRequestError, httpx.PoolTimeout):
    """A DestinationRule connection-pool limit was full (503 UO); never queued, never retried."""
