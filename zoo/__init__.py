"""zoo: pretrained backbones -> verified, deployable image classifiers (Keras 3).

Quick start::

    import zoo
    zoo.list_backbones("efficientnet*")
    backbone = zoo.create_backbone("inception_v3", weights="imagenet")
"""

from zoo import backbones as _backbones  # noqa: F401  (registers every backbone)
from zoo import fingerprint  # weight manifests: zoo.fingerprint.manifest(model)
from zoo.backbones import create_backbone
from zoo.classifier import build_classifier, classifier_info
from zoo.errors import ZooError
from zoo.heads import LinearHead, MLPHead
from zoo.policies import FreezeBackbone, FullFineTune, UnfreezeTop, make_optimizer
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
from zoo.training import FineTuneResult, Stage, StageResult, fine_tune
from zoo.weights import (
    WeightsHashMismatchError,
    WeightsMismatchError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "FineTuneResult",
    "Stage",
    "StageResult",
    "fine_tune",
    "BackboneSpec",
    "Block",
    "FreezeBackbone",
    "FullFineTune",
    "LinearHead",
    "MLPHead",
    "Preprocess",
    "Preprocessing",
    "UnfreezeTop",
    "UnknownBackboneError",
    "WeightSource",
    "ZooError",
    "WeightsHashMismatchError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "build_classifier",
    "classifier_info",
    "create_backbone",
    "fingerprint",
    "get_spec",
    "list_backbones",
    "make_optimizer",
    "register_backbone",
]
