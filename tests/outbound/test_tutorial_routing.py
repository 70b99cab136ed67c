"""The istio-tutorial's routing chapters (and bookinfo's reviews routing) end to end.

The real corpus files are loaded unchanged with ``Mesh.from_path``, next to a generated
ServiceEntry + WorkloadEntries for the loopback stand-ins of the pods:
``recommendation-v1/v2/v3`` (labels ``app: recommendation, version: vN``, namespace
``tutorial``, port 8080) and ``reviews-v1/v2/v3`` (namespace ``default``, port 9080). The
tutorial's documents carry no namespace; they are applied as ``kubectl apply -n tutorial``
would, through the calling workload's namespace.

The caller is the tutorial's ``preference`` service (bookinfo's ``productpage``). The
recommendation stand-ins answer as the tutorial's Quarkus app does,
``recommendation vN from '<host>': <count>``, the count going up on every request it
receives, mirrored ones included. customer copies the client's ``User-Agent`` into
``baggage-user-agent`` and preference forwards it, so that header is what the tutorial's
browser-routing rules match; the tests send it as preference would.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

import pymesh
from pymesh.testing.upstream import Received, Reply, Upstream, service_yaml
from tests.conftest import shared_dir
from tests.outbound.conftest import WAIT, Connect, binomial_bounds, echo, mesh_config, served_by

TUTORIAL = shared_dir() / "conformance" / "istio-tutorial"
BOOKINFO = shared_dir() / "conformance" / "bookinfo"
RECOMMENDATION = "http://recommendation:8080/"
REVIEWS = "http://reviews:9080/reviews/0"
BODY = re.compile(r"recommendation (v\d) from '([^']+)': (\d+)\n")

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 "
          "Safari/537.36")
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Safari/605.1.15")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
ANDROID_FIREFOX = "Mozilla/5.0 (Android 14; Mobile; rv:128.0) Gecko/128.0 Firefox/128.0"
CURL = "curl/8.5.0"


class Pod:
    """A loopback stand-in for one tutorial pod, with the app's per-pod request counter."""

    def __init__(self, name: str, version: str, *, tutorial_body: bool) -> None:
        self.name = name
        self.version = version
        self.upstream = Upstream(name, {"version": version})
        self._tutorial_body = tutorial_body
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def reset(self) -> None:
        self.upstream.reset()
        self._counter = itertools.count(1)
        self.upstream.respond(self._answer if self._tutorial_body else None)

    def _answer(self, _: Received) -> Reply:
        with self._lock:
            n = next(self._counter)
        body = f"recommendation {self.version} from '{self.name}': {n}\n".encode()
        return Reply(headers=(("content-type", "text/plain;charset=UTF-8"),), body=body)

    def count(self) -> int:
        return self.upstream.count()


