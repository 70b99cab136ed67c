"""CUSTOM authorization: an HTTP external authorizer, as MeshConfig ``envoyExtAuthzHttp`` describes it.

:class:`ExtAuthz` is built once per provider from the MeshConfig ``extensionProviders``
entry. The decision logic is sans-I/O: :meth:`ExtAuthz.build` gives the check request,
:meth:`ExtAuthz.verdict` reads the authorizer's answer, :meth:`ExtAuthz.on_error` says what
a failure means; :meth:`ExtAuthz.check` (httpx sync) and :meth:`ExtAuthz.check_async`
(httpx async) are the two thin drivers.

As Envoy's HTTP ext_authz filter, configured by Istio:

- the check request reuses the method, goes to ``http://<service>:<port><pathPrefix><path>``
  (the normalized path and the query), with no body, carrying ``host``, ``content-length:
  0`` and the request headers named by ``includeRequestHeadersInCheck`` (exact, ``prefix*``,
  ``*suffix``), every value of a repeated header as its own line (CVE-2021-32777), plus
  ``includeAdditionalHeadersInCheck``;
- a 200 answer allows; ``headersToUpstreamOnAllow`` are copied into the request the app
  sees and ``headersToDownstreamOnAllow`` onto its response;
- any other answer denies with that status and body, and the ``headersToDownstreamOnDeny``
  (all of them when none are named);
- a failure (connection, timeout, ``timeout`` default 600 s as in Istio) denies with
  ``statusOnError`` (default 403) unless ``failOpen``.

The request body is never sent (``includeRequestBodyInCheck`` is not supported; a
provider that sets it is reported by :func:`provider_problems`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from pymesh.config.meshconfig import ExtensionProvider
from pymesh.config.types import parse_duration
from pymesh.inbound.authz_match import StringMatch
from pymesh.inbound.request import Denial, InboundRequest

__all__ = ["CheckRequest", "ExtAuthz", "ExtAuthzResult", "provider_problems"]

_MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class CheckRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ExtAuthzResult:
    """Allowed (with headers for the app's request and for its response) or denied."""

    allowed: bool
    denial: Denial | None = None
    upstream_headers: tuple[tuple[str, str], ...] = ()
    downstream_headers: tuple[tuple[str, str], ...] = ()


def _names(value: Any) -> StringMatch | None:
    if not value:
        return None
    return StringMatch([str(v) for v in value], lower=True)


def provider_problems(provider: ExtensionProvider) -> list[str]:
    """What pymesh cannot honour in an ``envoyExtAuthzHttp`` provider (empty: all of it)."""
    spec = provider.envoy_ext_authz_http
    if not isinstance(spec, dict):
        return [f"extension provider {provider.name!r} is not an envoyExtAuthzHttp provider"]
    problems = []
    if not spec.get("service") or not spec.get("port"):
        problems.append(f"extension provider {provider.name!r} needs service and port")
    if spec.get("includeRequestBodyInCheck"):
        problems.append(f"extension provider {provider.name!r}: includeRequestBodyInCheck is not supported; "
                        "the body is never sent")
    return problems


class ExtAuthz:
    """One HTTP ext_authz provider; ``client``/``async_client`` may be mesh clients (mTLS, routing)."""

    def __init__(self, provider: ExtensionProvider, *, client: httpx.Client | None = None,
                 async_client: httpx.AsyncClient | None = None) -> None:
        spec = provider.envoy_ext_authz_http
        if not isinstance(spec, dict):
            raise ValueError(f"extension provider {provider.name!r} is not an envoyExtAuthzHttp provider")
        self.name = provider.name
        self.base = f"http://{spec.get('service', '')}:{spec.get('port', '')}{spec.get('pathPrefix', '')}"
        self.timeout = parse_duration(str(spec["timeout"])) if spec.get("timeout") else 600.0
        self.fail_open = bool(spec.get("failOpen", False))
        self.status_on_error = int(spec.get("statusOnError") or 403)
        self._include = _names(spec.get("includeRequestHeadersInCheck") or spec.get("includeHeadersInCheck"))
        extra = spec.get("includeAdditionalHeadersInCheck") or {}
        self._additional = tuple((str(k).lower(), str(v)) for k, v in extra.items())
        self._to_upstream = _names(spec.get("headersToUpstreamOnAllow"))
        self._to_downstream_allow = _names(spec.get("headersToDownstreamOnAllow"))
        self._to_downstream_deny = _names(spec.get("headersToDownstreamOnDeny"))
        self._client = client
        self._async_client = async_client

    # -- sans-I/O ----------------------------------------------------------------------------------

    def build(self, request: InboundRequest, path: str, query: str = "") -> CheckRequest:
        headers: list[tuple[str, str]] = [("host", request.host), ("content-length", "0")]
        include = self._include
        if include is not None:
            headers += [(k, v) for k, v in request.headers if k not in ("host", "content-length") and include(k)]
        headers += self._additional
        target = f"{path}?{query}" if query else path
        return CheckRequest(request.method, self.base + target, tuple(headers))

    def verdict(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> ExtAuthzResult:
        if status >= 500:
            # Envoy: a 5xx from the authorizer is an error (statusOnError / failOpen), not its verdict.
            # It also covers the mesh client's own local replies for an unreachable authorizer.
            return self.on_error()
        lowered = [(k.lower(), v) for k, v in headers]
        if status == 200:
            return ExtAuthzResult(True, None, self._pick(lowered, self._to_upstream, none_means_all=False),
                                  self._pick(lowered, self._to_downstream_allow, none_means_all=False))
        passed = self._pick(lowered, self._to_downstream_deny, none_means_all=True)
        passed = tuple((k, v) for k, v in passed if k not in ("content-length", "transfer-encoding", "connection"))
        return ExtAuthzResult(False, Denial(status, body[:_MAX_BODY], passed))

    def on_error(self) -> ExtAuthzResult:
        if self.fail_open:
            return ExtAuthzResult(True)
        return ExtAuthzResult(False, Denial(self.status_on_error, b"", ()))

    @staticmethod
    def _pick(headers: Iterable[tuple[str, str]], names: StringMatch | None, *, none_means_all: bool,
              ) -> tuple[tuple[str, str], ...]:
        if names is None:
            return tuple(headers) if none_means_all else ()
        return tuple((k, v) for k, v in headers if names(k))

    # -- drivers -----------------------------------------------------------------------------------

    def check(self, request: InboundRequest, path: str, query: str = "") -> ExtAuthzResult:
        call = self.build(request, path, query)
        try:
            client = self._client or httpx.Client()
            try:
                with client.stream(call.method, call.url, headers=list(call.headers), timeout=self.timeout) as response:
                    body = b""
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > _MAX_BODY:
                            break  # what the denial can carry; the rest is never read into memory
            finally:
                if self._client is None:
                    client.close()
        except httpx.HTTPError:
            return self.on_error()
        return self.verdict(response.status_code, list(response.headers.multi_items()), body)

    async def check_async(self, request: InboundRequest, path: str, query: str = "") -> ExtAuthzResult:
        call = self.build(request, path, query)
        try:
            client = self._async_client or httpx.AsyncClient()
            try:
                async with client.stream(call.method, call.url, headers=list(call.headers),
                                         timeout=self.timeout) as response:
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > _MAX_BODY:
                            break
            finally:
                if self._async_client is None:
                    await client.aclose()
        except httpx.HTTPError:
            return self.on_error()
        return self.verdict(response.status_code, list(response.headers.multi_items()), body)

