"""``pymesh.Mesh``: building from files, folders, strings and the environment; reload and watch."""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pymesh
from pymesh import ConfigError, Mesh, Workload
from pymesh.mesh import _Watcher
from pymesh.snapshot.snapshot import Snapshot

SVC = ".svc.cluster.local"
WAIT = 5.0  # the longest any watch test waits for the watcher
POLL = 0.05


def service_entry(name: str, host: str | None = None, namespace: str | None = None, address: str = "10.0.0.1") -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: {name}{ns}}}
        spec:
          hosts: [{host or name}]
          resolution: STATIC
          ports: [{{number: 80, name: http, protocol: HTTP}}]
          endpoints: [{{address: {address}}}]
        """)


def write(path: Path, text: str) -> None:
    """Replace a file in one step, as an editor or a ConfigMap update does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def names(mesh: Mesh, kind: str = "ServiceEntry") -> list[str]:
    return sorted(r.name for r in mesh.snapshot.resources(kind))


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- from_path ---------------------------------------------------------------------------------


def test_from_path_with_a_file(tmp_path: Path) -> None:
    f = tmp_path / "mesh.yaml"
    write(f, service_entry("a") + "---\n" + service_entry("b"))
    mesh = Mesh.from_path(f)
    assert names(mesh) == ["a", "b"]
    assert mesh.config.files == (str(f),)
    assert mesh.snapshot.registry.get("a.default" + SVC) is not None
    # str works as well as a Path
    assert names(Mesh.from_path(str(f))) == ["a", "b"]


def test_from_path_with_a_folder_searches_recursively(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_entry("a"))
    write(tmp_path / "deep" / "er" / "b.yml", service_entry("b"))
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "c"},
        "spec": {"hosts": ["c"], "resolution": "STATIC", "ports": [{"number": 80, "name": "http"}],
                 "endpoints": [{"address": "10.0.0.3"}]},
    }
    write(tmp_path / "deep" / "c.json", json.dumps(doc))
    write(tmp_path / "UPPER.YAML", service_entry("d"))
    write(tmp_path / "notes.txt", "this: is: not config")
    write(tmp_path / "README.md", "# not config")
    write(tmp_path / "deep" / "script.py", "raise SystemExit")
    mesh = Mesh.from_path(tmp_path)
    assert names(mesh) == ["a", "b", "c", "d"]
    assert sorted(Path(f).name for f in mesh.config.files) == ["UPPER.YAML", "a.yaml", "b.yml", "c.json"]


def test_from_path_with_a_list(tmp_path: Path) -> None:
    write(tmp_path / "one.yaml", service_entry("a"))
    write(tmp_path / "dir" / "two.yaml", service_entry("b"))
    write(tmp_path / "dir" / "sub" / "three.json", service_entry("c"))  # YAML is JSON's superset; content counts
    write(tmp_path / "unused.yaml", service_entry("z"))
    mesh = Mesh.from_path([tmp_path / "one.yaml", str(tmp_path / "dir")])
    assert names(mesh) == ["a", "b", "c"]


def test_from_path_with_a_missing_path_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        Mesh.from_path([tmp_path, missing])
    (issue,) = info.value.errors
    assert issue.file == str(missing)
    assert "no such file" in issue.message


def test_one_bad_file_rejects_the_whole_folder(tmp_path: Path) -> None:
    write(tmp_path / "good.yaml", service_entry("good"))
    write(tmp_path / "bad.yaml", service_entry("bad").replace("number: 80", "number: 0"))
    with pytest.raises(ConfigError) as info:
        Mesh.from_path(tmp_path)
    (issue,) = info.value.errors
    assert issue.file == str(tmp_path / "bad.yaml")
    assert (issue.kind, issue.namespace, issue.name) == ("ServiceEntry", "default", "bad")
    assert issue.path == "spec.ports[0].number"
    assert (issue.line, issue.column) == (7, 20)  # the `0` in `ports: [{number: 0, ...`
    assert isinstance(info.value, pymesh.MeshError)
    assert isinstance(info.value, ValueError)


# -- from_yaml ---------------------------------------------------------------------------------


def test_from_yaml_multi_document() -> None:
    text = service_entry("a") + "---\n" + service_entry("b", namespace="shop") + "---\n"
    mesh = Mesh.from_yaml(text)
    assert names(mesh) == ["a", "b"]
    assert mesh.snapshot.registry.get("b.shop" + SVC) is not None
    assert mesh.config.files == ("<string>",)


