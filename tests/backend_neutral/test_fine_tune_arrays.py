"""``fine_tune`` on ``(x, y)`` numpy arrays, on whichever Keras backend runs the tests.

A tiny backbone (three conv-BN-ReLU blocks) at 32x32 on 64 random images: the head stage
trains on the feature cache, a top-block stage on the frozen-prefix cache, a third stage
the plain way; frozen weights stay bitwise unchanged and a second run with the same seed
ends with the same weights. On JAX, ``distribution="mirrored"`` runs on two CPU devices in
a subprocess (XLA splits the host into two).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import zoo
from zoo.errors import ZooError
from zoo.policies import FreezeBackbone, UnfreezeTop
from zoo.testing import changed_paths, snapshot, temporary_backbone
from zoo.training import Stage, fine_tune

SIZE, N, BATCH = 32, 64, 16
JAX = keras.backend.backend() == "jax"


@pytest.fixture(scope="module")
def tiny():
    with temporary_backbone() as spec:
        yield spec


def _model(spec):
    keras.utils.set_random_seed(0)
    return zoo.build_classifier(spec.name, 3, weights=None, input_shape=(SIZE, SIZE, 3))


def _arrays(n=N):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype("uint8")
    return x, rng.integers(0, 3, n)


def _stages():
    return [
        Stage("head", FreezeBackbone(), 2, 1e-2),
        Stage("top", UnfreezeTop(blocks=1), 2, 1e-2, label_smoothing=0.1),
        Stage("plain", UnfreezeTop(blocks=1), 2, 1e-2, cache="off"),
    ]


def _run(spec, stages, **kwargs):
    model = _model(spec)
    x, y = _arrays()
    result = fine_tune(
        model, (x, y), (x[:32], y[:32]), stages, batch_size=BATCH, verbose=0, **kwargs
    )
    return model, result


def test_cached_stages_and_plain_stage_train_on_arrays(tiny):
    before = snapshot(_model(tiny))
    model, result = _run(tiny, _stages())
    head, top, plain = result.stages
    assert (head.cache.used, head.cache.cut) == (True, "b2")  # the backbone's output
    assert (top.cache.used, top.cache.cut) == (True, "b1")  # below the unfrozen block
    assert not plain.cache.used and "cache='off'" in plain.cache.reason
    assert [len(s.history["loss"]) for s in result.stages] == [2, 2, 2]
    assert all(np.isfinite(s.history["val_loss"]).all() for s in result.stages)
    changed = changed_paths(before, snapshot(model))
    frozen = result.frozen_in_all_stages
    assert frozen and not (changed & frozen), sorted(changed & frozen)
    assert any(p.startswith("head/") for p in changed)
    assert any("conv2" in p for p in changed)  # the top block trained
    assert not any("conv0" in p or "bn1" in p for p in changed)


def test_same_seed_same_weights(tiny):
    stages = [_stages()[0], _stages()[2]]
    a, _ = _run(tiny, stages, seed=3)
    b, _ = _run(tiny, stages, seed=3)
    assert not changed_paths(snapshot(a), snapshot(b))


def test_arrays_need_batch_size_and_matching_lengths(tiny):
    x, y = _arrays()
    with pytest.raises(ZooError, match=r"arrays need batch_size.*x has 64 images but y has 63"):
        fine_tune(_model(tiny), (x, y), (x, y[:-1]), _stages(), verbose=0)
    with pytest.raises(ZooError, match=r"x must be pixels \(n, height, width, 3\)"):
        fine_tune(_model(tiny), (x[..., 0], y), None, _stages(), batch_size=BATCH, verbose=0)


@pytest.mark.skipif(not JAX, reason="the JAX backend's mapping of distribution names")
def test_multi_worker_is_refused_on_jax(tiny):
    x, y = _arrays()
    with pytest.raises(ZooError, match="'multi_worker' is not supported on the JAX backend"):
        fine_tune(
            _model(tiny), (x, y), None, _stages(), batch_size=BATCH, distribution="multi_worker"
        )


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="TensorFlow augments")
def test_augmentation_without_tensorflow_says_so(tiny):
    x, y = _arrays()
    stage = Stage("aug", FreezeBackbone(), 1, 1e-2, augment=keras.layers.RandomFlip())
    with pytest.raises(ZooError, match="augmentation needs TensorFlow"):
        fine_tune(_model(tiny), (x, y), None, [stage], batch_size=BATCH, verbose=0)


_MIRRORED = """
    import keras, numpy as np, zoo
    from zoo.policies import FreezeBackbone, UnfreezeTop
    from zoo.testing import changed_paths, snapshot, temporary_backbone
    from zoo.training import Stage, fine_tune

    with temporary_backbone() as spec:
        model = zoo.build_classifier(spec.name, 3, weights=None, input_shape=(32, 32, 3))
        before = snapshot(model)
        rng = np.random.default_rng(1)
        x, y = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32"), rng.integers(0, 3, 32)
        stages = [Stage("head", FreezeBackbone(), 1, 1e-2),
                  Stage("top", UnfreezeTop(blocks=1), 1, 1e-2)]
        result = fine_tune(model, (x, y), (x, y), stages, batch_size=16, verbose=0,
                           distribution="mirrored")
        assert keras.distribution.distribution() is None  # restored after the call
        changed = changed_paths(before, snapshot(model))
        assert changed and not changed & result.frozen_in_all_stages
        print("replicas", result.distribution["replicas"], result.distribution["strategy"])
"""


@pytest.mark.skipif(not JAX, reason="keras.distribution.DataParallel is the JAX mapping")
def test_mirrored_is_data_parallel_on_two_jax_devices():
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MIRRORED)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "replicas 2 DataParallel" in run.stdout
