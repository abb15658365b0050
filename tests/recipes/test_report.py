"""The report: metrics from the predictions, real PNG plots, numbers carried into JSON / MD."""

import json

import numpy as np
import pytest
from PIL import Image

from recipes.report import classification_metrics, write_report


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


def _report(rng: np.random.Generator) -> dict:
    names = [f"class_{i}" for i in range(4)]
    labels = rng.integers(0, 4, size=200)
    predictions = np.where(rng.random(200) < 0.8, labels, rng.integers(0, 4, size=200))
    test = classification_metrics(labels, predictions, names)

    def curve(start, n):
        return list(np.linspace(start, start / 3, n))

    return {
        "recipe": "unit",
        "description": "a made-up run",
        "test_top1": test["top1"],
        "wall_seconds": 12.5,
        "backbone": "tiny",
        "input_shape": [32, 32, 3],
        "class_names": names,
        "stages": [
            {
                "name": "head",
                "policy": "freeze_backbone",
                "history": {
                    "loss": curve(1.2, 3),
                    "accuracy": [0.5, 0.6, 0.7],
                    "val_loss": curve(1.1, 3),
                    "val_accuracy": [0.55, 0.62, 0.71],
                },
                "seconds": 3.0,
                "images_per_second": 812.5,
                "cache": {
                    "used": True,
                    "reason": "head-only cache",
                    "where": "memory",
                    "bytes": 3 * 2**20,
                    "seconds_saved": 7.0,
                    "seconds_saved_is_estimate": True,
                    "derived_from": "block6d",
                },
            },
            {
                "name": "top",
                "policy": "unfreeze_top",
                "history": {
                    "loss": curve(0.6, 2),
                    "accuracy": [0.75, 0.8],
                    "val_loss": curve(0.5, 2),
                    "val_accuracy": [0.74, 0.79],
                },
                "seconds": 5.0,
                "images_per_second": 97.0,
                "cache": {"used": False, "reason": "augmentation is on"},
            },
        ],
        "test": test,
        "verify": {"passed": True, "failures": []},
        "data": {
            "source": "folder",
            "train_images": 100,
            "validation_images": 10,
            "test_images": 200,
            "skipped": [{"path": "x/broken.jpg", "reason": "not an image"}],
        },
        "timings": {"load data": 1.0, "fine-tune": 8.0},
    }


def test_write_report_files_and_numbers(tmp_path):
    report = _report(np.random.default_rng(0))
    paths = write_report(report, tmp_path)

    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["test_top1"] == pytest.approx(report["test"]["top1"])
    assert saved["wall_seconds"] == 12.5 and saved["verify"]["passed"] is True
    assert saved["test"]["confusion_matrix"] == report["test"]["confusion_matrix"]
    assert saved["stages"][1]["history"]["val_accuracy"] == [0.74, 0.79]

    md = (tmp_path / "report.md").read_text()
    assert f"| {report['test_top1']:.3f} | 200 | tiny | 32x32 | 12 s | yes |" in md
    assert (
        "| head | freeze_backbone | 3 | 0.700 | 0.710 | 3.0 | 812.5 | head-only cache (memory, 3.0 MiB, saved ~7 s, derived from the block6d activations) |"
        in md
    )
    assert "not used: augmentation is on" in md
    first = report["test"]["per_class"][0]
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
    report = _report(np.random.default_rng(1))
    report["verify"] = {"passed": False, "failures": ["head/dense/kernel changed"]}
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| **NO** |" in md
    assert "- head/dense/kernel changed" in md
