"""``fine_tune(distribution=...)``: mirrored on 2 logical CPUs trains as one device does.

Logical CPU devices must be made before TensorFlow initialises, so the comparisons run in
a fresh process (``distribute_worker.py``); the checks on bad input run here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.training.distribute import (
    DistributionError,
    DistributionInfo,
    check_global_batch,
    check_model_in_scope,
    is_chief_task,
    read_tf_config,
    resolve_distribution,
)

WORKER = Path(__file__).with_name("distribute_worker.py")
REPO = Path(__file__).resolve().parents[2]
# Two replicas each reduce half the batch and the halves' gradients are summed: the same
# terms as one device's sum, added in another order. float32 rounding of that order moves
# the trained weights by ~3e-6 here (measured); the bound is the 1e-5.
TOLERANCE = 1e-5
# Cached vs plain training: the same sums in an order the CPU's kernels choose (see below).
CACHE_TOLERANCE = 1e-6


def _worker(mode: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{mode}.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, str(WORKER), mode, str(out)], check=True, env=env, timeout=240)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> dict:
    return _worker("compare", tmp_path_factory.mktemp("distribute"))


def test_mirrored_on_two_logical_cpus_trains_as_one_device(compared):
    assert compared["two_plain"]["distribution"]["strategy"] == "MirroredStrategy"
    assert compared["two_plain"]["distribution"]["replicas"] == 2
    assert compared["one_plain"]["distribution"]["replicas"] == 1
    assert compared["changed"] == ["conv2/kernel", "head/logits/bias", "head/logits/kernel"]
    assert compared["max_diff one_plain two_plain"] <= TOLERANCE


def test_frozen_weights_stay_bitwise_under_the_strategy(compared):
    assert len(compared["frozen_checked"]) == 13
    assert all(compared["frozen_unchanged_bitwise"].values()), compared["frozen_unchanged_bitwise"]
    assert compared["two_plain"]["frozen"] == compared["one_plain"]["frozen"]


def test_prefix_cache_under_the_strategy_gives_the_same_weights(compared):
    assert compared["two_cache"]["cache_used"] == [True, True]
    # Cached and plain training do the same arithmetic, but the prefix runs in a different
    # graph (the cache pass vs inside the train step). Which oneDNN kernel a graph gets, and
    # so the order of a convolution's sums, depends on the CPU: bitwise on the AVX-512
    # machines, 6e-8 apart on the AVX2 ones (measured). Float32 rounding, not a bug.
    assert compared["max_diff two_plain two_cache"] <= CACHE_TOLERANCE
    assert compared["max_diff one_cache two_cache"] <= TOLERANCE


def test_export_of_a_mirrored_model_verifies(compared):
    assert compared["export"] == {"passed": True}


def test_logical_devices_after_tensorflow_initialised_is_one_clear_error(tmp_path):
    got = _worker("late", tmp_path)
    assert got["raised"] == "DistributionError"
    assert "already initialised" in got["message"] and "\n" not in got["message"]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG is not JSON"),
        ('{"cluster": {"worker": ["localhost"]}}', "host:port.*no 'task' object"),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
            r"task index 2 is not in 0\.\.1",
        ),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "chief"),
    ],
)
def test_malformed_tf_config_is_one_clear_error(value, match):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(DistributionError, match=match) as err:
        read_tf_config(environ)
    assert isinstance(err.value, ZooError) and "\n" not in str(err.value)


def test_multi_worker_without_tf_config_fails_before_training(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DistributionError, match="TF_CONFIG"):
        resolve_distribution("multi_worker")


def test_well_formed_tf_config_is_read():
    text = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}'
    assert read_tf_config({"TF_CONFIG": text})["task"]["index"] == 1


@pytest.mark.parametrize(
    ("cluster", "task", "chief"),
    [
        ({"worker": ["a:1", "b:2"]}, ("worker", 0), True),
        ({"worker": ["a:1", "b:2"]}, ("worker", 1), False),
        ({"chief": ["c:0"], "worker": ["a:1"]}, ("chief", 0), True),
        ({"chief": ["c:0"], "worker": ["a:1"]}, ("worker", 0), False),
    ],
)
def test_the_chief_is_worker_0_unless_the_cluster_names_one(cluster, task, chief):
    text = json.dumps({"cluster": cluster, "task": {"type": task[0], "index": task[1]}})
    assert is_chief_task(read_tf_config({"TF_CONFIG": text})) is chief


def test_batch_not_divisible_by_the_replicas_names_the_fix():
    info = DistributionInfo(strategy="MirroredStrategy", replicas=4)
    with pytest.raises(DistributionError, match=r"batch 10 does not divide among 4.*8 or 12"):
        check_global_batch(10, info, "The training batch")
    check_global_batch(12, info, "The training batch")  # divides: no error
    check_global_batch(None, info, "The training batch")  # unknown: checked elsewhere


def test_unknown_distribution_and_none_on_one_device():
    with pytest.raises(ZooError, match="distribution must be one of"):
        resolve_distribution("mirorred")
    strategy, info = resolve_distribution("none")
    assert strategy is None and info.replicas == 1 and info.strategy == "none"


def test_model_built_outside_the_scope_is_refused():
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with pytest.raises(
        DistributionError, match=r"outside the OneDeviceStrategy's scope.*scope\(\)"
    ):
        check_model_in_scope(model, strategy)
    with strategy.scope():
        inside = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    check_model_in_scope(inside, strategy)
    assert np.asarray(inside.variables[0]).shape == (3, 2)


def test_unreplicated_copies_a_model_with_dropout_bitwise():
    import tensorflow as tf

    from zoo.classifier import build_classifier
    from zoo.heads import LinearHead
    from zoo.testing import TINY_NAME, temporary_backbone
    from zoo.training.distribute import unreplicated

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with temporary_backbone():
        with strategy.scope():  # dropout's seed generator is named by a global counter
            model = build_classifier(
                TINY_NAME, 3, weights=None, input_shape=(32, 32, 3), head=LinearHead(dropout=0.2)
            )
        for v in model.weights:
            v.assign(np.random.default_rng(0).normal(size=v.shape))
        copy = unreplicated(model)
    assert copy is not model and getattr(copy, "_distribute_strategy", None) is None
    ours = {v.path: np.asarray(v).tobytes() for v in model.weights}
    assert {v.path: np.asarray(v).tobytes() for v in copy.weights} == ours
