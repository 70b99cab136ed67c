"""Mixer ``listchecker`` lists fetched from a ``providerUrl``, as Istio 1.x's list adapter kept them.

The adapter fetched the list once when it was built, then every ``refreshInterval``; a list
not refreshed within ``ttl`` was dropped, and with no list every check failed. Here each
``ProviderList`` does the same on a daemon thread, so a check never waits on the network:
it reads the last list (one entry per line, empty lines skipped, ``overrides`` consulted as
well) or, when there is none, fails closed. ``ListRegistry`` keeps lists across config
reloads while their URL and timing stay the same.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable

import httpx

from pymesh.forking import after_fork_in_child
from pymesh.inbound.fetch import bounded_get

__all__ = ["MAX_LIST_BYTES", "ListRegistry", "ProviderList"]

log = logging.getLogger("pymesh.inbound")

MAX_LIST_BYTES = 4 * 1024 * 1024  # a list larger than this is a failed fetch, never a partial one

Fetch = Callable[[str, float], bytes]


_http_fetch: Fetch = functools.partial(bounded_get, limit=MAX_LIST_BYTES)


class ProviderList:
    """One fetched list; ``entries()`` is the current one, or None (never fetched, or past its ttl)."""

    def __init__(self, url: str, *, refresh_interval: float, ttl: float, fetch: Fetch = _http_fetch,
                 clock: Callable[[], float] = time.monotonic, background: bool = True) -> None:
        self.url = url
        self.refresh_interval = max(refresh_interval, 1.0)
        self.ttl = max(ttl, self.refresh_interval)
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: tuple[str, ...] | None = None
        self._fetched_at = 0.0
        self._digest = b""
        self.last_error: str | None = None
        self._matchers: dict[str, tuple[tuple[str, ...], Callable[[str], bool]]] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._start()
            after_fork_in_child(self._after_fork)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"pymesh-list {self.url}", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # the refresh thread did not come along: start another
        ready, self._ready = self._ready, threading.Event()
        if ready.is_set():
            self._ready.set()
        if not self._stop.is_set():
            self._stop = threading.Event()
            self._start()

    def entries(self) -> tuple[str, ...] | None:
        with self._lock:
            if self._entries is not None and self._clock() - self._fetched_at > self.ttl:
                log.warning("pymesh: list from %s not refreshed within its ttl; dropped", self.url)
                self._entries = None  # as the adapter purged it: checks now fail closed
            return self._entries

    @property
    def ready(self) -> bool:
        """The first fetch has finished (well or not)."""
        return self._ready.is_set()

    def matcher(self, entry_type: str) -> Callable[[str], bool] | None:
        """Membership in the current list for ``entry_type`` (built once per fetched list); None: no list."""
        entries = self.entries()
        if entries is None:
            return None
        cached = self._matchers.get(entry_type)
        if cached is not None and cached[0] is entries:
            return cached[1]
        test = _membership(entry_type, entries, self.url)
        self._matchers[entry_type] = (entries, test)
        return test

    def wait(self, timeout: float) -> bool:
        """Block until the first fetch finished (well or not); True if it did within ``timeout``."""
        return self._ready.wait(timeout)

    def refresh(self) -> None:
        """Fetch now; on failure the last list stays until its ttl runs out."""
        try:
            body = self._fetch(self.url, min(self.refresh_interval, 10.0))
        except (OSError, httpx.HTTPError) as exc:
            with self._lock:
                self.last_error = str(exc)
            log.warning("pymesh: could not fetch list from %s: %s", self.url, exc)
            return
        finally:
            self._ready.set()
        digest = hashlib.sha256(body).digest()
        lines = tuple(line for line in body.decode("utf-8", "replace").split("\n") if line)
        with self._lock:
            self._fetched_at = self._clock()
            self.last_error = None
            if digest != self._digest or self._entries is None:
                self._entries, self._digest = lines, digest

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.refresh_interval)


def _membership(entry_type: str, entries: tuple[str, ...], url: str) -> Callable[[str], bool]:
    if entry_type == "STRINGS":
        return frozenset(entries).__contains__
    if entry_type == "CASE_INSENSITIVE_STRINGS":
        upper = frozenset(e.upper() for e in entries)
        return lambda symbol: symbol.upper() in upper
    if entry_type == "REGEX":
        import re2  # RE2, as Mixer: linear time over client-supplied values

        patterns = []
        for e in entries:
            try:
                patterns.append(re2.compile(e))
            except re2.error:
                log.warning("pymesh: list from %s: %r is not a regex; skipped", url, e)
        return lambda symbol: any(p.search(symbol) for p in patterns)
    networks = []
    for e in entries:
        try:  # as the adapter: a bare address is a /32, even an IPv6 one
            networks.append(ipaddress.ip_network(e if "/" in e else f"{e}/32", strict=False))
        except ValueError:
            log.warning("pymesh: list from %s: %r is not an IP address or range; skipped", url, e)

    def contains(symbol: str) -> bool:
        address = ipaddress.ip_address(symbol)
        return any(address in net for net in networks if net.version == address.version)
    return contains


class ListRegistry:
    """The provider lists of one middleware, kept across snapshots while URL and timing hold."""

    def __init__(self, **options: object) -> None:
        self._options = options
        self._lists: dict[tuple[str, float, float], ProviderList] = {}
        self._lock = threading.Lock()

    def get(self, url: str, *, refresh_interval: float, ttl: float) -> ProviderList:
        key = (url, refresh_interval, ttl)
        with self._lock:
            found = self._lists.get(key)
            if found is None:
                found = self._lists[key] = ProviderList(url, refresh_interval=refresh_interval, ttl=ttl,
                                                        **self._options)  # type: ignore[arg-type]
            return found

    def retain(self, used: Iterable[ProviderList]) -> None:
        keep = {id(x) for x in used}
        with self._lock:
            for key, item in list(self._lists.items()):
                if id(item) not in keep:
                    item.close()
                    del self._lists[key]

    def close(self) -> None:
        self.retain(())
