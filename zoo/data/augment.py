"""Training-batch augmentation that keeps images and labels consistent.

:func:`augmentation` builds an :class:`Augmentation` from recipe-style names. Called on a
batch ``(images, labels)`` it returns ``(images, labels)``: label-keeping layers (random
crop, flip, rotation, zoom, RandAugment) change only the images; MixUp (Zhang et al. 2018,
"mixup: Beyond Empirical Risk Minimization") and CutMix (Yun et al. 2019, "CutMix:
Regularization Strategy to Train Strong Classifiers with Localizable Features") mix the
images *and* the labels with the same per-example weights, so the labels come out soft,
``(batch, num_classes)`` float32.

The image maths is Keras' own (``keras.layers.RandomCrop``, ``MixUp``, ``CutMix``, ...);
this module only guarantees the label side: integer labels are one-hot encoded, smoothed
(label smoothing, Szegedy et al. 2016), then mixed. Smoothing and mixing are both convex
combinations, so "smooth, then mix" gives the same labels as "mix, then smooth".

Example::

    from zoo import data
    aug = data.augmentation(["flip", "mixup"], num_classes=10, label_smoothing=0.1)
    train = ds.pipeline("train", (224, 224), 32, training=True, augment=aug)
    # batches of (float32 (32, 224, 224, 3), float32 (32, 10)); aug.soft_labels is True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from zoo.errors import InvalidTypeError, InvalidValueError

# Canonical order: geometry first, colour next, label mixing last (it needs final images).
AUGMENTATIONS = ("crop", "flip", "rotation", "zoom", "rand_augment", "mixup", "cutmix")
_ALIASES = {
    "random_crop": "crop",
    "random_flip": "flip",
    "random_rotation": "rotation",
    "random_zoom": "zoom",
    "randaugment": "rand_augment",
    "mix_up": "mixup",
    "cut_mix": "cutmix",
}
DEFAULT_CROP_FRACTION = 0.875  # the crop covers 87.5% of each side, as in Inception training
_MIXING = (keras.layers.MixUp, keras.layers.CutMix)


@dataclasses.dataclass(frozen=True, eq=False)
class Augmentation:
    """Random augmentation of training batches that mixes labels wherever it mixes images.

    Call it on a batch: ``images, labels = aug(images, labels)``, e.g. in
    ``dataset.map(aug)``. It is never meant for evaluation data; use
    :meth:`evaluation_labels` there to give labels the same format.

    Attributes:
        layers: label-keeping Keras preprocessing layers, applied in order.
        mixes: Keras ``MixUp`` / ``CutMix`` layers applied after ``layers``, each mixing
            images and labels with the same weights.
        num_classes: classes of the one-hot labels; needed when :attr:`soft_labels` (a
            pipeline built from :func:`zoo.data.load` fills it in).
        label_smoothing: ``epsilon`` in ``[0, 1)``: one-hot labels become
            ``(1 - epsilon) * one_hot + epsilon / num_classes`` before mixing.
        crop_fraction: with a random crop, the share of each side the crop keeps: training
            images are resized to ``image_size / crop_fraction`` (see :meth:`resize_to`)
            and cropped back to ``image_size``. ``None`` without a crop.
        switch_prob: with both MixUp and CutMix, each batch gets one of them: CutMix with
            this probability, else MixUp (timm's ``switch_prob``, default 0.5).
    """

    layers: tuple[keras.layers.Layer, ...] = ()
    mixes: tuple[keras.layers.Layer, ...] = ()
    num_classes: int | None = None
    label_smoothing: float = 0.0
    crop_fraction: float | None = None
    switch_prob: float = 0.5

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            problems.append(f"label_smoothing={self.label_smoothing!r} (expected 0 <= x < 1)")
        if self.num_classes is not None and int(self.num_classes) < 2:
            problems.append(f"num_classes={self.num_classes!r} (expected an int >= 2)")
        wrong = [type(m).__name__ for m in self.mixes if not isinstance(m, _MIXING)]
        if wrong:
            problems.append(f"mixes holds {', '.join(wrong)} (expected MixUp or CutMix)")
        if self.crop_fraction is not None and not 0.0 < float(self.crop_fraction) <= 1.0:
            problems.append(f"crop_fraction={self.crop_fraction!r} (expected 0 < x <= 1)")
        if not 0.0 <= float(self.switch_prob) <= 1.0:
            problems.append(f"switch_prob={self.switch_prob!r} (expected 0 <= x <= 1)")
        if problems:
            raise InvalidValueError("Bad augmentation: " + "; ".join(problems) + ".")

    @property
    def soft_labels(self) -> bool:
        """Whether batches come out with ``(batch, num_classes)`` float32 labels.

        True when it mixes (MixUp / CutMix) or smooths labels; the loss must then take
        probability targets (``keras.losses.CategoricalCrossentropy`` with no smoothing of
        its own: the labels are already smoothed).
        """
        return bool(self.mixes) or self.label_smoothing > 0

    def resize_to(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The ``(height, width)`` training images are resized to before this augmentation."""
        if self.crop_fraction is None:
            return int(image_size[0]), int(image_size[1])
        return tuple(math.ceil(int(s) / self.crop_fraction) for s in image_size)

    def replace(self, **changes: Any) -> Augmentation:
        """A copy with some attributes changed (same layers), e.g. ``num_classes=10``."""
        return dataclasses.replace(self, **changes)

    def __call__(
        self, images: tf.Tensor, labels: tf.Tensor | None = None, training: bool = True
    ) -> tuple[tf.Tensor, tf.Tensor] | tf.Tensor:
        """Augments one batch.

        Args:
            images: ``(batch, height, width, 3)`` pixels 0..255 (any real dtype).
            labels: int ``(batch,)`` class indices, or float ``(batch, num_classes)``.
                May be left out only when nothing mixes or smooths labels (then only the
                images come back), as a Keras layer stack is called.
            training: ``False`` returns the inputs unchanged (evaluation is never
                augmented).

        Returns:
            ``(float32 images (batch, h', w', 3), labels)``: ``(h', w')`` is the crop size
            with a crop; labels as given unless :attr:`soft_labels`, then float32
            ``(batch, num_classes)``. Just the images when ``labels`` is left out.

        Raises:
            TypeError: ``labels`` left out although labels must be mixed or smoothed.
        """
        if labels is None and self.soft_labels:
            raise InvalidTypeError(
                "This augmentation mixes or smooths labels, so it must see them: call it on "
                "(images, labels), e.g. dataset.map(aug), not on images alone."
            )
        if not training:
            return images if labels is None else (images, labels)
        images = self._enlarge_for_crop(tf.cast(images, tf.float32))
        for layer in self.layers:
            images = tf.cast(layer(images, training=True), tf.float32)
        if labels is None:
            return images
        if not self.soft_labels:
            return images, labels
        labels = one_hot_labels(labels, self._classes(), self.label_smoothing)
        mixup = [m for m in self.mixes if isinstance(m, keras.layers.MixUp)]
        cutmix = [m for m in self.mixes if isinstance(m, keras.layers.CutMix)]
        if len(mixup) == 1 and len(cutmix) == 1 and len(self.mixes) == 2:
            # One of the two per batch, as timm's Mixup does (switch_prob).
            seed = getattr(cutmix[0], "seed", None)
            use_cutmix = tf.random.uniform([], seed=seed) < self.switch_prob
            return tf.cond(
                use_cutmix,
                lambda: _mix(cutmix[0], images, labels),
                lambda: _mix(mixup[0], images, labels),
            )
        for layer in self.mixes:
            images, labels = _mix(layer, images, labels)
        return images, labels

    def _enlarge_for_crop(self, images: tf.Tensor) -> tf.Tensor:
        """Images already at the crop's size (``fine_tune`` batches at the model's input
        size) are first resized ``1 / crop_fraction`` larger, so the crop keeps
        ``crop_fraction`` of each side as it does on a pipeline's larger images."""
        crop = next((c for c in self.layers if isinstance(c, keras.layers.RandomCrop)), None)
        if crop is None or tuple(images.shape[1:3]) != (crop.height, crop.width):
            return images
        return tf.image.resize(images, self.resize_to((crop.height, crop.width)))

    def evaluation_labels(
        self, images: tf.Tensor, labels: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Evaluation batches in the training label format, images untouched.

        One-hot float32 ``(batch, num_classes)`` labels (not smoothed: evaluation measures
        the true classes) when :attr:`soft_labels`, else the labels unchanged.
        """
        if not self.soft_labels:
            return images, labels
        return images, one_hot_labels(labels, self._classes())

    def _classes(self) -> int:
        if self.num_classes is None:
            raise InvalidValueError(
                "Soft labels (mixup / cutmix / label_smoothing) need the number of classes; "
                "pass num_classes= to zoo.data.augmentation or use aug.replace(num_classes=N)."
            )
        return int(self.num_classes)


def one_hot_labels(labels: Any, num_classes: int, label_smoothing: float = 0.0) -> tf.Tensor:
    """Integer class labels -> smoothed one-hot float32 labels.

    Args:
        labels: int ``(batch,)`` (or ``(batch, 1)``), or float ``(batch, num_classes)``
            probabilities, which are only smoothed; a tensor or a numpy array (the settings
            probe hands numpy batches).
        num_classes: number of classes.
        label_smoothing: ``epsilon``; the result is
            ``(1 - epsilon) * one_hot + epsilon / num_classes`` (Szegedy et al. 2016).

    Returns:
        float32 ``(batch, num_classes)``, each row summing to 1.
    """
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_integer:
        labels = tf.one_hot(tf.reshape(labels, [-1]), int(num_classes), dtype=tf.float32)
    labels = tf.cast(labels, tf.float32)
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + label_smoothing / int(num_classes)
    return labels


def _mix(layer: keras.layers.Layer, images: tf.Tensor, labels: tf.Tensor):
    """Applies a MixUp / CutMix layer; the labels get exactly the images' weights."""
    if isinstance(layer, keras.layers.MixUp):
        # Keras mixes images and labels from one draw of (weight, partner) per example.
        out = layer({"images": images, "labels": labels}, training=True)
        return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)
    # CutMix: Keras weighs labels by the unclipped box's real-valued area, while the
    # pixels pasted are the whole pixels inside it. A fourth channel holding each image's
    # index rides along, so the pasted pixels (and where they came from) can be counted.
    shape = tf.shape(images)
    index = tf.cast(tf.range(shape[0]), tf.float32)
    marker = tf.broadcast_to(index[:, None, None, None], tf.concat([shape[:3], [1]], 0))
    out = tf.cast(layer(tf.concat([images, marker], axis=-1), training=True), tf.float32)
    mixed, source = out[..., :3], out[..., 3]
    pasted = tf.cast(tf.not_equal(source, index[:, None, None]), tf.float32)
    share = tf.reduce_mean(pasted, axis=[1, 2])  # pixels from the partner / all pixels
    partner = tf.cast(tf.reduce_max(source * pasted, axis=[1, 2]), tf.int32)
    labels = (1.0 - share[:, None]) * labels + share[:, None] * tf.gather(labels, partner)
    return mixed, labels


# -- building one from names --------------------------------------------------------------


def augmentation(
    names_or_config: str | Sequence[str] | Mapping[str, Any] | Augmentation | keras.layers.Layer,
    image_size: tuple[int, int] | None = None,
    seed: int | None = None,
    *,
    num_classes: int | None = None,
    label_smoothing: float = 0.0,
    switch_prob: float = 0.5,
) -> Augmentation:
    """Builds an :class:`Augmentation` from recipe-style names or a config.

    Names (applied in this order): ``crop`` / ``random_crop`` (RandomCrop to ``image_size``
    from images the pipeline resizes ``1 / fraction`` larger), ``flip`` (RandomFlip,
    horizontal), ``rotation`` (RandomRotation, factor 0.1 of a full turn), ``zoom``
    (RandomZoom 0.1), ``rand_augment`` (RandAugment, Cubuk et al. 2019, value range
    0..255), ``mixup`` (MixUp, alpha 0.2: weights ~ Beta(alpha, alpha)) and ``cutmix``
    (CutMix, factor 1.0). The last two mix labels (see the module docstring).

    A config dict maps names to a value: ``True`` for the defaults, a number for the main
    parameter (crop fraction, rotation/zoom factor, RandAugment factor, MixUp alpha, CutMix
    factor; flip takes a mode string), or a dict of the Keras layer's keyword arguments.
    ``False`` / ``None`` leaves the name out.

    Args:
        names_or_config: e.g. ``["flip", "mixup"]``, ``"flip,zoom"``,
            ``{"flip": True, "rand_augment": {"num_ops": 2}, "mixup": 0.4}``; an
            :class:`Augmentation` (returned with ``num_classes`` / ``label_smoothing``
            filled in where given); or a Keras layer (a ``keras.layers.Pipeline`` whose
            MixUp / CutMix layers, if any, come last).
        image_size: ``(height, width)`` of the model input; required for ``crop``.
        seed: base seed of the layers' random draws (layer ``i`` gets ``seed + i``).
        num_classes: classes of the soft labels; needed with mixup, cutmix or smoothing
            before the first call (a pipeline of a loaded source fills it in).
        label_smoothing: ``epsilon`` in ``[0, 1)`` applied to one-hot labels before mixing.
        switch_prob: with both ``mixup`` and ``cutmix``, the probability that a batch gets
            CutMix rather than MixUp (one of them per batch, as timm).

    Returns:
        An :class:`Augmentation`.

    Raises:
        ValueError: unknown names or bad values (all problems listed at once).
        TypeError: ``names_or_config`` of another type.
    """
    if isinstance(names_or_config, Augmentation):
        changes = {"num_classes": num_classes} if num_classes is not None else {}
        if label_smoothing:
            changes["label_smoothing"] = label_smoothing
        return names_or_config.replace(**changes)
    if isinstance(names_or_config, keras.layers.Layer):
        return _from_layer(names_or_config, num_classes, label_smoothing)
    config = _normalize(names_or_config)
    layers, mixes, problems = [], [], []
    crop_fraction = None
    for index, name in enumerate(n for n in AUGMENTATIONS if n in config):
        value = config[name]
        layer_seed = None if seed is None else int(seed) + index
        try:
            if name == "crop":
                layer, crop_fraction = _crop_layer(value, image_size, layer_seed)
            else:
                layer = _make_layer(name, value, layer_seed)
        except (TypeError, ValueError) as error:
            problems.append(f"{name}={value!r}: {error}")
            continue
        (mixes if isinstance(layer, _MIXING) else layers).append(layer)
    if problems:
        raise InvalidValueError("Bad augmentation config: " + "; ".join(problems) + ".")
    return Augmentation(
        tuple(layers), tuple(mixes), num_classes, label_smoothing, crop_fraction, switch_prob
    )


def _from_layer(layer: keras.layers.Layer, num_classes: int | None, smoothing: float):
    inner = list(getattr(layer, "layers", None) or [layer])
    first_mix = next((i for i, x in enumerate(inner) if isinstance(x, _MIXING)), len(inner))
    if any(not isinstance(x, _MIXING) for x in inner[first_mix:]):
        raise InvalidValueError(
            f"In the layer {layer.name!r}, MixUp / CutMix must come after every other layer "
            "(they mix finished images); reorder the layers."
        )
    if first_mix == len(inner) and not hasattr(layer, "layers"):
        keep = (layer,)  # one label-keeping layer, used as it is
    else:
        keep = tuple(inner[:first_mix])
    return Augmentation(keep, tuple(inner[first_mix:]), num_classes, smoothing)


def _normalize(names_or_config: Any) -> dict[str, Any]:
    if isinstance(names_or_config, str):
        items = {n.strip(): True for n in names_or_config.split(",") if n.strip()}
    elif isinstance(names_or_config, Mapping):
        items = dict(names_or_config)
    elif isinstance(names_or_config, Sequence):
        items = {str(n): True for n in names_or_config}
    else:
        raise InvalidTypeError(
            f"augmentation got {type(names_or_config).__name__}; expected a list of names, "
            f"a comma-separated string or a dict (names: {', '.join(AUGMENTATIONS)})."
        )
    config = {}
    unknown = []
    for raw, value in items.items():
        name = _ALIASES.get(str(raw).lower(), str(raw).lower())
        if name not in AUGMENTATIONS:
            unknown.append(str(raw))
        elif value is not None and value is not False:
            config[name] = value
    if unknown:
        raise InvalidValueError(
            f"Unknown augmentation(s): {', '.join(unknown)}; expected some of "
            f"{', '.join(AUGMENTATIONS)} (or {', '.join(_ALIASES)})."
        )
    return config


def _crop_layer(value: Any, image_size: Any, seed: int | None) -> tuple[keras.layers.Layer, float]:
    if image_size is None:
        raise InvalidValueError("crop needs image_size=(height, width)")
    fraction = DEFAULT_CROP_FRACTION if value is True else float(value)
    if not 0.0 < fraction <= 1.0:
        raise InvalidValueError(f"the crop fraction must be in (0, 1], got {fraction}")
    height, width = (int(v) for v in image_size)
    return keras.layers.RandomCrop(height, width, seed=seed, dtype="float32"), fraction


def _make_layer(name: str, value: Any, seed: int | None) -> keras.layers.Layer:
    kwargs: dict[str, Any] = dict(value) if isinstance(value, Mapping) else {}
    main = None if value is True or isinstance(value, Mapping) else value
    kwargs.setdefault("seed", seed)
    # float32 whatever the global policy: pixels 0..255 and CutMix's image index must be
    # exact, which bfloat16 is not.
    kwargs.setdefault("dtype", "float32")
    if name == "flip":
        kwargs.setdefault("mode", main or "horizontal")
        return keras.layers.RandomFlip(**kwargs)
    if name == "rotation":
        kwargs.setdefault("factor", 0.1 if main is None else float(main))
        return keras.layers.RandomRotation(**kwargs)
    if name == "zoom":
        kwargs.setdefault("height_factor", 0.1 if main is None else float(main))
        return keras.layers.RandomZoom(**kwargs)
    if name == "rand_augment":
        kwargs.setdefault("value_range", (0, 255))
        if main is not None:
            kwargs.setdefault("factor", float(main))
        return keras.layers.RandAugment(**kwargs)
    if name == "mixup":
        kwargs.setdefault("alpha", 0.2 if main is None else float(main))
        return keras.layers.MixUp(**kwargs)
    kwargs.setdefault("factor", 1.0 if main is None else float(main))
    return keras.layers.CutMix(**kwargs)


def mixes_labels(augment: Augmentation | keras.layers.Layer | None) -> bool:
    """Whether ``augment`` mixes examples (MixUp / CutMix), so labels must be soft."""
    if augment is None:
        return False
    if isinstance(augment, Augmentation):
        return bool(augment.mixes)
    inner = getattr(augment, "layers", None) or [augment]
    return any(isinstance(x, _MIXING) for x in inner)
