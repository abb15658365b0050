"""Shared test setup: offline, isolated caches, quiet TensorFlow, fresh Keras state."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["ZOO_OFFLINE"] = "1"  # never try the network from tests

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory):
    """Points Keras' and zoo's caches at a per-session temporary directory."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["KERAS_HOME"] = str(root / "keras")
    os.environ["ZOO_HOME"] = str(root / "zoo")
    yield root


@pytest.fixture(autouse=True)
def fresh_keras_session():
    """Each test starts from a cleared Keras session with a fixed seed."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
