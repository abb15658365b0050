"""KerasHub's vision backbones as registry rows: ViT, CLIP, DeiT, DINOv2, DINOv3 and CNNs.

Source: KerasHub 0.32 (https://github.com/keras-team/keras-hub), its backbone classes and
presets, the pretrained weights published on Kaggle under ``kaggle://keras/...``. Papers:
ViT, Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021,
https://arxiv.org/abs/2010.11929; CLIP, Radford et al., ICML 2021,
https://arxiv.org/abs/2103.00020 (the image tower); DeiT, Touvron et al., ICML 2021,
https://arxiv.org/abs/2012.12877; DINOv2, Oquab et al., 2023,
https://arxiv.org/abs/2304.07193 (registers: Darcet et al., "Vision Transformers Need
Registers", ICLR 2024, https://arxiv.org/abs/2309.16588); DINOv3, Siméoni et al., 2025,
https://arxiv.org/abs/2508.10104; and each convolutional family's (``_FAMILIES``).

What is code here and what is read:

- The architecture is code: for the transformers each size's layers, width, heads and MLP
  width (the papers' tables, ``_SIZES``); for ResNet, ResNet-vd, DenseNet and VGG the depths
  per stage; for the families KerasHub ports from timm (EfficientNet, EfficientNetV2,
  MobileNetV3, CSPNet) KerasHub's own conversion of timm's architecture name
  (``keras_hub.src.utils.timm``).
- The preset's facts (handle and version, description, published parameter count) are read
  from ``keras_hub``'s own preset table by ``scripts/generate_keras_hub_rows.py``, which
  builds each row (random weights), refuses it unless the architecture gives the published
  parameter count, and records its parameters and GMACs (``zoo.cost.count_macs``), and for
  the timm ports their width and stage ends, into ``keras_hub_rows.json`` beside this file.
  The registry reads that table, so listing the rows needs no ``keras_hub`` import;
  ``tests/zoo/test_keras_hub.py`` checks it against ``keras_hub`` and against rebuilt rows.

For a transformer, the model zoo builds is not KerasHub's backbone itself but the same
layers rewired as a flat functional model: patch embedding, then each transformer layer as a
layer of the model, then the final LayerNorm. Its output is the token sequence ``(batch,
tokens, dim)`` (class token first, then register tokens, then the patch tokens). Each
transformer layer is a block, so ``UnfreezeTop(blocks=N)`` counts transformer layers and the
activation cache cuts between them. Heads pool the tokens as the row says
(``BackboneSpec.token_pooling``): the class token, which these families are trained to
summarise the image in (DeiT's distillation token follows it). CLIP's image tower is
KerasHub's functional model as it is, one layer per transformer layer already. A convolutional backbone is KerasHub's functional model as it is,
returning feature maps; its blocks are its stages.

The weights are KerasHub's variables, loaded by ``keras_hub.models.Backbone.from_preset``
(which interpolates DINOv2's position embeddings to the input size).
"""

from __future__ import annotations

import json
import math
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


# The standard sizes: ViT Table 1 (Ti and S from DeiT Table 1), DINOv2 Table 17 (g: 1536 wide, 40
# layers, a SwiGLU MLP 4x wide, of which SwiGLU keeps 2/3), DINOv3 Table 14 (S+, H+: SwiGLU).
_SIZES = {
    "tiny": _Size(12, 192, 3, 768),
    "small": _Size(12, 384, 6, 1536),
    "base": _Size(12, 768, 12, 3072),
    "large": _Size(24, 1024, 16, 4096),
    "huge": _Size(32, 1280, 16, 5120),
    "giant": _Size(40, 1536, 24, 6144, gated=True),
    "small_plus": _Size(12, 384, 6, 1536, gated=True),
    "huge_plus": _Size(32, 1280, 20, 5120, gated=True),
}


