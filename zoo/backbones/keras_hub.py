"""KerasHub's vision transformers as registry rows: ViT, DINOv2 and DINOv3.

Source: KerasHub 0.32 (https://github.com/keras-team/keras-hub), its backbone classes
(``ViTBackbone``, ``DINOV2Backbone``, ``DINOV3Backbone``) and its presets, the pretrained
weights published on Kaggle under ``kaggle://keras/...``. Papers: ViT, Dosovitskiy et al.,
"An Image is Worth 16x16 Words", ICLR 2021, https://arxiv.org/abs/2010.11929; DINOv2,
Oquab et al., 2023, https://arxiv.org/abs/2304.07193 (registers: Darcet et al., "Vision
Transformers Need Registers", ICLR 2024, https://arxiv.org/abs/2309.16588); DINOv3,
Siméoni et al., 2025, https://arxiv.org/abs/2508.10104.

What is code here and what is read:

- The architecture of each size (layers, width, heads, MLP width: the paper's tables) is
  code, in ``_SIZES``; a row names a family, a size, the patch size and the preset.
- The preset's facts (handle and version, description, published parameter count) are read
  from ``keras_hub``'s own preset table by ``scripts/generate_keras_hub_rows.py``, which
  also builds each row (random weights) and records its parameters and GMACs
  (``zoo.cost.count_macs``) into ``keras_hub_rows.json`` beside this file. The registry
  reads that table, so listing the rows needs no ``keras_hub`` import;
  ``tests/zoo/test_keras_hub.py`` checks it against ``keras_hub`` and against rebuilt rows,
  and that the architecture here reproduces the preset's published parameter count (the
  tie between this code and the preset).

The model zoo builds is not KerasHub's backbone itself but the same layers rewired as a
flat functional model: patch embedding, then each transformer layer as a layer of the
model, then the final LayerNorm. Its output is the token sequence ``(batch, tokens, dim)``
(class token first, then register tokens, then the patch tokens). Each transformer layer is
a block, so ``UnfreezeTop(blocks=N)`` counts transformer layers and the activation cache
cuts between them. The weights are KerasHub's variables, loaded by
``keras_hub.models.Backbone.from_preset`` (which interpolates position embeddings to the
input size where the family supports it).

Heads pool the tokens as the row says (``BackboneSpec.token_pooling``): the class token,
which the three families are trained to summarise the image in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import InvalidValueError, ZooError
from zoo.registry import INCEPTION, TORCH, BackboneSpec, Block, Preprocessing, WeightSource
from zoo.registry import register_backbone as _register

TABLE = Path(__file__).with_name("keras_hub_rows.json")
KERAS_HUB_VERSION = "0.32.0"
_SOURCE = "https://github.com/keras-team/keras-hub/tree/v0.32.0/keras_hub/src/models/"


class KerasHubMissingError(ZooError, ImportError):
    """``keras_hub`` is not installed, and a KerasHub row was asked to build."""


@dataclass(frozen=True)
class _Size:
    """A transformer's size: ``num_layers`` layers of width ``hidden_dim`` with
    ``num_heads`` heads and an MLP of width ``mlp_dim`` (``gated``: SwiGLU)."""

    num_layers: int
    hidden_dim: int
    num_heads: int
    mlp_dim: int
    gated: bool = False


# The standard sizes: ViT Table 1 (Ti/S from DeiT Table 1), DINOv2 Table 17 (g: SwiGLU,
# 1536 wide, 40 layers), DINOv3 Table 14 (S+ and H+: SwiGLU).
_SIZES = {
    "small": _Size(12, 384, 6, 1536),
    "base": _Size(12, 768, 12, 3072),
    "large": _Size(24, 1024, 16, 4096),
    "huge": _Size(32, 1280, 16, 5120),
    "giant": _Size(40, 1536, 24, 4096, gated=True),
    "small_plus": _Size(12, 384, 6, 1536, gated=True),
    "huge_plus": _Size(32, 1280, 20, 5120, gated=True),
}


@dataclass(frozen=True)
class _Family:
    """What a family shares: KerasHub's class, paper, licence, preprocessing, pooling."""

    hub_class: str
    paper: str
    license: str
    preprocessing: Preprocessing
    token_pooling: str
    source: str


