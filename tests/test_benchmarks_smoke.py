"""Smoke test of ``python -m benchmarks.run --quick``: files and keys exist; of the numbers
only the cache bound's arithmetic is checked."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("peak", "forward", "head_stage", "fine_tune", "prefix_cache", "serving", "pipeline")


@pytest.mark.slow
def test_quick_run_writes_json_markdown_and_chart(tmp_path):
    # A subset keeps CI short: the matmul peak, one forward, and the prefix cache (which
    # runs plain Keras fit and zoo.training side by side).
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--tag", "smoke"]
    command += ["--only", "peak,forward,prefix_cache", "--backbones", "efficientnet_lite0"]
    command += ["--out", str(tmp_path)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    doc = json.loads((tmp_path / "smoke.json").read_text())
    assert {"machine", "settings", "targets", *SECTIONS} <= set(doc)
    assert {"cpu", "cores", "memory_gib", "tensorflow", "keras", "backend"} <= set(doc["machine"])
    assert {"float32", "bfloat16"} <= set(doc["peak"])
    forward = doc["forward"]["efficientnet_lite0"]
    assert {"images_per_second", "gflops", "fraction_of_peak"} <= set(forward["float32"])
    assert forward["float32_folded"]["images_per_second"] > 0
    prefix = doc["prefix_cache"]["efficientnet_lite0"]
    assert {"plain_seconds", "cached_seconds", "speedup", "max_weight_diff"} <= set(prefix)
    # The arithmetic bound: 2 epochs of P + 3S against P + 2 x 3S, from the counted MACs.
    p, s = prefix["prefix_gmacs"], prefix["suffix_gmacs"]
    assert 0 < s < p and prefix["speedup_bound"] == pytest.approx(2 * (p + 3 * s) / (p + 6 * s))
    assert set(doc["targets"]) == {
        "head_stage.speedup",
        "fine_tune.speedup",
        "prefix_cache.speedup",
        "prefix_cache.max_weight_diff",
        "serving.ratio",
        "pipeline.ratio",
    }
    assert doc["serving"]["skipped"] == "not selected (--only)"
    assert doc["serving"]["ratio"] is None and doc["head_stage"]["speedup"] is None
    assert "| `prefix_cache.speedup` |" in (tmp_path / "smoke.md").read_text()
    assert (tmp_path / "smoke.png").read_bytes()[:4] == b"\x89PNG"