# ResNet (He et al., Table 1): blocks per stage and block type; "vd" (He et al., "Bag of
# Tricks", https://arxiv.org/abs/1812.01187) swaps the 7x7 stem for three 3x3 convolutions
# (32, 32, 64 filters) and downsamples the shortcut by average pooling.
_RESNET_DEPTHS = {
    "18": ((2, 2, 2, 2), "basic_block"),
    "34": ((3, 4, 6, 3), "basic_block"),
    "50": ((3, 4, 6, 3), "bottleneck_block"),
    "101": ((3, 4, 23, 3), "bottleneck_block"),
    "152": ((3, 8, 36, 3), "bottleneck_block"),
}
# DenseNet (Huang et al., Table 1): dense layers per block; growth rate 32.
_DENSENET_DEPTHS = {"121": (6, 12, 24, 16), "169": (6, 12, 32, 32), "201": (6, 12, 48, 32)}
# VGG (Simonyan and Zisserman, Table 1, configurations A, B, D, E): convolutions per block.
_VGG_DEPTHS = {
    "11": (1, 1, 2, 2, 2),
    "13": (2, 2, 2, 2, 2),
    "16": (2, 2, 3, 3, 3),
    "19": (2, 2, 4, 4, 4),
}
_VGG_WIDTHS = (64, 128, 256, 512, 512)


@dataclass(frozen=True)
class _Family:
    """What a family shares: KerasHub's class, paper, licence, preprocessing, pooling.

    ``token_pooling`` is ``None`` for the convolutional families, which return feature
    maps ``(batch, height, width, channels)`` that heads pool as usual.
    """

    hub_class: str
    paper: str
    license: str
    preprocessing: Preprocessing
    token_pooling: str | None
    source: str


_KAGGLE_LICENSE = "Apache-2.0 (KerasHub's preset on Kaggle)"
# CLIP's image normalisation (openai/CLIP, clip/clip.py), in pixel units.
_CLIP = Preprocessing(
    "clip",
    (0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255),
    (0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255),
)
# CLIP's text tower and projection per vision size (Radford et al., Table 19/20): the
# presets count the whole image-text model, so the check builds it whole.
_CLIP_TEXT = {"base": (_Size(12, 512, 8, 2048), 512), "large": (_Size(12, 768, 12, 3072), 768)}
_DINOV3_LICENSE = (
    "DINOv3 License (https://ai.meta.com/resources/models-and-libraries/dinov3-license/)"
)
# Preprocessing: google/vit-* scales pixels to [-1, 1] (mean 0.5, std 0.5); DINOv2, DINOv3
# and the convolutional presets (ports of timm / PaddleClas weights) use ImageNet's mean/std.
_FAMILIES = {
    "vit": _Family("ViTBackbone", "https://arxiv.org/abs/2010.11929", "Apache-2.0", INCEPTION, "cls", _SOURCE + "vit"),
    "clip": _Family("CLIPVisionEncoder", "https://arxiv.org/abs/2103.00020", "MIT (CLIP, OpenCLIP)", _CLIP, "cls", _SOURCE + "clip"),
    "deit": _Family("DeiTBackbone", "https://arxiv.org/abs/2012.12877", "Apache-2.0", TORCH, "cls", _SOURCE + "deit"),
    "dinov2": _Family("DINOV2Backbone", "https://arxiv.org/abs/2304.07193", "Apache-2.0", TORCH, "cls", _SOURCE + "dinov2"),
    "dinov3": _Family("DINOV3Backbone", "https://arxiv.org/abs/2508.10104", _DINOV3_LICENSE, TORCH, "cls", _SOURCE + "dinov3"),
    "resnet": _Family("ResNetBackbone", "https://arxiv.org/abs/1512.03385", _KAGGLE_LICENSE, TORCH, None, _SOURCE + "resnet"),
    "resnet_vd": _Family("ResNetBackbone", "https://arxiv.org/abs/1812.01187", _KAGGLE_LICENSE, TORCH, None, _SOURCE + "resnet"),
    "densenet": _Family("DenseNetBackbone", "https://arxiv.org/abs/1608.06993", _KAGGLE_LICENSE, TORCH, None, _SOURCE + "densenet"),
    "vgg": _Family("VGGBackbone", "https://arxiv.org/abs/1409.1556", _KAGGLE_LICENSE, TORCH, None, _SOURCE + "vgg"),
    "efficientnet": _Family("EfficientNetBackbone", "https://arxiv.org/abs/1905.11946", _KAGGLE_LICENSE, TORCH, None, _SOURCE + "efficientnet"),
    "efficientnet_lite": _Family("EfficientNetBackbone", "https://arxiv.org/abs/1905.11946", _KAGGLE_LICENSE, INCEPTION, None, _SOURCE + "efficientnet"),
    "efficientnet_v2": _Family("EfficientNetBackbone", "https://arxiv.org/abs/2104.00298", _KAGGLE_LICENSE, TORCH, None, _SOURCE + "efficientnet"),
    "mobilenet_v3": _Family("MobileNetBackbone", "https://arxiv.org/abs/1905.02244", _KAGGLE_LICENSE, TORCH, None, _SOURCE + "mobilenet"),
    "cspnet": _Family("CSPNetBackbone", "https://arxiv.org/abs/1911.11929", _KAGGLE_LICENSE, TORCH, None, _SOURCE + "cspnet"),
}  # fmt: skip
# Families whose architecture is KerasHub's own conversion of a timm architecture
# (``keras_hub.src.utils.timm.convert_*.convert_backbone_config``), by timm's name.
_TIMM_CONVERTERS = {
    "efficientnet": "convert_efficientnet",
    "efficientnet_lite": "convert_efficientnet",
    "efficientnet_v2": "convert_efficientnet",
    "mobilenet_v3": "convert_mobilenet",
    "cspnet": "convert_cspnet",
}
# How a preset's published parameter count is counted: every variable (Keras'
# ``count_params``), with a 1000-class classifier on the pooled features, or timm's way
# (trainable parameters only, so no BatchNorm statistics, with the classifier).
COUNTS = ("all", "all+top", "trainable+top", "image+text")
_TRANSFORMERS = ("vit", "clip", "deit", "dinov2", "dinov3")


