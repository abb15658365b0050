"""The SavedModel export refuses other backends up front, in one line that says the fix."""

import importlib.util

import pytest

from recipes import export
from zoo.errors import ZooError


def test_export_without_tensorflow_installed_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(export.keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ZooError, match=r"needs TensorFlow, which is not installed") as info:
        export.export_saved_model(object(), tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message and "pip install tensorflow" in message
    assert "KERAS_BACKEND=tensorflow" in message and "model.keras" in message
    assert not (tmp_path / "out").exists()


def test_export_on_another_backend_says_to_switch(monkeypatch, tmp_path):
    monkeypatch.setattr(export.keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(ZooError, match=r"needs the TensorFlow backend; Keras runs on 'jax'"):
        export.export_saved_model(object(), tmp_path / "out")
