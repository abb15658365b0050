"""KerasHub's backbones as registry rows: facts against KerasHub, specs against built models.

Offline, random weights, few builds: ResNet-18 at its default size (params, GMACs, blocks,
the preset's published count, a preset directory added by hand), DINOv3-S/16 and DINOv2-S/14
at tiny sizes (tokens, blocks, heads, the feature cache). Every other row is checked against
the generated table and KerasHub's preset table, which costs no build;
``scripts/generate_keras_hub_rows.py`` built each row when it wrote the table.
"""

import dataclasses
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

keras_hub = pytest.importorskip("keras_hub")

import zoo  # noqa: E402
from recipes.cli import main  # noqa: E402
from zoo import caching  # noqa: E402
from zoo.backbones import build_architecture, fresh_layer_names  # noqa: E402
from zoo.backbones import keras_hub as family  # noqa: E402
from zoo.cost import count_macs  # noqa: E402
from zoo.heads import LinearHead, TokenPooling, make_head  # noqa: E402
from zoo.policies import FreezeBackbone  # noqa: E402
from zoo.proof import PretrainedOrigin, pretrained_manifest  # noqa: E402
from zoo.registry import get_spec  # noqa: E402
from zoo.training import Stage, fine_tune  # noqa: E402
from zoo.weights import (  # noqa: E402
    WeightsHashMismatchError,
    WeightsMismatchError,
    WeightsUnavailableError,
    add_weights,
    availability,
    cache_path,
)

DINOV2 = "vit_small_patch14_dinov2"
DINOV3 = "vit_small_patch16_dinov3"
RESNET = "resnet18_hub"
MOBILENET = "mobilenetv3_small_050_hub"
DEIT = "deit_tiny_distilled_patch16_224"
_PUBLISHED = keras_hub.models.Backbone.presets


