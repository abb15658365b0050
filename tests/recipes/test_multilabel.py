"""Multi-label end to end: recipe, metrics (AP, mAP, F1), export outputs, verify, predict."""

import itertools
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from recipes import export_format as fmt
from recipes import runner
from recipes.cli import main
from recipes.config import RecipeError, parse_recipe
from recipes.export import export_saved_model
from recipes.predict import Predictor, format_predictions
from recipes.report import RunReport, average_precision, multilabel_metrics
from recipes.verify import verify_export

sys.path.insert(0, str(Path(__file__).parent))
import export_testlib as lib  # noqa: E402

# -- average precision and the multi-label metrics -------------------------------------------


def test_average_precision_by_hand():
    # Ranked 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-): P 1, 1/2, 2/3, 1/2 at R 1/2, 1/2, 1, 1,
    # so AP = 1/2 * 1 + 1/2 * 2/3 (scikit-learn's documented example gives 0.83).
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # Tied scores are one threshold: {0.5, 0.5} holds one of the two positives.
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision([0, 1, 1], [0.1, 0.7, 0.9]) == 1.0
    assert average_precision([0, 0], [0.3, 0.9]) is None  # no positive: recall 0/0


def _ap_by_definition(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum over each distinct score t, high to low, of (R(t) - R(previous t)) * P(t)."""
    total, recall_before = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        chosen = scores >= t
        precision = labels[chosen].sum() / chosen.sum()
        recall = labels[chosen].sum() / labels.sum()
        total += (recall - recall_before) * precision
        recall_before = recall
    return total


def test_average_precision_matches_its_definition_and_sklearn_when_installed():
    rng = np.random.default_rng(3)
    for n in (5, 20, 60):
        labels = (rng.random(n) < 0.4).astype(float)
        labels[0] = 1.0
        scores = np.round(rng.random(n), 1)  # rounded: many ties
        assert average_precision(labels, scores) == pytest.approx(_ap_by_definition(labels, scores))
        try:
            from sklearn.metrics import average_precision_score
        except ImportError:  # not a dependency; the definition above is the reference
            continue
        assert average_precision(labels, scores) == pytest.approx(
            average_precision_score(labels, scores)
        )


def test_multilabel_metrics_by_hand():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    probabilities = np.array([[0.9, 0.2, 0.1], [0.6, 0.4, 0.7], [0.3, 0.8, 0.2], [0.1, 0.1, 0.1]])
    metrics = multilabel_metrics(labels, probabilities, ["a", "b", "c"], threshold=0.5)
    a, b, c = metrics["per_class"]
    # At 0.5: a: TP 2; b: TP 1, FN 1; c: FP 1 and never present.
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == (1.0, 1.0, 1.0, 2)
    assert (b["precision"], b["recall"], b["f1"]) == (1.0, 0.5, pytest.approx(2 / 3))
    assert (c["precision"], c["recall"], c["f1"], c["ap"]) == (0.0, None, 0.0, None)
    assert a["ap"] == 1.0 and b["ap"] == 1.0
    assert metrics["mAP"] == 1.0  # c has no positive: left out of the mean
    assert metrics["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert metrics["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert metrics["exact_match"] == pytest.approx(3 / 4)  # all but row 1
    assert metrics["threshold"] == 0.5 and metrics["images"] == 4
    # Strictly above: a probability equal to the threshold is not a prediction.
    at = multilabel_metrics([[1, 0]], [[0.5, 0.5]], ["a", "b"], threshold=0.5)
    assert at["per_class"][0]["recall"] == 0.0


def test_multilabel_metrics_list_every_problem():
    with pytest.raises(ValueError, match=r"differ in shape.*not \(images, 3\).*threshold 1.5"):
        multilabel_metrics(np.zeros((2, 2)), np.zeros((3, 2)), ["a", "b", "c"], 1.5)


# -- the recipe ------------------------------------------------------------------------------


def _recipe(head: dict, options: dict | None = None) -> dict:
    return {
        "data": {"source": "folder:/nowhere", "options": options or {}},
        "model": {"backbone": "efficientnet_lite0", "weights": "none", "head": head},
        "stages": [{"name": "s", "policy": "freeze_backbone", "epochs": 1, "learning_rate": 0.1}],
    }


def test_recipe_multi_label_needs_a_labels_csv_and_the_reverse():
    csv = {"labels_csv": "labels.csv"}
    recipe = parse_recipe(_recipe({"multi_label": True, "threshold": 0.3}, csv))
    assert recipe.model.head.decision_threshold == 0.3
    assert parse_recipe(_recipe({"multi_label": True}, csv)).model.head.decision_threshold == 0.5
    assert parse_recipe(_recipe({})).model.head.decision_threshold is None
    with pytest.raises(RecipeError, match=r"multi_label: true needs multi-hot labels.*labels_csv"):
        parse_recipe(_recipe({"multi_label": True}))
    with pytest.raises(RecipeError, match=r"labels_csv: gives several labels.*multi_label = true"):
        parse_recipe(_recipe({}, csv))
    with pytest.raises(RecipeError, match=r"threshold: only used by a multi-label head"):
        parse_recipe(_recipe({"threshold": 0.5}))
    with pytest.raises(RecipeError, match=r"model.head.threshold: got 1.0"):
        parse_recipe(_recipe({"multi_label": True, "threshold": 1.0}, csv))


def test_runner_refuses_a_head_that_does_not_fit_the_labels():
    def recipe(multi: bool):
        return SimpleNamespace(model=SimpleNamespace(head=SimpleNamespace(multi_label=multi)))

    single, multi = (
        SimpleNamespace(multi_label=False, source="s"),
        SimpleNamespace(multi_label=True, source="m"),
    )
    with pytest.raises(runner.RunError, match="multi_label = true, but s gives one class"):
        runner._check_label_kind(recipe(True), single)
    with pytest.raises(runner.RunError, match="m gives several labels per image"):
        runner._check_label_kind(recipe(False), multi)
    runner._check_label_kind(recipe(True), multi)
    runner._check_label_kind(recipe(False), single)


# -- export, verify and predict on a tiny model ----------------------------------------------


@pytest.fixture(scope="module")
def multi_label_model():
    from zoo.classifier import build_classifier

    lib.ensure_registered()
    model = build_classifier(
        lib.BACKBONE,
        3,
        weights=None,
        input_shape=(*lib.INPUT_SIZE, 3),
        class_names=lib.CLASS_NAMES,
        multi_label=True,
    )
    lib.pretrained_like(model)
    lib.freeze_backbone(model)
    return model


def test_multi_label_export_returns_multi_hot_classes_above_the_threshold(
    multi_label_model, tmp_path
):
    exported = export_saved_model(
        multi_label_model, tmp_path / "export", metadata={"threshold": 0.3}
    )
    assert exported.verification.passed, exported.verification.failures
    meta = json.loads((tmp_path / "export" / "assets" / fmt.METADATA_FILE).read_text())
    assert meta["threshold"] == 0.3 and meta["outputs"] == list(fmt.MULTI_LABEL_OUTPUTS)

    predictor = Predictor(tmp_path / "export")
    assert predictor.threshold == 0.3
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    out = predictor.outputs(images)
    assert set(out) == set(fmt.MULTI_LABEL_OUTPUTS)
    assert out["class_ids"].shape == out["class_names"].shape == (6, 3)
    np.testing.assert_array_equal(out["class_ids"], (out["probabilities"] > 0.3).astype(np.int64))
    np.testing.assert_array_equal(
        out["class_names"], np.where(out["class_ids"] == 1, lib.CLASS_NAMES, "")
    )
    predictions = predictor.predict(images, top_k=1)
    assert [p.labels for p in predictions] == [
        tuple(n for n in row if n) for row in out["class_names"].tolist()
    ]
    assert "  labels: " in format_predictions(predictions[:1], ["x.png"])


def test_verify_catches_a_threshold_that_no_longer_matches_the_outputs(multi_label_model, tmp_path):
    target = tmp_path / "export"
    export_saved_model(multi_label_model, target, metadata={"threshold": 0.3})
    probe = fmt.probe_batch(lib.INPUT_SIZE)
    logits = np.asarray(multi_label_model(probe, training=False))
    highest = float(np.max(1 / (1 + np.exp(-logits))))
    assert highest > 0.3  # so some class_ids are 1 at 0.3, and none above `highest`
    meta_path = target / "assets" / fmt.METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = (highest + 1) / 2
    meta_path.write_text(json.dumps(meta))
    result = verify_export(target)
    assert not result.passed
    assert any("class_ids differ" in f for f in result.failures), result.failures
    meta["threshold"] = "high"
    meta_path.write_text(json.dumps(meta))
    result = verify_export(target)
    assert any("threshold 'high' is not a probability" in f for f in result.failures)


def test_threshold_is_for_multi_label_models_and_a_probability(multi_label_model, tmp_path):
    with pytest.raises(ValueError, match="threshold must be a probability strictly between"):
        export_saved_model(multi_label_model, tmp_path / "a", metadata={"threshold": 1.0})
    with pytest.raises(ValueError, match="applies to multi-label models only"):
        export_saved_model(lib.build_model(), tmp_path / "b", metadata={"threshold": 0.5})


def test_single_label_export_keeps_its_outputs_and_metadata(tmp_path):
    model = lib.build_model()
    lib.freeze_backbone(model)
    export_saved_model(model, tmp_path / "export")
    meta = json.loads((tmp_path / "export" / "assets" / fmt.METADATA_FILE).read_text())
    assert "threshold" not in meta and meta["outputs"] == list(fmt.OUTPUTS)
    out = Predictor(tmp_path / "export").outputs(np.zeros((2, 32, 32, 3), np.uint8))
    assert set(out) == set(fmt.OUTPUTS) and out["class_name"].shape == (2,)


# -- zoo run end to end ----------------------------------------------------------------------

COLOURS = {"red": (210, 30, 30), "green": (30, 190, 40), "blue": (30, 40, 210)}
THRESHOLD = 0.4

TINY = """
[data]
source = "folder:{root}"
validation_fraction = 0.2
test_fraction = 0.25
seed = 0
image_size = [32, 32]
batch_size = 8
options = {{ labels_csv = "labels.csv" }}

[model]
backbone = "{backbone}"
weights = "none"

[model.head]
multi_label = true
threshold = {threshold}

[[stages]]
name = "head"
policy = "freeze_backbone"
epochs = 5
learning_rate = 0.05

[run]
seed = 0
"""


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory) -> Path:
    """32x32 squares: one colour (label it), or two colours left and right (both labels)."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    kinds = [(c,) for c in COLOURS] + list(itertools.combinations(COLOURS, 2))
    rows = ["path,labels"]
    for i in range(48):
        names = kinds[i % len(kinds)]
        pixels = np.zeros((32, 32, 3), np.int64)
        for half, name in enumerate(names):
            columns = slice(0, 32) if len(names) == 1 else slice(16 * half, 16 * half + 16)
            pixels[:, columns] = COLOURS[name]
        pixels = np.clip(pixels + rng.integers(-25, 25, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
        rows.append(f"{i}.png,{';'.join(names)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def multi_label_run(colour_folder, tmp_path_factory) -> Path:
    recipe = tmp_path_factory.mktemp("recipe") / "colours.toml"
    lib.ensure_registered()  # a few thousand random weights: colours stay apart in them
    recipe.write_text(
        TINY.format(root=colour_folder.as_posix(), threshold=THRESHOLD, backbone=lib.BACKBONE)
    )
    run_dir = tmp_path_factory.mktemp("runs") / "colours"
    assert main(["run", str(recipe), "--out", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow
def test_zoo_run_reports_map_f1_and_per_class_ap(multi_label_run):
    report = json.loads((multi_label_run / "report.json").read_text())
    assert report["evaluated_on"] == "test" and "test_top1" not in report
    test = report["test"]
    # It learned the colours: ranking at random would give about the share of positives
    # (0.6 here), a perfect one 1.
    assert report["test_mAP"] == test["mAP"] > 0.75
    assert test["threshold"] == THRESHOLD and test["images"] == 12  # 25% of 48
    assert [c["class"] for c in test["per_class"]] == sorted(COLOURS)
    aps = [c["ap"] for c in test["per_class"] if c["ap"] is not None]
    assert aps and test["mAP"] == pytest.approx(np.mean(aps))
    for key in ("f1_micro", "f1_macro", "exact_match"):
        assert key in test
    assert "confusion_matrix" not in test
    assert report["verify"]["passed"] is True
    assert "pr_auc" in report["stages"][0]["history"]  # the per-epoch mAP estimate
    again = RunReport.from_dict(report)
    assert (again.metric, again.score, again.headline) == ("mAP", test["mAP"], "test mAP")
    assert again.to_dict() == report
    md = (multi_label_run / "report.md").read_text()
    assert "| test mAP |" in md and "| class | AP | precision | recall | F1 |" in md
    assert "top-1" not in md


@pytest.mark.slow
def test_zoo_run_export_gives_the_reported_map_and_multi_hot_ids(multi_label_run, colour_folder):
    from zoo import data as zoo_data

    export = multi_label_run / "export"
    meta = json.loads((export / "assets" / fmt.METADATA_FILE).read_text())
    assert meta["multi_label"] is True and meta["threshold"] == THRESHOLD
    # The test split the runner evaluated on, through the export: the same mAP.
    source = zoo_data.load(
        f"folder:{colour_folder}",
        labels_csv="labels.csv",
        validation_fraction=0.2,
        test_fraction=0.25,
        seed=0,
    )
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in source.test), strict=True)
    out = Predictor(export).outputs(np.stack(images))
    np.testing.assert_array_equal(
        out["class_ids"], (out["probabilities"] > THRESHOLD).astype(np.int64)
    )
    again = multilabel_metrics(
        np.stack(labels), out["probabilities"], source.class_names, THRESHOLD
    )
    report = json.loads((multi_label_run / "report.json").read_text())
    assert again["mAP"] == pytest.approx(report["test_mAP"], abs=1e-6)
    # verify from the command line too: multi-hot outputs pass parity against model.keras.
    copy = multi_label_run.parent / "copy"
    shutil.copytree(export, copy)
    assert main(["verify", str(copy)]) == 0


def test_multi_label_mixup_mixes_multi_hot_labels_and_smooths_them_once(multi_label_model):
    import tensorflow as tf

    from zoo import FreezeBackbone, Stage
    from zoo import data as zoo_data
    from zoo.training.compile import loss_and_metrics, with_label_augmentation

    stage = Stage(
        "s",
        FreezeBackbone(),
        1,
        0.01,
        label_smoothing=0.1,
        augment=zoo_data.augmentation(["mixup"], seed=0),
    )
    stage = with_label_augmentation(multi_label_model, stage)
    loss, metrics, _ = loss_and_metrics(multi_label_model, stage)
    assert stage.augment.label_smoothing == 0.0 and loss.label_smoothing == 0.1
    assert [m.name for m in metrics] == ["accuracy", "pr_auc"]
    labels = tf.constant([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    _, mixed = stage.augment(tf.zeros((2, 32, 32, 3)), labels)
    # Each row is a convex mix of the two multi-hot rows: columns 0 and 2 move together.
    np.testing.assert_allclose(mixed[:, 0], mixed[:, 2])
    np.testing.assert_allclose(mixed[:, 0] + mixed[:, 1], 1.0, rtol=1e-6)


def test_multi_label_recipe_refuses_litert_and_onnx_formats():
    from recipes.config import RecipeError

    data = {
        "data": {"source": "folder:/x", "options": {"labels_csv": "labels.csv"}},
        "model": {"backbone": "efficientnet_lite0", "head": {"multi_label": True}},
        "stages": [
            {"name": "head", "policy": "freeze_backbone", "epochs": 1, "learning_rate": 0.01}
        ],
        "export": {"formats": ["saved_model", "tflite-int8"]},
    }
    with pytest.raises(RecipeError, match=r"export.formats: \['tflite-int8'\]"):
        parse_recipe(data)
