"""Small classifiers for the export, verify and predict tests, and the photo folder the
recipe-run tests train on (not collected by pytest).

``tiny_cnn`` is a registered test backbone: two conv -> BatchNorm -> ReLU blocks, a few
thousand weights, so a SavedModel export takes about a second. Its BatchNorm statistics
are set to random "pretrained-like" values so that outputs are of order one and moving
statistics are worth checking.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from PIL import Image

import zoo
from zoo.registry import INCEPTION, BackboneSpec, Block

BACKBONE = "zoo_test_tiny_cnn"
INPUT_SIZE = (32, 32)
CLASS_NAMES = ["cat", "dog", "espresso"]


def _build_tiny(include_top: bool = False, input_shape=None) -> keras.Model:
    layers = keras.layers
    inputs = keras.Input(input_shape or (*INPUT_SIZE, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="block1_conv")(x)
    x = layers.BatchNormalization(name="block1_bn")(x)
    x = layers.ReLU(name="block1_relu")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def ensure_registered() -> None:
    """Registers the tiny backbone on first use, not at import.

    Registering at import would add it to the registry before pytest collects the tests
    parametrized over every registered backbone, which are for real backbones only.
    """
    if BACKBONE in zoo.list_backbones():
        return
    zoo.register_backbone(
        BackboneSpec(
            name=BACKBONE,
            family="test",
            builder=_build_tiny,
            input_size=INPUT_SIZE,
            preprocessing=INCEPTION,
            feature_dim=16,
            blocks=(Block("stem", "stem_relu"), Block("block1", "block1_relu")),
            params=1_700,
            gmacs=0.0001,
            top1=None,
            min_input_size=8,
        )
    )


def random_pixels(n: int, seed: int) -> np.ndarray:
    """``n`` seeded random images at the tiny classifier's input size: float32 pixels 0..255
    ``(n, height, width, 3)``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *INPUT_SIZE, 3)).astype(np.float32)


def pretrained_like(model: keras.Model, seed: int = 1) -> keras.Model:
    """Gives every weight random values of a sensible scale, as loaded weights would."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path or "gamma" in variable.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.5, shape)
        variable.assign(value.astype(variable.dtype))
    return model


def build_model(num_classes: int = 3, seed: int = 1) -> keras.Model:
    """A classifier on the tiny backbone with pretrained-like weights."""
    from zoo.classifier import build_classifier

    ensure_registered()
    model = build_classifier(
        BACKBONE,
        num_classes,
        weights=None,
        input_shape=(*INPUT_SIZE, 3),
        class_names=CLASS_NAMES[:num_classes],
    )
    return pretrained_like(model, seed)


def freeze_backbone(model: keras.Model) -> None:
    """Freezes the whole backbone, BatchNorm included, with zoo's own policy."""
    from zoo.policies import FreezeBackbone

    FreezeBackbone().apply(model)


def colour_squares(root: Path, per_class: int, size: int = 20) -> Path:
    """A folder source of two classes, ``red`` and ``blue``: ``per_class`` noisy
    ``size`` x ``size`` PNG squares each (seeded), under ``root`` (created)."""
    rng = np.random.default_rng(0)
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-30, 30, size=(size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def tiny_recipe(
    photos: Path | str,
    *,
    head_epochs: int = 1,
    top_epochs: int | None = 1,
    top: dict | None = None,
    validation_fraction: float = 0.25,
    **run: object,
) -> str:
    """A recipe (TOML text) that fine-tunes efficientnet_lite0 (random weights) at 32x32 on
    the folder ``photos``: a head stage, then (unless ``top_epochs`` is None) its top
    block; ``top`` adds keys to that stage, ``run`` to ``[run]`` (seed 0 always)."""
    import tomli_w

    stages = [
        {"name": "head", "policy": "freeze_backbone", "epochs": head_epochs, "learning_rate": 0.01}
    ]
    if top_epochs is not None:
        stage = {"name": "top", "policy": "unfreeze_top", "blocks": 1, "epochs": top_epochs}
        stages.append({**stage, "learning_rate": 0.001, **(top or {})})
    data = {
        "source": f"folder:{Path(photos).as_posix()}",
        "validation_fraction": validation_fraction,
        "test_fraction": 0.25,
        "seed": 0,
        "image_size": [32, 32],
        "batch_size": 8,
    }
    model = {"backbone": "efficientnet_lite0", "weights": "none"}
    return tomli_w.dumps(
        {"data": data, "model": model, "stages": stages, "run": {"seed": 0, **run}}
    )
