"""Mixed precision and XLA for a fine-tuning call: applied as given, or ``"auto"``: probed.

What is fastest depends on the device and the backbone (docs/architecture.md, "Performance choices"): on a
2-core AVX-512 + BF16 CPU bfloat16 speeds up the dense convolution nets and not the
depthwise ones, and XLA slows convolutions down; on a GPU both usually help. So with
``mixed_precision="auto"`` or ``jit_compile="auto"`` zoo measures instead of guessing:

1. the candidates: float32 and mixed bfloat16 (plus mixed float16 on a GPU); XLA off,
   and on only where an accelerator (GPU, TPU) is present (on Keras-JAX always on);
2. the probe stage: the first stage that trains more than a head on cached features
   (the plain way, or on a cache below the backbone's output). When every stage is a
   head-only cached stage the settings cannot matter much (a dense layer on features)
   and the probe is skipped: float32 without XLA, and the result says so;
3. per candidate, on one synthetic batch (uniform pixels, random labels: the caller's
   dataset is never iterated, so the shuffle order training sees is unchanged): the
   stage's policy, loss and optimizer compiled, ``WARMUP_STEPS`` steps (tracing,
   autotuning) and then ``TIMED_STEPS`` timed steps;
4. the fastest candidate whose first loss (every candidate starts from the same weights
   and batch) agrees with float32's within ``LOSS_RTOL`` wins, provided it is at least
   ``MIN_SPEEDUP`` times as fast as the first candidate (float32 without XLA): a gain
   smaller than the step-time noise of a shared machine does not pay for the precision
   lost, and would make the choice flip from run to run;
5. every model variable (weights, BatchNorm statistics, seed states) is restored after
   each candidate, bit for bit, and the probe's optimizers are discarded: a run with
   ``"auto"`` trains exactly as a run given the chosen settings explicitly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from zoo.caching import CutPlan, all_layers, apply_policy
from zoo.caching.plan import stochastic_frozen_layers_off
from zoo.training.compile import loss_and_metrics, stage_optimizer
from zoo.training.stages import Stage

MIXED_PRECISION = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
AUTO = "auto"
WARMUP_STEPS = 2
TIMED_STEPS = 3
PROBE_BATCH = 16  # when the dataset's batch size is not static
# bfloat16 keeps 8 significant bits (a relative rounding error of 2**-8 per operation);
# through tens of layers the loss of a fresh batch moves by around a percent. 5% accepts
# that and still rejects what breaks training: float16 overflow (inf / NaN), a wrong kernel.
LOSS_RTOL = 0.05
# Repeated probes of the same setting on these shared 2-core machines differ by a few
# percent; below a 10% gain the first candidate (full precision) is kept.
MIN_SPEEDUP = 1.10


@dataclass(frozen=True)
class Candidate:
    """One setting the probe tried: seconds per training step and the first step's loss."""

    mixed_precision: str | None
    jit_compile: bool
    seconds_per_step: float
    loss: float
    agrees: bool


