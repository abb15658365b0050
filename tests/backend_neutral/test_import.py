"""`import zoo` and model building never need TensorFlow (GPU machines with JAX often have none)."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import pytest

# TensorFlow made unimportable before anything else runs: `import tensorflow` raises.
_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["tensorflow"] = None
    import zoo
    assert "zoo.training" not in sys.modules, "import zoo loaded the training loop eagerly"
    model = zoo.build_classifier(
        "efficientnet_lite0", 3, weights=None, input_shape=(32, 32, 3)
    )
    zoo.UnfreezeTop(blocks=1).apply(model)
    zoo.fingerprint.manifest(model)
    assert callable(zoo.fine_tune) and zoo.Stage.__name__ == "Stage"  # loaded on first use
    print("ok")
    """
)


def _backend_without_tensorflow() -> str:
    """This run's backend when it is not TensorFlow, else another one that is installed."""
    if keras.backend.backend() != "tensorflow":
        return keras.backend.backend()
    for name, module in (("jax", "jax"), ("torch", "torch")):
        if importlib.util.find_spec(module) is not None:
            return name
    pytest.skip("no Keras backend other than TensorFlow is installed")


def test_import_zoo_and_build_a_classifier_without_tensorflow():
    env = {**os.environ, "KERAS_BACKEND": _backend_without_tensorflow()}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")