@dataclass(frozen=True)
class Row:
    """One registry row: a zoo name for a KerasHub preset and its architecture.

    Attributes:
        name: zoo's name, timm's where timm has the model (``vit_small_patch14_dinov2``),
            with the pretraining data as a suffix where it is not the family's default
            (``_in21k``, ``_sat493m``); convolutional rows end in ``_hub`` (their
            architectures are in ``keras.applications`` too, with other weights).
        preset: the KerasHub preset, e.g. ``"dinov2_small"``.
        family: a key of ``_FAMILIES``.
        size: a key of ``_SIZES`` (transformers) or the depth (``"50"``).
        input_size: the default (square) input size in pixels.
        preset_size: the input size the preset's parameters are counted at (its position
            embeddings'); the input size where it does not matter.
        patch: patch size in pixels (transformers); 0 for convolutional nets.
        registers: register tokens (DINOv2 with registers, DINOv3).
        counted: how the preset's published parameter count is counted (``COUNTS``): the
            ResNet-vd presets count their 1000-class task, the timm ports count as timm
            does.
        timm: for the families KerasHub converts from timm, timm's architecture name, whose
            KerasHub configuration is the architecture.
        activation: the MLP's activation where a family has several (CLIP: OpenAI's
            ``quick_gelu``, OpenCLIP's ``gelu``).
    """

    name: str
    preset: str
    family: str
    size: str
    input_size: int
    preset_size: int
    patch: int = 0
    registers: int = 0
    counted: str = "all"
    timm: str = ""
    activation: str = ""

    @property
    def tokens(self) -> bool:
        """Whether the backbone returns tokens (a transformer), not feature maps."""
        return self.family in _TRANSFORMERS

    @property
    def shape_key(self) -> str:
        """The input shape's argument: KerasHub's EfficientNet calls it ``input_shape``."""
        return "input_shape" if self.family.startswith("efficientnet") else "image_shape"

    @property
    def prefix_tokens(self) -> int:
        """The class token, DeiT's distillation token and the register tokens."""
        if not self.tokens:
            return 0
        return 1 + self.registers + int(self.family == "deit")

    @property
    def feature_dim(self) -> int:
        """Channels of the output: the width of a transformer, a CNN's last stage's.

        Raises:
            InvalidValueError: a row whose width is KerasHub's timm conversion's (the
                generated table records it).
        """
        if self.timm:
            raise InvalidValueError(f"{self.name}: the table records the features of timm ports.")
        if self.family in ("resnet", "resnet_vd"):
            return 512 if _RESNET_DEPTHS[self.size][1] == "basic_block" else 2048
        if self.family == "densenet":  # 64 channels, +32 per layer, halved between blocks
            channels = 64
            for i, layers in enumerate(_DENSENET_DEPTHS[self.size]):
                channels = channels + 32 * layers
                channels = channels if i == 3 else channels // 2
            return channels
        if self.family == "vgg":
            return _VGG_WIDTHS[-1]
        return _SIZES[self.size].hidden_dim

    @property
    def min_input_size(self) -> int:
        """Two patches a side for a transformer, 32 pixels for a convolutional net."""
        return 2 * self.patch if self.tokens else 32

    def hub_kwargs(self, image_shape: tuple[int, int, int]) -> dict[str, Any]:
        """The KerasHub backbone's arguments for an ``image_shape`` input."""
        if self.timm:
            import importlib

            converter = importlib.import_module(
                f"keras_hub.src.utils.timm.{_TIMM_CONVERTERS[self.family]}"
            )
            kwargs = dict(converter.convert_backbone_config({"architecture": self.timm}))
            return {**kwargs, self.shape_key: image_shape}
        if self.family in ("resnet", "resnet_vd"):
            depths, block_type = _RESNET_DEPTHS[self.size]
            vd = self.family == "resnet_vd"
            return {
                "input_conv_filters": [32, 32, 64] if vd else [64],
                "input_conv_kernel_sizes": [3, 3, 3] if vd else [7],
                "stackwise_num_filters": [64, 128, 256, 512],
                "stackwise_num_blocks": list(depths),
                "stackwise_num_strides": [1, 2, 2, 2],
                "block_type": f"{block_type}_vd" if vd else block_type,
                "image_shape": image_shape,
            }
        if self.family == "densenet":
            return {
                "stackwise_num_repeats": list(_DENSENET_DEPTHS[self.size]),
                "image_shape": image_shape,
            }
        if self.family == "vgg":
            return {
                "stackwise_num_repeats": list(_VGG_DEPTHS[self.size]),
                "stackwise_num_filters": list(_VGG_WIDTHS),
                "image_shape": image_shape,
            }
        size = _SIZES[self.size]
        common = {
            "patch_size": self.patch,
            "num_layers": size.num_layers,
            "num_heads": size.num_heads,
            "hidden_dim": size.hidden_dim,
            "image_shape": image_shape,
        }
        if self.family == "vit":
            return {**common, "mlp_dim": size.mlp_dim}
        if self.family == "deit":
            return {**common, "intermediate_dim": size.mlp_dim}
        if self.family == "clip":
            return {
                **common,
                "intermediate_dim": size.mlp_dim,
                "intermediate_activation": self.activation,
            }
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
    return Row(name, preset, "vit", size, image, image, patch)


