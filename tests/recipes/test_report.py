"""The report: metrics from the predictions, real PNG plots, numbers carried into JSON / MD."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recipes.report import (
    CacheReport,
    DataReport,
    RunReport,
    SettingsReport,
    StageReport,
    VerifyReport,
    calibration,
    classification_metrics,
    error_analysis,
    write_report,
)
from recipes.text import jsonable, markdown_table, plain_table, print_table
from zoo.caching import CacheInfo


def test_classification_metrics_counts():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 2, 2]
    metrics = classification_metrics(labels, predictions, ["a", "b", "c"])
    assert metrics["top1"] == pytest.approx(4 / 6)
    assert metrics["images"] == 6
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = metrics["per_class"]
    assert (a["class"], a["precision"], a["recall"], a["support"]) == ("a", 1.0, 2 / 3, 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0)


def test_classification_metrics_never_predicted_class_and_errors():
    metrics = classification_metrics([0, 1], [0, 0], ["a", "b"])
    assert metrics["per_class"][1]["precision"] is None
    assert metrics["per_class"][1]["recall"] == 0.0
    with pytest.raises(ValueError, match=r"differ in length: 2 vs 1"):
        classification_metrics([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match=r"predictions hold class indices 0\.\.5, outside 0\.\.1"):
        classification_metrics([0, 1], [0, 5], ["a", "b"])


def test_classification_metrics_top5_and_balanced_accuracy_follow_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

    rng = np.random.default_rng(4)
    labels = np.r_[np.zeros(90, int), np.ones(10, int), np.full(20, 2), np.full(30, 5)]
    logits = rng.normal(size=(150, 6)) + 1.5 * np.eye(6)[labels]
    predictions = logits.argmax(axis=1)
    metrics = classification_metrics(labels, predictions, list("abcdef"), logits)
    assert metrics["top5"] == pytest.approx(
        top_k_accuracy_score(labels, logits, k=5, labels=range(6))
    )
    assert metrics["top5"] > metrics["top1"]
    recalls = [np.mean(predictions[labels == c] == c) for c in (0, 1, 2, 5)]
    assert metrics["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert metrics["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels, predictions)
    )
    assert metrics["per_class"][3]["recall"] is None  # never present: 0/0
    with pytest.raises(ValueError, match=r"logits \(150, 5\) are not \(images, classes\)"):
        classification_metrics(labels, predictions, list("abcdef"), logits[:, :5])


def test_error_analysis_puts_confident_mistakes_first_with_their_paths():
    labels = np.array([0, 1, 2, 0, 1, 2, 1])
    logits = np.eye(3)[labels] * 4.0
    logits[3] = [0.0, 9.0, 0.0]  # labelled 0, the model sure of 1: a likely label error
    logits[6] = [0.0, 0.5, 1.0]  # labelled 1, unsure between 1 and 2
    paths = [f"cls/{i}.jpg" for i in range(7)]
    found = error_analysis(labels, logits, ["a", "b", "c"], paths, top=3)
    first, second = found["top_losses"][:2]
    assert (first["identity"], first["true"], first["predicted"]) == ("cls/3.jpg", "a", "b")
    assert first["probability"] == pytest.approx(np.exp(9) / (np.exp(9) + 2))
    assert first["loss"] == pytest.approx(-np.log(1 / (np.exp(9) + 2)))
    assert second["identity"] == "cls/6.jpg" and len(found["top_losses"]) == 3
    pairs = [(p["true"], p["predicted"], p["count"]) for p in found["most_confused"]]
    assert pairs == [("a", "b", 1), ("b", "c", 1)]
    assert found["most_confused"][0]["share"] == 0.5
    with pytest.raises(ValueError, match="do not fit 3 classes"):
        error_analysis(labels, logits, ["a", "b", "c"], paths[:2])


def test_temperature_scaling_recovers_the_temperature_and_lowers_the_ece():
    from recipes.report import calibration, expected_calibration_error, fit_temperature

    # Labels drawn from softmax(z / 2): the logits z are over-confident by a factor of 2.
    rng = np.random.default_rng(6)
    z = rng.normal(scale=3.0, size=(4000, 5))
    p = np.exp(z / 2) / np.exp(z / 2).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(labels[:2000], z[:2000]) == pytest.approx(2.0, rel=0.1)
    found = calibration(labels[:2000], z[:2000], labels[2000:], z[2000:])
    assert found["ece_after"] < 0.03 < found["ece_before"]
    assert found["nll_after"] < found["nll_before"]
    after = found["reliability"]["after"]
    assert len(after["confidence"]) == len(after["accuracy"]) >= 5
    # By hand: two bins, (0.6 right, 0.9 wrong, 0.9 right): |1 - .6| / 3 + 2 |.5 - .9| / 3.
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.1, 0.9]])
    ece = expected_calibration_error([0, 1, 1], probs, bins=10)
    assert ece == pytest.approx((0.4 + 2 * 0.4) / 3)


def test_report_says_which_epoch_was_kept_ema_and_where_the_model_is_wrong(tmp_path):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 6, 60)
    logits = rng.normal(size=(60, 6)) + 2.0 * np.eye(6)[labels]
    names = [f"class_{i}" for i in range(6)]
    test = classification_metrics(labels, logits.argmax(1), names, logits)
    test.update(error_analysis(labels, logits, names, [f"img/{i}.png" for i in range(60)]))
    test["split"] = "test"
    test["tta"] = {"views": ["image", "flip"], "top1_without": 0.5, "seconds": 1.5}
    test["calibration"] = {
        **calibration(labels, logits, labels, logits),
        "fitted_on": "validation",
    }
    base = _report(rng)
    head, top = base.stages
    top = dataclasses.replace(
        top,
        kept_epoch=1,
        kept_reason="epoch 1 of 2 restored: the best val_loss 0.5",
        ema=0.999,
        without_ema={"val_loss": 0.6, "val_accuracy": 0.7},
    )
    report = dataclasses.replace(
        base, evaluation=test, top1=test["top1"], stages=[head, top], class_names=names
    )
    images = rng.uniform(0, 255, (8, 32, 32, 3))
    paths = write_report(report, tmp_path, top_loss_images=images)

    saved = json.loads((tmp_path / "report.json").read_text())
    assert RunReport.from_dict(saved) == report
    md = (tmp_path / "report.md").read_text()
    assert "- top: epoch 1 of 2 restored: the best val_loss 0.5" in md
    assert "| top | 0.999 | val_accuracy | 0.790 | 0.700 |" in md
    assert "| test top-1 | test top-5 | balanced accuracy |" in md
    worst = test["top_losses"][0]
    assert f"| `{worst['identity']}` | {worst['true']} | {worst['predicted']} |" in md
    pair = test["most_confused"][0]
    assert f"| {pair['true']} | {pair['predicted']} | {pair['count']} |" in md
    assert "![highest-loss images](plots/top_losses.png)" in md
    assert "on the image alone; 1.5 s for the extra views" in md
    ece = test["calibration"]["ece_after"]
    assert f"| temperature-scaled | {ece:.4f} |" in md
    assert "![reliability diagram](plots/reliability.png)" in md
    assert paths["reliability"].stat().st_size > 10_000
    with Image.open(paths["top_losses"]) as image:
        assert image.format == "PNG" and np.asarray(image.convert("L")).std() > 5


def _report(rng: np.random.Generator, **changes) -> RunReport:
    names = [f"class_{i}" for i in range(4)]
    labels = rng.integers(0, 4, size=200)
    predictions = np.where(rng.random(200) < 0.8, labels, rng.integers(0, 4, size=200))
    test = classification_metrics(labels, predictions, names)
    test["split"] = "test"

    def curve(start, n):
        return [float(v) for v in np.linspace(start, start / 3, n)]

    report = RunReport(
        recipe="unit",
        description="a made-up run",
        evaluated_on="test",
        top1=test["top1"],
        evaluation=test,
        wall_seconds=12.5,
        verify=VerifyReport(passed=True),
        backbone="tiny",
        weights=None,
        input_shape=[32, 32, 3],
        class_names=names,
        stages=[
            StageReport(
                name="head",
                policy={"policy": "freeze_backbone"},
                history={
                    "loss": curve(1.2, 3),
                    "accuracy": [0.5, 0.6, 0.7],
                    "val_loss": curve(1.1, 3),
                    "val_accuracy": [0.55, 0.62, 0.71],
                },
                seconds=3.0,
                images_per_second=812.5,
                cache=CacheReport(
                    used=True,
                    reason="head-only cache",
                    where="memory",
                    bytes=3 * 2**20,
                    seconds_saved=7.0,
                    seconds_saved_is_estimate=True,
                    derived_from="block6d",
                ),
            ),
            StageReport(
                name="top",
                policy={
                    "policy": "unfreeze_top",
                    "blocks": 2,
                    "fraction": None,
                    "batchnorm": "frozen",
                    "lr_decay": 0.8,
                },
                history={
                    "loss": curve(0.6, 2),
                    "accuracy": [0.75, 0.8],
                    "val_loss": curve(0.5, 2),
                    "val_accuracy": [0.74, 0.79],
                },
                seconds=5.0,
                images_per_second=97.0,
                cache=CacheReport(used=False, reason="augmentation is on"),
            ),
        ],
        data=DataReport(
            source="folder",
            train_images=100,
            validation_images=10,
            test_images=200,
            skipped=[{"path": "x/broken.jpg", "reason": "not an image"}],
            test_fraction=0.1,
            test_split="10% of the training images held out (default)",
        ),
        timings={"load data": 1.0, "fine-tune": 8.0},
    )
    return dataclasses.replace(report, **changes)


def test_write_report_files_and_numbers(tmp_path):
    report = _report(np.random.default_rng(0))
    paths = write_report(report, tmp_path)

    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["test_top1"] == pytest.approx(report.evaluation["top1"])
    assert saved["evaluated_on"] == "test" and "validation_top1" not in saved
    assert saved["wall_seconds"] == 12.5 and saved["verify"]["passed"] is True
    assert saved["test"]["confusion_matrix"] == report.evaluation["confusion_matrix"]
    assert saved["stages"][1]["history"]["val_accuracy"] == [0.74, 0.79]
    # Each stage's full policy config, not a bare name.
    assert saved["stages"][1]["policy"] == {
        "policy": "unfreeze_top",
        "blocks": 2,
        "fraction": None,
        "batchnorm": "frozen",
        "lr_decay": 0.8,
    }
    assert saved["data"]["test_fraction"] == 0.1
    # One JSON conversion, both ways.
    assert RunReport.from_dict(saved) == report

    md = (tmp_path / "report.md").read_text()
    assert "| test top-1 | balanced accuracy | test images | backbone |" in md
    balanced = report.evaluation["balanced_accuracy"]
    assert f"| {report.top1:.3f} | {balanced:.3f} | 200 | tiny | 32x32 | 12 s | yes |" in md
    assert (
        "| head | freeze_backbone | 3 | 0.700 | 0.710 | 3.0 | 812.5 | head-only cache (memory, 3.0 MiB, saved ~7 s, derived from the block6d activations) |"
        in md
    )
    assert "| top | unfreeze_top (blocks=2, batchnorm=frozen, lr_decay=0.8) | 2 |" in md
    assert "not used: augmentation is on" in md
    assert "- test split: 10% of the training images held out (default)" in md
    assert "## Test set, per class" in md
    first = report.evaluation["per_class"][0]
    assert (
        f"| class_0 | {first['precision']:.3f} | {first['recall']:.3f} | {first['support']} |" in md
    )
    assert "skipped `x/broken.jpg`: not an image" in md
    assert "![training curves](plots/training_curves.png)" in md
    assert "![confusion matrix](plots/confusion_matrix.png)" in md

    for name in ("training_curves", "confusion_matrix"):
        assert paths[name] == tmp_path / "plots" / f"{name}.png"
        with Image.open(paths[name]) as image:
            assert image.format == "PNG"
            assert image.width >= 400 and image.height >= 300
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 5  # drawn, not blank
        assert paths[name].stat().st_size > 10_000


def test_report_marks_failed_verification(tmp_path):
    report = _report(
        np.random.default_rng(1),
        verify=VerifyReport(passed=False, failures=["head/dense/kernel changed"]),
    )
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| **NO** |" in md
    assert "- head/dense/kernel changed" in md


def test_validation_is_never_called_test(tmp_path):
    report = _report(np.random.default_rng(2))
    evaluation = {**report.evaluation, "split": "validation"}
    report = dataclasses.replace(report, evaluated_on="validation", evaluation=evaluation)
    write_report(report, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["validation_top1"] == pytest.approx(report.top1)
    assert saved["evaluated_on"] == "validation"
    assert "test_top1" not in saved and "test" not in saved
    assert saved["validation"]["confusion_matrix"] == evaluation["confusion_matrix"]
    assert RunReport.from_dict(saved) == report
    md = (tmp_path / "report.md").read_text()
    assert "| validation top-1 | balanced accuracy | validation images |" in md
    assert "test top-1" not in md and "Test set" not in md
    assert "## Validation set, per class" in md
    assert "not a held-out test result" in md


def test_settings_chosen_by_auto_and_the_probe_times_are_reported(tmp_path):
    probe = {
        "candidates": [
            {"mixed_precision": None, "jit_compile": False, "seconds_per_step": 0.21, "loss": 1.1},
            {"mixed_precision": "bfloat16", "jit_compile": False, "seconds_per_step": 0.14},
        ],
        "chosen": "bfloat16",
    }
    settings = SettingsReport(
        mixed_precision_asked="auto",
        jit_compile_asked="auto",
        mixed_precision="bfloat16",
        jit_compile=False,
        probe=probe,
    )
    write_report(_report(np.random.default_rng(3), settings=settings), tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert (
        saved["settings"]["probe"] == probe and saved["settings"]["mixed_precision"] == "bfloat16"
    )
    md = (tmp_path / "report.md").read_text()
    assert "| mixed precision | auto | bfloat16 |" in md
    assert "| XLA (jit_compile) | auto | False |" in md
    assert "| - | False | 0.210 | 1.100 |" in md and "| bfloat16 | False | 0.140 | - |" in md
    assert "- probe chosen: bfloat16" in md


def test_the_evaluation_engine_its_probe_and_parity_are_reported(tmp_path):
    from zoo.caching.engine import EngineCandidate, EngineChoice

    choice = EngineChoice(
        engine="litert",
        asked="auto",
        probed=True,
        reason="fastest of 3 candidates",
        batch_size=64,
        relative_error=3.1e-06,
        candidates=(
            EngineCandidate("tensorflow", 0.128, 0.0, True),
            EngineCandidate("tensorflow-folded", 0.064, 1.4e-06, True),
            EngineCandidate("litert", 0.032, 3.1e-06, True),
        ),
    )
    settings = SettingsReport(inference_engine_asked="auto", evaluation_engine=choice.to_dict())
    write_report(_report(np.random.default_rng(4), settings=settings), tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert EngineChoice.from_dict(saved["settings"]["evaluation_engine"]) == choice
    md = (tmp_path / "report.md").read_text()
    assert "| inference engine (evaluation) | auto | litert |" in md
    assert "| tensorflow | 500.0 | 0.0e+00 | yes |" in md
    assert "| litert | 2000.0 | 3.1e-06 | yes |" in md
    assert "max|a - b| / max|b| against TensorFlow as built" in md


def test_cache_report_from_cache_info_estimates_the_saving():
    info = CacheInfo(
        used=True,
        reason="cut at block6d",
        cut="block6d",
        cut_layer="block6d_add",
        location="memory",
        location_reason="fits in memory",
        size_bytes=4096,
        shape=(2, 2, 192),
        dtype="float32",
        build_seconds=3.0,
        pass_seconds=2.0,
    )
    report = CacheReport.from_cache_info(info, epochs=4)
    assert (report.where, report.where_reason, report.bytes) == ("memory", "fits in memory", 4096)
    assert report.shape == [2, 2, 192] and report.cut_layer == "block6d_add"
    assert report.seconds_saved == 2.0 * 4 - 3.0 and report.seconds_saved_is_estimate
    unused = CacheReport.from_cache_info(CacheInfo(reason="augmentation is on"), epochs=4)
    assert unused.bytes is None and unused.seconds_saved is None
    assert unused.text() == "not used: augmentation is on"


def test_text_tables_and_jsonable(capsys):
    assert markdown_table(["a", "b"], [[1.23456, None], ["x", float("nan")]]) == [
        "| a | b |",
        "|---|---|",
        "| 1.235 | - |",
        "| x | - |",
    ]
    assert plain_table([["name", "GMACs"], ["resnet50", "4.09"], ["vit", None]]) == [
        "name      GMACs",
        "resnet50  4.09",
        "vit       -",
    ]
    print_table([["a", "bb"], ["ccc", "d"]])
    assert capsys.readouterr().out == "a    bb\nccc  d\n"
    value = {"n": np.int64(3), "a": np.arange(2), "s": {"b", "a"}, "t": (1, 2), "p": Path("x")}
    assert jsonable(value) == {"n": 3, "a": [0, 1], "s": ["a", "b"], "t": [1, 2], "p": "x"}
    assert jsonable(VerifyReport(passed=True))["passed"] is True
    with pytest.raises(TypeError, match=r"type object is not JSON-able"):
        jsonable({"x": object()})
