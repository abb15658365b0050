"""Transformer policies (transformer layers as blocks, LayerNorm, layer-wise lr decay) and
the LoRA policy on a tiny ViT: only the adapters and the head train, every base weight
stays bitwise the same, the merge is Keras' own and is checked within float rounding."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import zoo
from zoo import fingerprint, proof
from zoo.lora import (
    ADAPTERS,
    LoRA,
    _matches,
    merge_lora,
    merge_problems,
    recompute_merge,
    target_layers,
)
from zoo.policies import FullFineTune, UnfreezeTop, policy_from_config
from zoo.registry import BackboneSpec, Block, Preprocessing
from zoo.testing import temporary_backbone

keras_hub_layers = pytest.importorskip("keras_hub.src.models.vit.vit_layers")

NAME = "zoo_test_lora_vit"
LAYERS = 3


def _build(include_top: bool = False, input_shape=None) -> keras.Model:
    """A flat ViT as zoo's KerasHub rows are: embedding, one model layer per transformer
    layer, the final LayerNorm; pooled by the mean of the tokens (2 heads, width 16)."""
    shape = input_shape or (32, 32, 3)
    inputs = keras.Input(shape=shape, name="images")
    x = keras_hub_layers.ViTPatchingAndEmbedding(
        image_size=shape[:2], patch_size=(8, 8), hidden_dim=16, name="embed"
    )(inputs)
    for i in range(LAYERS):
        x = keras_hub_layers.ViTEncoderBlock(
            num_heads=2, hidden_dim=16, mlp_dim=32, name=f"transformer_layer_{i}"
        )(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, x, name=NAME)


def vit_spec() -> BackboneSpec:
    """Blocks as the KerasHub rows: ``layer_i`` per transformer layer (the first holds the
    embedding, the last the final norm)."""
    ends = [f"transformer_layer_{i}" for i in range(LAYERS)]
    ends[-1] = "pool"
    return BackboneSpec(
        name=NAME,
        family="test",
        builder=_build,
        input_size=(32, 32),
        preprocessing=Preprocessing("inception", (127.5,) * 3, (127.5,) * 3),
        feature_dim=16,
        blocks=tuple(Block(f"layer_{i}", end) for i, end in enumerate(ends)),
        params=10_000,
        gmacs=0.0,
        top1=None,
        license="none",
        min_input_size=16,
    )


@pytest.fixture(scope="module")
def vit():
    with temporary_backbone(vit_spec()) as spec:
        yield spec


def _classifier(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return zoo.build_classifier(NAME, 3, weights=None)


def _data(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32"), np.arange(n) % 3


# -- transformer policies -------------------------------------------------------------------


def test_transformer_policies(vit):
    """UnfreezeTop counts transformer layers; LayerNorm frozen or trainable; BEiT's decay."""
    model = _classifier()
    summary = UnfreezeTop(blocks=2).apply(model)
    assert summary.trainable_blocks == [f"layer_{LAYERS - 2}", f"layer_{LAYERS - 1}"]
    trainable = {v.path for v in model.trainable_weights}
    assert any("transformer_layer_1/" in p for p in trainable)
    assert not any("transformer_layer_0/" in p or p.startswith("embed/") for p in trainable)

    FullFineTune().apply(model)
    trained = {v.path for v in model.trainable_weights}
    assert "norm/gamma" in trained and "transformer_layer_0/ln_1/beta" in trained

    summary = FullFineTune(layernorm="frozen").apply(model)
    trained = {v.path for v in model.trainable_weights}
    assert not any("/ln_" in p or p.startswith("norm/") for p in trained)
    assert "transformer_layer_0/mha/query/kernel" in trained
    assert summary.frozen_layernorm_layers == 2 * LAYERS + 1
    assert "frozen LayerNorm layers: 7" in str(summary)
    frozen = fingerprint.frozen_paths(model)
    assert "backbone/norm/gamma" in frozen and "backbone/norm/gamma" not in {
        p for p in frozen if "query" in p
    }
    with pytest.raises(ValueError, match="layernorm must be one of"):
        UnfreezeTop(blocks=1, layernorm="train")

    # BEiT / DINOv2: transformer layer i of L learns at lr * decay ** (L - i).
    policy = FullFineTune(lr_decay=0.75)
    policy.apply(model)
    multipliers = policy.multipliers(vit)
    assert multipliers["head"] == 1.0
    for i in range(LAYERS):
        assert multipliers[f"layer_{i}"] == pytest.approx(0.75 ** (LAYERS - i))
    per_variable = zoo.policies.variable_multipliers(model, policy)
    assert per_variable["transformer_layer_0/mha/query/kernel"] == pytest.approx(0.75**LAYERS)
    assert "head/logits/kernel" not in per_variable  # 1.0 is not listed


# -- LoRA ------------------------------------------------------------------------------------


