"""InceptionV3.

Paper: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
CVPR 2016, https://arxiv.org/abs/1512.00567.
Source: ``keras.applications.inception_v3`` (architecture and ImageNet weights).

Blocks: the stem together with ``mixed0``, then one block per ``mixedN`` concatenation,
the same cut points the Keras fine-tuning guide uses ("unfreeze from mixed9 up").
"""

from __future__ import annotations

import keras

from zoo.registry import INCEPTION, BackboneSpec, Block, WeightSource, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"


def _build(include_top: bool = False, input_shape: tuple[int, int, int] | None = None):
    return keras.applications.InceptionV3(
        include_top=include_top, weights=None, input_shape=input_shape
    )


register_backbone(
    BackboneSpec(
        name="inception_v3",
        family="inception",
        builder=_build,
        input_size=(299, 299),
        preprocessing=INCEPTION,
        feature_dim=2048,
        blocks=tuple(Block(f"mixed{i}", f"mixed{i}") for i in range(11)),
        params=21_802_784,
        params_with_top=23_851_784,
        gmacs=5.71,
        top1=0.779,
        weights=(
            WeightSource(
                _BASE + "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                "9a0d58056eeedaa3f26cb7ebd46da564",
                "md5",
                include_top=True,
            ),
            WeightSource(
                _BASE + "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "bcbd6486424b2319ff4ef7d526e38f63",
                "md5",
            ),
        ),
        license="Apache-2.0 (Keras applications weights)",
        paper="https://arxiv.org/abs/1512.00567",
        source="https://github.com/keras-team/keras/blob/master/keras/src/applications/inception_v3.py",
        min_input_size=75,
    )
)