def _generator():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "generate_keras_hub_rows.py"
    spec = importlib.util.spec_from_file_location("generate_keras_hub_rows", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


def _published(row, model):
    """Whether ``model`` has the parameters the preset publishes, as KerasHub counted them."""
    return GENERATOR.matches_published(
        GENERATOR.published_count(row, model), _PUBLISHED[row.preset]["metadata"]["params"]
    )


# -- the table: every row, its facts read from KerasHub -------------------------------------


def test_every_row_is_registered_with_keras_hubs_facts():
    table = family.read_table()
    assert [r.name for r in family.ROWS if r.name not in table] == []
    assert len(family.ROWS) >= 30
    for row in family.ROWS:
        facts, spec = table[row.name], get_spec(row.name)
        published = _PUBLISHED[row.preset]
        # The table's preset facts are KerasHub's, as this keras-hub publishes them.
        assert facts["handle"] == published["kaggle_handle"], row.name
        assert facts["preset_params"] == published["metadata"]["params"], row.name
        assert facts["handle"].endswith(f"/{facts['version']}")
        source = spec.weight_source()
        assert (source.url, source.kind, source.file_hash) == (facts["handle"], "keras_hub", None)
        assert (spec.params, spec.gmacs, spec.top1) == (facts["params"], facts["gmacs"], None)
        assert spec.token_pooling == ("cls" if row.tokens else None)
        assert spec.prefix_tokens == row.prefix_tokens
        assert spec.min_input_size <= spec.input_size[0]
        # Where the preset counts every variable at the row's size (or those and a 1000-class
        # top), the row's own count gives the published one.
        top = {"all": 0, "all+top": (spec.feature_dim + 1) * 1000}.get(row.counted)
        if row.preset_size == row.input_size and top is not None:
            count = spec.params + top
            assert GENERATOR.matches_published(count, published["metadata"]["params"]), row.name
        if row.timm:  # the stage ends the generator found are the blocks
            assert spec.block_names[-1] == f"stage_{len(facts['stage_ends']) - 1}"


def test_published_counts_are_read_at_their_precision():
    assert GENERATOR.matches_published(22_582_656, 22_582_656)
    assert not GENERATOR.matches_published(22_582_657, 22_582_656)
    assert GENERATOR.matches_published(21_601_152, 21_600_000)
    assert not GENERATOR.matches_published(21_701_152, 21_600_000)
    # KerasHub counts every variable, or those and a 1000-class top, or as timm does; for
    # CLIP, every variable of the whole image-text model (the one passed).
    pixels = keras.Input((2, 2, 3))
    model = keras.Model(pixels, keras.layers.BatchNormalization()(pixels))
    row = family.ROWS_BY_NAME[RESNET]
    counts = [
        GENERATOR.published_count(dataclasses.replace(row, counted=c), model) for c in family.COUNTS
    ]
    assert counts == [12, 12 + 4 * 1000, 6 + 4 * 1000, 12]  # image+text: the whole model


# -- built rows -----------------------------------------------------------------------------


def _crossings(model, end):
    """Operations before ``end`` whose output is read after it (a cut must have none)."""
    ops = model.operations
    index = {id(op): i for i, op in enumerate(ops)}
    position = index[id(model.get_layer(end))]
    bad = set()
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for tensor in node.arguments.keras_tensors:
                producer = index[id(tensor._keras_history[0])]
                if producer < position < index[id(node.operation)]:
                    bad.add(ops[producer].name)
    return sorted(bad)


def _check_spec(spec, model, size):
    row = family.ROWS_BY_NAME[spec.name]
    assert len(model.outputs) == 1
    if row.tokens:
        tokens = (size // row.patch) ** 2 + row.prefix_tokens
        assert tuple(model.output.shape) == (None, tokens, spec.feature_dim)
    else:
        assert model.output.ndim == 4 and model.output.shape[-1] == spec.feature_dim
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    assert len(position) == len(model.layers), "layer names must be unique"
    ends = [position[b.end] for b in spec.blocks]
    assert ends == sorted(set(ends)) and ends[-1] == len(model.layers) - 1
    assert [b.name for b in spec.blocks if b.cut and _crossings(model, b.end)] == []


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """ResNet-18 at its default size: KerasHub's backbone saved as a preset directory (as
    Kaggle serves it), and zoo's model over the same layers."""
    row = family.ROWS_BY_NAME[RESNET]
    keras.backend.clear_session()
    preset = tmp_path_factory.mktemp("resnet") / "preset"
    with fresh_layer_names():
        hub = family.hub_backbone(row, (224, 224, 3))
        hub.save_to_preset(str(preset))
        model = family._wire(row, hub, (224, 224, 3))
    return hub, model, preset


def test_convolutional_row_is_its_spec_and_the_presets_count(resnet):
    hub, model, _ = resnet
    spec = get_spec(RESNET)
    assert model.count_params() == spec.params and _published(family.ROWS_BY_NAME[RESNET], model)
    assert count_macs(model) / 1e9 == pytest.approx(spec.gmacs, rel=0.02)  # as test_backbones
    _check_spec(spec, model, 224)
    assert spec.block_names == ("stage_0", "stage_1", "stage_2", "stage_3")


def test_timm_port_row_is_its_spec_and_the_presets_count():
    """MobileNetV3-Small 0.5: KerasHub's timm conversion, stage ends from the table."""
    spec = get_spec(MOBILENET)
    keras.backend.clear_session()
    model = build_architecture(spec)
    assert model.count_params() == spec.params and _published(family.ROWS_BY_NAME[MOBILENET], model)
    assert count_macs(model) / 1e9 == pytest.approx(spec.gmacs, rel=0.02)  # as test_backbones
    _check_spec(spec, model, 224)
    assert len(spec.blocks) == 5 and all(b.cut for b in spec.blocks)


def test_dinov3_row_is_its_spec_and_the_presets_count():
    """Rotary position embeddings: the parameters do not depend on the input size."""
    spec = get_spec(DINOV3)
    keras.backend.clear_session()
    model = build_architecture(spec, input_shape=(32, 32, 3))
    assert model.count_params() == spec.params and _published(family.ROWS_BY_NAME[DINOV3], model)
    _check_spec(spec, model, 32)
    # The layers also read the rotary embedding: only the output is a single-tensor cut.
    assert [b.cut for b in spec.blocks] == [False] * 11 + [True]
    with pytest.raises(zoo.ZooError, match=r"square and a multiple of the patch size 16"):
        build_architecture(spec, input_shape=(40, 40, 3))
    with pytest.raises(zoo.ZooError, match="no ImageNet classifier"):
        build_architecture(spec, input_shape=(32, 32, 3), include_top=True)
    with pytest.raises(zoo.ZooError, match="returns tokens"):
        zoo.create_backbone(DINOV3, weights=None, features_only=True)


def test_deit_row_is_its_spec_and_the_presets_count():
    """DeiT-Ti: a distillation token after the class token; layers also output scores."""
    spec = get_spec(DEIT)
    keras.backend.clear_session()
    model = build_architecture(spec)
    assert model.count_params() == spec.params and _published(family.ROWS_BY_NAME[DEIT], model)
    _check_spec(spec, model, 224)
    assert spec.prefix_tokens == 2 and [b.cut for b in spec.blocks] == [False] * 11 + [True]


# -- weights: the offline error, a preset directory added by hand, the proof's anchor --------


def test_offline_imagenet_weights_is_one_line_naming_the_preset():
    handle = _PUBLISHED["dinov2_small"]["kaggle_handle"]
    with pytest.raises(WeightsUnavailableError) as error:
        zoo.create_backbone(DINOV2, input_shape=(28, 28, 3))
    message = str(error.value)
    assert "\n" not in message
    assert handle in message and f"zoo weights add DIR --backbone {DINOV2}" in message
    assert availability(get_spec(DINOV2)) == "download"
    # Nothing fetched and no hash pinned: nothing to prove against, so "not proven".
    with pytest.raises(WeightsUnavailableError, match="ZOO_OFFLINE"):
        pretrained_manifest(PretrainedOrigin(DINOV2, "imagenet", (28, 28, 3)))


def test_list_shows_rows_with_weights_column(capsys):
    assert main(["list", "vit_*dinov*"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert DINOV2 in rows and DINOV3 in rows and len(rows) >= 12
    assert rows[DINOV2][1:] == [
        "224x224",
        "22.2M",
        f"{get_spec(DINOV2).gmacs:.2f}",
        "-",
        "download",
    ]


def test_preset_directory_is_checked_added_and_anchors_the_proof(resnet, tmp_path):
    """`zoo weights add DIR`: built from DIR, the row's architecture, hashes recorded."""
    hub, _, preset = resnet

    wrong = tmp_path / "wrong"  # another architecture in the same files: refused, none added
    shutil.copytree(preset, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["config"]["stackwise_num_blocks"] = [1, 1, 1, 1]
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsMismatchError, match=RESNET):
        add_weights(wrong, RESNET)
    assert availability(get_spec(RESNET)) == "download"

    with pytest.raises(zoo.ZooError, match=r"lacks \['config.json', 'model.weights.h5'\]"):
        zoo.create_backbone(RESNET, weights=tmp_path, input_shape=(224, 224, 3))
    path = add_weights(preset, RESNET)
    assert path == cache_path(get_spec(RESNET)) and availability(get_spec(RESNET)) == "offline"
    model = zoo.create_backbone(RESNET, input_shape=(224, 224, 3))
    assert model.zoo_weights["source"] == str(path)
    for mine, theirs in zip(model.weights, hub.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    with open(path / "model.weights.h5", "r+b") as f:  # the recorded sha256 is the anchor
        f.seek(-8, 2)
        f.write(b"tampered")
    with pytest.raises(WeightsHashMismatchError, match="changed since its sha256 was recorded"):
        pretrained_manifest(PretrainedOrigin(RESNET, "imagenet", (224, 224, 3)))
    shutil.rmtree(path)


# -- heads on tokens, the feature cache --------------------------------------------------


def test_token_pooling_cls_and_mean():
    x = np.arange(2 * 5 * 3, dtype="float32").reshape(2, 5, 3)
    np.testing.assert_array_equal(TokenPooling("cls")(x), x[:, 0])
    np.testing.assert_allclose(TokenPooling("mean", prefix_tokens=1)(x), x[:, 1:].mean(axis=1))
    with pytest.raises(zoo.ZooError, match="no token_pooling"):
        LinearHead(num_classes=2)(x)
    with pytest.raises(zoo.ZooError, match="token_pooling"):
        LinearHead(num_classes=2, token_pooling="max")
    # A head's own choice wins; the prefix is always the backbone's.
    head = make_head(LinearHead(token_pooling="mean"), 3, None, "cls", 5)
    assert (head.token_pooling, head.prefix_tokens) == ("mean", 5)
    head = type(head).from_config(head.get_config())
    head.build((None, 9, 3))
    y = np.arange(2 * 9 * 3, dtype="float32").reshape(2, 9, 3)
    np.testing.assert_allclose(head.pool(y), y[:, 5:].mean(axis=1))


def test_tiny_vit_classifier_pools_tokens_and_uses_the_cache():
    keras.backend.clear_session()
    model = zoo.build_classifier(DINOV2, 3, weights=None, input_shape=(28, 28, 3))
    _check_spec(get_spec(DINOV2), model.get_layer("backbone"), 28)
    head = model.get_layer("head")
    assert (head.token_pooling, head.prefix_tokens) == ("cls", 1)

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 28, 28, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, 16))).batch(8)
    result = fine_tune(model, data, None, [Stage("head", FreezeBackbone(), 1, 1e-2)], verbose=0)
    info = result.stages[0].cache
    assert info.used and info.cut == "layer_11" and info.cut_layer == "layernorm"
    assert tuple(info.shape) == (5, 384)
    # The cached head sees what the full model's head sees.
    split = caching.split_model(model, caching.plan_cut(model))
    on_features = np.asarray(split.suffix(split.prefix(x, training=False), training=False))
    np.testing.assert_allclose(model(x, training=False), on_features, atol=1e-5)
    # UnfreezeTop counts transformer layers: the cut lands below the top two.
    zoo.UnfreezeTop(blocks=2).apply(model)
    plan = caching.plan_cut(model)
    assert (plan.block, plan.layer) == ("layer_9", "layers_9")
