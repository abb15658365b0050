"""`zoo verify` against an attacker who rewrites every file and digest of an export to agree.

One small export is made the way `zoo run` makes it: a registered tiny backbone whose
"ImageNet" file is pinned by sha256 in the registry (planted in the test cache, so the
proof has a real anchor outside the export), a recipe with a head stage and a top-block
stage recorded in ``metadata.json``, and a float32 ``.tflite`` deployed beside it. Each
test copies it and edits the copy as an attacker would: checkpoint variables (rewritten
with ``tf.raw_ops.SaveV2``, checksums intact), ``model.keras``, the manifest's sha256s,
its digest, the frozen flags and ``frozen_in_all_stages``, the metadata. Every edit
leaves the export self-consistent; ``zoo verify --require-proof`` must still exit 1 and
name the variable or the claim.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tomli_w

import zoo
from recipes import cli
from recipes.config import parse_recipe
from recipes.deploy import deploy
from recipes.export import export_saved_model
from recipes.export_format import probe_batch
from recipes.verify import collection_keys
from zoo import fingerprint
from zoo import weights as weights_lib
from zoo.heads import HEADS
from zoo.registry import INCEPTION, BackboneSpec, Block, WeightSource
from zoo.testing import temporary_backbone

BACKBONE = "zoo_test_tamper_cnn"
VARIANT = "zoo_test_tamper_cnn_attacker"
SIZE = 16
CLASSES = ["cat", "dog", "espresso"]
STEM_KERNEL = "backbone/stem_conv/kernel"
B1_KERNEL = "backbone/b1_conv/kernel"
B2_KERNEL = "backbone/b2_conv/kernel"
B2_MEAN = "backbone/b2_bn/moving_mean"
HEAD_KERNEL = "head/logits/kernel"
RECIPE = {
    "name": "tamper",
    "data": {"source": "folder:photos", "image_size": [SIZE, SIZE], "batch_size": 8},
    "model": {"backbone": BACKBONE, "weights": "imagenet"},
    "stages": [
        {"name": "head", "policy": "freeze_backbone", "epochs": 1, "learning_rate": 0.01},
        {"name": "top", "policy": "unfreeze_top", "blocks": 1, "epochs": 1, "learning_rate": 0.01},
    ],
}
# Frozen in both stages: every backbone variable but b3's convolution kernel (b3 trains in
# stage "top"; its BatchNorm stays frozen, the default).
CLAIMED = 19
BACKBONE_VARIABLES = 20


def _builder(extra: bool = False, stem_beta: bool = True) -> Callable[..., keras.Model]:
    """Four conv-BN-ReLU blocks (stem, b1, b2, b3), b1..b3 with kernels of one shape;
    ``extra`` adds a 1x1 convolution after the stem, ``stem_beta=False`` drops the stem
    BatchNorm's beta (the attacker's variants)."""

    def build(include_top: bool = False, input_shape=None) -> keras.Model:
        layers = keras.layers
        inputs = keras.Input(input_shape or (SIZE, SIZE, 3))
        x = inputs
        for name, stride in (("stem", 2), ("b1", 1), ("b2", 1), ("b3", 1)):
            x = layers.Conv2D(8, 3, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
            center = stem_beta or name != "stem"
            x = layers.BatchNormalization(center=center, name=f"{name}_bn")(x)
            x = layers.ReLU(name=f"{name}_relu")(x)
            if extra and name == "stem":
                x = layers.Conv2D(8, 1, use_bias=False, name="stem_shift")(x)
        return keras.Model(inputs, x, name="tamper_cnn")

    return build


def _spec(name: str, builder: Callable[..., keras.Model], weights=()) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        family="test",
        builder=builder,
        input_size=(SIZE, SIZE),
        preprocessing=INCEPTION,
        feature_dim=8,
        blocks=tuple(Block(b, f"{b}_relu") for b in ("stem", "b1", "b2", "b3")),
        params=2_000,
        gmacs=0.0,
        top1=None,
        weights=weights,
        license="none",
        min_input_size=8,
    )


def _pretrained_like(model: keras.Model) -> None:
    """Values of a sensible scale: kernels with variance 1 / fan-in, so activations stay of
    order one through the blocks and the probe's probabilities do not saturate."""
    rng = np.random.default_rng(7)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path or "gamma" in variable.path:
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 4:
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        variable.assign(value.astype("float32"))