def test_from_yaml_errors_name_the_source() -> None:
    with pytest.raises(ConfigError) as info:
        Mesh.from_yaml("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec: {}\n", name="inline.yaml")
    assert info.value.errors
    assert all(i.file == "inline.yaml" for i in info.value.errors)


def test_from_yaml_empty_text_is_an_empty_mesh() -> None:
    mesh = Mesh.from_yaml("")
    assert mesh.snapshot.config.resources == ()
    assert len(mesh.snapshot.routes) == 0


def test_unknown_kinds_are_skipped_with_a_warning() -> None:
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n---\n" + service_entry("a")
    mesh = Mesh.from_yaml(text)
    assert names(mesh) == ["a"]
    assert any("Deployment" in w.message and w.severity == "warning" for w in mesh.warnings)


# -- namespaces and the workload ---------------------------------------------------------------


def test_namespace_defaults_to_the_workloads() -> None:
    me = Workload(name="web", namespace="shop", labels={"app": "web"})
    mesh = Mesh.from_yaml(service_entry("a") + "---\n" + service_entry("b", namespace="other"), workload=me)
    by_name = {r.name: r.namespace for r in mesh.snapshot.resources("ServiceEntry")}
    assert by_name == {"a": "shop", "b": "other"}
    assert mesh.snapshot.registry.get("a.shop" + SVC) is not None
    assert mesh.workload is me
    assert mesh.snapshot.workload is me


def test_explicit_namespace_beats_the_workloads() -> None:
    me = Workload(name="web", namespace="shop")
    mesh = Mesh.from_yaml(service_entry("a"), workload=me, namespace="elsewhere")
    assert [r.namespace for r in mesh.snapshot.resources("ServiceEntry")] == ["elsewhere"]


def test_without_workload_or_namespace_it_is_default() -> None:
    mesh = Mesh.from_yaml(service_entry("a"))
    assert [r.namespace for r in mesh.snapshot.resources("ServiceEntry")] == ["default"]
    assert mesh.workload.namespace == "default"


def test_namespace_alone_makes_a_workload_there() -> None:
    mesh = Mesh.from_yaml(service_entry("a"), namespace="shop")
    assert mesh.workload.namespace == "shop"
    assert [r.namespace for r in mesh.snapshot.resources("ServiceEntry")] == ["shop"]


# -- from_env ----------------------------------------------------------------------------------


def test_from_env(tmp_path: Path) -> None:
    write(tmp_path / "one.yaml", service_entry("a"))
    write(tmp_path / "dir" / "two.yaml", service_entry("b"))
    env = {
        "PYMESH_CONFIG": os.pathsep.join([str(tmp_path / "one.yaml"), str(tmp_path / "dir")]),
        "PYMESH_WORKLOAD": "customer",
        "PYMESH_NAMESPACE": "tutorial",
        "PYMESH_LABELS": "app=customer, version=v1",
        "PYMESH_SERVICE_ACCOUNT": "customer-sa",
    }
    mesh = Mesh.from_env(env)
    w = mesh.workload
    assert (w.name, w.namespace, dict(w.labels), w.service_account) == (
        "customer", "tutorial", {"app": "customer", "version": "v1"}, "customer-sa",
    )
    assert w.spiffe_id() == "spiffe://cluster.local/ns/tutorial/sa/customer-sa"
    assert names(mesh) == ["a", "b"]
    # Documents without a namespace land in the workload's.
    assert {r.namespace for r in mesh.snapshot.resources("ServiceEntry")} == {"tutorial"}


def test_from_env_reads_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "m.yaml", service_entry("a"))
    for key in list(os.environ):
        if key.startswith("PYMESH_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PYMESH_CONFIG", str(tmp_path))
    monkeypatch.setenv("PYMESH_LABELS", "app=a,version=v1")
    mesh = Mesh.from_env()
    assert dict(mesh.workload.labels) == {"app": "a", "version": "v1"}
    assert mesh.workload.namespace == "default"
    assert mesh.workload.service_account == "default"
    assert mesh.workload.name == ""
    assert names(mesh) == ["a"]