@pytest.fixture(scope="module")
def _pods() -> Iterator[dict[str, Pod]]:
    pods = {
        **{f"recommendation-{v}": Pod(f"recommendation-{v}-6976858b48-x{v}", v, tutorial_body=True)
           for v in ("v1", "v2", "v3")},
        **{f"reviews-{v}": Pod(f"reviews-{v}", v, tutorial_body=False) for v in ("v1", "v2", "v3")},
    }
    for p in pods.values():
        p.upstream.start()
    yield pods
    threads = [threading.Thread(target=p.upstream.stop) for p in pods.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


@pytest.fixture
def pods(_pods: dict[str, Pod]) -> dict[str, Pod]:
    for p in _pods.values():
        p.reset()
    return _pods


MeshFor = Callable[..., pymesh.Mesh]


@pytest.fixture
def mesh_for(tmp_path: Path, pods: dict[str, Pod]) -> Iterator[MeshFor]:
    """``mesh_for(app, *corpus_files, extra="")``: the corpus files plus the pods' registry, as ``app``."""
    made: list[pymesh.Mesh] = []

    def make(app: str, *files: Path, extra: str = "") -> pymesh.Mesh:
        if app == "recommendation":
            ups = [pods[f"recommendation-{v}"].upstream for v in ("v1", "v2", "v3")]
            registry, ns, caller = service_yaml("recommendation", "tutorial", ups), "tutorial", "preference"
        else:
            ups = [pods[f"reviews-{v}"].upstream for v in ("v1", "v2", "v3")]
            registry, ns, caller = service_yaml("reviews", "default", ups, port=9080), "default", "productpage"
        generated = tmp_path / "registry.yaml"
        generated.write_text(registry + ("---\n" + extra if extra else ""))
        for f in files:
            assert f.is_file(), f
        workload = pymesh.Workload(name=caller, namespace=ns, labels={"app": caller, "version": "v1"},
                                   service_account=caller)
        mesh = pymesh.Mesh.from_path([*files, generated], workload=workload)
        made.append(mesh)
        return mesh

    yield make
    for m in made:
        m.close()


def versions(responses: Sequence[httpx.Response]) -> Counter[str]:
    """How many answers came from each recommendation version, checking the tutorial's body format."""
    out: Counter[str] = Counter()
    for r in responses:
        assert r.status_code == 200, (r.status_code, r.text)
        m = BODY.fullmatch(r.text)
        assert m is not None, r.text
        out[m.group(1)] += 1
    return out


# -- weighted splits ----------------------------------------------------------------------------------------

N = 400


@pytest.mark.parametrize(("vs_file", "share_v1"), [
    ("virtual-service-recommendation-v1_and_v2_50_50.yml", 0.50),
    ("virtual-service-recommendation-v1_and_v2_75_25.yml", 0.75),
])
def test_recommendation_weighted_split(
    mesh_for: MeshFor, connect: Connect, pods: dict[str, Pod], vs_file: str, share_v1: float
) -> None:
    mesh = mesh_for("recommendation", TUTORIAL / vs_file, TUTORIAL / "destination-rule-recommendation-v1-v2.yml")
    seen = versions(connect(mesh).many(N, RECOMMENDATION))
    low, high = binomial_bounds(N, share_v1)
    assert low <= seen["v1"] <= high, seen
    assert seen["v1"] + seen["v2"] == N
    assert pods["recommendation-v3"].count() == 0  # v3 runs but no subset routes to it
    d = mesh.route("GET", RECOMMENDATION)
    assert d.virtual_service == "tutorial/recommendation"
    assert {t[1]: t[3] for t in d.targets} == {"version-v1": 100 * share_v1, "version-v2": 100 * (1 - share_v1)}


def test_recommendation_counter_counts_each_pods_requests(
    mesh_for: MeshFor, connect: Connect, pods: dict[str, Pod]
) -> None:
    mesh = mesh_for("recommendation", TUTORIAL / "virtual-service-recommendation-v1_and_v2_50_50.yml",
                    TUTORIAL / "destination-rule-recommendation-v1-v2.yml")
    last: dict[str, int] = {}
    for r in connect(mesh).many(20, RECOMMENDATION):
        m = BODY.fullmatch(r.text)
        assert m is not None
        version, host, count = m.group(1), m.group(2), int(m.group(3))
        assert host == pods[f"recommendation-{version}"].name
        assert count == last.get(version, 0) + 1  # "recommendation v1 from '<pod>': 2907", counting up
        last[version] = count


def test_bookinfo_reviews_90_10(mesh_for: MeshFor, connect: Connect, pods: dict[str, Pod]) -> None:
    mesh = mesh_for("reviews", BOOKINFO / "virtual-service-reviews-90-10.yaml",
                    BOOKINFO / "destination-rule-reviews.yaml")
    seen = Counter(served_by(r) for r in connect(mesh).many(N, REVIEWS))
    low, high = binomial_bounds(N, 0.9)
    assert low <= seen["reviews-v1"] <= high, seen
    assert seen["reviews-v1"] + seen["reviews-v2"] == N
    assert pods["reviews-v3"].count() == 0
    seen_path = echo(connect(mesh).get(REVIEWS))
    assert (seen_path["path"], seen_path["headers"]["host"]) == ("/reviews/0", "reviews:9080")
    policy = mesh.route("GET", REVIEWS).traffic_policy
    assert policy is not None
    assert policy.load_balancer.simple == "RANDOM"


# -- browser routing ------------------------------------------------------------------------------------------

BROWSERS = {
    "virtual-service-firefox-recommendation-v2.yml": {
        FIREFOX: "v2", ANDROID_FIREFOX: "v2", CHROME: "v1", SAFARI: "v1", IPHONE: "v1", CURL: "v1", None: "v1",
    },
    "virtual-service-safari-recommendation-v2.yml": {
        SAFARI: "v2", CHROME: "v2",  # Chrome's User-Agent says "Safari" too, so Chrome gets v2
        IPHONE: "v2", FIREFOX: "v1", CURL: "v1", None: "v1",
    },
    "virtual-service-mobile-recommendation-v2.yml": {
        IPHONE: "v2", ANDROID_FIREFOX: "v2", FIREFOX: "v1", CHROME: "v1", SAFARI: "v1", None: "v1",
    },
}


@pytest.mark.parametrize("vs_file", list(BROWSERS))
def test_user_agent_routing(mesh_for: MeshFor, connect: Connect, pods: dict[str, Pod], vs_file: str) -> None:
    mesh = mesh_for("recommendation", TUTORIAL / vs_file, TUTORIAL / "destination-rule-recommendation-v1-v2.yml")
    sender = connect(mesh)
    for agent, expected in BROWSERS[vs_file].items():
        headers = {"baggage-user-agent": agent} if agent is not None else {}
        seen = versions(sender.many(3, RECOMMENDATION, headers=headers))
        assert seen == {expected: 3}, (agent, seen)
    # the client's own User-Agent is not what the rule reads: only the baggage header counts
    assert versions([sender.get(RECOMMENDATION, headers={"user-agent": FIREFOX})]) == {"v1": 1}


@pytest.mark.parametrize(("vs_file", "others"), [
    ("virtual-service-reviews-jason-v2-v3.yaml", "reviews-v3"),
    ("virtual-service-reviews-test-v2.yaml", "reviews-v1"),
])
def test_bookinfo_jason_routing(mesh_for: MeshFor, connect: Connect, vs_file: str, others: str) -> None:
    mesh = mesh_for("reviews", BOOKINFO / vs_file, BOOKINFO / "destination-rule-reviews.yaml")
    sender = connect(mesh)
    for user, expected in [("jason", "reviews-v2"), ("Jason", others), ("jason2", others), ("", others),
                           (None, others)]:
        headers = {"end-user": user} if user is not None else {}
        r = sender.get(REVIEWS, headers=headers)
        assert served_by(r) == expected, user
        if user is not None:
            assert echo(r)["headers"]["end-user"] == user  # the header travels on to reviews
    d = mesh.route("GET", REVIEWS, headers={"end-user": "jason"})
    assert (d.virtual_service, d.subset) == ("default/reviews", "v2")


# -- mirroring -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "mirror_host"), [
    ("", "recommendation:8080"),  # Istio >= 1.28: the host is left as it was
    (mesh_config("  shadowHostSuffix: true"), "recommendation-shadow:8080"),  # Istio <= 1.27
])
def test_recommendation_v1_mirror_v2(
    mesh_for: MeshFor, connect: Connect, pods: dict[str, Pod], extra: str, mirror_host: str
) -> None:
    mesh = mesh_for("recommendation", TUTORIAL / "virtual-service-recommendation-v1-mirror-v2.yml",
                    TUTORIAL / "destination-rule-recommendation-v1-v2.yml", extra=extra)
    sender = connect(mesh)
    n = 10
    counts = [int(m.group(3)) for r in sender.many(n, RECOMMENDATION) if (m := BODY.fullmatch(r.text))]
    assert counts == list(range(1, n + 1))  # every answer is v1's ...
    v1, v2 = pods["recommendation-v1"], pods["recommendation-v2"]
    assert v1.count() == n
    # ... and v2 received every request too (its counter went up), its answers thrown away
    assert sender.wait_for(lambda: v2.count() == n, WAIT)
    assert {c.headers["host"] for c in v2.upstream.received} == {mirror_host}
    assert {c.path for c in v2.upstream.received} == {"/"}
    assert pods["recommendation-v3"].count() == 0
    d = mesh.route("GET", RECOMMENDATION)
    assert [(m.subset, m.percentage) for m in d.mirrors] == [("version-v2", 100.0)]