def _clip(name: str, preset: str, size: str, patch: int, image: int, act: str) -> Row:
    return Row(
        name, preset, "clip", size, image, image, patch, counted="image+text", activation=act
    )


def _deit(name: str, preset: str, size: str, image: int) -> Row:
    return Row(name, preset, "deit", size, image, image, 16)


def _dinov2(name: str, preset: str, size: str, registers: int = 0) -> Row:
    return Row(name, preset, "dinov2", size, 224, 518, 14, registers)


def _dinov3(name: str, preset: str, size: str) -> Row:
    return Row(name, preset, "dinov3", size, 224, 224, 16, 4)


def _cnn(name: str, preset: str, family: str, depth: str, counted: str = "all") -> Row:
    return Row(name, preset, family, depth, 224, 224, counted=counted)


def _vd(name: str, preset: str, depth: str) -> Row:
    return _cnn(name, preset, "resnet_vd", depth, counted="all+top")


def _timm(name: str, preset: str, family: str, timm: str, size: int = 224) -> Row:
    counted = "all" if family == "mobilenet_v3" else "trainable+top"
    return Row(name, preset, family, timm, size, size, counted=counted, timm=timm)


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
    _clip("vit_base_patch32_clip_224_openai", "clip_vit_base_patch32", "base", 32, 224, "quick_gelu"),
    _clip("vit_base_patch16_clip_224_openai", "clip_vit_base_patch16", "base", 16, 224, "quick_gelu"),
    _clip("vit_large_patch14_clip_224_openai", "clip_vit_large_patch14", "large", 14, 224, "quick_gelu"),
    _clip("vit_large_patch14_clip_336_openai", "clip_vit_large_patch14_336", "large", 14, 336, "quick_gelu"),
    _clip("vit_base_patch32_clip_224_laion2b", "clip_vit_b_32_laion2b_s34b_b79k", "base", 32, 224, "gelu"),
    _deit("deit_tiny_distilled_patch16_224", "deit_tiny_distilled_patch16_224_imagenet", "tiny", 224),
    _deit("deit_small_distilled_patch16_224", "deit_small_distilled_patch16_224_imagenet", "small", 224),
    _deit("deit_base_distilled_patch16_224", "deit_base_distilled_patch16_224_imagenet", "base", 224),
    _deit("deit_base_distilled_patch16_384", "deit_base_distilled_patch16_384_imagenet", "base", 384),
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
    _cnn("resnet18_hub", "resnet_18_imagenet", "resnet", "18"),
    _cnn("resnet50_hub", "resnet_50_imagenet", "resnet", "50"),
    _cnn("resnet101_hub", "resnet_101_imagenet", "resnet", "101"),
    _cnn("resnet152_hub", "resnet_152_imagenet", "resnet", "152"),
    _vd("resnet18_vd_hub", "resnet_vd_18_imagenet", "18"),
    _vd("resnet34_vd_hub", "resnet_vd_34_imagenet", "34"),
    _vd("resnet50_vd_hub", "resnet_vd_50_imagenet", "50"),
    _vd("resnet50_vd_ssld_hub", "resnet_vd_50_ssld_imagenet", "50"),
    _vd("resnet50_vd_ssld_v2_hub", "resnet_vd_50_ssld_v2_imagenet", "50"),
    _vd("resnet50_vd_ssld_v2_fix_hub", "resnet_vd_50_ssld_v2_fix_imagenet", "50"),
    _vd("resnet101_vd_hub", "resnet_vd_101_imagenet", "101"),
    _vd("resnet101_vd_ssld_hub", "resnet_vd_101_ssld_imagenet", "101"),
    _vd("resnet152_vd_hub", "resnet_vd_152_imagenet", "152"),
    _cnn("densenet121_hub", "densenet_121_imagenet", "densenet", "121"),
    _cnn("densenet169_hub", "densenet_169_imagenet", "densenet", "169"),
    _cnn("densenet201_hub", "densenet_201_imagenet", "densenet", "201"),
    _cnn("vgg11_hub", "vgg_11_imagenet", "vgg", "11"),
    _cnn("vgg13_hub", "vgg_13_imagenet", "vgg", "13"),
    _cnn("vgg16_hub", "vgg_16_imagenet", "vgg", "16"),
    _cnn("vgg19_hub", "vgg_19_imagenet", "vgg", "19"),
    _timm("efficientnet_b0_ra_hub", "efficientnet_b0_ra_imagenet", "efficientnet", "efficientnet_b0"),
    _timm("efficientnet_b0_ra4_hub", "efficientnet_b0_ra4_e3600_r224_imagenet", "efficientnet", "efficientnet_b0"),
    _timm("efficientnet_b1_ft_hub", "efficientnet_b1_ft_imagenet", "efficientnet", "efficientnet_b1", 240),
    _timm("efficientnet_b1_ra4_hub", "efficientnet_b1_ra4_e3600_r240_imagenet", "efficientnet", "efficientnet_b1", 240),
    _timm("efficientnet_b2_ra_hub", "efficientnet_b2_ra_imagenet", "efficientnet", "efficientnet_b2"),
    _timm("efficientnet_b3_ra2_hub", "efficientnet_b3_ra2_imagenet", "efficientnet", "efficientnet_b3"),
    _timm("efficientnet_b4_ra2_hub", "efficientnet_b4_ra2_imagenet", "efficientnet", "efficientnet_b4"),
    _timm("efficientnet_b5_sw_hub", "efficientnet_b5_sw_imagenet", "efficientnet", "efficientnet_b5"),
    _timm("efficientnet_b5_sw_ft_hub", "efficientnet_b5_sw_ft_imagenet", "efficientnet", "efficientnet_b5"),
    _timm("efficientnet_lite0_ra_hub", "efficientnet_lite0_ra_imagenet", "efficientnet_lite", "efficientnet_lite0"),
    _timm("efficientnetv2_rw_t_ra2_hub", "efficientnet2_rw_t_ra2_imagenet", "efficientnet_v2", "efficientnetv2_rw_t"),
    _timm("efficientnetv2_rw_s_ra2_hub", "efficientnet2_rw_s_ra2_imagenet", "efficientnet_v2", "efficientnetv2_rw_s"),
    _timm("efficientnetv2_rw_m_agc_hub", "efficientnet2_rw_m_agc_imagenet", "efficientnet_v2", "efficientnetv2_rw_m"),
    _timm("mobilenetv3_small_050_hub", "mobilenet_v3_small_050_imagenet", "mobilenet_v3", "mobilenetv3_small_050"),
    _timm("mobilenetv3_small_100_hub", "mobilenet_v3_small_100_imagenet", "mobilenet_v3", "mobilenetv3_small_100"),
    _timm("mobilenetv3_large_100_hub", "mobilenet_v3_large_100_imagenet", "mobilenet_v3", "mobilenetv3_large_100"),
    _timm("mobilenetv3_large_100_in21k_hub", "mobilenet_v3_large_100_imagenet_21k", "mobilenet_v3", "mobilenetv3_large_100"),
    _timm("cspdarknet53_ra_hub", "csp_darknet_53_ra_imagenet", "cspnet", "cspdarknet53"),
    _timm("cspresnet50_ra_hub", "csp_resnet_50_ra_imagenet", "cspnet", "cspresnet50"),
    _timm("cspresnext50_ra_hub", "csp_resnext_50_ra_imagenet", "cspnet", "cspresnext50"),
    _timm("darknet53_hub", "darknet_53_imagenet", "cspnet", "darknet53"),
)  # fmt: skip

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