def test_from_env_without_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        Mesh.from_env({"PYMESH_NAMESPACE": "x"})
    assert "PYMESH_CONFIG" in str(info.value)


def test_from_env_bad_labels() -> None:
    with pytest.raises(ValueError, match="key=value"):
        Mesh.from_env({"PYMESH_CONFIG": "x.yaml", "PYMESH_LABELS": "app"})


# -- reload ------------------------------------------------------------------------------------


def test_reload_swaps_to_a_new_generation(tmp_path: Path) -> None:
    f = tmp_path / "mesh.yaml"
    write(f, service_entry("a"))
    mesh = Mesh.from_path(tmp_path)
    first = mesh.snapshot
    write(f, service_entry("b"))
    write(tmp_path / "new.yaml", service_entry("c"))
    second = mesh.reload()
    assert second is mesh.snapshot
    assert second is not first
    assert second.generation > first.generation
    assert names(mesh) == ["b", "c"]
    # The old snapshot is untouched: whoever still holds it sees the old config.
    assert [r.name for r in first.resources("ServiceEntry")] == ["a"]
    assert first.registry.get("a.default" + SVC) is not None
    assert first.registry.get("b.default" + SVC) is None


def test_reload_of_unchanged_config_still_makes_a_new_generation(tmp_path: Path) -> None:
    write(tmp_path / "m.yaml", service_entry("a"))
    mesh = Mesh.from_path(tmp_path)
    g = mesh.snapshot.generation
    assert mesh.reload().generation > g


def test_failed_reload_keeps_the_old_snapshot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "mesh.yaml"
    write(f, service_entry("a"))
    mesh = Mesh.from_path(f)
    before = mesh.snapshot
    resources = before.config.resources
    write(f, service_entry("a") + "---\n" + service_entry("b").replace("STATIC", "SOMETIMES"))
    with caplog.at_level(logging.WARNING, logger="pymesh"), pytest.raises(ConfigError) as info:
        mesh.reload()
    assert [i.name for i in info.value.errors] == ["b"]
    assert mesh.snapshot is before
    assert mesh.snapshot.generation == before.generation
    assert mesh.snapshot.config.resources is resources
    assert names(mesh) == ["a"]
    assert "keeping config generation" in caplog.text
    # Deleting the file is a failed reload too.
    f.unlink()
    with pytest.raises(ConfigError):
        mesh.reload()
    assert mesh.snapshot is before
    # And a fixed file reloads.
    write(f, service_entry("c"))
    assert mesh.reload().generation > before.generation
    assert names(mesh) == ["c"]


def test_reload_from_yaml_rereads_the_same_text() -> None:
    mesh = Mesh.from_yaml(service_entry("a"))
    g = mesh.snapshot.generation
    assert mesh.reload().generation > g
    assert names(mesh) == ["a"]


# -- watch -------------------------------------------------------------------------------------


