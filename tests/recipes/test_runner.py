"""``zoo run`` end to end on a tiny recipe: run directory, report, verified export, resume."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from export_testlib import colour_squares, tiny_recipe
from PIL import Image

from recipes import runner
from recipes.cli import main
from recipes.config import DEFAULT_TEST_FRACTION, load_recipe, parse_recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (pyproject: tomli; python_version < '3.11')
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
FINE_TUNE_EPOCHS = 8  # long enough to be killed in the middle of the stage


def _tiny_text(photos) -> str:
    """Two head epochs, then three of the top 2 blocks with AdamW."""
    top = {"blocks": 2, "optimizer": "adamw"}
    return tiny_recipe(
        photos, head_epochs=2, top_epochs=3, top=top, validation_fraction=0.2, deterministic=True
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two classes of small noisy colour squares (red, blue) and one broken file."""
    root = colour_squares(tmp_path_factory.mktemp("photos"), per_class=16)
    (root / "red" / "broken.png").write_bytes(b"this is not a PNG")
    return root


@pytest.fixture(scope="module")
def recipe_file(photos, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(_tiny_text(photos))
    return path


def _checkpoint_state(run_dir: Path) -> dict | None:
    path = run_dir / "checkpoints" / "last.npz"
    try:
        with np.load(path) as data:
            return json.loads(bytes(data["state"]).decode())
    except (OSError, ValueError, KeyError):  # not there yet, or being replaced
        return None


def _variables(run_dir: Path) -> dict[str, str]:
    manifest = json.loads((run_dir / "export" / "assets" / "zoo_manifest.json").read_text())
    return {e["path"]: e["sha256"] for e in manifest["manifest"]["variables"]}


def _kill_in_fine_tune_and_resume(command: list[str], run_dir: Path, outcome: dict) -> None:
    """Runs ``command`` (``zoo run``), kills it (-9) once ``run_dir``'s checkpoint is inside
    the second stage, then runs it again with ``--resume``; records what happened."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    process = subprocess.Popen(command, **quiet)
    killed = outcome.setdefault("killed_at", [])
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            state = _checkpoint_state(run_dir)
            if state and state["stage"] == 1 and 1 <= state["epoch"] < FINE_TUNE_EPOCHS - 2:
                process.send_signal(signal.SIGKILL)
                killed.append(state["epoch"])
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None and not killed:
            process.kill()
        process.wait(timeout=60)
    outcome["killed_returncode"] = process.returncode
    outcome["left_after_kill"] = (
        sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    )
    if killed:
        outcome["resumed_returncode"] = subprocess.run(
            [*command, "--resume"], timeout=600, **quiet
        ).returncode


@pytest.fixture(scope="module")
def runs(recipe_file, tmp_path_factory):
    """The recipe run twice at once: uninterrupted (in-process), and as ``zoo run``
    subprocesses, killed (-9) in its fine-tune stage, then resumed. Sharing the wall time,
    the two cost little more than one: much of a run is single-threaded tracing and I/O."""
    root = tmp_path_factory.mktemp("runs")
    overrides = [f"stages.1.epochs={FINE_TUNE_EPOCHS}"]
    killed_dir = root / "killed"
    command = [sys.executable, "-m", "recipes.cli", "run", str(recipe_file)]
    command += ["--out", str(killed_dir), "--set", overrides[0]]
    outcome: dict = {"run_dir": killed_dir}
    other = threading.Thread(
        target=_kill_in_fine_tune_and_resume, args=(command, killed_dir, outcome)
    )
    other.start()
    try:
        whole = runner.run_recipe(recipe_file, out=root / "whole", overrides=overrides, echo=None)
    finally:
        other.join()
    return whole, outcome


@pytest.fixture(scope="module")
def finished_run(runs) -> runner.RunResult:
    """One uninterrupted run, shared by the tests that read its output."""
    return runs[0]


@pytest.mark.slow
def test_run_writes_run_directory_report_and_verified_export(finished_run, recipe_file):
    run_dir = finished_run.run_dir
    assert finished_run.exit_code == 0
    for name in ("recipe.toml", "source_manifest.json", "logs/run.log", "checkpoints/last.npz"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "export" / "saved_model.pb").is_file()
    assert (run_dir / "export" / "model.keras").is_file()
    # The model card is written again after the report: it knows the splits and top-1.
    card = (run_dir / "export" / "MODEL_CARD.md").read_text()
    assert "Images per split: train" in card

    # The recipe as run carries the override and validates again.
    as_run = load_recipe(run_dir / "recipe.toml")
    assert as_run.stages[1].epochs == FINE_TUNE_EPOCHS
    assert as_run.stages[0] == load_recipe(recipe_file).stages[0]

    report = json.loads((run_dir / "report.json").read_text())
    assert report["verify"]["passed"] is True and report["verify"]["failures"] == []
    assert report["wall_seconds"] > 0
    # The numbers come from the data: 8 test images (25% of 32), 2 classes, 1 skipped file.
    test = report["test"]
    matrix = np.array(test["confusion_matrix"])
    assert matrix.shape == (2, 2) and matrix.sum() == test["images"] == 8
    assert report["test_top1"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert [c["support"] for c in test["per_class"]] == list(matrix.sum(axis=1))
    assert report["class_names"] == ["blue", "red"]
    assert [s["path"].endswith("broken.png") for s in report["data"]["skipped"]] == [True]
    assert report["data"]["train_images"] + report["data"]["validation_images"] == 24

    head, top = report["stages"]
    assert (head["name"], top["name"]) == ("head", "top")
    # The report keeps each stage's whole policy, in the recipe's words.
    assert head["policy"] == {"policy": "freeze_backbone"}
    assert top["policy"] == {
        "policy": "unfreeze_top",
        "blocks": 2,
        "fraction": None,
        "batchnorm": "frozen",
        "lr_decay": None,
    }
    assert report["evaluated_on"] == "test" and report["data"]["test_fraction"] == 0.25
    assert report["settings"]["mixed_precision"] is None
    assert report["settings"]["jit_compile"] is False
    assert len(head["history"]["loss"]) == 2 and len(top["history"]["val_loss"]) == FINE_TUNE_EPOCHS
    assert head["images_per_second"] > 0 and top["seconds"] > 0
    # Both stages train from cached activations: the backbone's output, then block6d's.
    assert head["cache"]["used"] and head["cache"]["cut"] == "top"
    assert top["cache"]["used"] and top["cache"]["cut"] == "block6d"
    assert top["cache"]["where"] == "memory" and top["cache"]["bytes"] > 0
    # One pass over the images serves both: the head's features derive from block6d's.
    assert head["cache"]["derived_from"] == "block6d" and top["cache"]["derived_from"] is None
    assert top["cache"]["reused"] and top["cache"]["seconds_saved"] > 0
    assert not (run_dir / "shared-cache").exists()

    md = (run_dir / "report.md").read_text()
    balanced = report["test"]["balanced_accuracy"]
    assert f"| {report['test_top1']:.3f} | {balanced:.3f} | 8 | efficientnet_lite0 | 32x32 |" in md
    for plot in ("training_curves", "confusion_matrix"):
        with Image.open(run_dir / "plots" / f"{plot}.png") as image:
            assert image.format == "PNG" and image.width > 300


@pytest.mark.slow
def test_run_dir_clash_and_resume_without_run(finished_run, recipe_file, tmp_path, capsys):
    code = main(["run", str(recipe_file), "--out", str(finished_run.run_dir)])
    assert code == 2
    assert "already holds a run; add --resume" in capsys.readouterr().err
    code = main(["run", str(recipe_file), "--out", str(tmp_path / "none"), "--resume"])
    assert code == 2
    assert "holds no recipe.toml" in capsys.readouterr().err


@pytest.fixture(scope="module")
def killed_and_resumed(runs) -> tuple[Path, int]:
    """The same run as ``finished_run``, killed (-9) in its fine-tune stage, then resumed."""
    outcome = runs[1]
    assert outcome["killed_at"], "the run ended before its fine-tune stage could be killed"
    assert outcome["killed_returncode"] == -signal.SIGKILL
    assert "export" not in outcome["left_after_kill"]
    assert "report.json" not in outcome["left_after_kill"]
    assert outcome["resumed_returncode"] == 0
    return outcome["run_dir"], outcome["killed_at"][0]


@pytest.mark.slow
def test_kill_9_in_fine_tune_then_resume_finishes_and_verifies(killed_and_resumed):
    run_dir, killed_at = killed_and_resumed
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verify"]["passed"] is True and report["resumed"] is True
    assert (run_dir / "export" / "saved_model.pb").is_file()
    head, top = report["stages"]
    assert head["resumed_at_epoch"] == 0 and len(head["history"]["loss"]) == 2  # kept, not rerun
    assert top["resumed_at_epoch"] >= killed_at >= 1
    # The activations the head stage computed for both stages were kept for the resume.
    assert top["cache"]["where_reason"].startswith("reused from the run directory")
    assert not (run_dir / "shared-cache").exists()
    assert len(top["history"]["loss"]) == FINE_TUNE_EPOCHS  # the epochs before the kill kept
    assert "resuming tiny" in (run_dir / "logs" / "run.log").read_text()


@pytest.mark.slow
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    killed_and_resumed, finished_run
):
    # Op determinism is on in the recipe, so the two runs must match bit for bit.
    run_dir, _ = killed_and_resumed
    whole = finished_run.run_dir
    resumed = json.loads((run_dir / "report.json").read_text())["stages"][1]["history"]
    assert resumed["loss"] == finished_run.report.stages[1].history["loss"]
    assert _variables(run_dir) == _variables(whole)


def test_failed_verification_exits_1_and_leaves_no_export(tmp_path, monkeypatch):
    from recipes import export as export_lib
    from recipes.verify import VerifyResult

    failed = VerifyResult(
        tmp_path / "x", passed=False, failures=["backbone/stem_conv/kernel changed"]
    )

    def refuse(model, export_dir, **kwargs):
        raise export_lib.ExportError("The export failed verification", failed)

    monkeypatch.setattr(export_lib, "export_saved_model", refuse)
    (tmp_path / "export").mkdir()  # an export from an earlier attempt must not survive
    (tmp_path / "export" / "saved_model.pb").write_bytes(b"old")
    path, verify = runner._export_and_verify(
        parse_recipe(tomllib.loads(_tiny_text("unused"))),
        model=None,
        run_dir=tmp_path,
        source_manifest={},
        result=type("R", (), {"frozen_in_all_stages": set()})(),
        timings={},
        log=lambda message: None,
    )
    assert path is None
    assert verify["passed"] is False
    assert verify["failures"] == ["backbone/stem_conv/kernel changed"]
    assert not (tmp_path / "export").exists()


def _tiny(photos="unused", **changes) -> "runner.Recipe":
    data = tomllib.loads(_tiny_text(photos))
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if value is None:
            data[section].pop(name, None)
        else:
            data[section][name] = value
    return parse_recipe(data)


def test_folder_without_test_fraction_holds_out_the_default_test_split(photos):
    recipe = _tiny(photos.as_posix(), **{"data.test_fraction": None})
    data, fraction, text = runner._load_data(recipe, log=lambda message: None)
    assert fraction == DEFAULT_TEST_FRACTION and "default" in text
    counts = [runner._count(data, split) for split in ("train", "validation", "test")]
    assert counts[2] >= 1 and sum(counts) == 32  # every good image in exactly one split


class _FakeSource:
    """What ``zoo.data.load`` returns, as far as ``runner._load_data`` looks."""

    multi_label = False

    def __init__(self, splits: dict) -> None:
        self.splits, self.class_names, self.skipped, self.source = splits, ["a", "b"], [], "fake"
        self.test = splits.get("test")

    def split(self, name):
        return self.splits.get(name)

    def num_examples(self, name):
        return 10 if name in self.splits else None


@pytest.mark.parametrize(
    "source, own_test, changes, loads, words",
    [
        # tf_flowers-like: no test split of its own, so one is held out by default.
        ("tfds:flowers", False, {}, [{}, {"test_fraction": DEFAULT_TEST_FRACTION}], "default"),
        ("tfds:cifar", True, {}, [{}], "the source's own test split"),
        ("tfds:flowers", False, {"data.test_fraction": 0.2}, [{"test_fraction": 0.2}], "20%"),
        ("tfds:flowers", False, {"data.evaluate_on": "validation"}, [{}], "none"),
    ],
)
def test_a_source_without_test_split_gets_a_held_out_one(
    monkeypatch, source, own_test, changes, loads, words
):
    from zoo import data as zoo_data

    calls = []

    def load(name, **options):
        calls.append({k: v for k, v in options.items() if k == "test_fraction"})
        held_out = own_test or "test_fraction" in options
        return _FakeSource({"train": 1, "validation": 1, **({"test": 1} if held_out else {})})

    monkeypatch.setattr(zoo_data, "load", load)
    recipe = _tiny(**{"data.source": source, "data.test_fraction": None, **changes})
    data, fraction, text = runner._load_data(recipe, log=lambda message: None)
    assert calls == loads
    assert fraction == loads[-1].get("test_fraction")
    assert words in text
    assert (data.test is not None) == (recipe.data.evaluate_on == "test")


def test_no_split_to_evaluate_on_is_an_error_before_training(monkeypatch):
    from zoo import data as zoo_data

    monkeypatch.setattr(zoo_data, "load", lambda name, **options: _FakeSource({"train": 1}))
    with pytest.raises(runner.RunError, match=r"evaluate_on = 'test', but fake:x has no test"):
        runner._load_data(_tiny(**{"data.source": "fake:x"}), log=lambda message: None)


def test_evaluate_on_validation_measures_the_validation_split(photos, monkeypatch):
    from zoo.caching.engine import EngineChoice

    recipe = _tiny(photos.as_posix(), **{"data.evaluate_on": "validation"})
    data, _, _ = runner._load_data(recipe, log=lambda message: None)

    class Blue:  # predicts class 0 ("blue") for every image
        def predict_on_batch(self, images):
            return np.tile([[1.0, 0.0]], (len(images), 1))

    choice = EngineChoice("tensorflow", "auto", False, "a stand-in model")
    monkeypatch.setattr(runner, "_inference_model", lambda r, model, d, s: (model, choice))
    lines = []
    metrics = runner._evaluate(recipe, Blue(), data, log=lines.append)
    assert metrics["split"] == "validation" and metrics["engine"] == choice.to_dict()
    assert metrics["images"] == runner._count(data, "validation")
    assert lines[0] == "evaluation engine: tensorflow (a stand-in model)"
    assert lines[1].startswith("validation top-1 ")


def test_auto_settings_reach_fine_tune_and_the_choice_reaches_the_report(photos, monkeypatch):
    from zoo import training

    recipe = _tiny(photos.as_posix(), **{"run.mixed_precision": "auto", "run.jit_compile": "auto"})
    data, _, _ = runner._load_data(recipe, log=lambda message: None)
    probe = {"candidates": [{"mixed_precision": "bfloat16", "seconds_per_step": 0.1}]}
    seen = {}

    def fine_tune(model, train, validation, stages, **kwargs):
        seen.update(kwargs, stages=stages)
        return SimpleNamespace(mixed_precision="bfloat16", jit_compile=False, settings_probe=probe)

    monkeypatch.setattr(training, "fine_tune", fine_tune)
    result = runner._fine_tune(recipe, None, data, photos, False, log=lambda message: None)
    assert (seen["mixed_precision"], seen["jit_compile"]) == ("auto", "auto")
    assert [s.name for s in seen["stages"]] == ["head", "top"]
    assert [type(s.policy).__name__ for s in seen["stages"]] == ["FreezeBackbone", "UnfreezeTop"]
    settings = runner._settings_report(recipe, result)
    assert settings.mixed_precision_asked == "auto" and settings.jit_compile_asked == "auto"
    assert (settings.mixed_precision, settings.jit_compile, settings.probe) == (
        "bfloat16",
        False,
        probe,
    )
    # Before fine_tune reports a probe (or with fixed settings) there is none to show.
    fixed = SimpleNamespace(mixed_precision=None, jit_compile=False)
    assert runner._settings_report(_tiny(), fixed).probe is None


def test_recipe_augmentation_data_wide_per_stage_and_off():
    """[data].augment applies to every stage unless a stage names its own or says false;
    mixup / cutmix stages get an augmentation that makes soft labels for the classes."""
    data = tomllib.loads(_tiny_text("unused"))
    data["data"]["augment"] = ["flip", "mixup"]
    data["stages"][0]["augment"] = False
    data["stages"][1]["augment"] = ["random_crop", "cutmix"]
    stages = runner._stages(parse_recipe(data), num_classes=2)
    assert stages[0].augment is None
    own = stages[1].augment
    assert own.soft_labels and own.num_classes == 2 and own.crop_fraction is not None
    assert [type(m).__name__ for m in own.mixes] == ["CutMix"]

    del data["stages"][1]["augment"]
    wide = runner._stages(parse_recipe(data), num_classes=2)[1].augment
    assert [type(m).__name__ for m in wide.mixes] == ["MixUp"]
    assert [type(layer).__name__ for layer in wide.layers] == ["RandomFlip"]


def test_zoo_export_of_a_run_directory_takes_the_runs_calibration_and_test_split(
    finished_run, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run.run_dir, run_dir)
    assert main(["export", str(run_dir), "--format", "tflite-int8"]) == 0  # no --calibration
    table = capsys.readouterr().out
    float_top1 = json.loads((run_dir / "report.json").read_text())["test"]["top1"]
    row = next(line for line in table.splitlines() if "model_int8.tflite" in line)
    top1, drop = re.search(r"(\d\.\d{4}) \(([+-]\d\.\d{4})\)", row).groups()
    assert float(drop) == pytest.approx(float_top1 - float(top1), abs=1e-4)
    assert (run_dir / "export" / "model_int8.tflite").is_file()
    assert main(["verify", str(run_dir / "export")]) == 0