def hub_backbone(
    row: Row, image_shape: tuple[int, int, int], preset: str | os.PathLike | None = None
) -> Any:
    """KerasHub's own backbone for ``row``: random weights, or loaded from a preset.

    Args:
        row: the registry row.
        image_shape: ``(height, width, 3)`` in pixels.
        preset: a local preset directory (``config.json`` + ``model.weights.h5``) to
            load with ``Backbone.from_preset``; ``None`` for random weights.

    Returns:
        The ``keras_hub.models.*Backbone``: ``(batch, height, width, 3)`` ->
        ``(batch, tokens, hidden_dim)`` tokens or ``(batch, h', w', channels)`` maps.

    Raises:
        KerasHubMissingError: keras-hub is not installed.
    """
    keras_hub = _keras_hub()
    cls = getattr(keras_hub.models, _FAMILIES[row.family].hub_class)
    if preset is not None and row.family == "clip":  # the image tower of the whole model
        vision = keras_hub.models.CLIPBackbone.from_preset(str(preset)).vision_encoder
        if tuple(vision.input_shape[1:]) != tuple(image_shape):
            raise InvalidValueError(
                f"{row.name}: the CLIP preset's image tower takes {vision.input_shape[1:]} "
                f"inputs; build it at that size (its position embeddings are learned for it)."
            )
        return vision
    if preset is None:
        return cls(**row.hub_kwargs(tuple(image_shape)))
    return cls.from_preset(str(preset), **{row.shape_key: tuple(image_shape)})


