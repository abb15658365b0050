"""``zoo run`` as a two-worker ``MultiWorkerMirroredStrategy`` cluster on loopback ports.

Two processes of ``python -m recipes.cli run`` with ``TF_CONFIG`` for a cluster of two
workers on free local ports: they finish, only the chief (worker 0) writes, the export
verifies; killing worker 1 with SIGKILL mid-run and restarting both with ``--resume``
finishes with the weights of a run never interrupted. Every process has a deadline (a
collective with a dead peer blocks; see ``_stop_after``), so a hang fails the test.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from export_testlib import colour_squares, tiny_recipe

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 240  # one cluster run, start to finish; ~40 s on 2 idle cores


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    # 52 images: 26 train, no split ends in a batch smaller than the 2 replicas
    root = colour_squares(tmp_path_factory.mktemp("photos"), per_class=26)
    path = tmp_path_factory.mktemp("recipe") / "two_workers.toml"
    # Three epochs in all, so a worker can be killed after the first with two still to run.
    recipe = tiny_recipe(root, top_epochs=2, deterministic=True, distribute="multi_worker")
    path.write_text(recipe)
    return path


def _free_ports(count: int) -> list[int]:
    """Ports the OS just handed out on loopback (held together, so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _start(recipe: Path, outs: list[Path], logs: Path, *args: str) -> list[subprocess.Popen]:
    """Worker 0 (the chief) and worker 1, each writing its output to ``logs/worker<i>.log``."""
    hosts = [f"localhost:{port}" for port in _free_ports(2)]
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for index, out in enumerate(outs):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            TF_CPP_MIN_LOG_LEVEL="3",
            TF_CONFIG=json.dumps(tf_config),
        )
        command = [sys.executable, "-m", "recipes.cli", "run", str(recipe), "--out", str(out)]
        with open(logs / f"worker{index}.log", "a") as log:
            procs.append(
                subprocess.Popen(
                    [*command, *args], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
                )
            )
    return procs


def _wait(procs: list[subprocess.Popen], logs: Path, deadline_s: float = DEADLINE_S) -> None:
    """Waits for every worker to exit 0; on a hang or a failure kills all and says why."""
    end = time.monotonic() + deadline_s
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(end - time.monotonic(), 1)))
        except subprocess.TimeoutExpired:
            codes.append(None)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    tails = {p.name: p.read_text()[-3000:] for p in sorted(logs.glob("worker*.log"))}
    assert codes == [0, 0], f"exit codes {codes} (None: hung past {deadline_s} s); {tails}"


def _state(run_dir: Path) -> dict | None:
    """The chief's checkpoint state, or None before the first epoch ends."""
    path = run_dir / "checkpoints" / "last.npz"
    if not path.exists():
        return None
    with np.load(path) as data:  # replaced atomically: always a whole file
        return json.loads(bytes(data["state"]).decode())


def _weights(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "checkpoints" / "last.npz") as data:
        return {k: data[k] for k in data.files if k.startswith("model/")}


@pytest.fixture(scope="module")
def uninterrupted(recipe_file, tmp_path_factory) -> dict[str, Path]:
    """A two-worker run, each worker with its own run directory (as on two hosts)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    outs = [root / "worker0", root / "worker1"]
    _wait(_start(recipe_file, outs, root / "logs"), root / "logs")
    return {"chief": outs[0], "other": outs[1], "logs": root / "logs"}


def test_two_workers_finish_and_only_the_chief_writes(uninterrupted):
    chief = uninterrupted["chief"]
    assert not uninterrupted["other"].exists()  # worker 1 wrote nothing at all
    assert "not the chief" in (uninterrupted["logs"] / "worker1.log").read_text()
    report = json.loads((chief / "report.json").read_text())
    settings = report["settings"]
    assert settings["strategy"] == "MultiWorkerMirroredStrategy"
    assert (settings["workers"], settings["replicas"], settings["per_replica_batch"]) == (2, 2, 4)
    assert report["verify"]["passed"] is True
    assert (
        "MultiWorkerMirroredStrategy, 2 replica(s) on 2 worker(s)"
        in (chief / "report.md").read_text()
    )
    assert _state(chief)["stage"] == 2  # both stages complete


def test_export_of_the_two_worker_run_verifies(uninterrupted):
    result = subprocess.run(
        [sys.executable, "-m", "recipes.cli", "verify", str(uninterrupted["chief"] / "export")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3"),
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _stop_after(proc: subprocess.Popen, seconds: float) -> str:
    """How the chief ended once its peer died. On loopback the kernel resets the dead
    process's connections, so the chief's next collective raises ``UnavailableError``
    ("Collective ops is aborted by: ... Connection reset by peer") and it exits 1; where a
    peer vanishes without a reset, a collective waits for it, so it is killed here."""
    try:
        proc.wait(timeout=seconds)
        return f"exited {proc.returncode}"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return "hung, killed"


def test_kill_one_worker_then_resume_both_ends_with_the_uninterrupted_weights(
    recipe_file, uninterrupted, tmp_path
):
    run_dir, logs = tmp_path / "run", tmp_path / "logs"  # one run directory, shared
    no_export = "--set", "export.enabled=false"  # the test above verifies an export
    chief, other = _start(recipe_file, [run_dir, run_dir], logs, *no_export)
    end = time.monotonic() + DEADLINE_S
    while (state := _state(run_dir)) is None or (state["stage"], state["epoch"]) < (1, 1):
        assert chief.poll() is None and time.monotonic() < end, (logs / "worker0.log").read_text()
        time.sleep(0.05)
    other.send_signal(signal.SIGKILL)  # mid-way: the top stage has an epoch left to run
    other.wait()
    how = _stop_after(chief, 60)
    assert not (run_dir / "report.json").exists(), how  # the run really was cut short
    # The chief's last checkpoint: after epoch 1 of 2 of the top stage.
    assert (_state(run_dir)["stage"], _state(run_dir)["epoch"]) == (1, 1), how

    _wait(_start(recipe_file, [run_dir, run_dir], logs, *no_export, "--resume"), logs)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["resumed"] is True
    assert [s["resumed_at_epoch"] for s in report["stages"]] == [0, 1]
    ours, theirs = _weights(run_dir), _weights(uninterrupted["chief"])
    assert sorted(ours) == sorted(theirs)
    different = [k for k in ours if ours[k].tobytes() != theirs[k].tobytes()]
    assert different == [], f"{len(different)} variables differ after the resume ({how})"


def test_other_worker_resuming_without_the_chiefs_run_dir_says_where_it_must_be(
    recipe_file, tmp_path, monkeypatch
):
    from recipes.runner import RunError, run_recipe

    hosts = ["localhost:1", "localhost:2"]
    tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    with pytest.raises(RunError, match="holds no recipe.toml.*chief's run directory") as err:
        run_recipe(recipe_file, out=tmp_path / "local", resume=True, echo=None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "local").exists()
