"""Shared test helpers: train a few steps under a policy and compare weights bitwise.

Used by zoo's own tests over the registry (in the manner of keras-hub's ``TestCase``
``run_*_test`` helpers) and usable by anyone checking that "frozen means frozen" for
their backbone::

    model = zoo.build_classifier("resnet50", 3, weights=None, input_shape=(32, 32, 3))
    result = run_policy_test(model, zoo.UnfreezeTop(blocks=2))
    assert result.problems() == []

Weights are compared bitwise (their bytes), as the export verification does.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from zoo.errors import InvalidValueError
from zoo.policies import (
    Policy,
    PolicySummary,
    backbone_spec,
    batchnorm_statistics,
    make_optimizer,
    variable_groups,
)
from zoo.registry import REGISTRY, BackboneSpec, Block, Preprocessing

Snapshot = dict[str, dict[str, np.ndarray]]  # group -> variable path -> value


class CrashAfter(keras.callbacks.Callback):
    """Raises ``RuntimeError("simulated crash")`` at the end of the ``n``-th epoch, counted
    over all stages of a ``fine_tune`` call: a killed run, for resume tests."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.seen = n, 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seen += 1
        if self.seen == self.n:
            raise RuntimeError("simulated crash")


def snapshot(model: keras.Model) -> Snapshot:
    """Copies of every weight of ``model``, grouped by block (bottom to top), then head.

    Raises:
        ValueError: two weights share a path (they could not be told apart).
    """
    out: Snapshot = {}
    seen: set[str] = set()
    for group, weights in variable_groups(model).items():
        out[group] = {}
        for w in weights:
            if w.path in seen:
                raise InvalidValueError(f"Two weights share the path {w.path!r}; rename a layer.")
            seen.add(w.path)
            out[group][w.path] = np.array(keras.ops.convert_to_numpy(w), copy=True)
    return out


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (so ``-0.0 != 0.0`` and equal NaNs are equal)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def changed_paths(before: Snapshot, after: Snapshot) -> set[str]:
    """Paths of the weights whose bytes differ between two snapshots."""
    return {
        path
        for group, values in before.items()
        for path, value in values.items()
        if not bitwise_equal(value, after[group][path])
    }


def random_batch(
    model: keras.Model, batch_size: int = 2, seed: int = 0, multi_label: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Random pixels 0..255 ``(batch, h, w, 3)`` and labels for ``model``'s input and output.

    Labels are integers ``(batch,)`` (single-label) or multi-hot floats ``(batch,
    num_classes)`` (multi-label).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape[1:])
    x = rng.uniform(0.0, 255.0, size=(batch_size, *shape)).astype("float32")
    classes = int(model.outputs[0].shape[-1])
    if multi_label:
        y = (rng.uniform(size=(batch_size, classes)) < 0.5).astype("float32")
    else:
        y = rng.integers(0, classes, size=(batch_size,)).astype("int64")
    return x, y


def calibrate_batchnorm(model: keras.Model, x: np.ndarray) -> None:
    """Sets every BatchNorm's moving statistics to the batch statistics of ``x``.

    A randomly initialised backbone (``weights=None``) in inference mode normalises with
    mean 0 and variance 1, so its activations vanish or explode through the depth and
    the gradients are zero or saturated. One training-mode forward pass with momentum 0
    gives each BatchNorm the statistics it sees, as pretrained weights would, so a few
    training steps on random data exercise every block. Trainability and momentum are
    restored afterwards. Use a batch of at least 8 images: BatchNorm layers on 1x1 maps
    estimate their variance from the batch alone.
    """
    layers = list(model._flatten_layers(include_self=False))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    drops = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    saved_norms = [(layer, layer.momentum, layer.trainable) for layer in norms]
    saved_drops = [(layer, layer.rate) for layer in drops]
    try:
        for layer in norms:
            layer.momentum = 0.0
            layer.trainable = True
        for layer in drops:  # statistics of the inference-mode network, without dropout
            layer.rate = 0.0
        model(x, training=True)
    finally:
        for layer, momentum, trainable in saved_norms:
            layer.momentum = momentum
            layer.trainable = trainable
        for layer, rate in saved_drops:
            layer.rate = rate


