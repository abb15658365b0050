"""LiteRT and ONNX deployment (recipes.deploy): parity, labels inside, manifest, tamper, errors."""

from __future__ import annotations

import hashlib
import json
import shutil

import keras
import numpy as np
import pytest

from recipes import deploy
from recipes.cli import main
from recipes.export import export_saved_model
from recipes.export_format import LABELS_FILE, MANIFEST_FILE
from recipes.predict import Predictor
from recipes.verify import verify_export
from tests.recipes import export_testlib as tl

pytest.importorskip("ai_edge_litert")
ALL = list(deploy.FORMATS)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """An export of the tiny classifier with every format deployed into it."""
    model = tl.build_model()
    directory = tmp_path_factory.mktemp("deploy") / "export"
    export_saved_model(model, directory)
    evaluation = (tl.random_pixels(24, 2), np.arange(24) % 3)
    results = deploy.deploy(
        directory,
        ["saved_model", *ALL],
        model,
        calibration=tl.random_pixels(64, 1),
        evaluation=evaluation,
    )
    return model, directory, {r.format: r for r in results}


def test_the_savedmodel_signature_converts_with_the_plain_converter(deployed):
    import tensorflow as tf

    _, directory, _ = deployed
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(directory), signature_keys=["serving_default"]
    )
    assert len(converter.convert()) > 0  # was: 'tf.EnsureShape' op is neither custom nor flex


def test_each_format_is_within_its_parity_bound(deployed):
    _, _, results = deployed
    assert set(results) == set(ALL)
    assert results["tflite"].parity <= 1e-4
    assert results["onnx"].parity <= 1e-4
    assert results["tflite-fp16"].parity <= 1e-2
    assert 0.0 <= results["tflite-int8"].parity <= 1.0
    for result in results.values():
        assert result.passed
        assert result.top1 is not None and result.top1_drop is not None
        assert result.latency_ms > 0 and result.images_per_s > 0


def test_the_files_run_and_match_the_keras_model(deployed):
    model, directory, _ = deployed
    probe = tl.random_pixels(5, 7)
    logits = np.asarray(model(probe, training=False))
    probabilities = np.asarray(keras.ops.softmax(logits))
    for name in ("tflite", "onnx"):
        out = deploy.load_runner(directory / deploy.FORMATS[name].file)(probe)
        assert tuple(out) == deploy.FORMATS[name].outputs
        np.testing.assert_allclose(out["probabilities"], probabilities, atol=1e-4)
    onnx_out = deploy.load_runner(directory / "model.onnx")(probe)
    np.testing.assert_allclose(onnx_out["logits"], logits, atol=1e-4)
    int8 = deploy.load_runner(directory / "model_int8.tflite")(probe)["probabilities"]
    assert int8.shape == logits.shape and np.all((int8 >= 0) & (int8 <= 1))


def test_onnx_outputs_are_named_logits_and_probabilities(deployed):
    import onnxruntime

    _, directory, _ = deployed
    session = onnxruntime.InferenceSession(str(directory / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]


def test_int8_is_full_integer_with_uint8_input_and_scores(deployed):
    from ai_edge_litert.interpreter import Interpreter

    _, directory, results = deployed
    interpreter = Interpreter(model_path=str(directory / "model_int8.tflite"))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)  # pixels as they are
    assert out["dtype"] == np.uint8
    assert out["quantization"][0] == pytest.approx(1 / 256) and out["quantization"][1] == 0
    float_types = {d["dtype"] for d in interpreter.get_tensor_details()} & {np.float32}
    assert not float_types, "a float tensor is left in the int8 model"
    assert results["tflite-int8"].bytes < results["tflite"].bytes


def test_labels_travel_inside_each_file_and_beside_it(deployed):
    _, directory, _ = deployed
    for spec in deploy.FORMATS.values():
        assert deploy.labels_inside(directory / spec.file) == tl.CLASS_NAMES
    assert (directory / LABELS_FILE).read_text().splitlines() == tl.CLASS_NAMES


def test_the_manifest_lists_every_file_with_its_sha256(deployed):
    _, directory, results = deployed
    manifest = json.loads((directory / "assets" / MANIFEST_FILE).read_text())
    listed = manifest[deploy.DEPLOYED_KEY]
    assert set(listed) == {r.file for r in results.values()} | {LABELS_FILE}
    for name, entry in listed.items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == entry["sha256"]
    result = verify_export(directory)
    assert result.passed, result.report()
    assert any(c.name == "deployed" and c.passed for c in result.checks)


def test_verify_names_a_flipped_byte_in_a_tflite(deployed, tmp_path):
    _, directory, _ = deployed
    copy = shutil.copytree(directory, tmp_path / "export")
    path = copy / "model_int8.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    (copy / "model.onnx").unlink()
    result = verify_export(copy)
    assert not result.passed
    assert any("model_int8.tflite: sha256 differs" in f for f in result.failures)
    assert any("model.onnx is missing" in f for f in result.failures)


@pytest.mark.parametrize("name", ["tflite", "tflite-int8", "onnx"])
def test_predictor_runs_a_deployed_format(deployed, name):
    _, directory, _ = deployed
    images = tl.random_pixels(3, 3)
    reference = Predictor(directory).outputs(images)
    outputs = Predictor(directory, format=name).outputs(images)
    assert outputs["probabilities"].shape == reference["probabilities"].shape
    assert ("logits" in outputs) == (name == "onnx")  # a .tflite returns probabilities only
    if name != "tflite-int8":
        np.testing.assert_allclose(outputs["probabilities"], reference["probabilities"], atol=1e-4)
        assert list(outputs["class_name"]) == list(reference["class_name"])


