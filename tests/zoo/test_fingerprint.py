"""Weight manifests: coverage, hashes, stable paths, frozen sets, diff, JSON round trip."""

import hashlib
import json

import keras
import numpy as np
import pytest

import zoo
from zoo import fingerprint
from zoo.backbones import fresh_layer_names
from zoo.registry import INCEPTION

NUM_CLASSES = 3


def _classifier() -> keras.Model:
    """pixels -> Preprocess -> nested MobileNetV2 "backbone" -> "head", as zoo builds them."""
    with fresh_layer_names():
        backbone = keras.applications.MobileNetV2(
            include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35
        )
    backbone.name = "backbone"
    pixels = keras.Input((32, 32, 3), name="pixels")
    x = zoo.Preprocess(INCEPTION, name="preprocess")(pixels)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(x))
    logits = keras.layers.Dense(NUM_CLASSES, name="head")(x)
    return keras.Model(pixels, logits)


@pytest.fixture(scope="module")
def model():
    return _classifier()


def test_manifest_covers_every_weight_with_its_bytes_hash(model):
    result = fingerprint.manifest(model)
    entries = result["variables"]
    paths = [e["path"] for e in entries]
    assert len(entries) == len(model.weights)
    assert paths == sorted(paths) and len(set(paths)) == len(paths)
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        assert f"backbone/bn_Conv1/{name}" in paths
    assert {"backbone/Conv1/kernel", "head/kernel", "head/bias"} <= set(paths)

    by_path = fingerprint.entries(result)
    variance = model.get_layer("backbone").get_layer("bn_Conv1").moving_variance
    array = keras.ops.convert_to_numpy(variance)
    expected = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    entry = by_path["backbone/bn_Conv1/moving_variance"]
    assert entry == {
        "path": "backbone/bn_Conv1/moving_variance",
        "shape": [16],
        "dtype": "float32",
        "sha256": expected,
        "frozen": False,
    }
    assert json.loads(json.dumps(result)) == result


def test_manifest_is_deterministic_and_paths_stable_across_builds_and_reload(model, tmp_path):
    first = fingerprint.manifest(model)
    assert fingerprint.to_json(fingerprint.manifest(model)) == fingerprint.to_json(first)

    keras.layers.Dense(2)  # advance Keras' auto-naming counters, as a long session would
    rebuilt = _classifier()
    rebuilt.set_weights(model.get_weights())
    assert fingerprint.manifest(rebuilt) == first

    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert fingerprint.manifest(reloaded)["digest"] == first["digest"]
    assert not fingerprint.diff(first, fingerprint.manifest(reloaded))


def test_frozen_paths_follow_the_owning_layer_including_batchnorm_statistics():
    model = _classifier()
    backbone = model.get_layer("backbone")
    backbone.trainable = False
    frozen = fingerprint.frozen_paths(model)
    assert frozen == fingerprint.layer_paths(model, "backbone")
    assert "backbone/bn_Conv1/moving_mean" in frozen and "head/kernel" not in frozen

    backbone.get_layer("bn_Conv1").trainable = True  # left in training mode
    frozen = fingerprint.frozen_paths(model)
    assert not {p for p in frozen if p.startswith("backbone/bn_Conv1/")}
    assert "backbone/Conv1/kernel" in frozen
    flags = fingerprint.entries(fingerprint.manifest(model))
    assert flags["backbone/Conv1/kernel"]["frozen"]
    assert not flags["backbone/bn_Conv1/moving_variance"]["frozen"]

    explicit = fingerprint.manifest(model, frozen={"head/bias"})
    assert fingerprint.frozen_set(explicit) == {"head/bias"}
    assert explicit["digest"] == fingerprint.manifest(model)["digest"]  # flags not in digest