@pytest.fixture(scope="module")
def pinned_backbone(tmp_path_factory):
    """The tiny backbone, registered with an "ImageNet" file pinned by its sha256 and
    planted in the (per-session) Keras cache, where a real download would land."""
    official = tmp_path_factory.mktemp("official") / "tamper_cnn.weights.h5"
    with temporary_backbone(_spec("zoo_test_tamper_seed", _builder())):
        seed = zoo.create_backbone("zoo_test_tamper_seed", weights=None)
        _pretrained_like(seed)
        weights_lib.save_weights(seed, official)
    digest = hashlib.sha256(official.read_bytes()).hexdigest()
    source = WeightSource(f"https://example.invalid/{official.name}", digest, "sha256")
    spec = _spec(BACKBONE, _builder(), weights=(source,))
    with temporary_backbone(spec):
        cached = weights_lib.cache_path(spec)
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(official, cached)
        yield spec
        cached.unlink()


@pytest.fixture(scope="module")
def exported(pinned_backbone, tmp_path_factory):
    """The honest export: the recipe's two stages trained a step each, as `zoo run` does."""
    keras.utils.set_random_seed(0)  # module fixtures run before the per-test seed
    recipe = parse_recipe(RECIPE)
    head = HEADS[recipe.model.head.type](**recipe.model.head.kwargs())
    model = zoo.build_classifier(
        BACKBONE, 3, head=head, weights="imagenet", input_shape=(SIZE, SIZE, 3), class_names=CLASSES
    )
    source = fingerprint.manifest(model)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 3, 8)
    frozen = []
    for stage in recipe.stages:
        stage.make_policy().apply(model)
        frozen.append(fingerprint.frozen_paths(model))
        model.compile(  # a small step: logits of order one, probabilities not saturated
            optimizer=keras.optimizers.SGD(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("tamper") / "export"
    export_saved_model(
        model,
        path,
        source_manifest=source,
        frozen=set.intersection(*frozen),
        metadata={"recipe": recipe.model_dump(mode="json")},
        require_proof=True,
    )
    deploy(path, ["tflite"], model=model)
    logits = keras.ops.convert_to_numpy(model(probe_batch([SIZE, SIZE])))
    assert 0.1 < np.abs(logits).max() < 10, logits  # the deployed check can see a change
    return path


@pytest.fixture
def copy(exported, tmp_path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "export"))


def _verify(export: Path, capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["verify", str(export), *args])
    return code, capsys.readouterr().out


# -- the attacker's tools ------------------------------------------------------------------------


def _read(export: Path, name: str) -> dict:
    return json.loads((export / "assets" / name).read_text())


def _write(export: Path, name: str, data: dict) -> None:
    (export / "assets" / name).write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")


def _reseal(export: Path, edit: Callable[[dict], None] = lambda manifest: None) -> None:
    """Applies ``edit`` to the weight manifest, then recomputes its digest and the frozen
    list from the flags, so every self-consistency check holds."""
    zoo_manifest = _read(export, "zoo_manifest.json")
    weights = zoo_manifest["manifest"]
    edit(weights)
    weights["digest"] = fingerprint.digest(weights)
    zoo_manifest["frozen_in_all_stages"] = sorted(fingerprint.frozen_set(weights))
    _write(export, "zoo_manifest.json", zoo_manifest)


def _unflag(*paths: str) -> Callable[[dict], None]:
    def edit(weights: dict) -> None:
        for entry in weights["variables"]:
            if entry["path"] in paths:
                entry["frozen"] = False

    return edit


def _drop_deployed(export: Path) -> None:
    """The attacker removes the deployed files they did not rewrite."""
    zoo_manifest = _read(export, "zoo_manifest.json")
    for name in zoo_manifest.pop("deployed"):
        (export / name).unlink()
    _write(export, "zoo_manifest.json", zoo_manifest)


def _values(export: Path) -> dict[str, np.ndarray]:
    prefix = str(export / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    paths = [e["path"] for e in _read(export, "zoo_manifest.json")["manifest"]["variables"]]
    return {p: reader.get_tensor(k) for p, k in zip(paths, collection_keys(export), strict=True)}


def _rewrite(export: Path, new: dict[str, np.ndarray]) -> None:
    """Writes ``new`` values into the checkpoint, ``model.keras`` and the manifest's sha256s."""
    prefix = str(export / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    paths = [e["path"] for e in _read(export, "zoo_manifest.json")["manifest"]["variables"]]
    key_of = dict(zip(paths, collection_keys(export), strict=True))
    names = sorted(reader.get_variable_to_shape_map())
    tensors = [reader.get_tensor(n) for n in names]
    for path, value in new.items():
        tensors[names.index(key_of[path])] = value
    staged = str(export / "staged")
    tf.raw_ops.SaveV2(
        prefix=staged, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
    )
    for suffix in (".index", ".data-00000-of-00001"):
        Path(staged + suffix).replace(prefix + suffix)

    model = keras.saving.load_model(export / "model.keras", safe_mode=True)
    variables = dict(fingerprint.named_weights(model))
    for path, value in new.items():
        variables[path].assign(value)
    model.save(export / "model.keras")

    def edit(weights: dict) -> None:
        for path, value in new.items():
            fingerprint.entries(weights)[path]["sha256"] = fingerprint.array_sha256(value)

    _reseal(export, edit)


def _reexport(exported: Path, out: Path) -> None:
    """Exports a model of the attacker's own architecture, with the honest export's weights
    wherever the paths match, then gives it the honest metadata (backbone, origin, recipe).

    Runs inside the attacker's registration of the variant (so its model.keras loads)."""
    recipe = parse_recipe(RECIPE)
    head = HEADS[recipe.model.head.type](**recipe.model.head.kwargs())
    model = zoo.build_classifier(
        VARIANT, 3, head=head, weights=None, input_shape=(SIZE, SIZE, 3), class_names=CLASSES
    )
    honest = _values(exported)
    for path, variable in fingerprint.named_weights(model):
        if path in honest:
            variable.assign(honest[path])
    flagged = set(_read(exported, "zoo_manifest.json")["frozen_in_all_stages"])
    paths = {path for path, _ in fingerprint.named_weights(model)}
    export_saved_model(model, out, frozen=flagged & paths)  # no recipe: it would not build
    meta, honest_meta = _read(out, "metadata.json"), _read(exported, "metadata.json")
    for key in ("backbone", "pretrained", "pretrained_weights", "recipe"):
        meta[key] = honest_meta[key]
    _write(out, "metadata.json", meta)


# -- an honest export passes, and says how much is proven -------------------------------------


def test_the_honest_export_is_proven_from_its_recipe(exported, capsys):
    code, out = _verify(exported, capsys, "--require-proof", "--expect-frozen", str(CLAIMED))
    assert code == 0, out
    assert (
        f"proven: {CLAIMED} of {BACKBONE_VARIABLES} backbone variables bitwise pretrained; "
        "trained: b3, head (per the recipe's policies)"
    ) in out
    assert f"claim: {CLAIMED} variables frozen in every stage by the recorded recipe's" in out
    assert f"bitwise equal to the registry's imagenet weights of {BACKBONE}" in out
    assert "model.tflite max |output difference|" in out


def test_a_pinned_recipe_that_differs_from_the_recorded_one_is_named(exported, tmp_path, capsys):
    trusted = json.loads(json.dumps(RECIPE))
    trusted["stages"][1]["blocks"] = 2  # what the user ran: two blocks, not one
    recipe_file = tmp_path / "recipe.toml"
    recipe_file.write_text(tomli_w.dumps(trusted))
    code, out = _verify(exported, capsys, "--recipe", str(recipe_file), "--expect-frozen", "19")
    assert code == 1
    assert "the recipe recorded in the export differs from --recipe: stages[1] (top) is " in out
    assert "variable backbone/b2_conv/kernel is flagged frozen, but --recipe's policies" in out
    assert (  # b2's kernel trains too: one variable fewer than asked for
        "frozen claim: 18 variables are frozen in every stage (by --recipe's policies); "
        "--expect-frozen asks for at least 19"
    ) in out


# -- the attacks ---------------------------------------------------------------------------------


def test_scaled_frozen_weight_that_is_unflagged(copy, capsys):
    _drop_deployed(copy)
    before = _values(copy)[STEM_KERNEL]
    _rewrite(copy, {STEM_KERNEL: before * 1.5})
    _reseal(copy, _unflag(STEM_KERNEL))
    after = _values(copy)[STEM_KERNEL]  # the tools did what they say
    np.testing.assert_array_equal(after, before * 1.5)
    manifest = _read(copy, "zoo_manifest.json")["manifest"]
    assert fingerprint.entries(manifest)[STEM_KERNEL]["sha256"] == fingerprint.array_sha256(after)
    code, out = _verify(copy, capsys, "--require-proof")
    assert code == 1, out
    assert (
        f"variable {STEM_KERNEL} is frozen in every stage by the recorded recipe's policies, "
        "but the export does not flag it frozen"
    ) in out
    assert f"frozen variable {STEM_KERNEL} changed since the pretrained source" in out


def test_every_flag_unset(copy, capsys):
    _reseal(copy, lambda weights: [e.update(frozen=False) for e in weights["variables"]])
    code, out = _verify(copy, capsys, "--require-proof")
    assert code == 1, out
    assert (
        f"frozen claim: the export flags 0 variables frozen in all stages, the recorded "
        f"recipe's policies freeze {CLAIMED}"
    ) in out
    assert f"bitwise equal to the registry's imagenet weights of {BACKBONE}" in out


def test_a_frozen_variable_dropped_and_an_extra_one_added(exported, tmp_path, capsys):
    """A re-export of the attacker's own backbone: the stem BatchNorm has no beta, and a
    1x1 convolution after the stem shifts every feature; all else bitwise the honest
    weights, every file written by zoo itself, the metadata copied from the honest one."""
    variant = _builder(extra=True, stem_beta=False)
    with temporary_backbone(_spec(VARIANT, variant)):
        _reexport(exported, tmp_path / "export")
        code, out = _verify(tmp_path / "export", capsys, "--require-proof")
    assert code == 1, out
    dropped, extra = "backbone/stem_bn/beta", "backbone/stem_shift/kernel"
    assert f"variable {dropped} of the recorded recipe's classifier is missing from the export" in (
        out
    )
    assert f"variable {extra} in the export is not a variable of the recorded recipe's" in out


def test_two_frozen_kernels_of_one_shape_swapped(copy, capsys):
    _drop_deployed(copy)
    values = _values(copy)
    _rewrite(copy, {B1_KERNEL: values[B2_KERNEL], B2_KERNEL: values[B1_KERNEL]})
    code, out = _verify(copy, capsys, "--require-proof")
    assert code == 1, out
    for path in (B1_KERNEL, B2_KERNEL):
        assert f"frozen variable {path} changed since the pretrained source" in out


def test_batchnorm_moving_mean_edited_and_its_layer_unflagged(copy, capsys):
    _drop_deployed(copy)
    _rewrite(copy, {B2_MEAN: _values(copy)[B2_MEAN] + 0.5})
    layer = [f"backbone/b2_bn/{name}" for name in ("gamma", "beta", "moving_mean")]
    _reseal(copy, _unflag(*layer, "backbone/b2_bn/moving_variance"))
    code, out = _verify(copy, capsys, "--require-proof")
    assert code == 1, out
    assert f"variable {B2_MEAN} is frozen in every stage by the recorded recipe's policies" in out
    assert f"frozen variable {B2_MEAN} changed since the pretrained source" in out


def test_metadata_downgraded_to_random_weights(copy, tmp_path, capsys):
    _drop_deployed(copy)
    _rewrite(copy, {B1_KERNEL: _values(copy)[B1_KERNEL] * 1.5})
    meta = _read(copy, "metadata.json")
    meta["pretrained"]["weights"] = None
    meta["pretrained_weights"] = None
    _write(copy, "metadata.json", meta)
    code, out = _verify(copy, capsys, "--require-proof")
    assert code == 1, out
    assert "metadata.json says the backbone weights were random (weights=None); the recipe " in out
    assert f"frozen variable {B1_KERNEL} changed since the pretrained source" in out

    # The recorded recipe downgraded too: nothing left to anchor to, unless the user pins
    # the recipe they ran.
    meta["recipe"]["model"]["weights"] = "none"
    _write(copy, "metadata.json", meta)
    recipe_file = tmp_path / "recipe.toml"
    recipe_file.write_text(tomli_w.dumps(RECIPE))
    code, out = _verify(copy, capsys, "--require-proof", "--recipe", str(recipe_file))
    assert code == 1, out
    assert "model.weights is 'none' there, 'imagenet' in --recipe" in out
    assert f"frozen variable {B1_KERNEL} changed since the pretrained source" in out


def test_deployed_tflite_that_does_not_hold_the_savedmodel_weights(copy, capsys):
    """The SavedModel's trained head rewritten; the .tflite (hash intact) left as it was."""
    _rewrite(copy, {HEAD_KERNEL: _values(copy)[HEAD_KERNEL] * 1.5})
    code, out = _verify(copy, capsys, "--require-proof")
    assert code == 1, out
    assert "deployed file model.tflite (tflite): probabilities differ from the SavedModel's" in out
    assert "FAILED: 1 failures" in out  # every other check holds: the edit is consistent


def test_an_unlisted_deployed_file_is_named(copy, capsys):
    zoo_manifest = _read(copy, "zoo_manifest.json")
    del zoo_manifest["deployed"]["model.tflite"]
    _write(copy, "zoo_manifest.json", zoo_manifest)
    code, out = _verify(copy, capsys)
    assert code == 1, out
    assert "deployed file model.tflite is in the export but not listed" in out


def test_a_deployed_file_listed_outside_the_export_is_never_read(copy, tmp_path, capsys):
    outside = tmp_path / "outside.tflite"
    outside.write_bytes(b"not read")
    zoo_manifest = _read(copy, "zoo_manifest.json")
    zoo_manifest["deployed"]["../outside.tflite"] = {"sha256": "0" * 64}
    _write(copy, "zoo_manifest.json", zoo_manifest)
    code, out = _verify(copy, capsys)
    assert code == 1, out
    assert "deployed file '../outside.tflite' lies outside the export" in out