_FAMILIES = {
    # google/vit-*: pixels scaled to [-1, 1] (image mean 0.5, std 0.5).
    "vit": _Family(
        "ViTBackbone",
        "https://arxiv.org/abs/2010.11929",
        "Apache-2.0",
        INCEPTION,
        "cls",
        _SOURCE + "vit",
    ),
    # facebook/dinov2-*: ImageNet mean and std.
    "dinov2": _Family(
        "DINOV2Backbone",
        "https://arxiv.org/abs/2304.07193",
        "Apache-2.0",
        TORCH,
        "cls",
        _SOURCE + "dinov2",
    ),
    # facebook/dinov3-*: ImageNet mean and std; the DINOv3 License, not an open-source one.
    "dinov3": _Family(
        "DINOV3Backbone",
        "https://arxiv.org/abs/2508.10104",
        "DINOv3 License (https://ai.meta.com/resources/models-and-libraries/dinov3-license/)",
        TORCH,
        "cls",
        _SOURCE + "dinov3",
    ),
}


@dataclass(frozen=True)
class Row:
    """One registry row: a zoo name for a KerasHub preset and its architecture.

    Attributes:
        name: zoo's name, timm's where timm has the model (``vit_small_patch14_dinov2``),
            with the pretraining data as a suffix where it is not the family's default
            (``_in21k``, ``_sat493m``).
        preset: the KerasHub preset, e.g. ``"dinov2_small"``.
        family: ``"vit"``, ``"dinov2"`` or ``"dinov3"``.
        size: a key of ``_SIZES``.
        patch: patch size in pixels.
        input_size: the default (square) input size in pixels.
        preset_size: the input size the preset's parameters are counted at (its position
            embeddings'); the input size where it does not matter.
        registers: register tokens (DINOv2 with registers, DINOv3).
    """

    name: str
    preset: str
    family: str
    size: str
    patch: int
    input_size: int
    preset_size: int
    registers: int = 0

    @property
    def prefix_tokens(self) -> int:
        """The class token and the register tokens, before the patch tokens."""
        return 1 + self.registers

    def hub_kwargs(self, image_size: int) -> dict[str, Any]:
        """The KerasHub backbone's arguments for a ``(image_size, image_size, 3)`` input."""
        size = _SIZES[self.size]
        shape = (image_size, image_size, 3)
        common = {
            "patch_size": self.patch,
            "num_layers": size.num_layers,
            "num_heads": size.num_heads,
            "hidden_dim": size.hidden_dim,
            "image_shape": shape,
        }
        if self.family == "vit":
            return {**common, "mlp_dim": size.mlp_dim}
        if self.family == "dinov2":
            return {
                **common,
                "intermediate_dim": size.mlp_dim,
                "num_register_tokens": self.registers,
                "use_swiglu_ffn": size.gated,
                "position_embedding_shape": (self.preset_size, self.preset_size, 3),
            }
        return {
            **common,
            "intermediate_dim": size.mlp_dim,
            "num_register_tokens": self.registers,
            "use_gated_mlp": size.gated,
            "hidden_activation": "silu" if size.gated else "gelu",
            "layer_scale_init_value": 1e-5,
        }


def _vit(name: str, preset: str, size: str, patch: int, image: int) -> Row:
    return Row(name, preset, "vit", size, patch, image, image)


def _dinov2(name: str, preset: str, size: str, registers: int = 0) -> Row:
    return Row(name, preset, "dinov2", size, 14, 224, 518, registers)


def _dinov3(name: str, preset: str, size: str) -> Row:
    return Row(name, preset, "dinov3", size, 16, 224, 224, 4)


