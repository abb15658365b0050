"""``zoo run`` with ``[run] distribute``: mirrored on 2 logical CPUs, and bad input.

Each run is a fresh process (``python -m recipes.cli``): logical CPU devices can only be
made before TensorFlow initialises.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from export_testlib import colour_squares, tiny_recipe

from recipes.config import parse_recipe
from zoo.errors import ZooError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (pyproject: tomli; python_version < '3.11')
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    """Two classes of small noisy colour squares and a recipe that trains on them."""
    # 48 images: 25 train and 10 validation in batches of 8 end in batches of 1 and 2; the
    # 1 would leave the second replica without an image, which TensorFlow cannot run.
    root = colour_squares(tmp_path_factory.mktemp("photos"), per_class=24)
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(tiny_recipe(root, deterministic=True))
    return path


def _zoo_run(recipe: Path, out: Path, *sets: str, env: dict | None = None):
    command = [sys.executable, "-m", "recipes.cli", "run", str(recipe), "--out", str(out)]
    for value in sets:
        command += ["--set", value]
    environ = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    environ.pop("TF_CONFIG", None) if env is None or "TF_CONFIG" not in env else None
    return subprocess.run(
        command, capture_output=True, text=True, env=environ, timeout=300, cwd=REPO
    )


def _error_line(result) -> str:
    """The CLI's one line for a ZooError (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("zoo: error")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_mirrored_on_two_logical_cpus_runs_verifies_and_reports(recipe_file, tmp_path):
    out = tmp_path / "run"
    result = _zoo_run(recipe_file, out, "run.distribute=mirrored", "run.logical_cpu_devices=2")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    settings = report["settings"]
    assert (settings["strategy"], settings["replicas"]) == ("MirroredStrategy", 2)
    assert (settings["global_batch"], settings["per_replica_batch"]) == (8, 4)
    assert settings["distribute_asked"] == "mirrored"
    assert report["verify"]["passed"] is True
    assert all(stage["images_per_second"] > 0 for stage in report["stages"])
    markdown = (out / "report.md").read_text()
    assert "MirroredStrategy, 2 replica(s)" in markdown and "8 / 4" in markdown
    assert "not rescaled" in markdown
    # The short last training batch is left out, and the run says so.
    said = result.stdout + result.stderr
    assert "the last train batch would hold 1 image(s), fewer than the 2 replicas" in said
    assert "last validation batch" not in said


def test_batch_not_divisible_by_the_replicas_is_one_line_exit_2(recipe_file, tmp_path):
    result = _zoo_run(
        recipe_file,
        tmp_path / "run",
        "run.distribute=mirrored",
        "run.logical_cpu_devices=3",
    )
    line = _error_line(result)
    assert "batch_size 8 does not divide among 3 replicas" in line


@pytest.mark.parametrize(
    ("tf_config", "match"),
    [(None, "needs the TF_CONFIG environment variable"), ("{oops", "TF_CONFIG is not JSON")],
)
def test_multi_worker_with_no_or_malformed_tf_config_is_one_line_exit_2(
    recipe_file, tmp_path, tf_config, match
):
    env = {} if tf_config is None else {"TF_CONFIG": tf_config}
    result = _zoo_run(recipe_file, tmp_path / "run", "run.distribute=multi_worker", env=env)
    assert match in _error_line(result)


def test_run_keys_are_validated():
    def parsed(**run):
        data = tomllib.loads(tiny_recipe("x", deterministic=True))
        data["run"].update(run)
        return parse_recipe(data)

    recipe = parsed()
    assert (recipe.run.distribute, recipe.run.logical_cpu_devices) == ("none", None)
    assert parsed(distribute="multi_worker", logical_cpu_devices=2).run.distribute == "multi_worker"
    with pytest.raises(ZooError, match="distribute"):
        parsed(distribute="everywhere")
    with pytest.raises(ZooError, match="logical_cpu_devices"):
        parsed(logical_cpu_devices=0)