def test_lora_config_targets_and_errors(vit):
    policy = LoRA(rank=4, alpha=8, targets=["query", "*/mlp/dense_1"])
    assert policy.targets == ("query", "*/mlp/dense_1") and policy.scale == 2.0
    assert policy_from_config(policy.get_config()) == policy
    assert LoRA().describe() == "LoRA()"
    assert LoRA(rank=4).describe() == "LoRA(rank=4)"
    with pytest.raises(ValueError, match=r"rank must be an integer >= 1.*alpha must be"):
        LoRA(rank=0, alpha=-1)
    with pytest.raises(ValueError, match="targets must be layer names"):
        LoRA(targets=())
    # DINOv3 names its projections q_proj / v_proj: the default targets find them too.
    assert _matches("query", "q_proj", "backbone/layers_0/attention/q_proj")
    assert not _matches("query", "k_proj", "backbone/layers_0/attention/k_proj")
    model = _classifier()
    with pytest.raises(ValueError, match=r"\['qkv'\] match no Dense or EinsumDense.*'query'"):
        LoRA(targets=("qkv",)).apply(model)
    by_name = target_layers(model, ("query", "value"))
    assert len(by_name) == 2 * LAYERS
    assert "backbone/transformer_layer_2/mha/value" in by_name
    by_path = target_layers(model, ("transformer_layer_1/mlp/dense_*",))
    assert sorted(by_path) == [
        "backbone/transformer_layer_1/mlp/dense_1",
        "backbone/transformer_layer_1/mlp/dense_2",
    ]


def test_lora_trains_only_adapters_and_head(vit):
    model = _classifier()
    summary = LoRA(rank=2, alpha=4).apply(model)
    trainable = sorted(v.path for v in model.trainable_weights)
    adapters = [
        f"transformer_layer_{i}/mha/{t}/{a}"
        for i in range(LAYERS)
        for t in ("query", "value")
        for a in ADAPTERS
    ]
    assert trainable == sorted([*adapters, "head/logits/bias", "head/logits/kernel"])
    # Keras' enable_lora sets the base kernel non-trainable; zoo freezes the bias too.
    query = model.get_layer("backbone").get_layer("transformer_layer_0").mha._query_dense
    assert query.lora_enabled and not query._kernel.trainable and not query.bias.trainable
    assert summary.frozen_layernorm_layers == 2 * LAYERS + 1
    assert summary.trainable_blocks == [f"layer_{i}" for i in range(LAYERS)]  # adapters
    assert 0 < summary.trainable_share < 0.1
    assert summary.trainable_params == sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert "trainable parameters:" in str(summary)

    claim = proof.derive_frozen(
        model, [("head", zoo.FreezeBackbone()), ("lora", LoRA(rank=2, alpha=4))]
    )
    base = {p for p in claim.backbone if p.rsplit("/", 1)[-1] not in ADAPTERS}
    assert base and base <= set(claim.frozen)
    assert not any(p.rsplit("/", 1)[-1] in ADAPTERS for p in claim.frozen)
    assert claim.trained == ("LoRA adapters", "head")
    # Applying the policy again kept the adapters; another rank is refused.
    with pytest.raises(ValueError, match="already carry adapters of another shape"):
        LoRA(rank=4).apply(model)


@pytest.fixture
def adapted(vit):
    """A classifier's manifest, then LoRA(rank=2, alpha=4) applied and one training step."""
    model = _classifier()
    before = fingerprint.manifest(model)
    policy = LoRA(rank=2, alpha=4)
    policy.apply(model)
    optimizer = zoo.make_optimizer("adam", 0.05, model, policy)
    model.compile(optimizer, "sparse_categorical_crossentropy", run_eagerly=True)  # no tracing
    x, y = _data(8)
    model.train_on_batch(x, y)
    return model, before


def test_lora_step_leaves_every_base_weight_bitwise_unchanged(adapted):
    """The whole run's proof is tests/recipes/test_lora_export.py (``zoo run``, verify)."""
    model, before = adapted
    after = fingerprint.manifest(model)
    change = fingerprint.diff(before, after)
    assert not change.removed
    assert set(change.changed_paths) == {"head/logits/kernel", "head/logits/bias"}
    assert change.added and all(p.rsplit("/", 1)[-1] in ADAPTERS for p in change.added)
    base = {p for p in fingerprint.entries(before) if p.startswith("backbone/")}
    assert base <= fingerprint.frozen_paths(model)
    # The adapters did train (B starts at zero).
    b = dict(fingerprint.named_weights(model))[
        "backbone/transformer_layer_0/mha/query/lora_kernel_b"
    ]
    assert np.any(keras.ops.convert_to_numpy(b) != 0)

    merged, record = merge_lora(model)
    assert record.rank == 2 and record.alpha == 4.0 and len(record.layers) == 2 * LAYERS
    assert not any(p.rsplit("/", 1)[-1] in ADAPTERS for p, _ in fingerprint.named_weights(merged))
    x, _ = _data(4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(merged(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )
    layer = record.layers[0]
    values = dict(fingerprint.named_weights(merged))
    assert np.array_equal(keras.ops.convert_to_numpy(values[layer.kernel]), layer.merged)
    assert not np.array_equal(layer.merged, layer.base)  # the adapters moved it
    assert merge_problems(layer.kernel, layer.merged, layer.base, layer.a, layer.b, 2.0) == []
    reference = recompute_merge(layer.base, layer.a, layer.b, 2.0)
    assert np.max(np.abs(reference - layer.merged)) <= 1e-6 * np.max(np.abs(reference))
    tampered = layer.a.copy()
    tampered.flat[0] += 0.01
    problems = merge_problems(layer.kernel, layer.merged, layer.base, tampered, layer.b, 2.0)
    assert len(problems) == 1 and problems[0].startswith(f"{layer.kernel}: the exported kernel")
    assert merge_problems("k", layer.merged, layer.base, layer.a, layer.b, 4.0)  # wrong scale
