"""Each stage ends with its best validation epoch's weights; EMA; both exact across a resume."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.classifier import build_classifier
from zoo.errors import ZooError
from zoo.fingerprint import named_weights
from zoo.policies import FreezeBackbone, UnfreezeTop
from zoo.testing import CrashAfter
from zoo.training import Stage, fine_tune

SIZE = 32


@pytest.fixture(scope="module")
def tiny():
    """zoo.testing's tiny conv backbone (32x32), registered for this module's tests."""
    from zoo.testing import temporary_backbone

    with temporary_backbone() as spec:
        yield spec.name


def _data(n, seed, shift=0):
    """Three classes told apart by mean brightness, batched without reshuffling; ``shift``
    relabels class k as k + shift: validation that gets worse the better training fits."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.uniform(0, 80, (n, SIZE, SIZE, 3)) + 85.0 * y[:, None, None, None]
    labels = (y + shift) % 3
    return tf.data.Dataset.from_tensor_slices((x.astype("float32"), labels)).batch(16)


def _model(name, like=None):
    keras.utils.set_random_seed(0)
    model = build_classifier(name, 3, weights=None)
    if like is not None:
        for mine, theirs in zip(model.variables, like.variables, strict=True):
            mine.assign(theirs)
    return model


def _values(model):
    return {path: np.array(v) for path, v in named_weights(model)}


class _EpochWeights(keras.callbacks.Callback):
    """The model's weights after each epoch (after ours: the raw values, not averages)."""

    def __init__(self, model):
        super().__init__()
        self.full, self.seen = model, []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(_values(self.full))


def _stage(restore_best=True, ema=None, epochs=4, lr=0.05):
    return Stage(
        "top",
        UnfreezeTop(blocks=1, batchnorm="trainable"),
        epochs,
        lr,
        restore_best=restore_best,
        ema=ema,
    )


@pytest.mark.parametrize("restore_best", [True, False])
def test_a_stage_ends_with_its_best_epoch_and_frozen_weights_keep_their_bytes(tiny, restore_best):
    model = _model(tiny)
    before = _values(model)
    epochs = _EpochWeights(model)
    train, validation = _data(48, 1), _data(24, 2, shift=1)  # worse as training fits
    result = fine_tune(
        model, train, validation, [_stage(restore_best)], callbacks=[epochs], verbose=0
    )

    s = result.stages[0]
    losses = s.history["val_loss"]
    assert s.monitor == "val_loss" and s.best_epoch == int(np.argmin(losses)) + 1
    assert s.best_value == pytest.approx(min(losses))
    assert s.best_epoch < s.epochs_run, losses
    kept = s.best_epoch if restore_best else s.epochs_run
    assert s.kept_epoch == kept
    assert ("restored" in s.kept_reason) == restore_best, s.kept_reason
    after = _values(model)
    wanted = epochs.seen[kept - 1]
    frozen = result.frozen_in_all_stages
    assert any("bn0/moving_mean" in p for p in frozen)
    assert any("bn2/moving_mean" in p for p in after if p not in frozen)  # trainable BN
    changed = [p for p in after if not np.array_equal(after[p], wanted[p])]
    assert changed == []
    assert [p for p in frozen if after[p].tobytes() != before[p].tobytes()] == []
    # The weights kept are the ones validated at that epoch.
    assert model.evaluate(validation, verbose=0, return_dict=True)["loss"] == pytest.approx(
        losses[kept - 1], rel=1e-4
    )


def test_ema_validates_keeps_and_ends_with_the_averaged_weights(tiny):
    model = _model(tiny)
    validation = _data(24, 2)
    stage = _stage(restore_best=False, ema=0.5, epochs=2, lr=0.05)
    result = fine_tune(model, _data(48, 1), validation, [stage], verbose=0)

    s = result.stages[0]
    assert s.ema == 0.5 and "moving average" in s.kept_reason
    raw = s.without_ema
    assert set(raw) == {"val_loss", "val_accuracy"}
    # The history's validation was on the averages, which the model now holds.
    got = model.evaluate(validation, verbose=0, return_dict=True)["loss"]
    assert got == pytest.approx(s.history["val_loss"][-1], rel=1e-4)
    assert abs(raw["val_loss"] - got) > 1e-6  # the raw weights differ from their average


def test_ema_with_per_block_learning_rates_under_the_cache(tiny):
    model = _model(tiny)
    before = _values(model)
    stages = [
        Stage("head", FreezeBackbone(), 2, 0.05, ema=0.9),
        Stage(
            "top",
            UnfreezeTop(blocks=2, batchnorm="frozen", lr_decay=0.5),
            2,
            0.01,
            optimizer="adamw",
            ema=0.9,
        ),
    ]
    result = fine_tune(model, _data(48, 1), _data(24, 2), stages, verbose=0)
    assert [s.cache.used for s in result.stages] == [True, True]
    assert all(s.without_ema and s.kept_epoch for s in result.stages)
    after = _values(model)
    frozen = result.frozen_in_all_stages
    assert frozen and all(after[p].tobytes() == before[p].tobytes() for p in frozen)


def test_resume_restores_the_same_best_epoch_bitwise(tiny, tmp_path):
    def stages():
        return [Stage("head", FreezeBackbone(), 1, 0.05), _stage(ema=0.5, epochs=4)]

    whole = _model(tiny)
    crashed, resumed = _model(tiny, like=whole), _model(tiny, like=whole)
    reference = fine_tune(whole, _data(48, 1), _data(24, 2, 1), stages(), verbose=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fine_tune(
            crashed,
            _data(48, 1),
            _data(24, 2, 1),
            stages(),
            run_dir=tmp_path,
            callbacks=[CrashAfter(4)],  # the head's epoch and three of the top's
            verbose=0,
        )
    again = fine_tune(
        resumed, _data(48, 1), _data(24, 2, 1), stages(), run_dir=tmp_path, resume=True, verbose=0
    )

    ref, got = reference.stages[1], again.stages[1]
    assert got.resumed_at_epoch == 3 and ref.best_epoch < 4  # the best came before the crash
    assert (got.best_epoch, got.kept_epoch) == (ref.best_epoch, ref.kept_epoch)
    a, b = _values(whole), _values(resumed)
    assert [p for p in a if a[p].tobytes() != b[p].tobytes()] == []


def test_monitor_and_ema_are_validated():
    with pytest.raises(ZooError, match=r"monitor must name a validation metric.*ema must be"):
        Stage("s", FreezeBackbone(), 1, 1e-3, monitor="accuracy", ema=1.5)


def test_an_unknown_monitor_names_the_metrics_there_are(tiny):
    stage = Stage("s", FreezeBackbone(), 1, 1e-2, monitor="val_top5")
    with pytest.raises(ZooError, match=r"'val_top5' is not one of .*'val_accuracy'"):
        fine_tune(_model(tiny), _data(16, 1), _data(16, 2), [stage], verbose=0)
