"""Fine-tune stage images/s on one device vs ``MirroredStrategy`` over 2 logical CPUs.

The same fine-tune stage as :func:`benchmarks.train_bench.measure_fine_tune` (top 2
blocks unfrozen, BatchNorm frozen, no cache, float32, no XLA), run through
``zoo.training.fine_tune`` with ``distribution=None`` and with ``"mirrored"`` on the CPU
split into 2 logical devices
(``zoo.training.distribute.configure_logical_cpus``), same global batch, same images.
The logical devices share the same cores, so on a CPU this measures the strategy's
overhead, not a speed-up: expect a ratio at or below 1. On a machine with N GPUs the
same function measures mirrored over the GPUs (``logical_cpu_devices=0`` leaves the
devices alone), and ``ratio / replicas`` is the scaling efficiency.

Runs in its own process (``python -m benchmarks.measure distribute``): logical devices
must be made before TensorFlow starts. The two modes alternate, ``rounds`` times, so a
change in the shared machine's load hits both; images/s are medians over epochs 2.. of
every round.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import median

MODES = ("none", "mirrored")


def measure_distribute(
    backbone: str = "efficientnet_lite0",
    images: int = 128,
    epochs: int = 4,
    batch_size: int = 16,
    input_size: int | None = 128,
    rounds: int = 2,
    logical_cpu_devices: int = 2,
) -> dict[str, Any]:
    """Images/s of the top-2-blocks fine-tune stage with no strategy vs mirrored.

    Args:
        backbone: a registered backbone (random weights: speed does not depend on them).
        images: training images (synthetic, uniform 0..255).
        epochs: epochs per ``fine_tune`` call; the first is tracing and is not counted.
        batch_size: the global batch (split among the replicas under the strategy).
        input_size: square input side in pixels; None: the backbone's own.
        rounds: how often each mode runs, alternating.
        logical_cpu_devices: split the CPU into this many logical devices first (0: leave
            the devices as they are, e.g. on a machine with GPUs).

    Returns:
        ``none_images_per_second``, ``mirrored_images_per_second``, ``ratio``
        (mirrored / none), ``replicas``, ``devices``, ``efficiency`` (ratio / replicas)
        and every epoch's seconds per mode.
    """
    from zoo.training.distribute import configure_logical_cpus

    if logical_cpu_devices:
        configure_logical_cpus(logical_cpu_devices)  # before anything starts TensorFlow
    from benchmarks.train_bench import _data

    x, y = _data(backbone, images, input_size)
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    info: dict[str, Any] = {}
    for _ in range(rounds):
        for mode in MODES:
            later, info[mode] = _one_run(backbone, x, y, epochs, batch_size, mode)
            seconds[mode].extend(later)
    rates = {mode: images / median(seconds[mode]) for mode in MODES}
    replicas = info["mirrored"]["replicas"]
    return {
        "backbone": backbone,
        "images": images,
        "epochs": epochs,
        "rounds": rounds,
        "global_batch": batch_size,
        "per_replica_batch": batch_size // replicas,
        "input_size": list(x.shape[1:3]),
        "logical_cpu_devices": logical_cpu_devices,
        "replicas": replicas,
        "devices": info["mirrored"]["devices"],
        "none_images_per_second": rates["none"],
        "mirrored_images_per_second": rates["mirrored"],
        "ratio": rates["mirrored"] / rates["none"],
        "efficiency": rates["mirrored"] / rates["none"] / replicas,
        "epoch_seconds": seconds,
        "method": "median over epochs 2.. of each run; modes alternate, same global batch",
    }


def _one_run(
    backbone: str, x: Any, y: Any, epochs: int, batch_size: int, mode: str
) -> tuple[list[float], dict[str, Any]]:
    """One ``fine_tune`` call; its epoch times after the first and its distribution."""
    import contextlib

    import keras
    import tensorflow as tf

    from benchmarks.train_bench import NUM_CLASSES, EpochTimer, _fine_tune_stage
    from zoo.classifier import build_classifier
    from zoo.training import fine_tune
    from zoo.training.distribute import make_strategy

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    strategy = make_strategy(mode) if mode != "none" else None
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_classifier(backbone, NUM_CLASSES, weights=None, input_shape=x.shape[1:])
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    timer = EpochTimer()
    result = fine_tune(
        model,
        data,
        None,
        [_fine_tune_stage(epochs)],
        verbose=0,
        callbacks=[timer],
        distribution=strategy,
        mixed_precision=None,
        jit_compile=False,
    )
    return timer.seconds[1:] or timer.seconds, result.distribution


def markdown_section(doc: dict[str, Any]) -> str:
    """The ``distribute`` section of a run's Markdown; empty when it did not run."""
    r = doc.get("distribute") or {}
    if not r.get("ratio"):
        return ""
    return "\n".join(
        [
            "## Many devices (fine-tune stage, 1 device vs mirrored)",
            "",
            "| backbone, input | global / per-replica batch | one device | "
            f"mirrored x{r['replicas']} | ratio | efficiency |",
            "|---|---|---|---|---|---|",
            f"| {r['backbone']}, {r['input_size'][0]} | {r['global_batch']} / "
            f"{r['per_replica_batch']} | {r['none_images_per_second']:.1f} img/s | "
            f"{r['mirrored_images_per_second']:.1f} img/s | {r['ratio']:.2f}x | "
            f"{r['efficiency']:.2f} |",
            "",
            f"Devices: {', '.join(r['devices'])}. Logical CPU devices share the same cores: "
            "the ratio is the strategy's overhead, not a speed-up.",
        ]
    )
