"""zoo: pretrained backbones -> verified, deployable image classifiers (Keras 3).

Quick start::

    import zoo
    zoo.list_backbones("efficientnet*")
    backbone = zoo.create_backbone("inception_v3", weights="imagenet")

Model building (registry, backbones, heads, policies, classifier, fingerprint) is Keras 3
on any backend: ``import zoo`` needs no TensorFlow (``KERAS_BACKEND=jax`` works without it
installed). ``fine_tune`` and its stage types load on first use, so whatever the training
loop imports is paid for only by those who train.
"""

import importlib
from typing import Any

from zoo import backbones as _backbones  # noqa: F401  (registers every backbone)
from zoo import fingerprint  # weight manifests: zoo.fingerprint.manifest(model)
from zoo.backbones import create_backbone
from zoo.classifier import build_classifier, classifier_info
from zoo.errors import ZooError
from zoo.heads import LinearHead, MLPHead
from zoo.knn import KNNHead  # registers HEADS['knn']
from zoo.lora import LoRA  # registers the LoRA policy for policy_from_config
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
from zoo.weights import (
    WeightsHashMismatchError,
    WeightsMismatchError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

# Loaded on first attribute access (PEP 562): name -> the module that defines it.
_LAZY = {name: "zoo.training" for name in ("FineTuneResult", "Stage", "StageResult", "fine_tune")}
_LAZY.update({name: "zoo.embeddings" for name in ("Embeddings", "embed")})  # tf.data inside


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Embeddings",
    "embed",
    "FineTuneResult",
    "Stage",
    "StageResult",
    "fine_tune",
    "BackboneSpec",
    "Block",
    "FreezeBackbone",
    "FullFineTune",
    "KNNHead",
    "LinearHead",
    "LoRA",
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
