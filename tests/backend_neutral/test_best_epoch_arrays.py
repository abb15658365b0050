"""The best epoch and EMA on ``(x, y)`` arrays, on whichever Keras backend runs the tests:
the stage ends with the weights it validated best, averaged, frozen ones untouched."""

import keras
import numpy as np
import pytest

import zoo
from zoo.fingerprint import named_weights
from zoo.policies import UnfreezeTop
from zoo.testing import temporary_backbone
from zoo.training import Stage, fine_tune

SIZE, BATCH = 32, 16


@pytest.fixture(scope="module")
def tiny():
    with temporary_backbone() as spec:
        yield spec


def _arrays(n, seed, shift=0):
    """Classes told apart by brightness; ``shift`` relabels them (validation that gets worse
    as training fits)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.uniform(0, 80, (n, SIZE, SIZE, 3)) + 85.0 * y[:, None, None, None]
    return x.astype("uint8"), (y + shift) % 3


def test_best_epoch_with_ema_on_arrays(tiny):
    keras.utils.set_random_seed(0)
    model = zoo.build_classifier(tiny.name, 3, weights=None, input_shape=(SIZE, SIZE, 3))
    before = {p: np.array(v) for p, v in named_weights(model)}
    stage = Stage("top", UnfreezeTop(blocks=1, batchnorm="trainable"), 3, 0.05, ema=0.5)
    x_val, y_val = _arrays(32, 2, shift=1)
    result = fine_tune(model, _arrays(48, 1), (x_val, y_val), [stage], batch_size=BATCH, verbose=0)

    s = result.stages[0]
    losses = s.history["val_loss"]
    assert s.kept_epoch == s.best_epoch == int(np.argmin(losses)) + 1 and s.best_epoch < 3
    assert set(s.without_ema) >= {"val_loss", "val_accuracy"}
    got = model.evaluate(x_val.astype("float32"), y_val, batch_size=BATCH, verbose=0)
    assert (got[0] if isinstance(got, list) else got) == pytest.approx(
        losses[s.kept_epoch - 1], rel=1e-4
    )
    after = {p: np.array(v) for p, v in named_weights(model)}
    assert [
        p for p in result.frozen_in_all_stages if after[p].tobytes() != before[p].tobytes()
    ] == []
