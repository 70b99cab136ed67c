"""``Mesh``: config sources in, one live snapshot out, and the factories users call."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymesh.callbacks import WeakCallbacks
from pymesh.config.load import Config, SourceSpec, Text, load
from pymesh.config.source import Limits, discover
from pymesh.errors import ConfigError, Issue
from pymesh.forking import after_fork_in_child
from pymesh.outbound.router import Router
from pymesh.outbound.runtime import Runtime
from pymesh.snapshot.snapshot import Snapshot, build
from pymesh.workload import Workload

if TYPE_CHECKING:
    import httpx

    from pymesh.outbound.decision import RouteDecision
    from pymesh.outbound.transport import AsyncMeshTransport, MeshTransport
    from pymesh.security.ca import MeshCA
    from pymesh.security.rotation import CertificateSource

__all__ = ["Mesh"]

log = logging.getLogger("pymesh")


@dataclass(frozen=True, slots=True)
class _Live:
    """The snapshot and its router, swapped together as one reference."""

    snapshot: Snapshot
    router: Router

    @classmethod
    def of(cls, snapshot: Snapshot) -> _Live:
        return cls(snapshot, Router(snapshot))


class Mesh:
    """An Istio mesh inside this process, configured by Istio YAML.

    Build one with ``Mesh.from_path``, ``Mesh.from_yaml`` or ``Mesh.from_env``. The
    config is validated whole; a ``ConfigError`` lists every problem and nothing is
    applied. ``reload()`` re-reads the sources and swaps the snapshot atomically; if
    the new config is bad the old one keeps serving.
    """

    def __init__(
        self,
        sources: Sequence[SourceSpec],
        *,
        workload: Workload | None = None,
        namespace: str | None = None,
        limits: Limits | None = None,
        ca: MeshCA | None = None,
        identity: CertificateSource | None = None,
    ) -> None:
        self._sources: tuple[SourceSpec, ...] = tuple(sources)
        self._ca = ca
        self._identity = identity
        self._identity_made = identity is not None
        ns = namespace or (workload.namespace if workload is not None else None) or "default"
        self._workload = workload if workload is not None else Workload(namespace=ns)
        self._namespace = ns
        self._limits = limits
        self._lock = threading.Lock()  # serialises reloads; readers never take it
        self._watcher: _Watcher | None = None
        self._closers = WeakCallbacks()
        self._runtime = Runtime()
        self._live = _Live.of(build(self._load(), self._workload))
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # The parent's counters, connection gates and random sequence stay the parent's: each
        # child draws its own weighted picks and jitter. Its watcher thread did not come along.
        self._lock = threading.Lock()
        self._closers.after_fork()
        self._runtime = Runtime()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            self.watch(watcher.interval)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_path(
        cls,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        workload: Workload | None = None,
        namespace: str | None = None,
        watch: bool = False,
        limits: Limits | None = None,
        ca: MeshCA | None = None,
        identity: CertificateSource | None = None,
    ) -> Mesh:
        """A file, a folder (recursively ``*.yaml``, ``*.yml``, ``*.json``) or a list of them."""
        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        mesh = cls([Path(p) for p in items], workload=workload, namespace=namespace, limits=limits, ca=ca,
                   identity=identity)
        if watch:
            mesh.watch()
        return mesh

    @classmethod
    def from_yaml(
        cls, text: str, *, workload: Workload | None = None, namespace: str | None = None, name: str = "<string>",
        ca: MeshCA | None = None, identity: CertificateSource | None = None,
    ) -> Mesh:
        """One string of (multi-document) YAML or JSON."""
        return cls([Text(text, name)], workload=workload, namespace=namespace, ca=ca, identity=identity)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Mesh:
        """``PYMESH_CONFIG`` (paths separated by ``os.pathsep``) and the workload variables."""
        env = os.environ if environ is None else environ
        raw = env.get("PYMESH_CONFIG", "")
        if not raw:
            raise ConfigError([Issue(severity="error", message="PYMESH_CONFIG is not set", file="<environment>")])
        workload = Workload.from_env(env)
        return cls.from_path(raw.split(os.pathsep), workload=workload, namespace=workload.namespace)

    # -- state ---------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The live snapshot; read it once per request and use that one throughout."""
        return self._live.snapshot

    @property
    def workload(self) -> Workload:
        return self._workload

    @property
    def identity(self) -> CertificateSource | None:
        """This workload's certificate, kept fresh: given, read from ``Workload.cert_dir``, or issued
        by the mesh's ``ca``; None when it has none (then ISTIO_MUTUAL fails and auto-mTLS is off)."""
        if not self._identity_made:
            with self._lock:
                if not self._identity_made:
                    self._identity = self._make_identity()
                    self._identity_made = True
        return self._identity

    def _make_identity(self) -> CertificateSource | None:
        from pymesh.security.rotation import CertificateSource

        source = CertificateSource.for_workload(self._workload, ca=self._ca,
                                                trust_domain=self._live.snapshot.mesh_config.trust_domain)
        return source.start() if source is not None else None  # renews in the background before expiry

    @property
    def config(self) -> Config:
        return self._live.snapshot.config

    @property
    def warnings(self) -> tuple[Issue, ...]:
        return self._live.snapshot.config.warnings

    def reload(self) -> Snapshot:
        """Re-read every source and swap the snapshot; on ``ConfigError`` the old one stays."""
        with self._lock:
            try:
                live = _Live.of(build(self._load(), self._workload))
            except ConfigError:
                log.warning("pymesh: reload failed; keeping config generation %d", self._live.snapshot.generation)
                raise
            self._live = live  # one reference: the swap is atomic for readers
            return live.snapshot

    def watch(self, interval: float = 1.0) -> None:
        """Reload when a source file changes (polled every ``interval`` seconds by content hash, and
        applied once two polls agree, so a file caught mid-write is not); idempotent."""
        if self._watcher is None:
            self._watcher = _Watcher(self, interval)
            self._watcher.start()

    # -- outbound ----------------------------------------------------------------------

    def transport(self, *, raise_errors: bool = False) -> MeshTransport:
        """An ``httpx.BaseTransport`` for ``httpx.Client(transport=...)``."""
        from pymesh.outbound.transport import MeshTransport

        return MeshTransport(self, raise_errors=raise_errors)

    def async_transport(self, *, raise_errors: bool = False) -> AsyncMeshTransport:
        """An ``httpx.AsyncBaseTransport`` for ``httpx.AsyncClient(transport=...)``."""
        from pymesh.outbound.transport import AsyncMeshTransport

        return AsyncMeshTransport(self, raise_errors=raise_errors)

    def client(self, *, raise_errors: bool = False, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` whose every request goes through the mesh; kwargs go to httpx."""
        import httpx

        return httpx.Client(transport=self.transport(raise_errors=raise_errors), **kwargs)

    def async_client(self, *, raise_errors: bool = False, **kwargs: Any) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(transport=self.async_transport(raise_errors=raise_errors), **kwargs)

    def route(
        self, method: str, url: str, headers: Mapping[str, str] | None = None, *, source_ip: str = ""
    ) -> RouteDecision:
        """How the mesh would route a request, with no I/O; raises ``NoRouteError`` for 404 NR."""
        from pymesh.outbound.decision import decide, info_for

        live = self._live
        return decide(live.router, info_for(method, url, headers, source_ip), url, self._runtime.rng)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call the bound method ``callback`` at ``close()``, if its object still lives then (held weakly:
        a middleware that is dropped early is not kept alive by the mesh)."""
        self._closers.add(callback)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._identity_made and self._identity is not None:
            self._identity.stop()
        self._closers.call(forget=True)  # what was built on this mesh: middleware clients, key and list fetchers

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        snap = self._live.snapshot
        return (
            f"<pymesh.Mesh {self._workload!r} generation={snap.generation} "
            f"resources={len(snap.config.resources)} hosts={len(snap.routes)}>"
        )

    def _load(self) -> Config:
        return load(self._sources, namespace=self._namespace, limits=self._limits)

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        files, _ = discover(p for p in self._sources if not isinstance(p, Text))
        for f in files:
            digest.update(str(f).encode())
            try:
                digest.update(f.read_bytes())
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()


class _Watcher(threading.Thread):
    """Polls the sources' content; a folder counts as changed when any file in it does.

    Polling by content (not mtime) also catches Kubernetes ConfigMap volumes, which swap
    a ``..data`` symlink and leave the file names' mtimes alone. A change is applied once two
    polls in a row see the same new content: an editor or ``cp`` still writing a file may
    leave, for a moment, valid YAML that lacks its last documents (a DENY policy, say).
    """

    def __init__(self, mesh: Mesh, interval: float) -> None:
        super().__init__(name="pymesh-config-watch", daemon=True)
        self._mesh = mesh
        self.interval = interval
        self._stopped = threading.Event()
        self._last = mesh._fingerprint()
        self._pending: str | None = None  # new content seen once, waiting to be seen again

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.poll()

    def poll(self) -> bool:
        """One look at the sources; True when it reloaded (successfully or not)."""
        current = self._mesh._fingerprint()
        if current == self._last:
            self._pending = None
            return False
        if current != self._pending:  # still changing: look again next time
            self._pending = current
            return False
        self._last, self._pending = current, None
        try:
            self._mesh.reload()
        except ConfigError as exc:
            log.warning("pymesh: config change rejected:\n%s", exc)
        except Exception:  # a watcher must outlive any one bad reload
            log.exception("pymesh: reload failed")
        return True
