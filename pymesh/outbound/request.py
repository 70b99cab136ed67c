"""What the routing core sees of a request: plain values, no I/O, no httpx.

Built once per request by the transport (or by ``mesh.route`` for a dry run); every
decision reads this and nothing else, so the sync, async and gRPC drivers share them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

__all__ = ["RequestInfo"]


@dataclass(slots=True, kw_only=True)
class RequestInfo:  # one per request; treat as read-only (a frozen dataclass costs ~3 µs more to build)
    method: str
    scheme: str  # "http" or "https"
    host: str  # lower-case, without port
    port: int | None  # the port the caller addressed (None: the scheme's default was implied)
    path: str  # ":path": the path with its query string, as sent
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ","
    source_ip: str = ""
    _query: Mapping[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def authority(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def path_only(self) -> str:
        """The path without its query string (what ``exact`` and ``regex`` uri matches see)."""
        q = self.path.find("?")
        return self.path if q < 0 else self.path[:q]

    @property
    def query(self) -> Mapping[str, str]:
        """Query parameters, first occurrence of each name winning, as Envoy matches them."""
        cached = self._query
        if cached is None:
            q = self.path.find("?")
            params: dict[str, str] = {}
            if q >= 0:
                for name, value in parse_qsl(self.path[q + 1 :], keep_blank_values=True):
                    params.setdefault(name, value)
            cached = self._query = params
        return cached

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 443 if self.scheme == "https" else 80

    def cookie(self, name: str) -> str | None:
        raw = self.headers.get("cookie")
        if not raw:
            return None
        for part in raw.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None
