"""Every registered backbone checked against the model its builder makes.

Parametrized over the whole registry (timm ``tests/test_models.py`` style), so backbones
registered later are covered too. Each architecture is built once per module, with random
weights, at its default input size (where its GMACs are stated); its smallest input size is
checked by running a symbolic input through that model, which builds no new variables.
"""

import gc

import keras
import pytest

import zoo  # noqa: F401  (registers every backbone)
from zoo.backbones import build_architecture
from zoo.cost import count_macs
from zoo.features import features_model
from zoo.registry import (
    PREPROCESSING_MODES,
    Registry,
    UnknownBackboneError,
    get_spec,
    list_backbones,
    register_backbone,
)

# The largest architectures take most of the module's time to build; CI still runs them.
_SLOW = {
    "convnext_large",
    "convnext_xlarge",
    "efficientnet_v2_l",
    "nasnet_large",
    "efficientnet_b7",
}


def _params():
    # KerasHub's rows (tokens out, presets for weights) are tests/zoo/test_keras_hub.py's.
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in _SLOW else name
        for name in list_backbones()
        if not any(source.kind == "keras_hub" for source in get_spec(name).weights)
    ]


@pytest.fixture(scope="module", params=_params())
def built(request):
    """(spec, model) built once per backbone; pytest groups the tests by this param."""
    spec = get_spec(request.param)
    keras.backend.clear_session()
    model = build_architecture(spec)
    yield spec, model
    del model
    keras.backend.clear_session()
    gc.collect()


def _symbolic_output(model, size):
    """The output for a ``(size, size, 3)`` input, run symbolically through the built layers.

    Building the architecture a second time at its smallest size would double this module's
    cost, so the model built at the default size is reused: no variables are created, and
    only the input specs that Keras pins to the built size (on the model and on nested
    Sequential / Functional parts such as ConvNeXt's stem) are lifted for the run, so each
    layer's own shape rules decide whether ``size`` fits (e.g. no negative conv output).
    """
    models = [m for m in model._flatten_layers(include_self=True) if isinstance(m, keras.Model)]
    models += [m._functional for m in models if getattr(m, "_functional", None) is not None]
    saved = [(m, m.input_spec) for m in models]
    try:
        for m in models:
            m.input_spec = None
        return model(keras.Input((size, size, 3)))
    finally:
        for m, spec in saved:
            m.input_spec = spec


def _graph(model):
    """Operations in order, and (producer index, consumer index) edges, of a functional model."""
    ops = model.operations
    index = {id(op): i for i, op in enumerate(ops)}
    edges = []
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for tensor in node.arguments.keras_tensors:
                edges.append((index[id(tensor._keras_history[0])], index[id(node.operation)]))
    return ops, edges


def _check_feature_stages(spec, model):
    """``features_only``'s stages (zoo.features) against the shapes of the built model."""
    features = features_model(model, spec)  # every stage; the layers (and weights) are shared
    info = features.feature_info
    assert [f.index for f in info] == list(range(len(info))) and len(info) >= 3
    assert {f.block for f in info} <= set(spec.block_names)
    reductions = [f.reduction for f in info]
    assert reductions == sorted(set(reductions)), "one stage per stride, finest first"
    assert all(r >= 2 and r & (r - 1) == 0 for r in reductions), reductions  # powers of two
    # The last stage is the backbone's own output: the same tensor of the same graph.
    assert features.outputs[-1] is model.outputs[0]
    # Each stride, checked on the shapes: an input larger by the coarsest stride R grows a map
    # of reduction r by exactly R / r pixels ("same" and "valid" padding alike).
    grown = _symbolic_output(features, spec.input_size[0] + reductions[-1])
    for f, a, b in zip(info, features.outputs, grown, strict=True):
        assert a.shape[-1] == b.shape[-1] == f.channels, (f, a.shape)
        step = reductions[-1] // f.reduction
        assert (b.shape[1] - a.shape[1], b.shape[2] - a.shape[2]) == (step, step), (f, a, b)


# Three tests per backbone, not one per check: each test pays for a Keras session reset
# (conftest), which is slow while a large model is alive.


