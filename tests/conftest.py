"""Shared test setup: a fresh Keras state for each test (offline and isolated caches: the
root conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def fresh_keras_session():
    """Each test starts from a cleared Keras session with a fixed seed."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
