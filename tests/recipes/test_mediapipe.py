"""MediaPipe Tasks, the runtime people deploy .tflite files with, loads what zoo writes.

The real client: MediaPipe's Python ``ImageClassifier`` (the C++ core MediaPipe runs on
Android, iOS and the web) on the shared tiny export's ``tflite``, ``tflite-fp16`` and
``tflite-int8`` files; and ``zoo verify`` reading the files' metadata.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recipes import deploy, tflite_metadata
from recipes.export_format import MANIFEST_FILE
from tests.recipes import mediapipe_testlib as mpl

pytest.importorskip("mediapipe")
pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return mpl.colour_export(tmp_path_factory)


def _classify(path: Path, probes, max_results: int = -1):
    """MediaPipe's answer for each probe file: [(category name, score), ...] by score."""
    import mediapipe as mp
    from mediapipe.tasks import python as mpt
    from mediapipe.tasks.python import vision

    options = vision.ImageClassifierOptions(
        base_options=mpt.BaseOptions(model_asset_path=str(path)), max_results=max_results
    )
    with vision.ImageClassifier.create_from_options(options) as classifier:
        results = []
        for probe in probes:
            found = classifier.classify(mp.Image.create_from_file(str(probe)))
            (head,) = found.classifications
            results.append([(c.category_name, c.score) for c in head.categories])
    return results


def _saved_model_top1(export_dir: Path, probes) -> list[str]:
    from recipes.predict import Predictor

    return [p.top for p in Predictor(export_dir).predict([str(p) for p in probes])]


@pytest.mark.parametrize("name", mpl.FORMATS)
def test_mediapipe_classifies_with_the_class_names_and_agrees_with_the_savedmodel(colours, name):
    path = colours.export_dir / deploy.FORMATS[name].file
    results = _classify(path, colours.probes)
    expected = _saved_model_top1(colours.export_dir, colours.probes)
    assert expected == [mpl.CLASS_NAMES[i % 3] for i in range(mpl.PROBES)]  # a decisive model
    for categories in results:
        assert sorted(n for n, _ in categories) == sorted(mpl.CLASS_NAMES)
        # Scores are probabilities: softmax sums to 1 (int8: 1/256 steps per class).
        total = sum(score for _, score in categories)
        assert total == pytest.approx(1.0, abs=4 / 256 if name == "tflite-int8" else 1e-4)
    agreement = np.mean([r[0][0] == e for r, e in zip(results, expected, strict=True)])
    if name == "tflite-int8":
        assert agreement >= deploy.INT8_MIN_AGREEMENT
    else:
        assert agreement == 1.0


def test_score_threshold_is_a_probability(colours):
    import mediapipe as mp
    from mediapipe.tasks import python as mpt
    from mediapipe.tasks.python import vision

    options = vision.ImageClassifierOptions(
        base_options=mpt.BaseOptions(model_asset_path=str(colours.export_dir / "model.tflite")),
        score_threshold=0.5,
    )
    with vision.ImageClassifier.create_from_options(options) as classifier:
        found = classifier.classify(mp.Image.create_from_file(str(colours.probes[0])))
    (head,) = found.classifications
    assert [c.category_name for c in head.categories] == ["red"]  # one class above 0.5


def test_the_metadata_says_what_the_file_is(colours):
    for name in mpl.FORMATS:
        found = tflite_metadata.read(colours.export_dir / deploy.FORMATS[name].file)
        assert found["labels"] == mpl.CLASS_NAMES
        assert found["normalization"] == {"mean": [0.0], "std": [1.0]}
        assert found["input_type"] == ("uint8" if name == "tflite-int8" else "float32")
        assert found["output_type"] == ("uint8" if name == "tflite-int8" else "float32")
        assert found["author"] == "zoo" and found["version"].startswith("zoo ")
        assert "pretrained weights:" in found["license"]
        assert "fine-tuned model:" in found["license"]
        assert found["min_parser_version"] == "1.0.0"


def test_licences_name_the_registry_weights_and_the_recipe_field():
    import zoo

    meta = {
        "backbone": "efficientnet_lite0",
        "pretrained_weights": "imagenet",
        "recipe": {"name": "shoes", "export": {"license": "CC-BY-4.0"}},
        "class_names": ["a", "b"],
        "input_size": [80, 80],
    }
    text = tflite_metadata.licenses(meta)
    assert zoo.get_spec("efficientnet_lite0").license in text and "CC-BY-4.0" in text
    info = tflite_metadata.model_info(meta, {"manifest": {"digest": "ab" * 32}})
    assert info.name == "shoes" and info.version.endswith("weights abababababab")
    assert "not stated" in tflite_metadata.licenses({**meta, "recipe": None})


def test_verify_names_a_tflite_whose_metadata_labels_were_changed(colours, tmp_path):
    from recipes.verify import verify_export

    copy = shutil.copytree(colours.export_dir, tmp_path / "export")
    path = copy / "model.tflite"
    meta = json.loads((copy / "assets" / "metadata.json").read_text())
    info = tflite_metadata.model_info(meta)
    swapped = ("green", "red", "blue")
    path.write_bytes(tflite_metadata.write(_flatbuffer(path.read_bytes()), _replace(info, swapped)))
    # The manifest is rewritten too, so only the metadata check can see the change.
    manifest_path = copy / "assets" / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    import hashlib

    entry = manifest[deploy.DEPLOYED_KEY]["model.tflite"]
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    entry["bytes"] = path.stat().st_size
    manifest_path.write_text(json.dumps(manifest))
    assert tflite_metadata.read(path)["labels"] == list(swapped)
    result = verify_export(copy)
    assert not result.passed
    assert any(f.startswith("model.tflite: labels in its metadata differ") for f in result.failures)
    assert not any("sha256" in f for f in result.failures), result.failures
    assert not any("model_int8.tflite" in f for f in result.failures), result.failures


def _flatbuffer(data: bytes) -> bytes:
    """A .tflite without its packed associated files (the zip archive after the model)."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return data[: min(i.header_offset for i in archive.infolist())]


def _replace(info: tflite_metadata.ModelInfo, class_names) -> tflite_metadata.ModelInfo:
    from dataclasses import replace

    return replace(info, class_names=tuple(class_names))


def test_mediapipe_still_lacks_the_native_version_module():
    """Fails once a mediapipe release ships the module again: then delete the stand-in
    (recipes/mediapipe_stub.py) and its install() call in recipes/tflite_metadata.py."""
    import mediapipe

    root = Path(mediapipe.__file__).parent
    shipped = list(root.glob("tasks/cc/metadata/python/_pywrap_metadata_version*"))
    assert not shipped, f"mediapipe {mediapipe.__version__} ships {shipped}: remove the stand-in"


def test_the_stand_in_versions_only_schema_1_0_0_metadata():
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    from recipes import mediapipe_stub

    def packed(custom: bool) -> bytes:
        subgraph = schema.SubGraphMetadataT()
        subgraph.inputTensorMetadata = [schema.TensorMetadataT()]
        if custom:
            entry = schema.CustomMetadataT()
            entry.name = "extra"
            subgraph.customMetadata = [entry]
        model = schema.ModelMetadataT()
        model.subgraphMetadata = [subgraph]
        builder = flatbuffers.Builder(0)
        builder.Finish(model.Pack(builder), b"M001")
        return bytes(builder.Output())

    assert mediapipe_stub.minimum_parser_version(packed(False)) == "1.0.0"
    with pytest.raises(NotImplementedError, match="CustomMetadata"):
        mediapipe_stub.minimum_parser_version(packed(True))