@dataclasses.dataclass
class PolicyTestResult:
    """Weights before and after training under a policy, with the checks on them.

    Attributes:
        policy: the applied policy.
        summary: what ``policy.apply`` returned.
        before / after: :data:`Snapshot` s around the training steps.
        trainable: paths of the weights the optimizer trained.
        trainable_statistics: paths of moving statistics of BatchNorm layers that ran in
            training mode (they are allowed to change).
        multipliers: learning-rate multiplier per trainable group.
        learning_rate: the base (head) learning rate.
    """

    policy: Policy
    summary: PolicySummary
    before: Snapshot
    after: Snapshot
    trainable: set[str]
    trainable_statistics: set[str]
    multipliers: dict[str, float]
    learning_rate: float

    def changed(self, group: str | None = None) -> set[str]:
        """Paths that changed (in ``group``, or anywhere)."""
        groups = [group] if group is not None else list(self.before)
        return changed_paths(
            {g: self.before[g] for g in groups}, {g: self.after[g] for g in groups}
        )

    def kernels(self, group: str) -> list[str]:
        """Paths of the kernels (Dense / conv weights) of ``group``."""
        return [p for p in self.before[group] if p.rsplit("/", 1)[-1].endswith("kernel")]

    def mean_abs_update(self, group: str) -> float:
        """Mean |after - before| over the trained elements of ``group`` that moved.

        Elements whose gradient was exactly zero (e.g. behind a dead ReLU) do not move
        under Adam; leaving them out makes the value the size of a typical step.

        Raises:
            ValueError: nothing in ``group`` moved.
        """
        steps = []
        for path, old in self.before[group].items():
            if path in self.trainable:
                delta = np.abs(self.after[group][path].astype("float64") - old.astype("float64"))
                steps.append(delta[delta > 0])
        moved = np.concatenate(steps) if steps else np.zeros(0)
        if moved.size == 0:
            raise InvalidValueError(f"No trained weight of group {group!r} moved.")
        return float(moved.mean())

    def problems(self) -> list[str]:
        """Every violation of the policy, as readable lines (empty when all is well).

        Checks: every weight that was not trained is bitwise unchanged (BatchNorm moving
        statistics included, except those of BatchNorm layers that ran in training
        mode), and every kernel of a trained group changed.
        """
        out = []
        changed = self.changed()
        for group, values in self.before.items():
            for path in values:
                frozen = path not in self.trainable and path not in self.trainable_statistics
                if frozen and path in changed:
                    out.append(f"{group}: frozen weight {path} changed")
            if group in self.multipliers:
                for path in self.kernels(group):
                    if path in self.trainable and path not in changed:
                        out.append(f"{group}: trained kernel {path} did not change")
        return out


def run_policy_test(
    model: keras.Model,
    policy: Policy,
    steps: int = 1,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    batch_size: int = 2,
    seed: int = 0,
    run_eagerly: bool = True,
    jit_compile: bool = False,
    **optimizer_kwargs: Any,
) -> PolicyTestResult:
    """Applies ``policy``, trains ``steps`` steps on random data, returns the snapshots.

    Eager steps are the default: for one or two steps they are faster than tracing a
    train function for a large backbone. With random weights (``weights=None``) call
    :func:`calibrate_batchnorm` first, or the gradients of deep backbones vanish. ``run_eagerly=False`` (and ``jit_compile``)
    exercise the compiled paths.

    Args:
        model: a classifier from :func:`zoo.build_classifier`.
        policy: the policy to apply.
        steps: training steps (batches), each of ``batch_size`` random images.
        optimizer, learning_rate, **optimizer_kwargs: as :func:`zoo.make_optimizer`.
        seed: seed of the random images and labels.
        run_eagerly, jit_compile: passed to ``model.compile``.

    Returns:
        A :class:`PolicyTestResult`; ``result.problems()`` lists policy violations.
    """
    summary = policy.apply(model)
    head = model.get_layer("head")
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate, model, policy, **optimizer_kwargs),
        loss=head.loss(),
        run_eagerly=run_eagerly,
        jit_compile=jit_compile,
    )
    trainable = {w.path for w in model.trainable_weights}
    statistics = {
        v.path
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization) and _runs_training(model, layer)
        for v in (layer.moving_mean, layer.moving_variance)
    }
    x, y = random_batch(model, batch_size * steps, seed, multi_label=head.multi_label)
    before = snapshot(model)
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return PolicyTestResult(
        policy=policy,
        summary=summary,
        before=before,
        after=snapshot(model),
        trainable=trainable,
        trainable_statistics=statistics,
        multipliers=summary.lr_multipliers,
        learning_rate=learning_rate,
    )


@dataclasses.dataclass(frozen=True)
class StepRatio:
    """One trained group's first Adam step with multipliers vs. without.

    Attributes:
        group: block name or ``"head"``.
        multiplier: the policy's learning-rate multiplier for the group.
        ratio: mean |update| with multipliers / mean |update| with every multiplier 1,
            over the group's trained elements; equals ``multiplier`` when the learning
            rate, not the gradient, is scaled.
    """

    group: str
    multiplier: float
    ratio: float

    @property
    def relative_error(self) -> float:
        """|ratio / multiplier - 1|."""
        return abs(self.ratio / self.multiplier - 1.0)