class _Recorder(logging.Handler):
    """Collects pymesh log records from any thread, and signals each one."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = WAIT) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: any(text in r.getMessage() for r in self.records), timeout)


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    handler = _Recorder()
    logger = logging.getLogger("pymesh")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_watch_picks_up_a_change_and_ignores_a_broken_edit(tmp_path: Path, recorder: _Recorder) -> None:
    f = tmp_path / "mesh.yaml"
    write(f, service_entry("a"))
    with Mesh.from_path(tmp_path) as mesh:
        mesh.watch(interval=POLL)
        first = mesh.snapshot

        write(f, service_entry("b"))
        assert wait_for(lambda: names(mesh) == ["b"]), "the watcher did not pick up the change"
        second = mesh.snapshot
        assert second.generation > first.generation

        write(f, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: [oops\n")
        assert recorder.wait_for("config change rejected"), "the watcher did not report the broken edit"
        assert mesh.snapshot is second
        assert names(mesh) == ["b"]

        write(f, service_entry("c"))
        assert wait_for(lambda: names(mesh) == ["c"]), "the watcher did not recover after the fix"
        assert mesh.snapshot.generation > second.generation


def test_watch_sees_a_new_file_in_a_folder(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_entry("a"))
    with Mesh.from_path(tmp_path, watch=True) as mesh:
        mesh.watch(interval=POLL)  # idempotent: the watcher from watch=True stays (1 s polling)
        write(tmp_path / "sub" / "b.yaml", service_entry("b"))
        assert wait_for(lambda: names(mesh) == ["a", "b"]), "the watcher did not see the new file"


def test_watch_with_short_interval_sees_a_new_file(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_entry("a"))
    with Mesh.from_path(tmp_path) as mesh:
        mesh.watch(interval=POLL)
        write(tmp_path / "sub" / "b.yaml", service_entry("b"))
        assert wait_for(lambda: names(mesh) == ["a", "b"])
        (tmp_path / "a.yaml").unlink()
        assert wait_for(lambda: names(mesh) == ["b"]), "the watcher did not see the removal"


def test_watch_does_not_reload_without_a_change(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", service_entry("a"))
    with Mesh.from_path(tmp_path) as mesh:
        mesh.watch(interval=POLL)
        g = mesh.snapshot.generation
        time.sleep(10 * POLL)
        assert mesh.snapshot.generation == g


def test_close_stops_the_watcher(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    write(f, service_entry("a"))
    mesh = Mesh.from_path(tmp_path)
    mesh.watch(interval=POLL)
    assert any(t.name == "pymesh-config-watch" for t in threading.enumerate())
    mesh.close()
    assert wait_for(lambda: not any(t.name == "pymesh-config-watch" for t in threading.enumerate()), 2.0)
    g = mesh.snapshot.generation
    write(f, service_entry("b"))
    time.sleep(10 * POLL)
    assert mesh.snapshot.generation == g
    mesh.close()  # twice is fine


# -- atomic swap under concurrent readers ------------------------------------------------------


def generation_config(k: int) -> str:
    """Config generation ``k``: every resource names ``k``, so a mix is visible."""
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: svc}}
        spec:
          hosts: [svc-{k}]
          resolution: STATIC
          ports: [{{number: 80, name: http, protocol: HTTP}}]
          endpoints:
          - {{address: 10.0.0.1, labels: {{gen: "{k}"}}}}
          - {{address: 10.0.0.2, labels: {{gen: other}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: vs}}
        spec:
          hosts: [svc-{k}]
          http:
          - route: [{{destination: {{host: svc-{k}, subset: g{k}}}}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: dr}}
        spec:
          host: svc-{k}
          subsets: [{{name: g{k}, labels: {{gen: "{k}"}}}}]
        """)


def check_consistent(snap: Snapshot) -> int:
    """Assert that every table of ``snap`` was built from one and the same config; return its k."""
    (se,) = snap.resources("ServiceEntry")
    (vs,) = snap.resources("VirtualService")
    (dr,) = snap.resources("DestinationRule")
    k = int(se.spec.hosts[0].removeprefix("svc-"))
    fq = f"svc-{k}.default{SVC}"
    assert snap.routes.hosts() == [fq]
    vh = snap.routes.get(fq)
    assert vh is not None
    assert vh.service is vs
    assert vs.spec.http[0].route[0].destination.subset == f"g{k}"
    svc = snap.registry.get(fq)
    assert svc is not None
    assert len(snap.registry) == 1
    rule = snap.clusters.destination_rule(fq, "default")
    assert rule is not None
    assert rule.resource is dr
    cluster = snap.clusters.get(fq, f"g{k}", 80)
    assert cluster.subset_defined
    assert [e.labels["gen"] for e in cluster.endpoints] == [str(k)]
    return k