def published_model(row: Row) -> Any:
    """The model whose parameters the preset publishes, random weights, at its own size:
    the backbone, or for CLIP the whole image-text model around the image tower."""
    hub = hub_backbone(row, (row.preset_size, row.preset_size, 3))
    if row.family != "clip":
        return hub
    keras_hub = _keras_hub()
    text, projection = _CLIP_TEXT[row.size]
    return keras_hub.models.CLIPBackbone(
        vision_encoder=hub,
        text_encoder=keras_hub.models.CLIPTextEncoder(
            vocabulary_size=49408,  # CLIP's byte-pair vocabulary
            embedding_dim=text.hidden_dim,
            hidden_dim=text.hidden_dim,
            num_layers=text.num_layers,
            num_heads=text.num_heads,
            intermediate_dim=text.mlp_dim,
            intermediate_activation=row.activation,
            max_sequence_length=77,
        ),
        projection_dim=projection,
    )


def _wire(row: Row, hub: Any, image_shape: tuple[int, int, int]) -> Any:
    """KerasHub's layers as a flat functional model, one layer per transformer layer.

    A convolutional backbone is functional already: the same graph, as a plain model.
    """
    import keras

    if not row.tokens or row.family == "clip":  # functional, one layer per block already
        return keras.Model(hub.inputs, hub.outputs[0], name=row.name)
    pixels = keras.Input(image_shape, name="images")
    if row.family == "vit":
        encoder = hub.get_layer("vit_encoder")
        x = hub.get_layer("vit_patching_and_embedding")(pixels)
        for layer in encoder.encoder_layers:
            x = layer(x)
        x = encoder.layer_norm(x)
    elif row.family == "deit":  # a DeiT layer returns (tokens, None) unless asked for scores
        encoder = hub.get_layer("deit_encoder")
        x = hub.get_layer("deit_patching_and_embedding")(pixels)
        for layer in encoder.encoder_layers:
            x, _ = layer(x, return_attention_scores=True)
        x = encoder.layer_norm(x)
    elif row.family == "dinov2":
        x = hub.embeddings(pixels)
        for layer in hub.encoder.layers:
            x = layer(x)
        x = _fresh_copy(hub.layernorm)(x)
    else:
        x = hub.embeddings(pixels)
        rope = hub.rope_embedding(pixels)
        for layer in hub.encoder.layers:
            x = layer(x, position_embeddings=rope, num_prefix_tokens=row.prefix_tokens)
        x = _fresh_copy(hub.layernorm)(x)
    return keras.Model(pixels, x, name=row.name)


