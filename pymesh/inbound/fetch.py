"""One bounded HTTP GET for the inbound caches that fetch in the background (JWKS, Mixer lists)."""

from __future__ import annotations

from typing import Any

__all__ = ["bounded_get"]


def bounded_get(url: str, timeout: float, *, limit: int, verify: Any = True, accept: str | None = None) -> bytes:
    """The body of a 200 answer to ``GET url``; ``OSError`` for any other status, or a body over
    ``limit`` bytes (never a truncated one). No redirects: a cache fetches exactly what it was told."""
    import httpx  # only the fetching thread needs it

    headers = {"accept": accept} if accept else {}
    with httpx.Client(timeout=timeout, follow_redirects=False, verify=verify) as client, \
            client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            raise OSError(f"{url} answered {response.status_code}")
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise OSError(f"{url} sent more than {limit} bytes")
        return bytes(body)