def test_concurrent_readers_never_see_a_half_built_snapshot(tmp_path: Path) -> None:
    f = tmp_path / "mesh.yaml"
    write(f, generation_config(0))
    mesh = Mesh.from_path(f)
    done = threading.Event()
    failures: list[BaseException] = []
    seen: list[set[int]] = []

    def reader() -> None:
        mine: set[int] = set()
        last_generation = 0
        try:
            while not done.is_set():
                snap = mesh.snapshot  # read once, use throughout
                assert snap.generation >= last_generation  # never goes back
                last_generation = snap.generation
                mine.add(check_consistent(snap))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            seen.append(mine)

    readers = [threading.Thread(target=reader, daemon=True) for _ in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # switch threads often: more interleavings, and the writer is not starved
    for t in readers:
        t.start()
    try:
        generations = [mesh.snapshot.generation]
        for k in range(1, 51):
            write(f, generation_config(k))
            generations.append(mesh.reload().generation)
            assert check_consistent(mesh.snapshot) == k
            if k % 10 == 0:  # a failed reload in between changes nothing
                write(f, generation_config(k).replace("STATIC", "BROKEN"))
                with pytest.raises(ConfigError):
                    mesh.reload()
                assert mesh.snapshot.generation == generations[-1]
    finally:
        done.set()
        for t in readers:
            t.join(10)
        sys.setswitchinterval(interval)
    assert not failures, failures[0]
    assert generations == sorted(set(generations))
    assert len(seen) == 3
    assert all(s for s in seen)  # every reader read something
    observed = set().union(*seen)
    assert observed <= set(range(51))
    assert len(observed) > 10  # the readers really did run across the reloads


def test_concurrent_reload_calls_are_serialised(tmp_path: Path) -> None:
    f = tmp_path / "mesh.yaml"
    write(f, generation_config(7))
    mesh = Mesh.from_path(f)
    results: list[Snapshot] = []
    lock = threading.Lock()

    def reloader() -> None:
        for _ in range(10):
            snap = mesh.reload()
            with lock:
                results.append(snap)

    threads = [threading.Thread(target=reloader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 40
    assert len({s.generation for s in results}) == 40
    # The last reload to finish is the one left serving.
    assert mesh.snapshot.generation == max(s.generation for s in results)
    assert check_consistent(mesh.snapshot) == 7


def test_repr_names_the_workload_and_generation() -> None:
    mesh = Mesh.from_yaml(service_entry("a"), workload=Workload(name="web", namespace="shop"))
    text = repr(mesh)
    assert text.startswith("<pymesh.Mesh pymesh.Workload(shop/web")
    assert f"generation={mesh.snapshot.generation}" in text


def test_the_benchmark_config_loads_cleanly(tmp_path: Path) -> None:
    # benchmarks/load_config.py measures this config; it must stay valid and warning-free.
    from benchmarks.load_config import generate

    generated = generate(tmp_path, 12)
    mesh = Mesh.from_path(tmp_path)
    assert generated["documents"] == len(mesh.config.resources) == 36
    assert mesh.warnings == ()
    assert len(mesh.snapshot.routes) == len(mesh.snapshot.registry) == 12
    cluster = mesh.snapshot.clusters.get("svc-00003.team-03" + SVC, "v2", 8080)
    assert [e.address for e in cluster.endpoints] == ["10.0.3.2"]
    assert cluster.policy.load_balancer.simple == "ROUND_ROBIN"  # the subset's, over the rule's LEAST_REQUEST


def test_watch_applies_a_change_only_once_two_polls_agree(tmp_path: Path) -> None:
    # A file caught mid-write can be valid YAML that lacks its last documents: not applied.
    f = tmp_path / "mesh.yaml"
    write(f, service_entry("a"))
    with Mesh.from_path(tmp_path) as mesh:
        watcher = _Watcher(mesh, interval=3600)  # polled by hand, not started
        full = service_entry("a") + "---\n" + service_entry("b")
        write(f, full[: full.index("---") + 4])  # cut at the document boundary: valid, without "b"
        assert watcher.poll() is False  # new content, seen once
        write(f, full)
        assert watcher.poll() is False  # changed again: still being written
        assert names(mesh) == ["a"]
        assert watcher.poll() is True  # the same twice: applied
        assert names(mesh) == ["a", "b"]
        assert watcher.poll() is False  # nothing new


def test_closing_the_mesh_ends_what_middlewares_built_on_it() -> None:
    # A middleware's JWKS fetchers and CUSTOM-authorizer clients live as long as its mesh, not the process.
    import time as _time

    from pymesh import asgi

    config = """apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  jwtRules: [{issuer: "https://issuer.test", jwksUri: "https://127.0.0.1:9/jwks"}]
"""
    mesh = Mesh.from_yaml(config, workload=Workload(name="web", namespace="shop", labels={"app": "web"}))
    middleware = asgi.MeshMiddleware(None, mesh=mesh)  # type: ignore[arg-type]
    middleware.inbound.compiled()  # compiling the pipeline starts the key fetcher

    def fetchers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("pymesh-jwks https://127.0.0.1:9/")]

    assert fetchers()
    mesh.close()
    deadline = _time.monotonic() + 5
    while fetchers() and _time.monotonic() < deadline:
        _time.sleep(0.02)
    assert not fetchers()
