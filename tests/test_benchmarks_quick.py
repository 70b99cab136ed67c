"""The benchmark harness runs end to end in ``--quick`` mode, so it never rots.

Only that it completes and writes well-formed results with every scenario present: timings on
a shared CI machine mean nothing, so no speed is asserted. Envoy, aiohttp and matplotlib are
optional (the ``bench`` extra); without them their parts are reported as skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_writes_every_scenario(tmp_path: Path) -> None:
    from benchmarks.harness import SCENARIOS

    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "quick"
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        assert scenario["status"] in {"ok", "skipped", "not measured"}, (name, scenario)
    assert results["targets"]
    assert all({"id", "target", "met", "by"} <= set(t) for t in results["targets"])
    report = out.with_suffix(".md").read_text()
    assert report.startswith("# pymesh benchmarks")