def _listing(directory):
    return sorted((p.name, p.stat().st_size) for p in directory.rglob("*"))


def test_bad_input_is_one_line_exit_2_and_writes_nothing(deployed, tmp_path, capsys):
    _, directory, _ = deployed
    before = _listing(directory)
    empty = tmp_path / "no_images"
    empty.mkdir()
    cases = {
        "Unknown export format": [str(directory), "--format", "tflite-int4"],
        "calibration set": [str(directory), "--format", "tflite-int8", "--calibration", str(empty)],
        "needs calibration images": [str(directory), "--format", "tflite-int8"],
    }
    for expected, argv in cases.items():
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    assert _listing(directory) == before

    no_keras = shutil.copytree(directory, tmp_path / "export")
    (no_keras / "model.keras").unlink()
    assert main(["export", str(no_keras), "--format", "tflite"]) == 2
    assert "no model.keras" in capsys.readouterr().err


def test_cli_export_writes_and_reports(deployed, tmp_path, capsys):
    _, directory, _ = deployed
    run_dir = tmp_path / "run"
    shutil.copytree(directory, run_dir / "export")
    np.save(tmp_path / "calibration.npy", tl.random_pixels(16, 5))
    argv = ["export", str(run_dir), "--format", "tflite-int8"]
    assert main([*argv, "--calibration", str(tmp_path / "calibration.npy")]) == 0
    assert "tflite-int8" in capsys.readouterr().out
    assert verify_export(run_dir / "export").passed


class _Sine(keras.layers.Layer):
    """An op TFLite has no int8 kernel for."""

    def call(self, x):
        return keras.ops.sin(x)


def test_a_model_int8_cannot_quantize_names_the_op():
    inputs = keras.Input((*tl.INPUT_SIZE, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = _Sine()(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    with pytest.raises(deploy.DeployError, match="(?i)sin"):
        deploy.convert(model, "tflite-int8", calibration=tl.random_pixels(8, 0))


def test_recipe_formats_are_validated():
    from recipes.config import ExportConfig

    assert ExportConfig(formats=["saved_model", "tflite-int8"]).formats[-1] == "tflite-int8"
    with pytest.raises(ValueError, match="unknown formats"):
        ExportConfig(formats=["saved_model", "tflite-int4"])


def test_the_catalog_main_job_exports_tflite_int8():
    from recipes.config import load_recipe

    assert load_recipe("fashion-mnist-lite0").export.formats == ["saved_model", "tflite-int8"]


def test_report_has_a_deployment_table(deployed):
    from recipes.report import _deployment_section

    _, _, results = deployed
    lines = _deployment_section([r.to_dict() for r in results.values()])
    assert lines[0] == "## Deployment"
    assert any("model_int8.tflite" in line for line in lines)


def test_parity_bound_is_absolute_for_small_logits_and_relative_beyond():
    assert deploy.parity_bound(1e-2, np.array([[0.5, -0.9]])) == pytest.approx(1e-2)
    assert deploy.parity_bound(1e-2, np.array([[2.0, -5.0]])) == pytest.approx(5e-2)
    assert deploy.parity_bound(1e-4, np.zeros((0, 3))) == pytest.approx(1e-4)


def test_a_model_card_lies_beside_the_export_with_each_format(deployed):
    _, directory, results = deployed
    card = (directory / "MODEL_CARD.md").read_text()
    for section in ("Model details", "Intended use", "Training data", "Evaluation"):
        assert f"## {section}" in card
    assert "## Limitations" in card and "## Verification" in card
    assert "`cat`, `dog`, `espresso`" in card and "Input: RGB pixels 0..255, 32x32" in card
    for result in results.values():
        assert f"| {result.format} | {result.file} |" in card
        assert f"{result.top1:.4f}" in card


def test_the_model_card_gives_each_split_and_the_verification_record():
    from recipes.model_card import render

    meta = {
        "backbone": "efficientnet_lite0",
        "pretrained_weights": "imagenet",
        "class_names": ["shirt", "shoe"],
        "input_size": [80, 80],
        "recipe": {"name": "shoes", "data": {"source": "fashion_mnist", "seed": 0}},
    }
    report = {
        "evaluated_on": "test",
        "test_top1": 0.9251,
        "data": {"source": "fashion_mnist", "train_images": 34200, "test_images": 10000},
        "stages": [
            {"kept_epoch": 2, "history": {"accuracy": [0.8, 0.95], "val_accuracy": [0.9, 0.93]}}
        ],
        "verify": {
            "passed": True,
            "checks": [{"name": "frozen", "passed": True, "detail": "224 of 260"}],
        },
    }
    deployment = [
        {
            "format": "tflite-int8",
            "file": "model_int8.tflite",
            "bytes": 4_200_000,
            "top1": 0.9187,
            "parity": 0.97,
        }
    ]
    card = render(meta, {}, report, deployment)
    assert "| train (the kept epoch, while training) | 0.9500 |" in card
    assert "| validation (the kept epoch) | 0.9300 |" in card
    assert (
        "| test | 0.9251 |" in card
        and "| tflite-int8 | model_int8.tflite | 4.20 | 0.9187 |" in card
    )
    assert "train 34,200" in card and "test 10,000" in card
    assert "  - frozen: ok: 224 of 260" in card
    assert 'license: "other"' in card and "not stated" in card
