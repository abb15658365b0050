"""Weight resolution and strict loading: offline errors, hashes, mismatches."""

import dataclasses
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

import zoo
from zoo import weights as weights_lib
from zoo.backbones import build_architecture
from zoo.registry import REGISTRY, WeightSource

SMALL = (32, 32, 3)


@pytest.fixture
def saved_weights(tmp_path):
    """A zoo weights file (keyed by variable path) from a mobilenet_v2 at 32x32, and its model."""
    model = zoo.create_backbone("mobilenet_v2", weights=None, input_shape=SMALL)
    path = tmp_path / "mobilenet_v2.weights.h5"
    weights_lib.save_weights(model, path)
    return model, path


@pytest.fixture
def local_spec(tmp_path):
    """A registered copy of mobilenet_v2 whose 'official' file is one made here."""
    model = zoo.create_backbone("mobilenet_v2", weights=None, input_shape=SMALL)
    official = tmp_path / "official" / "tiny_mobilenet_v2.weights.h5"
    official.parent.mkdir()
    weights_lib.save_weights(model, official)
    digest = hashlib.sha256(official.read_bytes()).hexdigest()
    source = WeightSource(f"https://example.invalid/{official.name}", digest, "sha256")
    spec = dataclasses.replace(
        zoo.get_spec("mobilenet_v2"),
        name="tiny_mobilenet_v2",
        weights=(source,),
        input_size=SMALL[:2],
    )
    zoo.register_backbone(spec)
    yield spec, official, model
    REGISTRY._specs.pop(spec.name)


def test_offline_imagenet_weights_raise_with_cache_path():
    spec = zoo.get_spec("mobilenet_v2")
    expected = weights_lib.cache_path(spec)
    with pytest.raises(zoo.WeightsUnavailableError) as error:
        zoo.create_backbone("mobilenet_v2", weights="imagenet")
    message = str(error.value)
    assert str(expected) in message
    assert "zoo weights add" in message
    assert spec.weight_source().url in message


def _plant(spec, data: bytes) -> Path:
    path = weights_lib.cache_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_planted_file_with_wrong_hash_is_refused():
    spec = zoo.get_spec("inception_v3")
    path = _plant(spec, b"not the official weights")
    try:
        actual = hashlib.md5(path.read_bytes()).hexdigest()
        with pytest.raises(zoo.WeightsHashMismatchError, match="Refusing") as error:
            zoo.create_backbone("inception_v3", weights="imagenet")
        assert actual in str(error.value)
        assert spec.weight_source().file_hash in str(error.value)
    finally:
        path.unlink()


def test_planted_file_without_published_or_recorded_hash_is_refused():
    # Keras publishes no hash for MobileNetV2: a file nobody recorded cannot be trusted.
    spec = zoo.get_spec("mobilenet_v2")
    assert spec.weight_source().file_hash is None
    path = _plant(spec, b"planted")
    try:
        with pytest.raises(zoo.WeightsHashMismatchError, match="no published hash"):
            zoo.create_backbone("mobilenet_v2", weights="imagenet")
    finally:
        path.unlink()


def test_add_records_sha256_where_none_is_published(saved_weights, tmp_path):
    model, _ = saved_weights
    spec = zoo.get_spec("mobilenet_v2")
    official = tmp_path / spec.weight_source().filename
    with h5py.File(official, "w") as f:
        from keras.src.legacy.saving import legacy_h5_format

        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    cached = weights_lib.add_weights(official, "mobilenet_v2")
    try:
        loaded = zoo.create_backbone("mobilenet_v2", weights="imagenet", input_shape=SMALL)
        np.testing.assert_array_equal(np.asarray(model.weights[0]), np.asarray(loaded.weights[0]))
        with open(cached, "r+b") as f:  # any later change to the file is caught
            f.seek(-1, 2)
            f.write(b"\xff" if f.read(1) != b"\xff" else b"\x00")
        with pytest.raises(zoo.WeightsHashMismatchError, match="sha256"):
            zoo.create_backbone("mobilenet_v2", weights="imagenet", input_shape=SMALL)
    finally:
        cached.unlink()
        cached.with_name(cached.name + ".sha256").unlink()


def test_weights_from_a_path_round_trip(saved_weights):
    model, path = saved_weights
    loaded = zoo.create_backbone("mobilenet_v2", weights=path, input_shape=SMALL)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert loaded.zoo_weights["sha256"] == weights_lib.file_hash(path)


def test_layer_names_are_stable_across_builds():
    first = zoo.create_backbone("inception_v3", weights=None, input_shape=(75, 75, 3))
    second = zoo.create_backbone("inception_v3", weights=None, input_shape=(75, 75, 3))
    assert [v.path for v in first.weights] == [v.path for v in second.weights]


