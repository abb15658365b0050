"""The anchor of the frozen-weights proof: the registry's pinned pretrained file.

A proof never trusts the thing it checks (docs/architecture.md, "Frozen means frozen"). To prove
that a classifier's frozen variables are the pretrained ones, zoo loads the registry's
pinned weights file again (hash-checked by :mod:`zoo.weights` against the published
sha256 or md5, or the sha256 recorded when zoo converted it) into a fresh backbone and
fingerprints it; a manifest carried inside an export is never the reference.

What to rebuild is a :class:`PretrainedOrigin`: the backbone's registry name, where its
weights came from, the input shape and the classifier layer holding it.
:func:`origin_of` reads it from a classifier; ``recipes.export`` stores it in the
export's ``metadata.json`` and ``recipes.verify`` hands it to
:func:`pretrained_manifest`.

What to prove is not the export's word either: :func:`derive_frozen` applies each
stage's freezing policy to a freshly built classifier and returns the variables frozen
in every stage (a :class:`FrozenClaim`); ``recipes.verify`` derives it from the recipe
and only cross-checks the export's frozen flags against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras

from zoo import fingerprint, weights
from zoo.backbones import create_backbone
from zoo.classifier import Classifier
from zoo.errors import InvalidValueError
from zoo.policies import Policy, backbone_spec
from zoo.registry import BackboneSpec, get_spec
from zoo.weights import WeightsUnavailableError

IMAGENET = "imagenet"  # the registry's pinned file
USER_FILE = "file"  # a weights file the user passed: the registry does not pin it
BACKBONE_LAYER = "backbone"  # the classifier's layer that holds the backbone


@dataclass(frozen=True)
class PretrainedOrigin:
    """Where a classifier's backbone weights came from.

    Attributes:
        backbone: registry name, e.g. ``"efficientnet_lite0"``.
        weights: ``"imagenet"`` (the registry's pinned file), ``"file"`` (a weights
            file the user passed, which the registry does not pin) or ``None`` (random
            initialisation).
        input_shape: ``(height, width, 3)`` the backbone was built with, in pixels.
        include_top: whether the backbone kept the ImageNet classifier.
        layer: the classifier layer holding the backbone; ``f"{layer}/"`` prefixes the
            backbone's variable paths in the classifier's manifest.
    """

    backbone: str
    weights: str | None
    input_shape: tuple[int, int, int]
    include_top: bool = False
    layer: str = BACKBONE_LAYER

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (as stored in an export's ``metadata.json``)."""
        return dict(asdict(self), input_shape=list(self.input_shape))

    @classmethod
    def from_dict(cls, data: Any) -> PretrainedOrigin:
        """Reads :meth:`to_dict`'s output.

        Raises:
            InvalidValueError: not a dict with those keys, or wrong types; every problem
                is listed.
        """
        if not isinstance(data, dict):
            raise InvalidValueError(
                f"A pretrained origin is a dict, got {type(data).__name__}; export the model "
                "again with this version of zoo."
            )
        problems = []
        if not isinstance(data.get("backbone"), str):
            problems.append(f"backbone {data.get('backbone')!r} is not a name")
        if data.get("weights") not in (IMAGENET, USER_FILE, None):
            problems.append(f"weights {data.get('weights')!r} is not 'imagenet', 'file' or null")
        shape = data.get("input_shape")
        if not (
            isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) for d in shape)
        ):
            problems.append(f"input_shape {shape!r} is not [height, width, 3]")
        if problems:
            raise InvalidValueError("Malformed pretrained origin: " + "; ".join(problems) + ".")
        return cls(
            backbone=data["backbone"],
            weights=data.get("weights"),
            input_shape=tuple(shape),
            include_top=bool(data.get("include_top", False)),
            layer=str(data.get("layer", BACKBONE_LAYER)),
        )


def origin_of(model: keras.Model) -> PretrainedOrigin | None:
    """The :class:`PretrainedOrigin` of a classifier from ``zoo.build_classifier``.

    Also works on a classifier reloaded from its ``.keras`` file (it keeps where its
    weights first came from).

    Returns:
        The origin, or ``None`` for a model not built by ``zoo.build_classifier``.
    """
    if not isinstance(model, Classifier):
        return None
    spec = get_spec(model.backbone_name)
    return PretrainedOrigin(
        backbone=spec.name,
        weights=_weights_kind(spec, model.zoo_weights),
        input_shape=tuple(int(d) for d in model.image_shape),
    )


def _weights_kind(spec: BackboneSpec, loaded: dict[str, Any]) -> str | None:
    """``"imagenet"`` when the loaded file is the registry's pinned one."""
    path = loaded.get("source")
    if path is None:
        return None
    pinned = spec.weight_source(include_top=False)
    if pinned is None:
        return USER_FILE
    if Path(path) == weights.cache_path(spec, include_top=False):
        return IMAGENET
    published = pinned.file_hash if pinned.hash_algorithm == "sha256" else None
    return IMAGENET if published and loaded.get("sha256") == published else USER_FILE


