"""ConvNeXt: Tiny, Small, Base, Large and XLarge.

Paper: Liu et al., "A ConvNet for the 2020s", CVPR 2022, https://arxiv.org/abs/2201.03545.
Source: ``keras.applications.convnext`` (architecture and ImageNet weights, converted from
the authors' release: ImageNet-1k for Tiny/Small, ImageNet-22k pre-trained and 1k
fine-tuned for Base/Large/XLarge, as the Keras docs table reports). The model normalises
0..255 pixels itself.

Blocks: one per ConvNeXt block, ``stage_{i}_block_{j}``, ending at its ``_identity``
layer; the block's residual sum is a plain ``+`` (a Keras operation, not a layer), so the
next layer still reads the block's input and these boundaries are not single-tensor cuts
(``cut=False``). The downsampling layers between stages (``downsampling_block_{k}``, a
LayerNorm and a 2x2 stride-2 convolution) are blocks of their own and clean cuts. The first
block also holds the stem; the last also holds the final LayerNorm (auto-named
``layer_normalization``, stable because zoo builds in a fresh naming scope).
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import RAW, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/convnext/"


def _blocks(prefix: str, depths: tuple[int, ...]) -> tuple[Block, ...]:
    blocks = []
    for stage, depth in enumerate(depths):
        if stage:
            down = f"downsampling_block_{stage - 1}"
            blocks.append(Block(down, f"{prefix}_{down}"))
        for j in range(depth):
            name = f"stage_{stage}_block_{j}"
            blocks.append(Block(name, f"{prefix}_{name}_identity", cut=False))
    blocks[-1] = Block(blocks[-1].name, "layer_normalization")
    return tuple(blocks)


# size, Keras application, blocks per stage, features, params, params with top, GMACs,
# top-1, (sha256 with top, sha256 without top)
_TABLE = (
    ("tiny", keras.applications.ConvNeXtTiny, (3, 3, 9, 3), 768, 27_820_128, 28_589_128, 4.45,
     0.813, ("8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff",
      "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1")),
    ("small", keras.applications.ConvNeXtSmall, (3, 3, 27, 3), 768, 49_454_688, 50_223_688, 8.68,
     0.823, ("ce1277d8f1ee5a0ef0e171469089c18f5233860ceaf9b168049cb9263fd7483c",
      "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab")),
    ("base", keras.applications.ConvNeXtBase, (3, 3, 27, 3), 1024, 87_566_464, 88_591_464, 15.4,
     0.853, ("52cbb006d3dadd03f6e095a8ca1aca47aecdd75acb4bc74bce1f5c695d0086e6",
      "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45")),
    ("large", keras.applications.ConvNeXtLarge, (3, 3, 27, 3), 1536, 196_230_336, 197_767_336, 34.4,
     0.863, ("070c5ed9ed289581e477741d3b34beffa920db8cf590899d6d2c67fba2a198a6",
      "96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd")),
    ("xlarge", keras.applications.ConvNeXtXLarge, (3, 3, 27, 3), 2048, 348_147_968, 350_196_968, 60.9,
     0.869, ("c1f5ccab661354fc3a79a10fa99af82f0fbf10ec65cb894a3ae0815f17a889ee",
      "de3f8a54174130e0cecdc71583354753d557fcf1f4487331558e2a16ba0cfe05")),
)  # fmt: skip


def _spec(size, application, depths, features, params, params_top, gmacs, top1,
          hashes) -> BackboneSpec:  # fmt: skip
    name = f"convnext_{size}"  # also Keras' model name, layer prefix and file name
    return BackboneSpec(
        name=name,
        family="convnext",
        builder=keras_builder(application),
        input_size=(224, 224),
        preprocessing=RAW,
        feature_dim=features,
        blocks=_blocks(name, depths),
        params=params,
        params_with_top=params_top,
        gmacs=gmacs,
        top1=top1,
        weights=keras_weights(_BASE, (f"{name}.h5", hashes[0]), (f"{name}_notop.h5", hashes[1])),
        license="MIT (weights converted from facebookresearch/ConvNeXt)",
        paper="https://arxiv.org/abs/2201.03545",
        source="https://github.com/keras-team/keras/blob/master/keras/src/applications/convnext.py",
        min_input_size=32,
    )


for _row in _TABLE:
    register_backbone(_spec(*_row))