def _edit_h5(path: Path, edit) -> None:
    with h5py.File(path, "r+") as f:
        edit(f)


def test_renamed_layer_is_refused_and_named(saved_weights):
    model, path = saved_weights
    _edit_h5(path, lambda f: f.move("block_3_project", "block_3_projection"))
    with pytest.raises(zoo.WeightsMismatchError) as error:
        zoo.create_backbone("mobilenet_v2", weights=path, input_shape=SMALL)
    message = str(error.value)
    assert "missing in file: block_3_project/kernel" in message
    assert "not in model: block_3_projection/kernel" in message


def test_reshaped_layer_is_refused_and_named(saved_weights):
    model, path = saved_weights

    def reshape(f):
        del f["Conv1/kernel"]
        f["Conv1/kernel"] = np.zeros((5, 5, 3, 32), "float32")

    _edit_h5(path, reshape)
    with pytest.raises(zoo.WeightsMismatchError, match=r"Conv1/kernel is \(5, 5, 3, 32\)"):
        zoo.create_backbone("mobilenet_v2", weights=path, input_shape=SMALL)


def test_keras_format_file_is_checked_by_structure(tmp_path):
    model = zoo.create_backbone("mobilenet_v2", weights=None, input_shape=SMALL)
    path = tmp_path / "keras_format.weights.h5"
    model.save_weights(str(path))
    loaded = zoo.create_backbone("mobilenet_v2", weights=path, input_shape=SMALL)
    np.testing.assert_array_equal(np.asarray(model.weights[-1]), np.asarray(loaded.weights[-1]))
    _edit_h5(path, lambda f: f.move("layers/conv2d", "layers/conv2d_99"))
    with pytest.raises(zoo.WeightsMismatchError, match="missing in file: layers/conv2d/vars/0"):
        zoo.create_backbone("mobilenet_v2", weights=path, input_shape=SMALL)


def test_mismatch_assigns_nothing(saved_weights):
    model, path = saved_weights
    _edit_h5(path, lambda f: f.move("Conv1", "Conv1_x"))
    target = build_architecture(zoo.get_spec("mobilenet_v2"), SMALL)
    before = [np.asarray(v).copy() for v in target.weights]
    with pytest.raises(zoo.WeightsMismatchError):
        weights_lib.load_weights_strict(target, path)
    for old, var in zip(before, target.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(var))


def test_legacy_h5_loads_by_order_and_refuses_a_missing_layer(tmp_path):
    from keras.src.legacy.saving import legacy_h5_format

    source = zoo.create_backbone("mobilenet_v2", weights=None, input_shape=SMALL)
    path = tmp_path / "legacy.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    loaded = zoo.create_backbone("mobilenet_v2", weights=path, input_shape=SMALL)
    np.testing.assert_array_equal(np.asarray(source.weights[0]), np.asarray(loaded.weights[0]))

    def drop_last_layer(f):
        names = list(f.attrs["layer_names"])
        f.attrs["layer_names"] = names[:-2]

    _edit_h5(path, drop_last_layer)
    with pytest.raises(zoo.WeightsMismatchError, match="layers with weights"):
        zoo.create_backbone("mobilenet_v2", weights=path, input_shape=SMALL)


def test_add_weights_checks_the_hash_then_imagenet_loads_from_cache(local_spec, tmp_path):
    spec, official, model = local_spec
    forged = tmp_path / "forged.weights.h5"
    forged.write_bytes(official.read_bytes() + b"\0")
    with pytest.raises(zoo.WeightsHashMismatchError):
        weights_lib.add_weights(forged, spec.name)
    assert not weights_lib.is_cached(spec)

    cached = weights_lib.add_weights(official, spec.name)
    assert cached == weights_lib.cache_path(spec) and cached.is_file()
    loaded = zoo.create_backbone(spec.name, weights="imagenet", input_shape=SMALL)
    np.testing.assert_array_equal(np.asarray(model.weights[0]), np.asarray(loaded.weights[0]))


def test_failed_conversion_leaves_no_cache_file(local_spec):
    spec, _, _ = local_spec

    def broken_converter(spec, include_top, destination):
        Path(destination).write_bytes(b"half written")
        raise RuntimeError("converter crashed")

    source = dataclasses.replace(spec.weights[0], file_hash=None, converter=broken_converter)
    broken = dataclasses.replace(spec, name="broken_converter_net", weights=(source,))
    zoo.register_backbone(broken)
    try:
        with pytest.raises(RuntimeError, match="converter crashed"):
            weights_lib.resolve(broken)
        path = weights_lib.cache_path(broken)
        assert not path.exists()
        assert not list(path.parent.glob(f".{path.name}*"))
    finally:
        REGISTRY._specs.pop(broken.name)
