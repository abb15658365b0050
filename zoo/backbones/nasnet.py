"""NASNetMobile and NASNetLarge (NASNet-A).

Paper: Zoph et al., "Learning Transferable Architectures for Scalable Image
Recognition", CVPR 2018, https://arxiv.org/abs/1707.07012.
Source: ``keras.applications.nasnet`` (architecture and ImageNet weights, ported from
TF-slim).

Blocks: one per cell, named by Keras' cell ids: the two stem reduction cells
``stem_1`` / ``stem_2``, then ``normal_{i}`` and ``reduce_{i}`` cells, each ending at its
concatenation. Every cell reads the outputs of the two cells before it, so no cell
boundary is a single-tensor cut (``cut=False``); the last cell also holds the final ReLU
(an auto-named ``activation_N`` layer, stable because zoo builds in a fresh naming scope).
"""

from __future__ import annotations

import dataclasses

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import INCEPTION, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/"


def _blocks(num_blocks: int, last_activation: str) -> tuple[Block, ...]:
    """Cells as Keras stacks them: ``num_blocks`` normal cells between reductions."""
    blocks = [Block("stem_1", "reduction_concat_stem_1", cut=False)]
    blocks.append(Block("stem_2", "reduction_concat_stem_2", cut=False))
    for stack in range(3):
        if stack:
            reduce_id = f"reduce_{stack * num_blocks}"
            blocks.append(Block(reduce_id, f"reduction_concat_{reduce_id}", cut=False))
        first = stack * num_blocks + (1 if stack else 0)  # Keras' normal-cell ids
        for cell in range(first, first + num_blocks):
            blocks.append(Block(f"normal_{cell}", f"normal_concat_{cell}", cut=False))
    blocks[-1] = Block(blocks[-1].name, last_activation)
    return tuple(blocks)


# name, Keras application, input size, normal cells per stack, last layer, features,
# params, params with top, GMACs, top-1, files (with top, without top), md5s
_TABLE = (
    ("nasnet_mobile", keras.applications.NASNetMobile, 224, 4, "activation_187", 1056,
     4_269_716, 5_326_716, 0.563, 0.744, ("NASNet-mobile.h5", "NASNet-mobile-no-top.h5"),
     ("020fb642bf7360b370c678b08e0adf61", "1ed92395b5b598bdda52abe5c0dbfd63")),
    ("nasnet_large", keras.applications.NASNetLarge, 331, 6, "activation_259", 4032,
     84_916_818, 88_949_818, 23.8, 0.825, ("NASNet-large.h5", "NASNet-large-no-top.h5"),
     ("11577c9a518f0070763c2b964a382f17", "d81d89dc07e6e56530c4e77faddd61b5")),
)  # fmt: skip


def _spec(name, application, size, num_blocks, last, features, params, params_top, gmacs,
          top1, files, hashes) -> BackboneSpec:  # fmt: skip
    return BackboneSpec(
        name=name,
        family="nasnet",
        builder=keras_builder(application),
        input_size=(size, size),
        preprocessing=INCEPTION,
        feature_dim=features,
        blocks=_blocks(num_blocks, last),
        params=params,
        params_with_top=params_top,
        gmacs=gmacs,
        top1=top1,
        # Keras caches these under its own names (nasnet_mobile.h5, ...), not the URL's.
        weights=tuple(
            dataclasses.replace(
                source, cache_name=f"{name}{'' if source.include_top else '_no_top'}.h5"
            )
            for source in keras_weights(_BASE, (files[0], hashes[0]), (files[1], hashes[1]))
        ),
        license="Apache-2.0 (Keras applications weights)",
        paper="https://arxiv.org/abs/1707.07012",
        source="https://github.com/keras-team/keras/blob/master/keras/src/applications/nasnet.py",
        min_input_size=32,
    )


for _row in _TABLE:
    register_backbone(_spec(*_row))
