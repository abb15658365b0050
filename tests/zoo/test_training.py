"""Multi-stage fine-tuning: recompiling per stage, logs and checkpoints, exact resume."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.classifier import build_classifier
from zoo.errors import ZooError
from zoo.policies import FreezeBackbone, UnfreezeTop
from zoo.testing import CrashAfter
from zoo.training import Stage, fine_tune
from zoo.training.settings import LOSS_RTOL, accelerator, candidates

SIZE = 32


def _model(like=None):
    model = build_classifier("efficientnet_lite0", 3, weights=None, input_shape=(SIZE, SIZE, 3))
    if like is not None:
        for mine, theirs in zip(model.variables, like.variables, strict=True):
            mine.assign(theirs)
    return model


def _data():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (32, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 3, 32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def _stages():
    return [
        Stage("head", FreezeBackbone(), 2, 1e-2),
        Stage(
            "top",
            UnfreezeTop(blocks=2, batchnorm="trainable"),
            3,
            1e-2,
            optimizer="adamw",
            weight_decay=1e-4,
            schedule="cosine",
            warmup_epochs=1,
            label_smoothing=0.1,
        ),
    ]


@pytest.mark.slow
def test_multi_stage_recompiles_logs_and_resumes_exactly(tmp_path):
    data = _data()
    model = _model()
    crashed, resumed = _model(like=model), _model(like=model)

    result = fine_tune(model, data, None, _stages(), run_dir=tmp_path / "a", verbose=0)

    head, top = result.stages
    # Each stage recompiled with the variables its policy leaves trainable.
    assert head.trainable_paths == ["head/logits/bias", "head/logits/kernel"]
    assert "block7a_dwconv/kernel" in top.trainable_paths
    assert "block6d_dwconv/kernel" not in top.trainable_paths
    assert head.cache.cut == "top" and top.cache.cut == "block6d"
    assert any("block1a" in p for p in result.frozen_in_all_stages)
    assert not any("block7a" in p for p in result.frozen_in_all_stages)
    assert len(head.history["loss"]) == 2 and len(top.history["accuracy"]) == 3
    assert top.images_per_second > 0 and head.cache.build_seconds > 0
    with open(tmp_path / "a" / "1_top.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    assert (tmp_path / "a" / "checkpoints" / "last.npz").exists()

    # Crash after the second epoch of the second stage, then resume.
    with pytest.raises(RuntimeError, match="simulated crash"):
        fine_tune(
            crashed,
            data,
            None,
            _stages(),
            run_dir=tmp_path / "b",
            callbacks=[CrashAfter(4)],
            verbose=0,
        )
    again = fine_tune(
        resumed, data, None, _stages(), run_dir=tmp_path / "b", resume=True, verbose=0
    )

    assert again.resumed and again.stages[1].resumed_at_epoch == 2
    assert again.stages[0].history == head.history  # restored from the checkpoint
    assert again.stages[1].history["loss"][:2] == top.history["loss"][:2]
    diffs = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(model.variables, resumed.variables, strict=True)
    ]
    assert max(diffs) == 0.0


def test_early_stopping_ends_a_stage():
    model = _model()
    # A huge learning rate makes the loss climb, so patience 1 stops after epoch 2.
    stage = Stage("head", FreezeBackbone(), 6, 50.0, optimizer="sgd", early_stopping_patience=1)
    result = fine_tune(model, _data(), _data(), [stage], verbose=0)
    s = result.stages[0]
    assert s.stopped_early and s.epochs_run < 6


def test_stage_and_arguments_are_validated_all_at_once():
    with pytest.raises(ValueError, match=r"epochs must be.*learning_rate must be > 0.*optimizer"):
        Stage("bad", FreezeBackbone(), 0, -1.0, optimizer="rmsprop")
    with pytest.raises(
        ZooError, match="mixed_precision must.*'auto', got 'int8'.*jit_compile must.*resume=True"
    ):
        fine_tune(
            None,
            None,
            None,
            [Stage("s", FreezeBackbone(), 1, 1e-3)],
            resume=True,
            mixed_precision="int8",
            jit_compile="yes",
        )


def _reshuffled_data():
    """Like ``zoo.data.pipeline(training=True)``: a new order on every iteration.

    tf.data picks iteration k's order from (seed, k), so the order an epoch sees depends on
    how often the dataset was iterated before in this process, which a resumed process
    does not repeat by itself.
    """
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (24, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 3, 24)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return ds.shuffle(24, seed=0, reshuffle_each_iteration=True).batch(8)


def _crash_stages(second):
    head = Stage("head", FreezeBackbone(), 1, 1e-2)
    if second == "reused":  # the same frozen prefix again: the cache comes from memory
        return [head, Stage("head2", FreezeBackbone(), 3, 1e-2, schedule="cosine")]
    top = Stage(
        "top",
        UnfreezeTop(blocks=1, batchnorm="trainable"),
        3,
        1e-2,
        optimizer="adamw",
        weight_decay=1e-4,
        schedule="cosine",
        warmup_epochs=1,
        cache="off" if second == "plain" else "auto",
    )
    return [head, top]


@pytest.mark.slow
@pytest.mark.parametrize("second", ["cached", "plain", "reused"])
def test_resume_mid_stage_on_reshuffled_data_is_bitwise_exact(tmp_path, second):
    # A crash after the first epoch of the second stage: the resumed process skips the
    # first stage and that epoch, yet must train on the same batches in the same order.
    data = _reshuffled_data()
    whole = _model()
    crashed, resumed = _model(like=whole), _model(like=whole)
    reference = fine_tune(whole, data, None, _crash_stages(second), verbose=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fine_tune(
            crashed,
            _reshuffled_data(),
            None,
            _crash_stages(second),
            run_dir=tmp_path,
            callbacks=[CrashAfter(2)],
            verbose=0,
        )
    again = fine_tune(
        resumed,
        _reshuffled_data(),
        None,
        _crash_stages(second),
        run_dir=tmp_path,
        resume=True,
        verbose=0,
    )

    ref, got = reference.stages[1], again.stages[1]
    assert got.resumed_at_epoch == 1
    assert got.cache.used == (second != "plain") and ref.cache.used == got.cache.used
    assert got.history["loss"] == ref.history["loss"]
    if second == "cached":  # computed in the first stage for both; kept for the resume
        assert reference.stages[0].cache.derived_from == got.cache.cut == "block7a"
        assert got.cache.location_reason.startswith("reused from the run directory")
    assert not (tmp_path / "shared-cache").exists()  # removed once the run completed
    changed = [
        v.path
        for v, w in zip(whole.variables, resumed.variables, strict=True)
        if not np.array_equal(np.asarray(v), np.asarray(w))
    ]
    assert changed == []


@pytest.mark.slow
def test_auto_settings_are_probed_and_train_like_the_chosen_ones_given_explicitly():
    data = _data()
    auto = _model()
    explicit = _model(like=auto)
    # A stage that trains blocks the plain way: the probe cannot be skipped.
    stages = [Stage("top", UnfreezeTop(blocks=1, batchnorm="frozen"), 1, 1e-2, cache="off")]

    result = fine_tune(
        auto, data, None, stages, mixed_precision="auto", jit_compile="auto", verbose=0
    )

    probe = result.settings_probe
    assert probe["probed"] and probe["stage"] == "top" and probe["loss_rtol"] == LOSS_RTOL
    tried = [(c["mixed_precision"], c["jit_compile"]) for c in probe["candidates"]]
    if accelerator() is None:  # a CPU: XLA is not tried
        assert tried == [(None, False), ("bfloat16", False)]
    assert all(c["seconds_per_step"] > 0 and np.isfinite(c["loss"]) for c in probe["candidates"])
    chosen = (result.mixed_precision, result.jit_compile)
    assert chosen == (probe["mixed_precision"], probe["jit_compile"]) and chosen in tried
    assert result.to_dict()["settings_probe"] == probe
    # The probe restored every variable: training from here equals the explicit run.
    fine_tune(
        explicit, data, None, stages, mixed_precision=chosen[0], jit_compile=chosen[1], verbose=0
    )
    changed = [
        v.path
        for v, w in zip(auto.variables, explicit.variables, strict=True)
        if not np.array_equal(np.asarray(v), np.asarray(w))
    ]
    assert changed == []


@pytest.mark.parametrize(
    "bf16_seconds, chosen", [(0.95, None), (0.85, "bfloat16"), (0.5, "bfloat16")]
)
def test_auto_keeps_float32_unless_another_setting_is_clearly_faster(
    monkeypatch, bf16_seconds, chosen
):
    from zoo.training import settings

    times = {None: (1.0, 2.0), "bfloat16": (bf16_seconds, 2.01)}
    monkeypatch.setattr(settings, "_time_steps", lambda model, stage, x, y, m, j: times[m])
    monkeypatch.setattr(settings, "accelerator", lambda: None)
    stage = Stage("top", UnfreezeTop(blocks=1, batchnorm="frozen"), 1, 1e-2, cache="off")
    probe = settings.choose_settings(_model(), [stage], ["plain"], "auto", "auto", 4)
    assert probe.mixed_precision == chosen
    assert (1.0 / bf16_seconds >= settings.MIN_SPEEDUP) == (chosen == "bfloat16")


def test_auto_settings_skip_the_probe_when_every_stage_trains_a_head_on_features():
    stage = Stage("head", FreezeBackbone(), 1, 1e-2)
    result = fine_tune(_model(), _data(), None, [stage], mixed_precision="auto", verbose=0)
    probe = result.settings_probe
    assert not probe["probed"] and "skipped" in probe["reason"] and probe["candidates"] == []
    assert result.mixed_precision is None and result.jit_compile is False
    explicit = fine_tune(_model(), _data(), None, [stage], verbose=0)
    assert explicit.settings_probe is None


def _learnable_data(n=64):
    """Three classes a linear head can separate: mean brightness low, middle, high."""
    rng = np.random.default_rng(3)
    y = np.arange(n) % 3
    x = rng.uniform(0, 80, (n, SIZE, SIZE, 3)) + 85.0 * y[:, None, None, None]
    return x.astype("float32"), y


@pytest.fixture(scope="module")
def tiny_backbone():
    """zoo.testing's tiny conv backbone (32x32), registered for this module's tests."""
    from zoo.testing import temporary_backbone

    with temporary_backbone() as spec:
        yield spec.name


@pytest.mark.parametrize("name", ["mixup", "cutmix", "random_crop"])
def test_fine_tune_with_each_augmentation_trains_on_its_labels_and_lowers_the_loss(
    name, tiny_backbone
):
    from zoo.data import augmentation

    x, y = _learnable_data()
    keras.utils.set_random_seed(0)
    model = build_classifier(tiny_backbone, 3, weights=None)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    before = float(loss(y, model.predict(x, verbose=0)))
    aug = augmentation([name], image_size=(SIZE, SIZE), seed=0)
    stage = Stage("head", FreezeBackbone(), 6, 3e-2, augment=aug, label_smoothing=0.1)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=0).batch(16)
    result = fine_tune(model, train, train, [stage], verbose=0)

    assert not result.stages[0].cache.used  # augmentation rules out the cache
    assert "augmentation" in result.stages[0].cache.reason
    after = float(loss(y, model.predict(x, verbose=0)))
    assert after < before - 0.05, (before, after)
    # Trained on (batch, classes) probabilities smoothed (then mixed) by the augmentation:
    # the loss must not smooth them a second time.
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    assert model.loss.get_config()["label_smoothing"] == 0


def test_auto_candidates_keep_xla_on_with_jax_and_off_on_a_tensorflow_cpu():
    assert candidates("auto", "auto", None, "tensorflow") == [(None, False), ("bfloat16", False)]
    on_gpu = candidates("auto", "auto", "gpu", "tensorflow")
    assert (None, True) in on_gpu and ("float16", False) in on_gpu and len(on_gpu) == 6
    # Keras-JAX without XLA runs op by op: compiled candidates only, on every device.
    assert candidates("auto", "auto", None, "jax") == [(None, True), ("bfloat16", True)]
    assert [j for _, j in candidates("auto", "auto", "gpu", "jax")] == [True, True, True]
    assert candidates(None, False, None, "jax") == [(None, False)]  # as given: not probed