def run_multiplier_test(
    model: keras.Model,
    policy: Policy,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    batch_size: int = 2,
    seed: int = 0,
    run_eagerly: bool = True,
    jit_compile: bool = False,
    **optimizer_kwargs: Any,
) -> list[StepRatio]:
    """Measures how per-block multipliers scale the first optimizer step of each group.

    Runs one step with ``make_optimizer(..., policy)`` and, from the same weights (and
    dropout seeds) and data, one step with no multipliers, and compares the mean
    absolute updates group by group. Comparing with the unscaled step makes the check
    exact for any gradient size (Adam's ``epsilon`` makes the step of tiny gradients
    smaller than ``learning_rate``, but equally so in both runs).

    Returns:
        One :class:`StepRatio` per trained group, bottom to top, then the head.
    """
    policy.apply(model)
    start = [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in model.variables]
    x, y = random_batch(model, batch_size, seed, multi_label=model.get_layer("head").multi_label)
    updates = []
    for scaled in (policy, None):
        for variable, value in zip(model.variables, start, strict=True):
            variable.assign(value)
        before = snapshot(model)
        model.compile(
            optimizer=make_optimizer(optimizer, learning_rate, model, scaled, **optimizer_kwargs),
            loss=model.get_layer("head").loss(),
            run_eagerly=run_eagerly,
            jit_compile=jit_compile,
        )
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        updates.append(_mean_updates(before, snapshot(model), model))
    multipliers = policy.multipliers(backbone_spec(model))
    return [
        StepRatio(group, multipliers[group], updates[0][group] / updates[1][group])
        for group in updates[1]
    ]


def _mean_updates(before: Snapshot, after: Snapshot, model: keras.Model) -> dict[str, float]:
    trainable = {w.path for w in model.trainable_weights}
    out = {}
    for group, values in before.items():
        deltas = [
            np.abs(after[group][p].astype("float64") - v.astype("float64")).ravel()
            for p, v in values.items()
            if p in trainable
        ]
        if deltas:
            out[group] = float(np.concatenate(deltas).mean())
    return out


def _runs_training(model: keras.Model, layer: keras.Layer) -> bool:
    """Whether ``layer`` and every layer around it are trainable (so it trains)."""
    return all(owner.trainable for owner in _owners(model, layer))


def _owners(model: keras.Model, target: keras.Layer) -> list[keras.Layer]:
    """``target`` and the layers that contain it inside ``model``."""
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if layer is target:
            return [layer]
        inner = _owners(layer, target) if hasattr(layer, "_flatten_layers") else []
        if inner:
            return [layer, *inner]
    return []


def moving_statistic_paths(model: keras.Model) -> set[str]:
    """Paths of every BatchNorm moving mean and variance in ``model``."""
    return {v.path for v in batchnorm_statistics(model)}


# -- a tiny registered backbone, for fast tests of the machinery -------------------------------

TINY_NAME = "zoo_test_tiny"


def _build_tiny(include_top: bool = False, input_shape: tuple[int, int, int] | None = None):
    inputs = keras.Input(shape=input_shape or (32, 32, 3), name="input")
    x = inputs
    for i, (filters, stride) in enumerate(((8, 2), (16, 2), (32, 2))):
        x = keras.layers.Conv2D(
            filters, 3, stride, padding="same", use_bias=False, name=f"conv{i}"
        )(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    return keras.Model(inputs, x, name=TINY_NAME)


def tiny_spec() -> BackboneSpec:
    """A 3-block conv/BatchNorm/ReLU backbone (5k parameters) for fast tests.

    Blocks ``b0``, ``b1``, ``b2``, one conv-BN-ReLU each; not registered by default (see
    :func:`temporary_backbone`).
    """
    return BackboneSpec(
        name=TINY_NAME,
        family="test",
        builder=_build_tiny,
        input_size=(32, 32),
        preprocessing=Preprocessing("inception", (127.5,) * 3, (127.5,) * 3),
        feature_dim=32,
        blocks=tuple(Block(f"b{i}", f"relu{i}") for i in range(3)),
        params=5_000,
        gmacs=0.0,
        top1=None,
        license="none",
        min_input_size=8,
    )


@contextlib.contextmanager
def temporary_backbone(spec: BackboneSpec | None = None) -> Iterator[BackboneSpec]:
    """Registers ``spec`` (default :func:`tiny_spec`) for the duration of the block.

    Raises:
        ValueError: a backbone of that name is already registered.
    """
    spec = spec or tiny_spec()
    REGISTRY.register(spec)
    try:
        yield spec
    finally:
        REGISTRY._specs.pop(spec.name, None)