ROWS = (
    _vit("vit_base_patch16_224", "vit_base_patch16_224_imagenet", "base", 16, 224),
    _vit("vit_base_patch16_384", "vit_base_patch16_384_imagenet", "base", 16, 384),
    _vit("vit_base_patch32_384", "vit_base_patch32_384_imagenet", "base", 32, 384),
    _vit("vit_large_patch16_224", "vit_large_patch16_224_imagenet", "large", 16, 224),
    _vit("vit_large_patch16_384", "vit_large_patch16_384_imagenet", "large", 16, 384),
    _vit("vit_large_patch32_384", "vit_large_patch32_384_imagenet", "large", 32, 384),
    _vit("vit_base_patch16_224_in21k", "vit_base_patch16_224_imagenet21k", "base", 16, 224),
    _vit("vit_base_patch32_224_in21k", "vit_base_patch32_224_imagenet21k", "base", 32, 224),
    _vit("vit_large_patch16_224_in21k", "vit_large_patch16_224_imagenet21k", "large", 16, 224),
    _vit("vit_large_patch32_224_in21k", "vit_large_patch32_224_imagenet21k", "large", 32, 224),
    _vit("vit_huge_patch14_224_in21k", "vit_huge_patch14_224_imagenet21k", "huge", 14, 224),
    _dinov2("vit_small_patch14_dinov2", "dinov2_small", "small"),
    _dinov2("vit_base_patch14_dinov2", "dinov2_base", "base"),
    _dinov2("vit_large_patch14_dinov2", "dinov2_large", "large"),
    _dinov2("vit_giant_patch14_dinov2", "dinov2_giant", "giant"),
    _dinov2("vit_small_patch14_reg4_dinov2", "dinov2_with_registers_small", "small", 4),
    _dinov2("vit_base_patch14_reg4_dinov2", "dinov2_with_registers_base", "base", 4),
    _dinov2("vit_large_patch14_reg4_dinov2", "dinov2_with_registers_large", "large", 4),
    _dinov2("vit_giant_patch14_reg4_dinov2", "dinov2_with_registers_giant", "giant", 4),
    _dinov3("vit_small_patch16_dinov3", "dinov3_vit_small_lvd1689m", "small"),
    _dinov3("vit_small_plus_patch16_dinov3", "dinov3_vit_small_plus_lvd1689m", "small_plus"),
    _dinov3("vit_base_patch16_dinov3", "dinov3_vit_base_lvd1689m", "base"),
    _dinov3("vit_large_patch16_dinov3", "dinov3_vit_large_lvd1689m", "large"),
    _dinov3("vit_huge_plus_patch16_dinov3", "dinov3_vit_huge_plus_lvd1689m", "huge_plus"),
    _dinov3("vit_large_patch16_dinov3_sat493m", "dinov3_vit_large_sat493m", "large"),
)
ROWS_BY_NAME = {row.name: row for row in ROWS}


# -- building ------------------------------------------------------------------------------


def _keras_hub() -> Any:
    try:
        import keras_hub
    except ImportError as error:
        raise KerasHubMissingError(
            f"KerasHub backbones need keras-hub: pip install 'keras-hub=={KERAS_HUB_VERSION}' "
            f"(or zoo's 'hub' extra); {error}"
        ) from error
    return keras_hub


def hub_backbone(row: Row, image_size: int, preset: str | os.PathLike | None = None) -> Any:
    """KerasHub's own backbone for ``row``: random weights, or loaded from a preset.

    Args:
        row: the registry row.
        image_size: the square input size in pixels.
        preset: a local preset directory (``config.json`` + ``model.weights.h5``) to
            load with ``Backbone.from_preset``; ``None`` for random weights.

    Returns:
        The ``keras_hub.models.*Backbone``, ``(batch, image_size, image_size, 3)`` ->
        ``(batch, tokens, hidden_dim)``.

    Raises:
        KerasHubMissingError: keras-hub is not installed.
    """
    keras_hub = _keras_hub()
    cls = getattr(keras_hub.models, _FAMILIES[row.family].hub_class)
    if preset is None:
        return cls(**row.hub_kwargs(image_size))
    return cls.from_preset(str(preset), image_shape=(image_size, image_size, 3))


def _wire(row: Row, hub: Any, image_size: int) -> Any:
    """KerasHub's layers as a flat functional model, one layer per transformer layer."""
    import keras

    pixels = keras.Input((image_size, image_size, 3), name="images")
    if row.family == "vit":
        encoder = hub.get_layer("vit_encoder")
        x = hub.get_layer("vit_patching_and_embedding")(pixels)
        for layer in encoder.encoder_layers:
            x = layer(x)
        x = encoder.layer_norm(x)
    elif row.family == "dinov2":
        x = hub.embeddings(pixels)
        for layer in hub.encoder.layers:
            x = layer(x)
        x = hub.layernorm(x)
    else:
        x = hub.embeddings(pixels)
        rope = hub.rope_embedding(pixels)
        for layer in hub.encoder.layers:
            x = layer(x, position_embeddings=rope, num_prefix_tokens=row.prefix_tokens)
        x = hub.layernorm(x)
    return keras.Model(pixels, x, name=row.name)


