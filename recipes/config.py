"""The recipe schema: a TOML file that says what ``zoo run`` does, validated before any work.

A recipe has six sections::

    [data]       where the images come from, the split, image size, batch size, augmentation
    [model]      backbone, weights, head, input shape
    [[stages]]   one table per fine-tuning stage (policy, epochs, learning rate, ...)
    [export]     SavedModel export
    [verify]     the frozen-unchanged proof and export parity tolerance
    [run]        seed, op determinism, mixed precision, XLA

The models are pydantic v2 models, frozen, with unknown keys forbidden, in strict mode (a
TOML string where a number belongs is an error, not a conversion). Every problem is
raised as one :class:`RecipeError` whose first line names the key path (e.g.
``stages[1].learning_rate``) and the fix; further problems follow on the same line, so
the ``zoo`` command can print a single line and exit 2.

``--set key=value`` overrides (:func:`apply_overrides`) edit the parsed TOML before it is
validated: ``stages.1.epochs=2`` sets ``epochs`` of the second stage; the value is read
as a TOML literal (``2``, ``1e-3``, ``true``, ``"x"``, ``[64, 64]``) and, failing that,
as a bare string.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recipes.export_format import DEFAULT_THRESHOLD
from zoo import FreezeBackbone, FullFineTune, Stage, UnfreezeTop, get_spec
from zoo.errors import MissingFileError, ZooError
from zoo.lora import LoRA
from zoo.policies import OPTIMIZERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (pyproject: tomli; python_version < '3.11')
    import tomli as tomllib

__all__ = [
    "DataConfig",
    "ExportConfig",
    "HeadConfig",
    "ModelConfig",
    "Recipe",
    "RecipeError",
    "RunConfig",
    "StageConfig",
    "VerifyConfig",
    "DEFAULT_TEST_FRACTION",
    "apply_overrides",
    "catalog_names",
    "load_recipe",
    "parse_recipe",
    "recipe_to_toml",
    "resolve_recipe_path",
]


class RecipeError(ZooError, ValueError):
    """A recipe that cannot run: unknown key, wrong type, bad value, misfit policy.

    Attributes:
        problems: every problem found, each ``"<key path>: <what is wrong>; <the fix>"``.
    """

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"recipe {source}: " if source else "recipe: "
        first = problems[0]
        more = (
            f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})"
            if len(problems) > 1
            else ""
        )
        super().__init__(where + first + more)


_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)
AugmentName = Literal[
    "random_crop", "flip", "rotation", "zoom", "rand_augment", "mixup", "cutmix"
]  # zoo.data.augmentation's names

# The share of the training images held out as the test split when a source has no test
# split of its own and the recipe sets no [data].test_fraction: a "test" number must come
# from images no training decision (early stopping, checkpoint choice) saw.
DEFAULT_TEST_FRACTION = 0.1

# The momentum of ``[[stages]] ema = true``: the average spans about 1 / (1 - 0.99) = 100
# steps, the end of a short fine-tuning stage (0.999 spans 1,000 steps, early weights
# included, and cost 0.3 validation points on fashion-mnist-lite0's 2,250-step stage).
DEFAULT_EMA = 0.99

# TOML arrays arrive as lists; let tuple fields accept them (strict mode would not).
_Size = Annotated[tuple[int, int], Field(strict=False)]
_Shape = Annotated[tuple[int, int, int], Field(strict=False)]


class AugmentStrengthConfig(BaseModel):
    """``[data.augment_strength]``: how strong each augmentation the stages use is.

    Unset keys keep ``zoo.data.augmentation``'s defaults. A key acts only where its
    augmentation is named (``[data].augment`` or a stage's own list).

    Attributes:
        crop_fraction: ``random_crop``: the share of each side the crop keeps (images are
            resized ``1 / crop_fraction`` larger first), in (0, 1]; default 0.875.
        rotation: ``rotation``: the largest turn, as a fraction of a full turn; default 0.1.
        zoom: ``zoom``: the largest zoom, as a fraction of the size; default 0.1.
        rand_augment_magnitude: ``rand_augment``: the strength of its operations in [0, 1]
            (Keras' ``factor``); default 0.5.
        rand_augment_layers: ``rand_augment``: operations applied to each image (Keras'
            ``num_ops``); default 2.
        mixup_alpha: ``mixup``: mixing weights drawn from Beta(alpha, alpha); default 0.2.
        cutmix_factor: ``cutmix``: Keras' ``factor``: each batch draws alpha uniformly in
            (0, factor), then each box's share from Beta(alpha, alpha); default 1.0.
        switch_prob: with both ``mixup`` and ``cutmix``: each batch gets one of them,
            CutMix with this probability (timm's ``switch_prob``); default 0.5.
    """

    model_config = _STRICT

    crop_fraction: float | None = Field(None, gt=0.0, le=1.0)
    rotation: float | None = Field(None, gt=0.0, le=1.0)
    zoom: float | None = Field(None, gt=0.0, lt=1.0)
    rand_augment_magnitude: float | None = Field(None, ge=0.0, le=1.0)
    rand_augment_layers: int | None = Field(None, gt=0)
    mixup_alpha: float | None = Field(None, gt=0.0)
    cutmix_factor: float | None = Field(None, gt=0.0, le=1.0)
    switch_prob: float = Field(0.5, ge=0.0, le=1.0)

    def config(self, names: Iterable[str]) -> dict[str, Any]:
        """``zoo.data.augmentation``'s config for ``names``: each name -> its strength
        (``True`` where unset)."""
        values: dict[str, Any] = {
            "random_crop": self.crop_fraction,
            "rotation": self.rotation,
            "zoom": self.zoom,
            "mixup": self.mixup_alpha,
            "cutmix": self.cutmix_factor,
        }
        rand = {"factor": self.rand_augment_magnitude, "num_ops": self.rand_augment_layers}
        rand = {k: v for k, v in rand.items() if v is not None}
        values["rand_augment"] = rand or None
        config = {}
        for name in names:
            value = values.get(name)
            config[name] = True if value is None else value
        return config


class DataConfig(BaseModel):
    """``[data]``: the images, the split and the input pipeline.

    Attributes:
        source: what ``zoo.data.load`` reads: ``"fashion_mnist"``, ``"tfds:NAME[:SPLIT]"``
            or ``"folder:PATH"`` (one sub-folder per class; a bare path to a folder works
            too).
        validation_fraction: share of the training images held out for validation.
        test_fraction: share of the training images held out as the test split (hash
            split, stable like the validation split). Unset: sources without a test split
            of their own (folders, tfds datasets such as tf_flowers) hold out
            :data:`DEFAULT_TEST_FRACTION`; sources with one (fashion_mnist, tfds datasets
            with a ``test`` split) use it.
        evaluate_on: the split of the final evaluation, the report's headline:
            ``"test"`` (default) or ``"validation"`` (no held-out test; the report then
            says "validation top-1", never "test").
        seed: seed of the split and of the subset (independent of ``[run].seed``).
        train_size: keep this many training images (a stratified subset); all if unset.
        per_class: keep this many training images per class (instead of ``train_size``).
        image_size: (height, width) the images are resized to; default the backbone's.
        batch_size: images per batch.
        augment: ``zoo.data.augmentation`` names applied to training batches:
            ``"random_crop"``, ``"flip"``, ``"rotation"``, ``"zoom"``, ``"rand_augment"``,
            ``"mixup"``, ``"cutmix"`` (the last two mix the labels with the images' weights,
            after label smoothing); empty for none. Stages can turn it off
            (``augment = false``) or name their own; it rules out caching and evaluation
            never sees it.
        augment_strength: the augmentations' strengths (:class:`AugmentStrengthConfig`).
        options: further keyword arguments for ``zoo.data.load`` (``data_dir``,
            ``download``, ``strict``, ``exif_transpose``, ``test_split``).
    """

    model_config = _STRICT

    source: str
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    evaluate_on: Literal["test", "validation"] = "test"
    seed: int = 0
    train_size: int | None = Field(None, gt=0)
    per_class: int | None = Field(None, gt=0)
    image_size: _Size | None = None
    batch_size: int = Field(32, gt=0)
    augment: list[AugmentName] = Field(default_factory=list)
    augment_strength: AugmentStrengthConfig = Field(default_factory=AugmentStrengthConfig)
    options: dict[str, Any] = Field(default_factory=dict)


class HeadConfig(BaseModel):
    """``[model.head]``: the classification head on top of the backbone (``zoo.heads``).

    Attributes:
        type: ``"linear"`` (pooling -> dropout -> Dense), ``"mlp"`` (hidden layers) or
            ``"knn"`` (``zoo.KNNHead``: a vote of the ``k`` nearest training embeddings,
            stored in the head stage instead of trained; every stage must be
            ``freeze_backbone``).
        units: hidden layer widths of an ``"mlp"`` head, bottom to top.
        dropout: dropout rate before the classifier, in [0, 1).
        pooling: ``"avg"``, ``"max"`` or ``"gem"`` global pooling of the feature map.
        activation: activation of an ``"mlp"`` head's hidden layers.
        normalization: ``"batchnorm"`` or ``"layernorm"`` after each hidden layer.
        gem_p: GeM pooling's initial exponent (``pooling = "gem"``).
        gem_learnable: learn GeM's exponent.
        multi_label: several classes per image: sigmoid outputs and binary
            cross-entropy; needs multi-hot labels (a folder source with
            ``[data].options.labels_csv``). The run reports mAP and F1, not top-1.
        threshold: multi-label only: the probability above which a class counts as
            present (F1 in the report; the export's ``class_ids`` / ``class_names``,
            stored in its ``metadata.json``); unset: 0.5.
        k: ``"knn"`` only: the neighbours that vote.
    """

    model_config = _STRICT

    type: Literal["linear", "mlp", "knn"] = "linear"
    units: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pooling: Literal["avg", "max", "gem"] = "avg"
    activation: str = "relu"
    normalization: Literal["batchnorm", "layernorm"] | None = None
    gem_p: float = Field(3.0, gt=0.0)
    gem_learnable: bool = True
    multi_label: bool = False
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    k: int = Field(10, gt=0)

    @property
    def decision_threshold(self) -> float | None:
        """``threshold`` with its default (0.5) for a multi-label head; None otherwise."""
        if not self.multi_label:
            return None
        return DEFAULT_THRESHOLD if self.threshold is None else self.threshold

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the ``zoo.heads`` class named by ``type``."""
        if self.type == "knn":
            return {"pooling": self.pooling, "k": self.k}
        kwargs: dict[str, Any] = {"pooling": self.pooling, "dropout": self.dropout}
        if self.pooling == "gem":
            kwargs.update(gem_p=self.gem_p, gem_learnable=self.gem_learnable)
        if self.type == "mlp":
            kwargs.update(
                units=tuple(self.units),
                activation=self.activation,
                normalization=self.normalization,
            )
        return kwargs


class ModelConfig(BaseModel):
    """``[model]``: the backbone, its weights and the head.

    Attributes:
        backbone: a registry name (``zoo list``).
        weights: ``"imagenet"``, ``"none"`` (random init) or a path to a Keras weights file.
        head: see :class:`HeadConfig`.
        input_shape: (height, width, 3); default ``[data].image_size`` or the backbone's.
    """

    model_config = _STRICT

    backbone: str
    weights: str = "imagenet"
    head: HeadConfig = Field(default_factory=HeadConfig)
    input_shape: _Shape | None = None

    @property
    def weights_arg(self) -> str | None:
        """``weights`` as ``create_backbone`` takes it (``None`` for ``"none"``)."""
        return None if self.weights.lower() == "none" else self.weights


class StageConfig(BaseModel):
    """``[[stages]]``: one stage of fine-tuning; :meth:`to_stage` makes the ``zoo.Stage``.

    ``to_stage`` is the one mapping from a recipe stage to ``zoo.Stage``; recipe
    validation calls it too, so a stage that validates here is one ``zoo.Stage`` accepts.

    Attributes:
        name: shown in logs, checkpoints and the report; unique within the recipe.
        policy: ``"freeze_backbone"`` (train the head only), ``"unfreeze_top"`` (the top
            ``blocks`` or ``fraction`` of the backbone's blocks), ``"full"``, or
            ``"lora"`` (low-rank adapters on the targeted layers and the head train,
            every backbone weight stays frozen: ``zoo.LoRA``).
        blocks: for ``unfreeze_top``: how many blocks, counted from the top.
        fraction: for ``unfreeze_top``: the fraction of blocks instead, in (0, 1].
        batchnorm: ``"frozen"`` (inference mode, statistics fixed) or ``"trainable"``.
        layernorm: for ``unfreeze_top`` and ``full``: ``"trainable"`` (unset: LayerNorm
            of the trained blocks trains) or ``"frozen"``.
        rank: for ``lora``: the adapters' rank (unset: 8).
        alpha: for ``lora``: the update is ``(alpha / rank) * A @ B`` (unset: 16).
        targets: for ``lora``: names (or paths with ``*``) of the backbone's Dense /
            EinsumDense layers to adapt (unset: ``["query", "value"]``, which also find
            DINOv3's ``q_proj`` and ``v_proj``).
        epochs: passes over the training split.
        learning_rate: peak learning rate, > 0.
        optimizer: a name in ``zoo.policies.OPTIMIZERS`` (``"adam"``, ``"adamw"``,
            ``"sgd"``).
        weight_decay: the optimizer's weight decay, >= 0; unset: its default.
        schedule: ``"constant"`` or ``"cosine"`` (cosine decay after the warm-up).
        warmup_epochs: linear warm-up length in epochs (may be fractional), at most
            ``epochs``.
        label_smoothing: in [0, 1).
        early_stopping_patience: epochs without validation improvement before stopping.
        lr_decay: for ``unfreeze_top`` and ``full``: per-block learning-rate decay, top
            block 1.0, each lower block times this, in (0, 1].
        augment: ``true``: ``[data].augment`` in this stage; ``false``: none; a list of
            names: this stage's own (augmentation disables caching).
        cache: ``"auto"`` (cache activations below the trainable part when valid) or
            ``"off"``.
        cache_dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` storage of the cache.
        monitor: the validation metric that picks the stage's best epoch and drives early
            stopping: ``"val_loss"`` (lower is better), ``"val_accuracy"`` or, multi-label,
            ``"val_pr_auc"`` (higher is better).
        restore_best: with a validation split, end the stage with its best ``monitor``
            epoch's weights; ``false`` keeps the last epoch's.
        ema: a moving average of the trained weights: its momentum in (0, 1), ``true``
            for :data:`DEFAULT_EMA`, ``false`` for none. Validation, the best epoch and the
            export use the averaged weights.
        class_weight: ``"balanced"`` (each class weighted ``n / (classes * n_class)`` by
            its training images, scikit-learn's rule over the classes present) or a table of class name ->
            weight (classes not named weigh 1); unset: every class weighs 1.
    """

    model_config = _STRICT

    name: str
    policy: Literal["freeze_backbone", "unfreeze_top", "full", "lora"]
    blocks: int | None = Field(None, gt=0)
    fraction: float | None = Field(None, gt=0.0, le=1.0)
    batchnorm: Literal["frozen", "trainable"] = "frozen"
    layernorm: Literal["frozen", "trainable"] | None = None
    rank: int | None = Field(None, gt=0)
    alpha: float | None = Field(None, gt=0.0)
    targets: list[str] | None = Field(None, min_length=1)
    epochs: int = Field(gt=0)
    learning_rate: float = Field(gt=0.0)
    optimizer: str = "adam"
    weight_decay: float | None = Field(None, ge=0.0)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    early_stopping_patience: int | None = Field(None, gt=0)
    lr_decay: float | None = Field(None, gt=0.0, le=1.0)
    augment: bool | list[AugmentName] = True
    cache: Literal["auto", "off"] = "auto"
    cache_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    monitor: Literal["val_loss", "val_accuracy", "val_pr_auc"] = "val_loss"
    restore_best: bool = True
    ema: bool | float = False
    class_weight: Literal["balanced"] | dict[str, float] | None = None

    @field_validator("ema")
    @classmethod
    def _ema_momentum(cls, value: bool | float) -> bool | float:
        if not isinstance(value, bool) and not 0.0 < value < 1.0:
            raise ValueError("a momentum in (0, 1) such as 0.999, true (0.99) or false")
        return value

    @field_validator("class_weight")
    @classmethod
    def _positive_weights(cls, value: Any) -> Any:
        if isinstance(value, dict):
            bad = {k: w for k, w in value.items() if not (math.isfinite(w) and w > 0)}
            if bad:
                raise ValueError(f"weights must be finite and > 0, got {bad}")
        return value

    def ema_momentum(self) -> float | None:
        """``ema`` as ``zoo.Stage.ema``: the momentum, or None."""
        if isinstance(self.ema, bool):
            return DEFAULT_EMA if self.ema else None
        return float(self.ema)

    def class_weights(
        self, class_names: Sequence[str], counts: Mapping[str, int] | None
    ) -> dict[int, float] | None:
        """``class_weight`` as Keras' ``{class index: weight}``, or None.

        Args:
            class_names: the data's class names, index = label.
            counts: training images per class name (``DataSource.class_counts("train")``);
                needed for ``"balanced"``.

        Raises:
            RecipeError: the table names a class the data does not have, or ``"balanced"``
                without known class counts.
        """
        where = f"stages.{self.name}.class_weight"
        if self.class_weight is None:
            return None
        if self.class_weight == "balanced":
            if counts is None:
                raise RecipeError(
                    [
                        f"{where}: 'balanced' needs the training labels, which this source "
                        "does not list; give a table of class name -> weight instead"
                    ]
                )
            total, k = sum(counts.values()), sum(1 for n in counts.values() if n)
            # scikit-learn's compute_class_weight("balanced"); an absent class weighs 1.
            return {
                i: total / (k * counts[name]) if counts.get(name) else 1.0
                for i, name in enumerate(class_names)
            }
        unknown = sorted(set(self.class_weight) - set(class_names))
        if unknown:
            raise RecipeError(
                [
                    f"{where}: no class named {', '.join(map(repr, unknown))}; the classes are "
                    f"{', '.join(map(repr, class_names))}"
                ]
            )
        return {i: float(self.class_weight.get(name, 1.0)) for i, name in enumerate(class_names)}

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        if name not in OPTIMIZERS:
            raise ValueError(f"one of {', '.join(map(repr, OPTIMIZERS))}")
        return name

    def policy_config(self) -> dict[str, Any]:
        """The freezing policy in recipe words: ``policy`` plus the fields it uses.

        ``{"policy": "unfreeze_top", "blocks": 2, "fraction": None, "batchnorm":
        "frozen", "lr_decay": 0.8}``; ``freeze_backbone`` has no fields, ``full`` has
        ``batchnorm`` and ``lr_decay``. The report stores this for each stage.
        """
        fields = _POLICY_FIELDS[self.policy]
        config = {"policy": self.policy, **{key: getattr(self, key) for key in fields}}
        if config.get("layernorm", "") is None:  # unset: the policy's default, not recorded
            del config["layernorm"]
        for key, default in _LORA_DEFAULTS.items():
            if key in config and config[key] is None:
                config[key] = default
        return config

    def make_policy(self) -> Any:
        """The ``zoo.policies`` policy of this stage.

        Raises:
            InvalidValueError: the policy rejects its fields (e.g. both ``blocks`` and
                ``fraction``).
        """
        config = self.policy_config()
        if "targets" in config:
            config["targets"] = tuple(config["targets"])
        return _POLICIES[config.pop("policy")](**config)

    def to_stage(self, augment: Any = None, class_weight: dict[int, float] | None = None) -> Stage:
        """The ``zoo.Stage`` this recipe stage describes.

        Args:
            augment: the ``zoo.data.Augmentation`` built for this stage (its own names,
                else ``[data].augment``), or None; dropped when ``augment = false``.
            class_weight: :meth:`class_weights` for the run's data, or None.

        Raises:
            InvalidValueError: ``zoo.Stage`` or the policy rejects a value.
        """
        return Stage(
            name=self.name,
            policy=self.make_policy(),
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            warmup_epochs=self.warmup_epochs,
            label_smoothing=self.label_smoothing,
            early_stopping_patience=self.early_stopping_patience,
            augment=augment if self.augment is not False else None,
            cache=self.cache,
            cache_dtype=self.cache_dtype,
            monitor=self.monitor,
            restore_best=self.restore_best,
            ema=self.ema_momentum(),
            class_weight=class_weight,
        )


# Recipe policy name -> the zoo.policies class and the StageConfig fields it takes.
_POLICIES = {
    "freeze_backbone": FreezeBackbone,
    "unfreeze_top": UnfreezeTop,
    "full": FullFineTune,
    "lora": LoRA,
}
_POLICY_FIELDS = {
    "freeze_backbone": (),
    "unfreeze_top": ("blocks", "fraction", "batchnorm", "lr_decay", "layernorm"),
    "full": ("batchnorm", "lr_decay", "layernorm"),
    "lora": ("rank", "alpha", "targets"),
}
_LORA_DEFAULTS = {"rank": LoRA.rank, "alpha": LoRA.alpha, "targets": list(LoRA.targets)}


class ExportConfig(BaseModel):
    """``[export]``: the SavedModel under the run directory's ``export/``.

    The export holds the SavedModel (preprocessing baked in; float32, uint8 and encoded
    image signatures), ``model.keras``, labels, metadata and the weight manifest; see
    :mod:`recipes.export`. It is verified before it is put in place.

    Attributes:
        enabled: export (and verify) at all.
        formats: ``"saved_model"`` (always written) and deployed files beside it:
            ``"tflite"``, ``"tflite-fp16"``, ``"tflite-int8"``, ``"onnx"``
            (:mod:`recipes.deploy`; int8 is calibrated on training images).
        license: the licence you give the fine-tuned model (e.g. ``"CC-BY-4.0"``),
            written into each ``.tflite``'s metadata and the model card beside the
            pretrained weights' licence; unset: "not stated".
    """

    model_config = _STRICT

    enabled: bool = True
    formats: list[str] = Field(default_factory=lambda: ["saved_model"])
    license: str | None = None

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: list[str]) -> list[str]:
        from recipes.export_format import FORMATS, SAVED_MODEL

        unknown = [f for f in formats if f != SAVED_MODEL and f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown formats {unknown}; choose from {[SAVED_MODEL, *FORMATS]}")
        return formats


class EvaluateConfig(BaseModel):
    """``[evaluate]``: the final evaluation on ``[data] evaluate_on``.

    Attributes:
        tta: test-time augmentation: ``["flip"]`` averages the logits of each image and
            its mirror image; the report gives top-1 with and without. The export stays
            single-view.
        calibrate: fit a temperature on the validation split after the last stage
            (temperature scaling, Guo et al. 2017) and report the expected calibration
            error before and after (15 bins) with a reliability diagram. Needs a validation
            split and single-label classes; skipped otherwise.
    """

    model_config = _STRICT

    tta: list[Literal["flip"]] = Field(default_factory=list)
    calibrate: bool = True


class VerifyConfig(BaseModel):
    """``[verify]``: the proof run on the export (:mod:`recipes.verify`).

    Attributes:
        tolerance: max abs difference allowed between the export's and the Keras model's
            logits; unset: ``recipes.verify``'s default (1e-5 in float32).
    """

    model_config = _STRICT

    tolerance: float | None = Field(None, gt=0.0)


class RunConfig(BaseModel):
    """``[run]``: reproducibility and speed switches.

    Attributes:
        seed: seeds Python, NumPy and Keras before the model is built.
        deterministic: TensorFlow op determinism (bitwise-reproducible runs and resumes;
            slower on some ops).
        mixed_precision: ``"off"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``:
            ``fine_tune`` times the candidates on a probe batch on this device and keeps
            the fastest whose loss agrees (the report records the choice and the times).
        jit_compile: XLA-compile training steps: ``true``, ``false`` or ``"auto"``
            (probed the same way; XLA is slower for convolutions on CPU, faster on GPU).
        inference_engine: the engine of the inference-only passes (the cache builds and
            the evaluation): ``"auto"`` (the default: TensorFlow as built, with BatchNorm
            folded, or LiteRT, timed on the pass's first batch, the fastest kept whose
            relative error against TensorFlow as built is at most 1e-5), ``"tensorflow"``
            (BatchNorm folded only where faster) or ``"litert"`` (``zoo.caching.engine``;
            the report records the choice, the times and the parity).
        distribute: ``"none"`` (one device), ``"mirrored"`` (``tf.distribute``'s
            MirroredStrategy over the visible GPUs, or the logical CPU devices),
            ``"multi_worker"`` (MultiWorkerMirroredStrategy, the cluster from the
            ``TF_CONFIG`` environment variable) or ``"auto"`` (mirrored when more than one
            accelerator is visible). ``[data] batch_size`` is the global batch, split
            evenly among the replicas; learning rates are not rescaled
            (``zoo.training.distribute``).
        logical_cpu_devices: a testing aid: split the CPU into this many logical devices
            before TensorFlow starts, so ``"mirrored"`` has that many replicas on a
            machine without GPUs (they share the cores: overhead, not speed).
    """

    model_config = _STRICT

    seed: int = 0
    deterministic: bool = False
    mixed_precision: Literal["off", "bfloat16", "float16", "auto"] = "off"
    jit_compile: bool | Literal["auto"] = False
    inference_engine: Literal["auto", "tensorflow", "litert"] = "auto"
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "none"
    logical_cpu_devices: int | None = Field(default=None, ge=1)

    @field_validator("jit_compile", mode="before")
    @classmethod
    def _bool_or_auto(cls, value: Any) -> Any:
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError('true, false or "auto"')  # one message, not one per union member

    def fine_tune_kwargs(self) -> dict[str, Any]:
        """``mixed_precision``, ``jit_compile`` and ``inference_engine`` as
        ``zoo.fine_tune`` takes them."""
        mixed = None if self.mixed_precision == "off" else self.mixed_precision
        return {
            "mixed_precision": mixed,
            "jit_compile": self.jit_compile,
            "inference_engine": self.inference_engine,
        }


class Recipe(BaseModel):
    """A whole recipe. Build one with :func:`load_recipe` or :func:`parse_recipe`.

    Attributes:
        name: the recipe's name (default: the file name without ``.toml``).
        description: one paragraph, shown in the report.
    """

    model_config = _STRICT

    name: str = "recipe"
    description: str = ""
    data: DataConfig
    model: ModelConfig
    stages: list[StageConfig] = Field(min_length=1)
    export: ExportConfig = Field(default_factory=ExportConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    def input_shape(self) -> tuple[int, int, int]:
        """The model's input ``(height, width, 3)``: [model] first, then [data], then the spec."""
        if self.model.input_shape is not None:
            return self.model.input_shape
        if self.data.image_size is not None:
            return (*self.data.image_size, 3)
        return (*get_spec(self.model.backbone).input_size, 3)


# ---------------------------------------------------------------------------------------
# Loading, overrides, validation.


# The built-in recipes ship as package data next to this file (pyproject's package-data).
CATALOG_DIR = Path(__file__).resolve().parent / "catalog"


def catalog_names() -> list[str]:
    """Names of the built-in recipes in ``recipes/catalog/`` (without ``.toml``)."""
    return sorted(p.stem for p in CATALOG_DIR.glob("*.toml"))


def resolve_recipe_path(recipe: str | os.PathLike) -> Path:
    """A recipe file path, or the file of the built-in recipe called ``recipe``.

    Raises:
        FileNotFoundError: neither a file nor a catalog name (lists the close names).
    """
    path = Path(recipe)
    if path.is_file():
        return path
    name = str(recipe)
    if name in catalog_names():
        return CATALOG_DIR / f"{name}.toml"
    close = difflib.get_close_matches(name, catalog_names(), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise MissingFileError(
        f"No recipe file {name!r} and no built-in recipe of that name.{hint} "
        f"Built-in recipes: {', '.join(catalog_names())}."
    )


def load_recipe(
    recipe: str | os.PathLike, overrides: Iterable[str] = (), check_backbone: bool = True
) -> Recipe:
    """Reads, overrides and validates a recipe file or built-in recipe.

    Args:
        recipe: a path to a ``.toml`` file or a built-in recipe name (``catalog_names()``).
        overrides: ``"key.path=value"`` strings (see :func:`apply_overrides`).
        check_backbone: also check the backbone name and the stages' fit to its blocks
            (needs the registry; always on for ``zoo run``).

    Returns:
        The validated :class:`Recipe`; ``name`` defaults to the file's stem.

    Raises:
        FileNotFoundError: no such file or built-in recipe.
        RecipeError: invalid TOML, a bad override, or any schema problem.
    """
    path = resolve_recipe_path(recipe)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RecipeError([f"not valid TOML: {error}"], source=str(path)) from None
    data.setdefault("name", path.stem)
    data = apply_overrides(data, overrides)
    return parse_recipe(data, source=str(path), check_backbone=check_backbone)


def parse_recipe(
    data: Mapping[str, Any], source: str | None = None, check_backbone: bool = True
) -> Recipe:
    """Validates an already-parsed recipe mapping (the TOML document as a dict).

    Raises:
        RecipeError: every problem, the first one first; see the module docstring.
    """
    try:
        recipe = Recipe.model_validate(dict(data))
    except ValidationError as error:
        raise RecipeError(_describe_errors(error), source=source) from None
    problems = _semantic_problems(recipe, check_backbone)
    if problems:
        raise RecipeError(problems, source=source)
    return recipe


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Returns a copy of ``data`` with ``key.path=value`` overrides applied.

    Path parts are table keys or list indices (``stages.1.epochs``). Values are TOML
    literals (``2``, ``1e-3``, ``true``, ``"text"``, ``[96, 96]``); a value that is not
    valid TOML is taken as a bare string (``model.backbone=resnet50``). Keys that do not
    exist are created, so validation reports them if they are unknown.

    Raises:
        RecipeError: no ``=``, an empty path, an index out of range, or a path through a
            value that is not a table or list.
    """
    result = copy.deepcopy(dict(data))
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(
                [f"--set {override!r}: expected key.path=value, e.g. stages.1.epochs=2"]
            )
        _set_path(result, key.split("."), _parse_literal(raw.strip()), override)
    return result


def _parse_literal(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_path(root: dict[str, Any], parts: list[str], value: Any, override: str) -> None:
    node: Any = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(
                    [
                        f"--set {override!r}: {where!r} needs a list index from 0 to "
                        f"{len(node) - 1} (the list has {len(node)} entries)"
                    ]
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise RecipeError(
                [f"--set {override!r}: {'.'.join(parts[:depth])!r} is a value, not a table or list"]
            )


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def _model_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model whose fields sit at ``loc`` (for 'did you mean')."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ()) or ()
        candidates = [annotation, *args]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return model


_TYPE_WORDS = {
    "int_type": "an integer (e.g. 3)",
    "float_type": "a number (e.g. 0.001)",
    "string_type": 'a string in quotes (e.g. "adam")',
    "bool_type": "true or false",
    "list_type": "an array (e.g. [1, 2])",
    "tuple_type": "an array (e.g. [96, 96])",
    "dict_type": "a table",
    "model_type": "a table",
}


def _describe_errors(error: ValidationError) -> list[str]:
    problems: list[str] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        kind = item["type"]
        # Union members add their type name to loc (e.g. 'int'); drop those.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p in _UNION_TAGS))
        path = _loc_to_path(loc)
        received = item.get("input")
        if kind == "extra_forbidden":
            parent = _model_for(loc[:-1])
            known = list(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            fix = f"did you mean {close[0]!r}?" if close else "remove it"
            problems.append(f"{path}: unknown key; {fix} (known keys here: {', '.join(known)})")
        elif kind == "missing" and loc and isinstance(loc[-1], int):
            problems.append(
                f"{_loc_to_path(loc[:-1])}: too few values; expected {_arity(loc[:-1])} numbers"
            )
        elif kind == "too_long":
            problems.append(
                f"{path}: too many values, got {received!r}; expected {_arity(loc)} numbers"
            )
        elif kind == "missing":
            problems.append(f"{path}: required key is missing; add it")
        elif kind in _TYPE_WORDS:
            problems.append(
                f"{path}: expected {_TYPE_WORDS[kind]}, got {received!r} "
                f"({type(received).__name__}); write it as {_TYPE_WORDS[kind].split(' (')[0]}"
            )
        else:
            message = item["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
            problems.append(f"{path}: got {received!r}; it should be {message}")
    return _dedupe(problems)


def _arity(loc: tuple[Any, ...]) -> str:
    return "3 (height, width, 3)" if loc and loc[-1] == "input_shape" else "2 (height, width)"


# pydantic tags union branches in error locations by type name.
_UNION_TAGS = {
    "int",
    "float",
    "str",
    "bool",
    "list[int]",
    "list[str]",
    "tuple[int, int]",
    "tuple[int, int, int]",
    "none",
}


def _dedupe(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _semantic_problems(recipe: Recipe, check_backbone: bool) -> list[str]:
    """Checks that need more than one field or the registry."""
    problems: list[str] = []
    if recipe.data.train_size is not None and recipe.data.per_class is not None:
        problems.append("data: set train_size or per_class, not both; remove one")
    if recipe.data.evaluate_on == "validation" and recipe.data.validation_fraction == 0:
        problems.append(
            'data.evaluate_on: "validation" needs a validation split; set '
            'validation_fraction above 0, or evaluate_on = "test"'
        )
    names = [s.name for s in recipe.stages]
    for i, name in enumerate(names):
        if names.index(name) != i:
            problems.append(
                f"stages[{i}].name: {name!r} is used twice; give each stage its own name"
            )
    shape = recipe.model.input_shape
    if shape is not None and shape[2] != 3:
        problems.append(
            f"model.input_shape: expected (height, width, 3), got {shape}; use 3 channels"
        )
    if (
        shape is not None
        and recipe.data.image_size is not None
        and tuple(shape[:2]) != tuple(recipe.data.image_size)
    ):
        problems.append(
            f"model.input_shape: {shape[:2]} differs from data.image_size "
            f"{recipe.data.image_size}; set one of them only"
        )
    head = recipe.model.head
    if head.type == "mlp" and not head.units:
        problems.append(
            "model.head.units: an 'mlp' head needs hidden widths; set e.g. units = [256]"
        )
    if head.type == "linear" and head.units:
        problems.append(
            "model.head.units: a 'linear' head has no hidden layers; remove units or set "
            'type = "mlp"'
        )
    problems += _multi_label_problems(recipe)
    problems += _knn_problems(recipe)
    spec = None
    if check_backbone:
        try:
            spec = get_spec(recipe.model.backbone)
        except KeyError as error:
            problems.append(f"model.backbone: {error}")
    for i, stage in enumerate(recipe.stages):
        problems += _stage_problems(i, stage, spec)
    return problems


def _knn_problems(recipe: Recipe) -> list[str]:
    """A kNN head stores embeddings instead of training: frozen backbone, one label each."""
    head = recipe.model.head
    if head.type != "knn":
        return [] if head.k == 10 else ['model.head.k: only used by type = "knn"; remove it']
    problems = [
        f'stages[{i}].policy: a "knn" head is stored, not trained, so the backbone stays '
        f'frozen; use policy = "freeze_backbone" (got {stage.policy!r})'
        for i, stage in enumerate(recipe.stages)
        if stage.policy != "freeze_backbone"
    ]
    if head.pooling == "gem" or head.multi_label or head.units:
        problems.append(
            'model.head: a "knn" head takes pooling = "avg" or "max", one label per image '
            'and no units; change them or use type = "linear"'
        )
    return problems


def _multi_label_problems(recipe: Recipe) -> list[str]:
    """Multi-label heads need multi-hot labels (a labels CSV), and the reverse."""
    head, options = recipe.model.head, recipe.data.options
    problems = []
    if head.threshold is not None and not head.multi_label:
        problems.append(
            "model.head.threshold: only used by a multi-label head; set multi_label = true "
            "or remove threshold"
        )
    if head.multi_label and not options.get("labels_csv"):
        problems.append(
            "model.head.multi_label: true needs multi-hot labels; use a folder source with "
            '[data].options.labels_csv = "labels.csv" (rows path,label1;label2)'
        )
    if options.get("labels_csv") and not head.multi_label:
        problems.append(
            "data.options.labels_csv: gives several labels per image, which a single-label "
            "head cannot learn; set [model.head] multi_label = true"
        )
    deployed = [f for f in recipe.export.formats if f != "saved_model"]
    if head.multi_label and deployed:
        problems.append(
            f"export.formats: {deployed} are measured by top-1 and deployed single-label "
            'only; a multi-label model exports as formats = ["saved_model"]'
        )
    return problems


def _stage_problems(i: int, stage: StageConfig, spec: Any) -> list[str]:
    here = f"stages[{i}]"
    problems: list[str] = []
    if stage.policy == "unfreeze_top":
        if (stage.blocks is None) == (stage.fraction is None):
            problems.append(
                f"{here}: policy 'unfreeze_top' needs exactly one of blocks or fraction; "
                "set e.g. blocks = 2"
            )
        if spec is not None and stage.blocks is not None and stage.blocks > len(spec.blocks):
            problems.append(
                f"{here}.blocks: {stage.blocks} blocks asked, but {spec.name} has "
                f"{len(spec.blocks)} ({', '.join(spec.block_names)}); use at most "
                f'{len(spec.blocks)}, or policy = "full"'
            )
    if stage.policy == "lora" and stage.batchnorm != "frozen":
        problems.append(
            f"{here}.batchnorm: policy 'lora' keeps every backbone weight frozen, BatchNorm "
            "included; remove batchnorm"
        )
    for key in ("blocks", "fraction", "lr_decay", "layernorm", "rank", "alpha", "targets"):
        if key not in _POLICY_FIELDS[stage.policy] and getattr(stage, key) is not None:
            users = " and ".join(repr(p) for p, keys in _POLICY_FIELDS.items() if key in keys)
            problems.append(
                f"{here}.{key}: only used by policy {users} (this stage's policy is "
                f"{stage.policy!r}); remove it"
            )
    if not problems:  # zoo.Stage has the last word, so the two never disagree
        try:
            stage.to_stage()
        except ZooError as error:
            problems.append(f"{here}: {error}")
    return problems


def recipe_to_toml(recipe: Recipe) -> str:
    """The recipe as TOML text (every value explicit), as written into the run directory."""
    import tomli_w

    return tomli_w.dumps(recipe.model_dump(mode="json", exclude_none=True))