def pretrained_manifest(origin: PretrainedOrigin) -> dict[str, Any]:
    """The manifest of the pinned pretrained weights, in the classifier's paths.

    Builds a fresh backbone with ``zoo.create_backbone(origin.backbone,
    weights="imagenet", ...)``, which loads the registry's file only after checking its
    hash, and fingerprints it; paths get the ``f"{origin.layer}/"`` prefix, e.g.
    ``"backbone/stem_conv/kernel"``. Costs one backbone build and weights load.

    Returns:
        A ``zoo.fingerprint`` manifest (every entry flagged not frozen: it is a
        reference, not a model in training).

    Raises:
        WeightsUnavailableError: nothing pretrained to compare with: ``origin.weights``
            is ``None`` (random initialisation) or a user's file, or the registry's
            file is neither cached nor obtainable offline.
        WeightsHashMismatchError: the cached file is not the official one.
        KeyError: unknown backbone.
    """
    if origin.weights is None:
        raise WeightsUnavailableError(
            f"{origin.backbone} was built with weights=None (random initialisation), so "
            "there are no pretrained weights to prove its frozen variables against"
        )
    if origin.weights != IMAGENET:
        raise WeightsUnavailableError(
            f"the {origin.backbone} weights came from a file the registry does not pin; "
            "prove against that file's manifest instead (--source-manifest)"
        )
    backbone = create_backbone(
        origin.backbone,
        weights=IMAGENET,
        input_shape=origin.input_shape,
        include_top=origin.include_top,
    )
    return fingerprint.prefixed(fingerprint.manifest(backbone, frozen=()), f"{origin.layer}/")


# -- the claim: which variables a recipe's policies leave frozen -----------------------------


@dataclass(frozen=True)
class FrozenClaim:
    """The variables a sequence of freezing policies leaves frozen, derived on a model.

    What a run's stages froze follows from their policies alone, so the claim a proof
    checks need not be taken from the export being checked (docs/verification.md).

    Attributes:
        frozen: manifest paths (:mod:`zoo.fingerprint`) frozen in every stage, sorted.
        per_stage: ``(stage name, number of variables frozen in that stage)``, in order.
        variables: every variable of the model: ``{path: (shape, dtype)}``.
        backbone: paths of the backbone's variables, sorted.
        trained: the backbone blocks trained in at least one stage, bottom to top, then
            ``"LoRA adapters"`` when a stage added them (:class:`zoo.LoRA`), then ``"head"``.
    """

    frozen: tuple[str, ...]
    per_stage: tuple[tuple[str, int], ...]
    variables: dict[str, tuple[tuple[int, ...], str]]
    backbone: tuple[str, ...]
    trained: tuple[str, ...]

    @property
    def froze_anything(self) -> bool:
        """Whether any stage froze any variable (even if none stayed frozen in all)."""
        return any(count for _, count in self.per_stage)


def derive_frozen(model: keras.Model, stages: Sequence[tuple[str, Policy]]) -> FrozenClaim:
    """Applies each stage's policy to ``model`` in turn and intersects the frozen sets.

    The same rule as ``zoo.fine_tune``: a policy first makes every layer trainable, then
    freezes its blocks (and, with ``batchnorm="frozen"``, every backbone BatchNorm);
    a variable is frozen in a stage when its owning layer is then non-trainable
    (:func:`zoo.fingerprint.frozen_paths`). Only trainability is read, so ``model``
    may have random weights (``weights=None``); its ``trainable`` flags are changed.

    Args:
        model: a classifier from ``zoo.build_classifier``, built.
        stages: ``(name, policy)`` for each stage, in order.

    Returns:
        A :class:`FrozenClaim`.

    Raises:
        ValueError: no stages, or a policy does not fit the backbone (e.g. more blocks
            than it has).
    """
    if not stages:
        raise InvalidValueError("derive_frozen needs at least one (name, policy) stage.")
    spec = backbone_spec(model)
    frozen: set[str] | None = None
    per_stage = []
    trained: set[str] = set()
    for name, policy in stages:
        policy.apply(model)
        now = fingerprint.frozen_paths(model)
        per_stage.append((name, len(now)))
        frozen = now if frozen is None else frozen & now
        trained.update(policy.trainable_blocks(spec.block_names))
    weights = fingerprint.named_weights(model)
    return FrozenClaim(
        frozen=tuple(sorted(frozen or ())),
        per_stage=tuple(per_stage),
        variables={
            path: (tuple(int(d) for d in variable.shape), str(variable.dtype))
            for path, variable in weights
        },
        backbone=tuple(sorted(fingerprint.layer_paths(model, BACKBONE_LAYER))),
        trained=(
            *[b for b in spec.block_names if b in trained],
            *(["LoRA adapters"] if any(p.endswith("/lora_kernel_a") for p, _ in weights) else []),
            "head",
        ),
    )
