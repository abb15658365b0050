"""Runs in a fresh process for tests/zoo/test_distribute.py (not collected by pytest).

Logical CPU devices can only be made before TensorFlow initialises, which the pytest
process has long done; so the tests start this script and read the JSON it writes.

    python distribute_worker.py compare OUT.json   # 1 device vs mirrored on 2 logical CPUs
    python distribute_worker.py late OUT.json      # logical devices after TF initialised
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["ZOO_OFFLINE"] = "1"

import numpy as np  # noqa: E402

from zoo.training.distribute import configure_logical_cpus  # noqa: E402

EXAMPLES, BATCH, CLASSES = 64, 16, 3


def _data():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (EXAMPLES, 32, 32, 3)).astype("float32")
    y = rng.integers(0, CLASSES, EXAMPLES)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH, drop_remainder=True)


def _model(initial):
    import keras

    from zoo.classifier import build_classifier
    from zoo.testing import TINY_NAME

    keras.utils.set_random_seed(0)
    model = build_classifier(TINY_NAME, CLASSES, weights=None, input_shape=(32, 32, 3))
    if initial is None:  # "pretrained" values of a sensible scale, as loaded weights have
        rng = np.random.default_rng(1)
        for v in model.variables:
            shape, path = tuple(v.shape), v.path
            low = "moving_variance" in path or "gamma" in path
            v.assign(rng.uniform(0.5, 1.5, shape) if low else rng.normal(0, 0.3, shape))
    else:
        for v, value in zip(model.variables, initial, strict=True):
            v.assign(value)
    return model


def _train(initial, cache: str, strategy=None):
    """Weights after two stages: the head, then the top block (BatchNorm frozen)."""
    import contextlib

    from zoo.policies import FreezeBackbone, UnfreezeTop
    from zoo.training import Stage, fine_tune

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = _model(initial)
    stages = [
        Stage("head", FreezeBackbone(), epochs=1, learning_rate=0.01, cache=cache),
        Stage("top", UnfreezeTop(blocks=1), epochs=2, learning_rate=0.01, cache=cache),
    ]
    result = fine_tune(
        model, _data(), None, stages, shuffle_cache=False, verbose=0, distribution=strategy
    )
    return model, result


def compare(out: str) -> None:
    """1 device vs mirrored on 2 logical CPUs, plain and on the prefix cache."""
    import tensorflow as tf

    from zoo.testing import temporary_backbone
    from zoo.training.distribute import make_strategy

    configure_logical_cpus(2)
    tf.config.experimental.enable_op_determinism()
    report: dict = {}
    with temporary_backbone():
        initial = [np.array(v) for v in _model(None).variables]
        strategy = make_strategy("mirrored")
        weights = {}
        for name, cache, strat in (
            ("one_plain", "off", None),
            ("two_plain", "off", strategy),
            ("one_cache", "auto", None),
            ("two_cache", "auto", strategy),
        ):
            start = time.perf_counter()
            model, result = _train(initial, cache, strat)
            weights[name] = {v.path: np.array(v) for v in model.variables}
            report[name] = {
                "seconds": time.perf_counter() - start,
                "distribution": result.distribution,
                "cache_used": [s.cache.used for s in result.stages],
                "images_per_second": [s.images_per_second for s in result.stages],
                "frozen": sorted(result.frozen_in_all_stages),
            }
            if name == "two_plain":
                report["export"] = _export(model, result)
        paths = list(weights["one_plain"])
        start = dict(zip(paths, initial, strict=True))
        for a, b in (
            ("one_plain", "two_plain"),
            ("one_cache", "two_cache"),
            ("two_plain", "two_cache"),
        ):
            report[f"max_diff {a} {b}"] = max(
                float(np.max(np.abs(weights[a][p] - weights[b][p]), initial=0.0)) for p in paths
            )
        report["changed"] = sorted(
            p for p in paths if not np.array_equal(start[p], weights["one_plain"][p])
        )
        report["frozen_unchanged_bitwise"] = {
            name: all(w[p].tobytes() == start[p].tobytes() for p in paths if _frozen(p, w, start))
            for name, w in weights.items()
        }
        report["frozen_checked"] = sorted(p for p in paths if "conv0" in p or "bn" in p)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


def _frozen(path: str, weights, start) -> bool:
    """Variables the stages never train: the two lower blocks and every BatchNorm."""
    return any(k in path for k in ("conv0", "conv1", "bn0", "bn1", "bn2"))


def _export(model, result) -> dict:
    import tempfile

    from recipes.export import export_saved_model
    from zoo.training.distribute import unreplicated

    model = unreplicated(model)
    with tempfile.TemporaryDirectory() as tmp:
        got = export_saved_model(
            model, os.path.join(tmp, "export"), frozen=result.frozen_in_all_stages
        )
        return {"passed": bool(got.verification.passed)}


def late(out: str) -> None:
    """Asks for logical devices after TensorFlow initialised."""
    import tensorflow as tf

    tf.constant(1.0) + 1.0
    try:
        configure_logical_cpus(2)
        got = {"raised": None}
    except Exception as err:  # the test checks the class and the message
        got = {"raised": type(err).__name__, "message": str(err)}
    with open(out, "w") as f:
        json.dump(got, f)


if __name__ == "__main__":
    {"compare": compare, "late": late}[sys.argv[1]](sys.argv[2])