def _fresh_copy(layer: Any) -> Any:
    """A new layer with ``layer``'s config and weights, called first by zoo's graph.

    KerasHub's backbone already called its final LayerNorm; ``layer.output`` means that
    first call's output, so a cut at the last block (``zoo.caching``) would reach into
    KerasHub's graph. A copy has only zoo's call.
    """
    copy = type(layer).from_config(layer.get_config())
    copy.build(layer.input.shape)
    copy.set_weights(layer.get_weights())
    return copy


def stage_ends(model: Any) -> list[str]:
    """A convolutional model's stage ends: at each reduction of the input (2, 4, 8, ...),
    the last layer whose output alone carries everything later layers read (a
    single-tensor cut); the model's last layer ends the last stage. What :func:`blocks` reads for the timm ports, found by
    ``scripts/generate_keras_hub_rows.py`` on the built model and kept in the table."""
    import keras

    padding = keras.layers.ZeroPadding2D  # a cut, but the first layer of the next stage
    ops = model.operations
    index = {id(op): i for i, op in enumerate(ops)}
    reach = [0] * len(ops)  # the furthest consumer of each operation's output
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for tensor in node.arguments.keras_tensors:
                producer = index[id(tensor._keras_history[0])]
                reach[producer] = max(reach[producer], index[id(node.operation)])
    height = model.inputs[0].shape[1]
    furthest, ends = 0, {}
    for i, op in enumerate(ops):
        shape = getattr(op.output, "shape", ())  # () for an operation with several outputs
        is_layer = isinstance(op, keras.layers.Layer) and not isinstance(op, padding)
        if i and furthest <= i and len(shape) == 4 and is_layer:
            reduction = round(math.log2(height / shape[1]))  # padding rounds to its level
            ends[reduction] = op.name  # the last cut at this reduction so far
        furthest = max(furthest, reach[i])
    return [ends[r] for r in sorted(ends) if r > 0]


