"""Training measurements: head stage, fine-tune stage and the frozen-prefix cache.

Each compares plain Keras ``fit`` (what a user writes following the Keras
transfer-learning guide: ``base.trainable = False``, ``base(x, training=False)``, global
average pooling, ``Dense``; ``model.fit`` on the images) with ``zoo.training.fine_tune``
on the same synthetic images (uniform 0..255 pixels, random labels: speed and weight
equality do not depend on the values). Backend-agnostic: numpy in, any Keras backend;
nothing imports TensorFlow at module level. zoo gets an unshuffled ``tf.data`` dataset on
TensorFlow and the ``(x, y)`` arrays with ``batch_size`` elsewhere (``fine_tune`` shuffles
those per epoch; the cache's own order is kept with ``shuffle_cache=False``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.common import median, skipped

NUM_CLASSES = 10
LEARNING_RATE = 1e-4


def _settings_header(
    backbone: str, images: int, epochs: int, batch_size: int, shape: tuple[int, ...]
) -> dict[str, Any]:
    """The settings every training measurement reports beside its figures."""
    return {
        "backbone": backbone,
        "images": images,
        "epochs": epochs,
        "batch_size": batch_size,
        "input_size": list(shape[:2]),
    }


def _data(backbone: str, images: int, input_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    import zoo

    spec = zoo.get_spec(backbone)
    size = tuple(spec.input_size) if input_size is None else (input_size, input_size)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (images, *size, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, images).astype("int64")
    return x, y


class EpochTimer:
    """A Keras callback recording each epoch's wall time (seconds)."""

    def __new__(cls) -> Any:
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.seconds.append(time.perf_counter() - self._start)

        return _Timer()


# ------------------------------------------------------------------ plain Keras (the anchor)


def plain_model(backbone: str, shape: tuple[int, ...], unfreeze_blocks: int = 0) -> Any:
    """The Keras guide's model: ``Preprocess -> base(training=False) -> GAP -> Dense``.

    Args:
        backbone: registry name (built with ``weights=None``).
        shape: ``(height, width, 3)``.
        unfreeze_blocks: 0 freezes the whole base (``base.trainable = False``); N > 0
            makes the layers of the top N blocks (``spec.blocks``) trainable, BatchNorm
            excepted, and freezes the rest.
    """
    import keras

    import zoo

    spec = zoo.get_spec(backbone)
    base = zoo.create_backbone(backbone, weights=None, input_shape=shape)
    inputs = keras.Input(shape)
    x = zoo.Preprocess(spec)(inputs)
    x = base(x, training=False)  # the guide: BatchNorm stays in inference mode
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES, dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    base.trainable = unfreeze_blocks > 0
    if unfreeze_blocks:
        names = [layer.name for layer in base.layers]
        first_trainable = names.index(spec.blocks[-unfreeze_blocks - 1].end) + 1
        for i, layer in enumerate(base.layers):
            is_bn = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = i >= first_trainable and not is_bn
    return model


