"""A calibrated export: every format's probabilities are softmax(logits / T), logits as trained."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from recipes import deploy
from recipes import export_format as fmt
from recipes.export import export_saved_model
from recipes.predict import Predictor
from recipes.verify import verify_export
from tests.recipes import export_testlib as tl
from zoo.errors import InvalidValueError

pytest.importorskip("ai_edge_litert")
TEMPERATURE = 2.5  # a sure difference from the softmax as trained


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The tiny classifier exported with a temperature, its float LiteRT and ONNX files beside."""
    model = tl.build_model()
    directory = tmp_path_factory.mktemp("calibrated") / "export"
    export_saved_model(model, directory, metadata={"temperature": TEMPERATURE})
    deploy.deploy(directory, ["tflite", "onnx"], model)
    return model, directory


def test_every_format_returns_the_calibrated_probabilities(calibrated):
    model, directory = calibrated
    images = tl.random_pixels(6, 3)
    logits = np.asarray(model(images, training=False))
    want = fmt.probabilities(logits, False, TEMPERATURE)
    as_trained = fmt.probabilities(logits, False)
    assert np.max(np.abs(want - as_trained)) > 1e-2  # the check below can tell them apart
    saved = Predictor(directory).outputs(images)
    np.testing.assert_allclose(saved["logits"], logits, atol=1e-4)  # logits stay as trained
    for name in ("saved_model", "tflite", "onnx"):
        out = Predictor(directory, format=name).outputs(images)
        np.testing.assert_allclose(out["probabilities"], want, atol=1e-4, err_msg=str(name))
        assert list(out["class_id"]) == list(logits.argmax(-1))


def test_the_temperature_is_recorded_and_the_files_say_so(calibrated):
    _, directory = calibrated
    meta = json.loads((directory / "assets" / fmt.METADATA_FILE).read_text())
    assert meta["temperature"] == TEMPERATURE and "temperature" not in meta["extra"]
    assert "softmax(logits / 2.500)" in (directory / fmt.MODEL_CARD_FILE).read_text()
    result = verify_export(directory)
    assert result.passed, result.failures


def test_verify_names_a_temperature_changed_in_the_metadata(calibrated, tmp_path):
    _, directory = calibrated
    copy = shutil.copytree(directory, tmp_path / "export")
    path = copy / "assets" / fmt.METADATA_FILE
    meta = json.loads(path.read_text())
    meta["temperature"] = 1.0
    path.write_text(json.dumps(meta))
    result = verify_export(copy)
    assert not result.passed
    assert any("probabilities" in f for f in result.failures), result.failures
    meta["temperature"] = -1
    path.write_text(json.dumps(meta))
    assert any("temperature -1 is not a positive" in f for f in verify_export(copy).failures)


@pytest.mark.parametrize("bad", [0, -2.0, "2", True])
def test_a_bad_temperature_is_refused_before_anything_is_written(bad, tmp_path):
    with pytest.raises(InvalidValueError, match="temperature must be a positive number"):
        export_saved_model(tl.build_model(), tmp_path / "export", metadata={"temperature": bad})
    assert not (tmp_path / "export").exists()


def test_the_parity_bound_widens_for_a_sharpening_temperature():
    logits = np.array([[3.0, -1.0]])
    assert deploy.parity_bound(1e-5, logits, 2.0) == deploy.parity_bound(1e-5, logits)
    assert deploy.parity_bound(1e-5, logits, 0.1) == pytest.approx(5 * 3e-5)


def test_a_temperature_on_a_multi_label_export_is_refused(tmp_path):
    metadata = {"multi_label": True, "temperature": 2.0}
    with pytest.raises(InvalidValueError, match="applies to single-label"):
        export_saved_model(tl.build_model(), tmp_path / "export", metadata=metadata)