def test_spec_matches_built_model(built):
    spec, model = built
    assert len(model.outputs) == 1
    assert model.output.ndim == 4, "backbones return feature maps, without pooling"
    assert model.output.shape[-1] == spec.feature_dim
    assert model.count_params() == spec.params
    assert spec.preprocessing.mode in PREPROCESSING_MODES
    assert spec.min_input_size <= min(spec.input_size)
    # The stated cost is what zoo.cost counts on the model without its top.
    assert count_macs(model) / 1e9 == pytest.approx(spec.gmacs, rel=0.02)
    assert spec.params_with_top is None or spec.params_with_top > spec.params
    assert spec.top1 is None or 0.0 < spec.top1 < 1.0
    for source in spec.weights:
        assert source.url.startswith("https://"), source.url
        if source.file_hash is not None:
            expected_len = {"md5": 32, "sha256": 64}[source.hash_algorithm]
            assert len(source.file_hash) == expected_len, (source.url, source.file_hash)
            int(source.file_hash, 16)
    if spec.weights:
        assert spec.weight_source(include_top=False) is not None
    small = _symbolic_output(model, spec.min_input_size)
    assert small.ndim == 4 and small.shape[-1] == spec.feature_dim


def test_blocks_exist_and_cover_layers_in_order(built):
    spec, model = built
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    assert len(position) == len(model.layers), "layer names must be unique"
    missing = [b.end for b in spec.blocks if b.end not in position]
    assert not missing, f"{spec.name}: block ends not in the model: {missing}"
    ends = [position[b.end] for b in spec.blocks]
    # Strictly increasing ends: every block holds at least one layer, none twice.
    disorder = [
        (a.name, b.name)
        for a, b, i, j in zip(spec.blocks, spec.blocks[1:], ends, ends[1:], strict=False)
        if i >= j
    ]
    assert not disorder, f"{spec.name}: blocks out of order or empty: {disorder}"
    assert ends[-1] == len(model.layers) - 1, "the last block must end at the last layer"
    # The blocks are features_only's stages (here, not in a test of its own: see above).
    _check_feature_stages(spec, model)


def test_cut_blocks_are_single_tensor_cuts(built):
    spec, model = built
    # Only NASNet-like cells may lack a cut below the top.
    assert any(b.cut for b in spec.blocks[:-1]) or spec.family == "nasnet"
    ops, edges = _graph(model)
    position = {op.name: i for i, op in enumerate(ops)}
    assert all(k < j for k, j in edges), "operations must be in topological order"
    crossing = []
    for block in spec.blocks:
        if not block.cut:
            continue
        end = position[block.end]
        # Any edge from before the end to after it bypasses the end's output.
        bad = sorted({ops[k].name for k, j in edges if k < end < j})
        if bad:
            crossing.append((block.name, bad[:3]))
    assert not crossing, f"{spec.name}: blocks marked cut=True are bypassed: {crossing}"


# -- registry behaviour ----------------------------------------------------------------


def test_registry_has_every_keras_family():
    names = list_backbones()
    assert len(names) >= 30
    expected = {
        "inception_v3",
        "inception_resnet_v2",
        "xception",
        "resnet50",
        "resnet152_v2",
        "mobilenet",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "efficientnet_b7",
        "efficientnet_v2_l",
        "densenet201",
        "convnext_xlarge",
        "nasnet_large",
        "vgg19",
    }
    assert expected <= set(names), expected - set(names)


def test_every_keras_application_is_registered():
    # ResNet50V2 <-> resnet50_v2, EfficientNetV2B0 <-> efficientnet_v2_b0, ...
    def squash(name):
        return "".join(c for c in name.lower() if c.isalnum())

    classes = {n for n in dir(keras.applications) if n[:1].isupper()}
    registered = {squash(n) for n in list_backbones()}
    missing = sorted(c for c in classes if squash(c) not in registered)
    assert not missing, f"keras.applications models with no registry entry: {missing}"


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="'inception_v3' is already registered"):
        register_backbone(get_spec("inception_v3"))
    fresh = Registry()
    fresh.register(get_spec("vgg16"))
    with pytest.raises(ValueError, match="already registered"):
        fresh.register(get_spec("vgg16"))


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="Did you mean inception_v3") as info:
        get_spec("inceptoin_v3")
    assert isinstance(info.value, UnknownBackboneError)
    with pytest.raises(KeyError, match="resnet50"):
        get_spec("resnet_50")


def test_glob_listing():
    assert list_backbones("efficientnet_b?") == [f"efficientnet_b{i}" for i in range(8)]
    assert list_backbones("vgg1?") == ["vgg16", "vgg19"]
    assert list_backbones("convnext_*") == sorted(
        f"convnext_{s}" for s in ("tiny", "small", "base", "large", "xlarge")
    )
    assert list_backbones("no_such_*") == []