def blocks(row: Row, ends: list[str] | None = None) -> tuple[Block, ...]:
    """Where the row's blocks end: transformer layers, or a convolutional net's stages.

    Transformers: one block per layer, ``layer_{i}``; the first also holds the patch
    embedding, the last the final LayerNorm. A ViT or DINOv2 layer reads only the previous
    layer's tokens (its residual sums are inside it), so each end is a single-tensor cut;
    a DINOv3 layer also reads the rotary position embedding computed from the image, and a
    DeiT layer outputs its attention scores beside its tokens, so only the last block is a
    cut there.

    Convolutional nets: one block per stage, ``stage_{i}``, the first with the stem. ResNet
    stages end at their last block's ``_out`` (after the residual sum), DenseNet's at the
    transition's pooling (the last at the final ``relu``), VGG's at the block's pooling;
    the timm ports' where :func:`stage_ends` found them (``ends``, from the table).
    """
    if row.timm:
        if not ends:
            raise InvalidValueError(f"{row.name}: the table records the stage ends of timm ports.")
    elif row.family in ("resnet", "resnet_vd"):
        depths = _RESNET_DEPTHS[row.size][0]
        ends = [f"stack{i}_block{n - 1}_out" for i, n in enumerate(depths)]
    elif row.family == "densenet":
        ends = ["transition1_pool", "transition2_pool", "transition3_pool", "relu"]
    elif row.family == "vgg":
        ends = [f"block{i}_pool" for i in range(1, 6)]
    else:
        count = _SIZES[row.size].num_layers
        if row.family in ("vit", "deit"):
            names = [f"transformer_block_{i + 1}" for i in range(count - 1)] + ["ln"]
        elif row.family == "clip":
            names = [f"encoder_block_{i}" for i in range(count - 1)] + ["layer_norm"]
        else:
            names = [f"layers_{i}" for i in range(count - 1)] + ["layernorm"]
        cut = row.family in ("vit", "clip", "dinov2")
        return tuple(
            Block(f"layer_{i}", end, cut=cut or i == count - 1) for i, end in enumerate(names)
        )
    return tuple(Block(f"stage_{i}", end) for i, end in enumerate(ends))


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
        input_shape: ``(height, width, 3)``, at least ``row.min_input_size`` a side; for a
            transformer square and a multiple of the patch size. Default the row's size.
        preset: a local preset directory to load the weights from; ``None``: random.

    Returns:
        A functional keras.Model taking preprocessed images ``(batch, height, width, 3)``
        to tokens ``(batch, (size / patch) ** 2 + prefix tokens, hidden_dim)`` (a
        transformer) or feature maps ``(batch, h', w', channels)``.

    Raises:
        InvalidValueError: ``include_top``, or an input shape the row cannot take.
        KerasHubMissingError: keras-hub is not installed.
    """
    shape = tuple(input_shape or (row.input_size, row.input_size, 3))
    problems = []
    if include_top:
        problems.append("KerasHub backbones carry no ImageNet classifier: leave include_top off")
    if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < row.min_input_size:
        problems.append(
            f"input_shape must be (height, width, 3), at least {row.min_input_size} pixels a "
            f"side; got {shape}"
        )
    elif row.tokens and (shape[0] != shape[1] or shape[0] % row.patch):
        problems.append(
            f"the input must be square and a multiple of the patch size {row.patch}; got {shape}"
        )
    if problems:
        raise InvalidValueError(f"{row.name}: " + "; ".join(problems) + ".")
    return _wire(row, hub_backbone(row, shape, preset), shape)


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
        feature_dim=facts["feature_dim"] if row.timm else row.feature_dim,
        blocks=blocks(row, facts.get("stage_ends")),
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
        min_input_size=row.min_input_size,
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
