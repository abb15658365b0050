"""The inference engine of the cache's passes: the probe, the parity check, LiteRT."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import caching
from zoo.caching import engine
from zoo.classifier import build_classifier
from zoo.errors import InvalidValueError
from zoo.policies import FreezeBackbone, UnfreezeTop
from zoo.testing import temporary_backbone
from zoo.training import Stage, fine_tune

SIZE = 32


@pytest.fixture(scope="module")
def prefix():
    """The tiny backbone's frozen bottom two blocks: pixels -> (batch, 8, 8, 16)."""
    with temporary_backbone() as spec:
        model = build_classifier(spec.name, 3, weights=None, input_shape=(SIZE, SIZE, 3))
        caching.apply_policy(model, UnfreezeTop(blocks=1, batchnorm="frozen"))
        for layer in caching.all_layers(model):  # BatchNorm statistics that are not 0 and 1
            if isinstance(layer, keras.layers.BatchNormalization):
                n = layer.moving_mean.shape[0]
                layer.moving_mean.assign(np.linspace(-1, 1, n))
                layer.moving_variance.assign(np.linspace(0.5, 2, n))
        return caching.split_model(model, caching.plan_cut(model)).prefix


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _slow(seconds, scale=1.0):
    def forward(x):
        time.sleep(seconds)
        return np.asarray(x, np.float32)[:, :2, 0, 0] * scale

    return lambda: forward


def test_relative_error_is_max_difference_over_max_reference():
    b = np.array([[1.0, -4.0], [2.0, 0.0]])
    a = b + np.array([[0.0, 0.0], [0.002, 0.0]])
    assert engine.relative_error(a, b) == pytest.approx(0.002 / 4.0)
    assert engine.relative_error(np.array([np.nan, 1.0]), np.array([1.0, 1.0])) == float("inf")


def test_probe_picks_the_fastest_agreeing_candidate_and_records_times(prefix):
    builders = {"tensorflow": _slow(0.03), "tensorflow-folded": _slow(0.0), "litert": _slow(0.06)}
    forward, choice = engine.choose_engine(prefix, _images(4), candidates=builders)

    assert choice.engine == "tensorflow-folded" and choice.probed and choice.batch_size == 4
    assert [c.name for c in choice.candidates] == list(builders)
    seconds = {c.name: c.seconds_per_batch for c in choice.candidates}
    assert seconds["tensorflow-folded"] < 0.02 <= seconds["tensorflow"] < seconds["litert"]
    assert all(c.agrees and c.relative_error == 0.0 for c in choice.candidates)
    assert engine.EngineChoice.from_dict(choice.to_dict()) == choice
    assert forward(_images(3)).shape == (3, 2)


def test_a_disagreeing_or_failing_candidate_is_not_used_and_the_reason_says_why(prefix):
    def broken():
        raise RuntimeError("converter refused op FOO")

    builders = {
        "tensorflow": _slow(0.03),
        "tensorflow-folded": broken,
        "litert": _slow(0.0, scale=1 + 1e-4),  # fastest, but 1e-4 off
    }
    _, choice = engine.choose_engine(prefix, _images(4), candidates=builders)

    assert choice.engine == "tensorflow"
    lite = choice.candidates[2]
    assert not lite.agrees and lite.relative_error == pytest.approx(1e-4, rel=1e-3)
    assert not choice.candidates[1].agrees and "FOO" in choice.candidates[1].error
    assert "litert differs by 1.00e-04 > 1e-05" in choice.reason
    assert "tensorflow-folded failed (RuntimeError: converter refused op FOO)" in choice.reason
    with pytest.raises(InvalidValueError, match="'litert' is not used: .*1e-05"):
        engine.choose_engine(prefix, _images(4), "litert", candidates=builders)


def test_small_passes_skip_the_probe_and_unknown_engines_are_refused(prefix):
    _, choice = engine.choose_engine(prefix, _images(2), images=100)
    assert not choice.probed and choice.engine == "tensorflow-folded"
    assert "below the 2048" in choice.reason
    with pytest.raises(InvalidValueError, match="inference_engine must be one of"):
        engine.choose_engine(prefix, _images(2), "onnx")

    def never():
        raise AssertionError("a short pass must not pay for a LiteRT conversion")

    quick = {"tensorflow": _slow(0.0), "tensorflow-folded": _slow(0.0), "litert": never}
    _, choice = engine.choose_engine(prefix, _images(4), images=4000, candidates=quick)
    assert [c.name for c in choice.candidates] == ["tensorflow", "tensorflow-folded"]
    assert "converting to LiteRT pays for itself" in dict(choice.left_out)["litert"]


def test_litert_gives_tensorflows_activations_within_tolerance_at_any_batch(prefix):
    lite = engine.LiteRTForward(prefix)
    for n in (8, 3, 8):  # the last, partial batch of a pass resizes the input
        x = _images(n, seed=n)
        reference = np.asarray(prefix(x, training=False))
        assert engine.relative_error(lite(x), reference) <= engine.PARITY_RTOL


def test_a_cache_built_by_litert_trains_the_head_as_plain_training_does():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, SIZE, SIZE, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, 32))).batch(16)
    stage = dict(name="head", policy=FreezeBackbone(), epochs=2, learning_rate=1e-2)
    with temporary_backbone() as spec:
        cached = build_classifier(spec.name, 3, weights=None, input_shape=(SIZE, SIZE, 3))
        plain = build_classifier(spec.name, 3, weights=None, input_shape=(SIZE, SIZE, 3))
        for mine, theirs in zip(plain.variables, cached.variables, strict=True):
            mine.assign(theirs)
        r = fine_tune(
            cached,
            data,
            None,
            [Stage(**stage)],
            shuffle_cache=False,
            inference_engine="litert",
            verbose=0,
        )
        fine_tune(plain, data, None, [Stage(**stage, cache="off")], verbose=0)

    info = r.stages[0].cache
    assert info.used and info.engine["engine"] == "litert" and info.engine["probed"]
    assert 0 < info.engine["relative_error"] <= engine.PARITY_RTOL  # not bitwise: within it
    for a, b in zip(cached.variables, plain.variables, strict=True):
        assert float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= 1e-5, a.path
    with pytest.raises(InvalidValueError, match="inference_engine"):
        fine_tune(cached, data, None, [Stage(**stage)], inference_engine="gpu", verbose=0)
