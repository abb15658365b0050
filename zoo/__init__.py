"""zoo: pretrained backbones -> verified, deployable image classifiers (Keras 3).

Quick start::

    import zoo
    zoo.list_backbones("efficientnet*")
    backbone = zoo.create_backbone("inception_v3", weights="imagenet")
"""

from zoo import backbones as _backbones  # noqa: F401  (registers every backbone)
from zoo.backbones import create_backbone
from zoo.preprocessing import Preprocess
from zoo.registry import (
    BackboneSpec,
    Block,
    Preprocessing,
    UnknownBackboneError,
    WeightSource,
    get_spec,
    list_backbones,
    register_backbone,
)
from zoo.weights import (
    WeightsHashMismatchError,
    WeightsMismatchError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "BackboneSpec",
    "Block",
    "Preprocess",
    "Preprocessing",
    "UnknownBackboneError",
    "WeightSource",
    "WeightsHashMismatchError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "create_backbone",
    "get_spec",
    "list_backbones",
    "register_backbone",
]