def test_diff_names_the_changed_added_and_removed_variables(model):
    before = fingerprint.manifest(model)
    variance = model.get_layer("backbone").get_layer("block_3_project_BN").moving_variance
    original = keras.ops.convert_to_numpy(variance)
    changed = original.copy()
    changed[0] = np.nextafter(changed[0], np.float32(2))  # one ulp: bitwise, not approx
    variance.assign(changed)
    try:
        after = fingerprint.manifest(model)
    finally:
        variance.assign(original)
    result = fingerprint.diff(before, after)
    assert result.changed_paths == ("backbone/block_3_project_BN/moving_variance",)
    assert result.changed[0].fields == ("sha256",)
    assert "block_3_project_BN/moving_variance: sha256" in result.describe()

    trimmed = dict(after, variables=after["variables"][1:])
    removed = fingerprint.diff(before, trimmed)
    assert removed.removed == (before["variables"][0]["path"],)
    assert fingerprint.diff(trimmed, before).added == removed.removed
    assert not fingerprint.diff(before, fingerprint.manifest(model))
    assert fingerprint.diff(before, before).describe() == "no differences"


def test_save_load_round_trip_and_clear_errors(model, tmp_path):
    result = fingerprint.manifest(model)
    path = fingerprint.save(result, tmp_path / "source.json")
    assert fingerprint.load(path) == result
    assert fingerprint.digest(result) == result["digest"]

    with pytest.raises(FileNotFoundError, match="No manifest file"):
        fingerprint.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(fingerprint.ManifestError, match="is not JSON"):
        fingerprint.load(tmp_path / "bad.json")
    broken = {"format": "other", "variables": [{"path": "a"}, result["variables"][0]] * 2}
    with pytest.raises(fingerprint.ManifestError, match="format is 'other'.*lacks.*appears twice"):
        fingerprint.check(broken)
    with pytest.raises(fingerprint.ManifestError, match="does not have"):
        fingerprint.manifest(model, frozen={"backbone/nope/kernel"})
    with pytest.raises(ValueError, match="no top-level layer 'neck'"):
        fingerprint.layer_paths(model, "neck")
    with pytest.raises(ValueError, match="not built"):
        fingerprint.manifest(keras.layers.Dense(3))


def test_prefixed_maps_a_backbone_manifest_into_the_classifiers_paths(model):
    backbone = model.get_layer("backbone")
    bare = fingerprint.manifest(backbone, frozen=())
    nested = fingerprint.prefixed(bare, "backbone/")
    assert nested["digest"] == fingerprint.digest(nested) != bare["digest"]
    in_classifier = fingerprint.entries(fingerprint.manifest(model))
    for path, entry in fingerprint.entries(nested).items():
        assert path.startswith("backbone/")
        assert in_classifier[path]["sha256"] == entry["sha256"], path
    assert len(nested["variables"]) == len(bare["variables"])


def test_pretrained_origin_of_a_classifier_and_its_errors():
    from zoo import proof

    classifier = zoo.build_classifier(
        "mobilenet_v2", NUM_CLASSES, weights=None, input_shape=(32, 32, 3)
    )
    origin = proof.origin_of(classifier)
    assert origin == proof.PretrainedOrigin("mobilenet_v2", None, (32, 32, 3))
    assert proof.PretrainedOrigin.from_dict(json.loads(json.dumps(origin.to_dict()))) == origin
    assert proof.origin_of(_classifier()) is None  # not built by zoo.build_classifier
    with pytest.raises(zoo.WeightsUnavailableError, match=r"weights=None \(random init"):
        proof.pretrained_manifest(origin)
    with pytest.raises(zoo.WeightsUnavailableError, match="a file the registry does not pin"):
        proof.pretrained_manifest(proof.PretrainedOrigin("mobilenet_v2", "file", (32, 32, 3)))
    bad = {"backbone": 3, "weights": "somewhere", "input_shape": [32, 32]}
    with pytest.raises(
        zoo.ZooError,
        match="backbone 3 is not a name; weights 'somewhere'.*"
        r"input_shape \[32, 32\] is not",
    ):
        proof.PretrainedOrigin.from_dict(bad)