def plain_fit(
    model: Any, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, **compile_kwargs: Any
) -> dict[str, Any]:
    """``model.compile(adam, sparse CE from logits)`` then ``model.fit``; timed.

    Returns:
        ``seconds`` (the whole fit, first-epoch tracing included), ``epoch_seconds``,
        ``images_per_second`` (median over the epochs after the first).
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    timer = EpochTimer()
    start = time.perf_counter()
    model.fit(
        x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, callbacks=[timer]
    )
    seconds = time.perf_counter() - start
    later = timer.seconds[1:] or timer.seconds
    return {
        "seconds": seconds,
        "epoch_seconds": timer.seconds,
        "images_per_second": len(x) / median(later),
    }


# ------------------------------------------------------------------ zoo


def _zoo_training_problem() -> str | None:
    """Why the zoo side cannot run here (None when it can)."""
    try:
        import zoo.training  # noqa: F401
    except ImportError as exc:
        return f"skipped: zoo.training unavailable ({exc})"
    return None


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def _classifier(backbone: str, shape: tuple[int, ...]) -> Any:
    from zoo.classifier import build_classifier

    return build_classifier(backbone, NUM_CLASSES, weights=None, input_shape=shape)


def zoo_fit(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    stage: Any,
    batch_size: int,
    extra_callbacks: list[Any] = (),
    **options: Any,
) -> dict[str, Any]:
    """``zoo.training.fine_tune`` with one stage on ``(x, y)``; timed like :func:`plain_fit`.

    Returns:
        ``seconds`` (the whole call: policy, cache build, compile, fit), ``epoch_seconds``,
        ``images_per_second`` (median over epochs after the first), ``cache`` (the
        stage's cache info) and ``zoo_images_per_second`` (zoo's own figure).
    """
    import keras

    from zoo.training import fine_tune

    timer = EpochTimer()
    if keras.backend.backend() == "tensorflow":
        data, options = _dataset(x, y, batch_size), options
    else:  # fine_tune batches and feeds numpy arrays itself on the other backends
        data, options = (x, y), {**options, "batch_size": batch_size}
    callbacks = [timer, *extra_callbacks]  # the timer first: it stops before the others run
    start = time.perf_counter()
    result = fine_tune(model, data, None, [stage], verbose=0, callbacks=callbacks, **options)
    seconds = time.perf_counter() - start
    later = timer.seconds[1:] or timer.seconds
    stage_result = result.stages[0]
    return {
        "seconds": seconds,
        "epoch_seconds": timer.seconds,
        "images_per_second": len(x) / median(later),
        "cache": stage_result.cache.to_dict(),
        "zoo_images_per_second": stage_result.images_per_second,
        "settings": {
            "mixed_precision": result.mixed_precision,
            "jit_compile": result.jit_compile,
        },
        "settings_probe": result.settings_probe,
    }


# ------------------------------------------------------------------ measurements


def measure_head_stage(
    backbone: str,
    images: int = 256,
    epochs: int = 10,
    batch_size: int = 32,
    input_size: int | None = None,
) -> dict[str, Any]:
    """Frozen backbone + linear head for ``epochs`` epochs: plain ``fit`` vs zoo's cache.

    Plain: :func:`plain_model` (``base.trainable = False``) and ``model.fit`` on the
    images, shuffled as ``fit`` does by default. Zoo: ``zoo.build_classifier`` and
    ``fine_tune`` with ``Stage(policy=FreezeBackbone())``, cache on (features computed
    once, the head trained on them). Both from random weights; wall time of the whole
    ``fit`` / ``fine_tune`` call (tracing and the cache's build included).

    Returns:
        ``plain_seconds``, ``zoo_seconds``, ``speedup`` (plain / zoo), epoch times and
        the zoo cache's description.
    """
    import keras

    x, y = _data(backbone, images, input_size)
    shape = x.shape[1:]
    out = _settings_header(backbone, images, epochs, batch_size, shape)
    keras.utils.set_random_seed(0)
    plain = plain_fit(plain_model(backbone, shape), x, y, epochs, batch_size)
    out.update(plain_seconds=plain["seconds"], plain_epoch_seconds=plain["epoch_seconds"])
    problem = _zoo_training_problem()
    if problem:
        return {**out, **skipped(problem, zoo_seconds=None, speedup=None)}
    from zoo.policies import FreezeBackbone
    from zoo.training import Stage

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    stage = Stage("head", FreezeBackbone(), epochs, LEARNING_RATE)
    zoo_run = zoo_fit(_classifier(backbone, shape), x, y, stage, batch_size)
    return {
        **out,
        "zoo_seconds": zoo_run["seconds"],
        "zoo_epoch_seconds": zoo_run["epoch_seconds"],
        "zoo_cache": zoo_run["cache"],
        "speedup": plain["seconds"] / zoo_run["seconds"],
    }


def _fine_tune_stage(epochs: int) -> Any:
    from zoo.policies import UnfreezeTop
    from zoo.training import Stage

    policy = UnfreezeTop(blocks=2, batchnorm="frozen")
    return Stage("top2", policy, epochs, LEARNING_RATE, cache="off")


def measure_fine_tune(
    backbone: str,
    images: int = 96,
    epochs: int = 4,
    batch_size: int = 16,
    input_size: int | None = None,
    probe: bool = True,
    mixed_precision: str | None = None,
    jit_compile: bool = False,
    plain: bool = True,
) -> dict[str, Any]:
    """Top 2 blocks unfrozen (BatchNorm frozen), no cache: training images/s.

    Plain: :func:`plain_model` with the top 2 blocks trainable, ``model.fit``. Zoo:
    ``fine_tune`` with ``UnfreezeTop(blocks=2)``, ``cache="off"`` (so the training step
    itself is measured) and its defaults as recipes use them: ``mixed_precision="auto"``,
    ``jit_compile="auto"`` (zoo probes the candidates on the device and keeps the fastest
    whose loss agrees; the result records its choice and the probe). ``probe=False``: the
    given ``mixed_precision`` / ``jit_compile`` (default float32 without XLA, as ``--quick``
    does to save time). ``plain=False`` leaves the plain-Keras anchor out (its compile costs
    as much as zoo's; a GPU run compares with the peer instead): no speedup then.
    The two are interleaved, one plain epoch after each zoo epoch (the plain model traced
    beforehand), and the speedup is the median over epochs 2.. of the pairs' time ratio,
    so a change in the shared machine's load hits both alike. Images/s: the medians.

    Returns:
        ``plain_images_per_second``, ``zoo_images_per_second``, ``speedup``,
        ``zoo_settings`` (what zoo chose), ``probe`` (zoo's own probe record).
    """
    import keras

    x, y = _data(backbone, images, input_size)
    shape = x.shape[1:]
    out = _settings_header(backbone, images, epochs, batch_size, shape)
    problem = _zoo_training_problem()
    settings = (
        {"mixed_precision": "auto", "jit_compile": "auto"}
        if probe
        else {"mixed_precision": mixed_precision, "jit_compile": jit_compile}
    )
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    if not plain:
        return {**out, **_zoo_fine_tune_alone(backbone, x, y, epochs, batch_size, settings)}
    plain = plain_model(backbone, shape, unfreeze_blocks=2)
    warm = plain_fit(plain, x, y, 1, batch_size)  # compiles and traces: not timed below
    out["plain_first_epoch_seconds"] = warm["seconds"]
    if problem:
        after = _PlainEpochAfterEach(plain, x, y, batch_size)
        for _ in range(max(epochs - 1, 1)):
            after.callback.on_epoch_end(0)
        out.update(
            plain_images_per_second=len(x) / median(after.seconds),
            plain_epoch_seconds=after.seconds,
        )
        return {**out, **skipped(problem, zoo_images_per_second=None, speedup=None)}
    interleave = _PlainEpochAfterEach(plain, x, y, batch_size)
    zoo_run = zoo_fit(
        _classifier(backbone, shape),
        x,
        y,
        _fine_tune_stage(epochs),
        batch_size,
        extra_callbacks=[interleave.callback],
        **settings,
    )
    # Pairs of adjacent epochs (zoo then plain) see the same machine load.
    pairs = list(zip(zoo_run["epoch_seconds"][1:], interleave.seconds[1:], strict=True))
    pairs = pairs or list(zip(zoo_run["epoch_seconds"], interleave.seconds, strict=True))
    return {
        **out,
        "plain_images_per_second": len(x) / median([p for _, p in pairs]),
        "plain_epoch_seconds": interleave.seconds,
        "zoo_images_per_second": len(x) / median([z for z, _ in pairs]),
        "zoo_epoch_seconds": zoo_run["epoch_seconds"],
        "zoo_settings": zoo_run["settings"],
        "zoo_asked": settings,
        "probe": zoo_run["settings_probe"],
        "speedup": median([p / z for z, p in pairs]),
        "speedup_method": "median over epochs 2.. of plain/zoo epoch time, epochs interleaved",
    }


def _zoo_fine_tune_alone(
    backbone: str, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, settings: dict
) -> dict[str, Any]:
    """zoo's top-2 fine-tune without the plain anchor: images/s, median over epochs 2.."""
    problem = _zoo_training_problem()
    none = {"plain_images_per_second": None, "speedup": None}
    if problem:
        return skipped(problem, zoo_images_per_second=None, **none)
    run = zoo_fit(
        _classifier(backbone, x.shape[1:]), x, y, _fine_tune_stage(epochs), batch_size, **settings
    )
    return {
        **none,
        "plain": "not measured (plain=False)",
        "zoo_images_per_second": run["images_per_second"],
        "zoo_epoch_seconds": run["epoch_seconds"],
        "zoo_settings": run["settings"],
        "zoo_asked": settings,
        "probe": run["settings_probe"],
    }


class _PlainEpochAfterEach:
    """A callback for zoo's ``fine_tune`` that trains the plain model one epoch after each
    zoo epoch, so both are timed under the same load on a shared machine."""

    def __init__(self, model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
        import keras

        self.seconds: list[float] = []
        outer = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                start = time.perf_counter()
                model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
                outer.seconds.append(time.perf_counter() - start)

        self.callback = _Callback()


def measure_prefix_cache(
    backbone: str,
    images: int = 128,
    epochs: int = 5,
    batch_size: int = 32,
    input_size: int | None = None,
) -> dict[str, Any]:
    """Top 2 blocks unfrozen, BatchNorm frozen: plain ``fit`` vs zoo's cached prefix.

    Both start from the same classifier weights (``zoo.build_classifier``, random) and
    see the same batches in the same order (no shuffling). Plain: ``policy.apply``,
    ``compile(Adam)``, ``fit`` over the full model (the frozen prefix runs every epoch,
    in inference mode). Zoo: ``fine_tune`` with ``UnfreezeTop(blocks=2)``, cache on,
    ``shuffle_cache=False``: the prefix runs once, the top trains on its activations.

    Returns:
        ``plain_seconds``, ``cached_seconds`` (wall time of ``fit`` / ``fine_tune``),
        ``speedup`` (plain / cached), ``max_weight_diff`` (largest absolute difference
        over every weight of the two trained models), ``cache`` (cut, size, location),
        and :func:`cache_bound`'s ``prefix_gmacs``, ``suffix_gmacs``, ``speedup_bound``.
    """
    import keras

    x, y = _data(backbone, images, input_size)
    shape = x.shape[1:]
    out = _settings_header(backbone, images, epochs, batch_size, shape)
    problem = _zoo_training_problem()
    if problem:
        return {
            **out,
            **skipped(
                problem, plain_seconds=None, cached_seconds=None, speedup=None, max_weight_diff=None
            ),
        }
    from zoo.policies import UnfreezeTop
    from zoo.training import Stage

    keras.utils.set_random_seed(0)
    plain_model_ = _classifier(backbone, shape)
    initial = plain_model_.get_weights()
    UnfreezeTop(blocks=2, batchnorm="frozen").apply(plain_model_)
    bound = cache_bound(plain_model_, epochs)
    plain = plain_fit(plain_model_, x, y, epochs, batch_size)
    cached_model = _classifier(backbone, shape)
    cached_model.set_weights(initial)
    stage = Stage("top2", UnfreezeTop(blocks=2, batchnorm="frozen"), epochs, LEARNING_RATE)
    cached = zoo_fit(cached_model, x, y, stage, batch_size, shuffle_cache=False)
    diff = max(
        float(np.max(np.abs(a - b))) if a.size else 0.0
        for a, b in zip(plain_model_.get_weights(), cached_model.get_weights(), strict=True)
    )
    return {
        **out,
        "plain_seconds": plain["seconds"],
        "plain_epoch_seconds": plain["epoch_seconds"],
        "cached_seconds": cached["seconds"],
        "cached_epoch_seconds": cached["epoch_seconds"],
        "speedup": plain["seconds"] / cached["seconds"],
        "max_weight_diff": diff,
        "cache": cached["cache"],
        **bound,
    }


def cache_bound(model: Any, epochs: int) -> dict[str, float]:
    """The speedup a prefix cache can reach if every multiply-accumulate costs the same.

    With ``P`` and ``S`` the forward GMACs per image of the frozen prefix and of the
    trained suffix, and a backward pass costing twice its forward, plain ``fit`` spends
    ``P + 3S`` an epoch and the cached path ``P`` once plus ``3S`` an epoch:
    ``epochs * (P + 3S) / (P + 3S * epochs)``, which tends to ``(P + 3S) / 3S``. The
    model's policy must already be applied.

    Returns:
        ``prefix_gmacs``, ``suffix_gmacs`` (per image) and ``speedup_bound``.
    """
    from zoo import caching
    from zoo.cost import count_macs

    with caching.frozen_layers_in_inference(model):
        split = caching.split_model(model, caching.plan_cut(model))
    p, s = count_macs(split.prefix) / 1e9, count_macs(split.suffix) / 1e9
    return {
        "prefix_gmacs": p,
        "suffix_gmacs": s,
        "speedup_bound": epochs * (p + 3 * s) / (p + 3 * s * epochs),
    }
