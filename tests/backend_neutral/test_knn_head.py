"""``zoo.KNNHead`` on the current backend: votes, stored memory in .keras files, errors."""

import keras
import numpy as np
import pytest

import zoo
from zoo.errors import InvalidValueError


def _model(k):
    inputs = keras.Input((4,))
    return keras.Model(inputs, zoo.KNNHead(num_classes=3, k=k)(inputs))


def _memory():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 4, dtype="float32") * 5
    labels = np.array([0, 0, 1, 1, 1, 2])
    return centres[labels] + 0.1 * rng.normal(size=(6, 4)).astype("float32"), labels


def test_votes_of_the_nearest_stored_embeddings(tmp_path):
    vectors, labels = _memory()
    model = _model(k=1)
    assert model.weights == []  # the memory is constant data, not variables
    model.get_layer(index=1).set_memory(vectors, labels)
    logits = keras.ops.convert_to_numpy(model(vectors))
    assert logits.argmax(-1).tolist() == labels.tolist()
    np.testing.assert_allclose(np.exp(logits).sum(-1), 1.0, atol=2e-3)  # shares of the votes
    # k = 3 around a class-1 point: three class-1 neighbours outvote anything else.
    three = _model(k=3)
    three.get_layer(index=1).set_memory(vectors, labels)
    share = np.exp(keras.ops.convert_to_numpy(three(vectors[2:3])))[0]
    np.testing.assert_allclose(share, [0, 1, 0], atol=2e-3)
    # The memory travels in the .keras file.
    model.save(tmp_path / "knn.keras")
    again = keras.saving.load_model(tmp_path / "knn.keras", safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(vectors)), logits, atol=1e-6)


def test_bad_memory_and_arguments_are_refused():
    model = _model(k=2)
    head = model.get_layer(index=1)
    with pytest.raises(InvalidValueError, match=r"labels must be in \[0, 3\)"):
        head.set_memory(np.ones((2, 4)), np.array([0, 3]))
    with pytest.raises(InvalidValueError, match="the backbone gives 4"):
        head.set_memory(np.ones((2, 5)), np.array([0, 1]))
    with pytest.raises(InvalidValueError, match="k must be an int >= 1"):
        zoo.KNNHead(num_classes=3, k=0)
    with pytest.raises(InvalidValueError, match="pooling must be 'avg' or 'max'"):
        zoo.KNNHead(num_classes=3, pooling="gem")
