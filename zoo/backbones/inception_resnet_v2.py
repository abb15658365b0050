"""InceptionResNetV2.

Paper: Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", AAAI 2017, https://arxiv.org/abs/1602.07261.
Source: ``keras.applications.inception_resnet_v2`` (architecture and ImageNet weights,
ported from TF-slim).

Blocks: the stem with ``mixed_5b``; the residual Inception blocks ``block35_1..10``,
``block17_1..20`` and ``block8_1..10``, each ending at the activation after its scaled
residual sum (``block8_10`` has none and ends at the sum itself); the reduction blocks
``mixed_6a`` and ``mixed_7a``; and ``top``, the final 1x1 convolution ``conv_7b`` to 1536
channels.
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import INCEPTION, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/inception_resnet_v2/"

_BLOCKS = (
    Block("mixed_5b", "mixed_5b"),
    *(Block(f"block35_{i}", f"block35_{i}_ac") for i in range(1, 11)),
    Block("mixed_6a", "mixed_6a"),
    *(Block(f"block17_{i}", f"block17_{i}_ac") for i in range(1, 21)),
    Block("mixed_7a", "mixed_7a"),
    *(Block(f"block8_{i}", f"block8_{i}_ac") for i in range(1, 10)),
    # The last block has no activation; it ends at its residual scaling, which Keras leaves
    # auto-named (the 40th CustomScaleLayer), stable in zoo's fresh naming scope.
    Block("block8_10", "custom_scale_layer_39"),
    Block("top", "conv_7b_ac"),
)

register_backbone(
    BackboneSpec(
        name="inception_resnet_v2",
        family="inception_resnet",
        builder=keras_builder(keras.applications.InceptionResNetV2),
        input_size=(299, 299),
        preprocessing=INCEPTION,
        feature_dim=1536,
        blocks=_BLOCKS,
        params=54_336_736,
        params_with_top=55_873_736,
        gmacs=13.2,
        top1=0.803,
        weights=keras_weights(
            _BASE,
            (
                "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
                "e693bd0210a403b3192acc6073ad2e96",
            ),
            (
                "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "d19885ff4a710c122648d3b5c3b684e4",
            ),
        ),
        license="Apache-2.0 (Keras applications weights)",
        paper="https://arxiv.org/abs/1602.07261",
        source=(
            "https://github.com/keras-team/keras/blob/master/keras/src/applications/"
            "inception_resnet_v2.py"
        ),
        min_input_size=75,
    )
)