def layer_names(row: Row) -> tuple[list[str], str]:
    """The names of the transformer layers, bottom to top, and of the final LayerNorm."""
    count = _SIZES[row.size].num_layers
    if row.family == "vit":
        return [f"transformer_block_{i + 1}" for i in range(count)], "ln"
    return [f"layers_{i}" for i in range(count)], "layernorm"


def blocks(row: Row) -> tuple[Block, ...]:
    """One block per transformer layer, ``layer_{i}``, ending at that layer.

    The first block also holds the patch embedding, the last the final LayerNorm. A ViT or
    DINOv2 layer reads only the previous layer's tokens (its residual sums are inside it),
    so each end is a single-tensor cut. A DINOv3 layer also reads the rotary position
    embedding computed from the image, so only the last block is a cut there.
    """
    names, norm = layer_names(row)
    cut = row.family != "dinov3"
    out = [Block(f"layer_{i}", name, cut=cut) for i, name in enumerate(names)]
    out[-1] = Block(out[-1].name, norm)
    return tuple(out)


def build(
    row: Row,
    include_top: bool = False,
    input_shape: tuple[int, int, int] | None = None,
    preset: str | os.PathLike | None = None,
) -> Any:
    """Builds ``row``'s backbone as zoo uses it (see the module docstring).

    Args:
        row: the registry row.
        include_top: must be False: KerasHub's backbones carry no classifier.
        input_shape: ``(size, size, 3)``, square, a multiple of the patch size.
        preset: a local preset directory to load the weights from; ``None``: random.

    Returns:
        A functional keras.Model, ``(batch, size, size, 3)`` preprocessed images ->
        ``(batch, tokens, hidden_dim)`` tokens, with ``tokens = (size / patch) ** 2 +
        prefix tokens``.

    Raises:
        InvalidValueError: ``include_top``, or an input that is not square or not a
            multiple of the patch size.
        KerasHubMissingError: keras-hub is not installed.
    """
    shape = tuple(input_shape or (row.input_size, row.input_size, 3))
    problems = []
    if include_top:
        problems.append("KerasHub backbones carry no ImageNet classifier: leave include_top off")
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
        problems.append(f"input_shape must be square RGB (size, size, 3); got {shape}")
    elif shape[0] % row.patch or shape[0] < 2 * row.patch:
        problems.append(
            f"the input size must be a multiple of the patch size {row.patch} and at least "
            f"{2 * row.patch}; got {shape[0]}"
        )
    if problems:
        raise InvalidValueError(f"{row.name}: " + "; ".join(problems) + ".")
    hub = hub_backbone(row, shape[0], preset)
    return _wire(row, hub, shape[0])


# -- registration -------------------------------------------------------------------------


def read_table(path: Path = TABLE) -> dict[str, dict[str, Any]]:
    """The generated table: zoo name -> the facts read from KerasHub and the built row."""
    with open(path) as f:
        return {entry["name"]: entry for entry in json.load(f)["rows"]}


def _spec(row: Row, facts: dict[str, Any]) -> BackboneSpec:
    family = _FAMILIES[row.family]

    def builder(
        include_top: bool = False,
        input_shape: tuple[int, int, int] | None = None,
        preset: str | os.PathLike | None = None,
    ) -> Any:
        return build(row, include_top, input_shape, preset)

    return BackboneSpec(
        name=row.name,
        family=row.family,
        builder=builder,
        input_size=(row.input_size, row.input_size),
        preprocessing=family.preprocessing,
        feature_dim=_SIZES[row.size].hidden_dim,
        blocks=blocks(row),
        params=facts["params"],
        gmacs=facts["gmacs"],
        top1=None,  # KerasHub's preset metadata gives no accuracy
        weights=(
            WeightSource(
                url=facts["handle"],
                file_hash=facts.get("sha256"),
                kind="keras_hub",
                cache_name=f"{row.preset}-v{facts['version']}",
            ),
        ),
        license=family.license,
        paper=family.paper,
        source=family.source,
        min_input_size=2 * row.patch,
        token_pooling=family.token_pooling,
        prefix_tokens=row.prefix_tokens,
    )


def _register_all() -> None:
    """Registers every row the generated table holds (the test checks it holds them all)."""
    table = read_table() if TABLE.exists() else {}
    for row in ROWS:
        if row.name in table:
            _register(_spec(row, table[row.name]))


_register_all()
