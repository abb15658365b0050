"""VGG16 and VGG19.

Paper: Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, https://arxiv.org/abs/1409.1556.
Source: ``keras.applications.vgg16`` / ``vgg19`` (architecture and ImageNet weights,
ported from the authors' Caffe release).

Blocks: the five convolution blocks ``block1`` .. ``block5``, each ending at its max
pooling layer.
"""

from __future__ import annotations

import keras

from zoo.backbones._keras_apps import keras_builder, keras_weights
from zoo.registry import CAFFE, BackboneSpec, Block, register_backbone

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
_FILE = "{0}/{0}_weights_tf_dim_ordering_tf_kernels{1}.h5"

# name, Keras application, params, params with top, GMACs, top-1, (md5 top, md5 notop)
_TABLE = (
    ("vgg16", keras.applications.VGG16, 14_714_688, 138_357_544, 15.3, 0.713,
     ("64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc")),
    ("vgg19", keras.applications.VGG19, 20_024_384, 143_667_240, 19.5, 0.713,
     ("cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6")),
)  # fmt: skip


def _spec(name, application, params, params_top, gmacs, top1, hashes) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        family="vgg",
        builder=keras_builder(application),
        input_size=(224, 224),
        preprocessing=CAFFE,
        feature_dim=512,
        blocks=tuple(Block(f"block{i}", f"block{i}_pool") for i in range(1, 6)),
        params=params,
        params_with_top=params_top,
        gmacs=gmacs,
        top1=top1,
        weights=keras_weights(
            _BASE, (_FILE.format(name, ""), hashes[0]), (_FILE.format(name, "_notop"), hashes[1])
        ),
        license="CC-BY-4.0 (weights released by the Oxford VGG group)",
        paper="https://arxiv.org/abs/1409.1556",
        source=f"https://github.com/keras-team/keras/blob/master/keras/src/applications/{name}.py",
        min_input_size=32,
    )


for _row in _TABLE:
    register_backbone(_spec(*_row))