@dataclass(frozen=True)
class SettingsProbe:
    """What ``"auto"`` chose and why (``FineTuneResult.settings_probe``).

    Attributes:
        mixed_precision, jit_compile: the chosen settings.
        probed: False when the probe was skipped (``reason`` says why).
        reason: how the choice was made.
        stage: the stage whose training step was probed, or None.
        batch_size: images per probe step.
        loss_rtol: the relative tolerance of loss agreement with float32.
        candidates: every candidate tried, in order.
    """

    mixed_precision: str | None
    jit_compile: bool
    probed: bool
    reason: str
    stage: str | None = None
    batch_size: int = 0
    loss_rtol: float = LOSS_RTOL
    candidates: tuple[Candidate, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields (``candidates`` as a list of dicts)."""
        d = asdict(self)
        d["candidates"] = [asdict(c) for c in self.candidates]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SettingsProbe:
        """The inverse of :meth:`to_dict`."""
        candidates = tuple(Candidate(**c) for c in d.get("candidates", ()))
        return cls(**{**d, "candidates": candidates})


class mixed_precision_policy:
    """Sets every layer's dtype policy to a mixed one for the block; restores it after.

    ``mixed`` is ``"bfloat16"``, ``"float16"`` or None (nothing changes). Variables stay
    float32; changes take effect at the next compile.
    """

    def __init__(self, model: keras.Model, mixed: str | None) -> None:
        self.model, self.mixed, self.saved = model, mixed, []

    def __enter__(self) -> None:
        if self.mixed is None:
            return
        policy = MIXED_PRECISION[self.mixed]
        for layer in [self.model, *all_layers(self.model)]:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            self.saved.append((layer, layer.dtype_policy))
            layer.dtype_policy = policy

    def __exit__(self, *exc: Any) -> None:
        for layer, policy in self.saved:
            layer.dtype_policy = policy
        self.saved = []


def accelerator() -> str | None:
    """``"gpu"`` or ``"tpu"`` when the Keras backend sees one, else None."""
    kinds = {d.split(":")[0].lower() for d in keras.distribution.list_devices()}
    return next((k for k in ("gpu", "tpu") if k in kinds), None)


def candidates(
    mixed: str | None, jit: bool | str, device: str | None, backend: str | None = None
) -> list[tuple]:
    """The ``(mixed_precision, jit_compile)`` pairs to try; float32 (or the given) first.

    On Keras-JAX (``backend``, default Keras' own) XLA is always on: without it JAX runs
    the step op by op, many times slower on any device, so it is no candidate.
    """
    precisions = [mixed]
    if mixed == AUTO:
        precisions = [None, "bfloat16", *(["float16"] if device == "gpu" else [])]
    jits = [jit]
    if jit == AUTO:
        if (backend or keras.backend.backend()) == "jax":
            jits = [True]
        else:
            jits = [False, True] if device is not None else [False]
    return [(m, j) for m in precisions for j in jits]


def choose_settings(
    model: keras.Model,
    stages: Sequence[Stage],
    cuts: Sequence[CutPlan | str],
    mixed: str | None,
    jit: bool | str,
    batch_size: int | None,
) -> SettingsProbe:
    """Resolves ``"auto"`` values by probing (see the module docstring).

    Args:
        model: the classifier; its variables are the same, bit for bit, afterwards.
        stages: the call's stages; ``cuts`` their cut plans (or why none).
        mixed: ``mixed_precision`` as given (``"auto"``, a precision or None).
        jit: ``jit_compile`` as given (``"auto"`` or a bool).
        batch_size: images per probe step, or None for ``PROBE_BATCH``.

    Returns:
        The :class:`SettingsProbe` with the chosen settings.
    """
    pairs = candidates(mixed, jit, accelerator())
    index = next(
        (i for i, c in enumerate(cuts) if isinstance(c, str) or not c.is_backbone_output), None
    )
    if index is None or len(pairs) == 1:
        m, j = pairs[0]
        why = (
            "every stage trains a head on cached backbone features, where the settings "
            "cannot matter much: the probe was skipped"
            if index is None
            else "only one candidate on this device"
        )
        return SettingsProbe(m, j, probed=False, reason=why)
    stage, batch = stages[index], batch_size or PROBE_BATCH
    x, y = _probe_batch(model, batch)
    saved = [np.array(v) for v in model.variables]
    tried: list[Candidate] = []
    try:
        for m, j in pairs:
            seconds, loss = _time_steps(model, stage, x, y, m, j)
            for v, value in zip(model.variables, saved, strict=True):
                v.assign(value)
            agrees = bool(np.isfinite(loss)) and (
                not tried or abs(loss - tried[0].loss) <= LOSS_RTOL * max(abs(tried[0].loss), 1e-3)
            )
            tried.append(Candidate(m, j, seconds, loss, agrees))
    finally:
        for v, value in zip(model.variables, saved, strict=True):
            v.assign(value)
    best = min((c for c in tried if c.agrees), key=lambda c: c.seconds_per_step, default=tried[0])
    first = "float32" if tried[0].mixed_precision is None else tried[0].mixed_precision
    why = (
        f"fastest of {len(tried)} candidates whose loss agrees with the first ({first}) "
        f"within {LOSS_RTOL:.0%}, by at least {MIN_SPEEDUP:.2f}x"
    )
    if best is not tried[0] and tried[0].seconds_per_step < MIN_SPEEDUP * best.seconds_per_step:
        best = tried[0]
        why = f"no candidate was {MIN_SPEEDUP:.2f}x faster than {first} with an agreeing loss"

    return SettingsProbe(
        best.mixed_precision,
        best.jit_compile,
        True,
        why,
        stage.name,
        batch,
        LOSS_RTOL,
        tuple(tried),
    )


def _probe_batch(model: keras.Model, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform pixels 0..255 of the model's input size, and random labels."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, *model.inputs[0].shape[1:])).astype("float32")
    classes = int(model.outputs[0].shape[-1])
    return x, rng.integers(0, classes, batch)


def _time_steps(
    model: keras.Model, stage: Stage, x: np.ndarray, y: np.ndarray, mixed: str | None, jit: bool
) -> tuple[float, float]:
    """Seconds per step after warm-up, and the first step's loss, under one setting."""
    apply_policy(model, stage.policy)
    loss_fn, _, to_labels = loss_and_metrics(model, stage)
    if to_labels is not None:
        x, y = (np.asarray(t) for t in to_labels(x, y))
    elif isinstance(loss_fn, keras.losses.BinaryCrossentropy):  # multi-label: multi-hot
        y = np.eye(int(model.outputs[0].shape[-1]), dtype="float32")[y]
    off = stochastic_frozen_layers_off(model, stage.frozen_inference)
    with mixed_precision_policy(model, mixed), off:
        model.compile(stage_optimizer(stage, model, 1, mixed), loss_fn, jit_compile=jit)
        first = float(np.asarray(model.train_on_batch(x, y)))
        for _ in range(WARMUP_STEPS - 1):
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(TIMED_STEPS):
            model.train_on_batch(x, y)
        seconds = (time.perf_counter() - start) / TIMED_STEPS
    return seconds, first
