"""The ``pymesh`` command: ``validate``, ``explain`` and ``--version``."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pymesh
from pymesh.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "mesh"
LOCATION = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): ")

TWO_ERRORS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}, weight: -1}]
    timeout: 1.5ms
"""

UNREACHABLE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: reviews}}]
"""


def run(*argv: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue().splitlines()


def put(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# -- validate ----------------------------------------------------------------------------------


def test_validate_ok_prints_a_summary() -> None:
    code, lines = run("validate", str(EXAMPLES))
    assert code == 0
    assert lines == [
        "ok: 2 file(s), 1 AuthorizationPolicy, 1 DestinationRule, 2 ServiceEntry, 1 VirtualService, "
        "2 WorkloadEntry; 0 warning(s)"
    ]


def test_validate_several_paths(tmp_path: Path) -> None:
    extra = put(tmp_path, "se.yaml", """\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ext}
        spec:
          hosts: [api.example.com]
          resolution: DNS
          ports: [{number: 443, name: https, protocol: HTTPS}]
    """)
    code, lines = run("validate", str(EXAMPLES), str(extra))
    assert code == 0
    assert lines[-1].startswith("ok: 3 file(s), ")
    assert "3 ServiceEntry" in lines[-1]


def test_validate_errors_one_line_each_in_file_line_col_form(tmp_path: Path) -> None:
    bad = put(tmp_path, "bad.yaml", TWO_ERRORS)
    code, lines = run("validate", str(tmp_path))
    assert code == 1
    assert len(lines) == 2
    found = [LOCATION.match(line) for line in lines]
    assert all(found), lines
    assert [(m["file"], int(m["line"]), int(m["col"])) for m in found if m] == [
        (str(bad), 7, 52),
        (str(bad), 8, 14),
    ]
    assert "VirtualService default/reviews" in lines[0]
    assert "spec.http[0].route[0].weight" in lines[0]
    assert "spec.http[0].timeout" in lines[1]
    assert not any(line.startswith("ok") for line in lines)


def test_validate_yaml_syntax_error_points_at_the_line(tmp_path: Path) -> None:
    bad = put(tmp_path, "broken.yaml", "apiVersion: v1\nkind: [unclosed\nmetadata: {}\n")
    code, lines = run("validate", str(bad))
    assert code == 1
    assert len(lines) == 1
    m = LOCATION.match(lines[0])
    assert m is not None
    assert m["file"] == str(bad)
    assert "YAML syntax" in lines[0]


def test_validate_missing_path(tmp_path: Path) -> None:
    code, lines = run("validate", str(tmp_path / "nowhere"))
    assert code == 1
    assert lines == [f"{tmp_path / 'nowhere'}: no such file or folder"]


def test_validate_namespace_option(tmp_path: Path) -> None:
    put(tmp_path, "bad.yaml", TWO_ERRORS)
    _, lines = run("validate", "-n", "shop", str(tmp_path))
    assert all("VirtualService shop/reviews" in line for line in lines)


def test_validate_warnings_do_not_fail(tmp_path: Path) -> None:
    f = put(tmp_path, "vs.yaml", UNREACHABLE)
    code, lines = run("validate", str(f))
    assert code == 0
    warning = next(line for line in lines if "rule is never used" in line)
    m = LOCATION.match(warning)
    assert m is not None
    assert (m["file"], m["line"]) == (str(f), "8")
    assert "spec.http[1]: warning: " in warning
    assert lines[-1] == "ok: 1 file(s), 1 VirtualService; 1 warning(s)"


def test_validate_strict_turns_analysis_warnings_into_errors(tmp_path: Path) -> None:
    f = put(tmp_path, "vs.yaml", UNREACHABLE)
    code, lines = run("validate", "--strict", str(f))
    assert code == 1
    unreachable = next(line for line in lines if "rule is never used" in line)
    assert "warning:" not in unreachable
    assert LOCATION.match(unreachable)
    assert not any(line.startswith("ok") for line in lines)


def test_validate_strict_leaves_other_warnings_alone(tmp_path: Path) -> None:
    # A skipped kind is a load warning, not an analysis finding: --strict does not fail on it.
    f = put(tmp_path, "deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n")
    code, lines = run("validate", "--strict", str(f))
    assert code == 0
    assert lines[-1] == "ok: 1 file(s), no resources; 1 warning(s)"


def test_validate_quiet(tmp_path: Path) -> None:
    assert run("validate", "--quiet", str(EXAMPLES)) == (0, [])
    warn = put(tmp_path / "w", "vs.yaml", UNREACHABLE)
    assert run("validate", "-q", str(warn)) == (0, [])
    # With errors, --quiet prints the errors and nothing else.
    put(tmp_path / "e", "bad.yaml", TWO_ERRORS)
    put(tmp_path / "e", "vs.yaml", UNREACHABLE)
    code, lines = run("validate", "-q", str(tmp_path / "e"))
    assert code == 1
    assert len(lines) == 2
    assert all("warning:" not in line for line in lines)
    code, loud = run("validate", str(tmp_path / "e"))
    assert code == 1
    assert len(loud) > 2  # the warnings of vs.yaml come along without -q
    assert any("warning:" in line for line in loud)


def test_validate_needs_a_path() -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"], out=io.StringIO())
    assert info.value.code == 2


# -- explain -----------------------------------------------------------------------------------


def explain(*argv: str) -> dict[str, list[str]]:
    """Run ``pymesh explain`` (exit 0 expected) and index its lines by their left-hand label."""
    code, lines = run("explain", str(EXAMPLES), *argv)
    assert code == 0, lines
    table: dict[str, list[str]] = {}
    for line in lines:
        label, _, value = line.partition("  ")
        table.setdefault(label.strip(), []).append(value.strip())
    return table


FQ = "recommendation.tutorial.svc.cluster.local"


def test_explain_on_the_examples() -> None:
    t = explain("--from", "app=customer,version=v1", "-n", "tutorial", "GET", "http://recommendation:8080/",
                "-H", "user: jason")
    assert t["caller"] == ["tutorial/customer [app=customer,version=v1]"]
    assert t["header"] == ["user: jason"]
    assert t["request"] == ["GET http://recommendation:8080/"]
    assert t["host"] == [FQ]
    assert t["virtual service"][0].startswith("tutorial/recommendation  (")
    assert "recommendation.yaml:2" in t["virtual service"][0]
    assert t["route"] == ["http[1] 'default'"]  # no Firefox user-agent: the catch-all
    assert t["chosen"] == [f"outbound|8080|version-v1|{FQ}"]
    assert t["endpoints"] == ["127.0.0.1{http: 18081}"]  # the v1 WorkloadEntry, its port mapped by name
    _, lines = run("explain", str(EXAMPLES), "-n", "tutorial", "GET", "http://recommendation:8080/")
    text = "\n".join(lines)
    assert "consecutive5xxErrors: 3" in text  # the DestinationRule's outlier detection
    assert "perTryTimeout" in text  # the route's retries


def test_explain_follows_header_matches() -> None:
    t = explain("--from", "app=customer", "-n", "tutorial", "get", "http://recommendation:8080/x",
                "-H", "User-Agent: Mozilla/5.0 Firefox/120")
    assert t["request"] == ["GET http://recommendation:8080/x"]
    assert t["route"] == ["http[0] 'firefox'"]
    assert t["chosen"] == [f"outbound|8080|version-v2|{FQ}"]
    assert t["endpoints"] == ["127.0.0.1{http: 18082}"]


def test_explain_short_names_resolve_in_the_callers_namespace() -> None:
    # From namespace default, `recommendation` is recommendation.default: not in this mesh.
    t = explain("-n", "default", "GET", "http://recommendation:8080/")
    assert t["caller"] == ["default/- []"]
    assert t["virtual service"] == ["none"]
    assert "pass through" in t["action"][0]
    # Written as name.namespace it reaches the tutorial's service from anywhere.
    t = explain("GET", "http://recommendation.tutorial:8080/")
    assert t["host"] == [FQ]
    assert t["chosen"] == [f"outbound|8080|version-v1|{FQ}"]


def test_explain_without_namespace_takes_the_configs_only_namespace() -> None:
    # examples/mesh names only `tutorial` (and istio-system, the root): the contract's own example works.
    t = explain("GET", "http://recommendation:8080/")
    assert t["caller"] == ["tutorial/- []"]
    assert t["host"] == [FQ]


def test_explain_unknown_host() -> None:
    t = explain("-n", "tutorial", "GET", "http://nothere/")
    assert t["host"] == ["nothere"]
    assert t["virtual service"] == ["none"]
    assert t["action"] == ["pass through (host not in the mesh; ALLOW_ANY)"]


def test_explain_bad_from_labels(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run("explain", str(EXAMPLES), "--from", "app", "GET", "http://recommendation/")
    assert code == 2
    assert lines == []
    assert "--from" in capsys.readouterr().err


def test_explain_broken_config(tmp_path: Path) -> None:
    put(tmp_path, "bad.yaml", TWO_ERRORS)
    code, lines = run("explain", str(tmp_path), "GET", "http://reviews/")
    assert code == 1
    assert len(lines) == 2
    assert all(LOCATION.match(line) for line in lines)


# -- python -m pymesh --------------------------------------------------------------------------


def test_python_m_pymesh_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pymesh", "--version"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"pymesh {pymesh.__version__}"


def test_python_m_pymesh_validate_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "pymesh", "validate", str(EXAMPLES)], capture_output=True, text=True, timeout=60,
        cwd=ROOT,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 2 file(s)")
    put(tmp_path, "bad.yaml", TWO_ERRORS)
    bad = subprocess.run(
        [sys.executable, "-m", "pymesh", "validate", str(tmp_path)], capture_output=True, text=True, timeout=60,
        cwd=ROOT,
    )
    assert bad.returncode == 1
    assert len(bad.stdout.splitlines()) == 2
