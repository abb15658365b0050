"""``build_classifier``: raw pixels -> Preprocess -> backbone -> head, one keras.Model.

The model is a functional Keras model (a registered subclass, :class:`Classifier`)
whose config holds what is needed to rebuild it and to use it: the registry name of the
backbone, the input shape, the head's config and the class names. So ``.keras`` files
load with ``keras.saving.load_model(path, safe_mode=True)``, without network access, and
:func:`classifier_info` works on the loaded model.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any

import keras

from zoo.backbones import create_backbone
from zoo.errors import InvalidValueError
from zoo.heads import Head, make_head
from zoo.preprocessing import Preprocess
from zoo.registry import get_spec


@keras.saving.register_keras_serializable(package="zoo")
class Classifier(keras.Model):
    """An image classifier: ``pixels -> "preprocess" -> "backbone" -> "head" -> logits``.

    Input: float32 RGB pixels 0..255, ``(batch, height, width, 3)``. Output: logits
    ``(batch, num_classes)``; probabilities are ``softmax(logits)`` (single-label) or
    ``sigmoid(logits)`` (multi-label), see ``classifier_info(model)["multi_label"]``.

    Build it with :func:`build_classifier`; the arguments are the same. The policy last
    applied with ``policy.apply(model)`` is kept in the config and re-applied on load,
    so layer trainability (and so a compiled optimizer's variables) survives a
    ``.keras`` round trip.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        head: Head | str | None = None,
        weights: str | None = "imagenet",
        input_shape: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        multi_label: bool | None = None,
        policy: dict[str, Any] | None = None,
        source_weights: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        spec = get_spec(backbone)
        head_layer = make_head(
            head, num_classes, multi_label, spec.token_pooling, spec.prefix_tokens
        )
        shape = _check_input_shape(input_shape, spec)
        names = _check_class_names(class_names, num_classes)
        base = create_backbone(backbone, weights=weights, input_shape=shape)
        base.name = "backbone"
        pixels = keras.Input(shape=shape, dtype="float32", name="pixels")
        x = Preprocess(spec, name="preprocess")(pixels)
        logits = head_layer(base(x))
        kwargs.setdefault("name", f"{backbone}_classifier")
        super().__init__(inputs=pixels, outputs=logits, **kwargs)
        self.backbone_name = spec.name
        self.image_shape = tuple(shape)
        self.class_names = tuple(names)
        # Where the backbone's weights first came from; kept through save / load.
        self.zoo_weights = dict(source_weights or base.zoo_weights)
        self.zoo_policy = None
        if policy is not None:
            from zoo.policies import policy_from_config

            policy_from_config(policy).apply(self)

    def get_config(self) -> dict[str, Any]:
        head = self.get_layer("head")
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone_name,
            "num_classes": head.num_classes,
            "head": keras.saving.serialize_keras_object(head),
            "input_shape": list(self.image_shape),
            "class_names": list(self.class_names),
            "policy": None if self.zoo_policy is None else self.zoo_policy.get_config(),
            "source_weights": dict(self.zoo_weights),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Classifier:
        config = dict(config)
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        # The weights come from the saved file; never fetch ImageNet weights here.
        return cls(weights=None, **config)


def build_classifier(
    backbone: str,
    num_classes: int,
    head: Head | str | None = None,
    weights: str | None = "imagenet",
    input_shape: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    multi_label: bool | None = None,
) -> Classifier:
    """Builds ``pixels -> Preprocess -> backbone -> head`` as one functional keras.Model.

    The Keras InceptionV3 transfer-learning example (frozen ImageNet base, global average
    pooling, ``Dense(1024, relu)``, softmax over the classes) is::

        model = zoo.build_classifier("inception_v3", 5, head=zoo.MLPHead(units=(1024,)))
        zoo.FreezeBackbone().apply(model)

    Args:
        backbone: registry name, e.g. ``"inception_v3"`` (see ``zoo.list_backbones()``).
        num_classes: number of classes, >= 1.
        head: ``None`` or ``"linear"`` (:class:`zoo.LinearHead`), ``"mlp"``
            (:class:`zoo.MLPHead` with defaults), or a head instance, whose
            ``num_classes`` may be left unset. The instance is copied, not shared.
        weights: ``"imagenet"``, ``None`` (random) or a Keras weights file for the
            backbone, as in :func:`zoo.create_backbone`.
        input_shape: ``(height, width, 3)``; default the backbone's input size. At least
            the spec's ``min_input_size`` on each side.
        class_names: one unique string per class; default ``"0"``, ``"1"``, ...
        multi_label: overrides the head's ``multi_label`` when given.

    Returns:
        A :class:`Classifier` taking float32 pixels 0..255 ``(batch, height, width, 3)``
        to logits ``(batch, num_classes)``. Its layers are named ``"preprocess"``,
        ``"backbone"`` and ``"head"``.

    Raises:
        KeyError: unknown backbone (with close matches).
        ValueError: ``num_classes`` < 1, unknown head or pooling, bad ``input_shape`` or
            ``class_names``.
        zoo.WeightsUnavailableError: ImageNet weights are not cached and cannot be
            fetched (offline); see ``zoo weights add``.
    """
    return Classifier(
        backbone,
        num_classes,
        head=head,
        weights=weights,
        input_shape=input_shape,
        class_names=class_names,
        multi_label=multi_label,
    )


def classifier_info(model: keras.Model) -> dict[str, Any]:
    """What a classifier made by :func:`build_classifier` is, also after a ``.keras`` load.

    Returns:
        ``{"backbone": registry name, "input_size": (height, width), "num_classes": int,
        "class_names": list[str], "multi_label": bool, "preprocessing": {"mode", "mean",
        "std", "channel_order"}, "head": head class name, "weights": {"source",
        "sha256"}}``.

    Raises:
        ValueError: ``model`` was not made by :func:`build_classifier`.
    """
    if not isinstance(model, Classifier):
        raise InvalidValueError(
            f"classifier_info needs a model made by zoo.build_classifier (or loaded from its "
            f".keras file); got {type(model).__name__} {getattr(model, 'name', '')!r}."
        )
    head = model.get_layer("head")
    preprocessing = model.get_layer("preprocess").preprocessing
    return {
        "backbone": model.backbone_name,
        "input_size": tuple(model.image_shape[:2]),
        "num_classes": head.num_classes,
        "class_names": list(model.class_names),
        "multi_label": head.multi_label,
        "preprocessing": {k: _plain(v) for k, v in dataclasses.asdict(preprocessing).items()},
        "head": type(head).__name__,
        "weights": dict(model.zoo_weights),
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _check_input_shape(input_shape: Sequence[int] | None, spec: Any) -> tuple[int, int, int]:
    if input_shape is None:
        return (*spec.input_size, 3)
    shape = tuple(input_shape)
    ok = len(shape) == 3 and shape[2] == 3 and all(isinstance(d, numbers.Integral) for d in shape)
    if not ok:
        raise InvalidValueError(
            f"input_shape must be (height, width, 3) in pixels; got {input_shape!r}."
        )
    if min(shape[:2]) < spec.min_input_size:
        raise InvalidValueError(
            f"{spec.name} needs inputs of at least {spec.min_input_size}x"
            f"{spec.min_input_size} pixels; got input_shape {shape}."
        )
    return tuple(int(d) for d in shape)


def _check_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    if isinstance(class_names, str):
        raise InvalidValueError(
            f"class_names must be a list of strings, got the string {class_names!r}."
        )
    names = list(class_names)
    problems = []
    if len(names) != num_classes:
        problems.append(f"{len(names)} class names for num_classes={num_classes}")
    if not all(isinstance(n, str) for n in names):
        problems.append("every class name must be a string")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        problems.append(f"duplicate class names {dupes}")
    if problems:
        raise InvalidValueError("class_names: " + "; ".join(problems) + ".")
    return names
