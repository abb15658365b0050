"""Tests for zoo.data.images: training and serving decode an image to the same pixels."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoo import data

ORIENTATION = 0x0112  # EXIF tag; 6 means "rotate 90 degrees clockwise to display"


def _photo(width=48, height=32) -> np.ndarray:
    """A smooth, asymmetric picture (a rotation changes it), like a photo."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 5, y * 7, (x + 2 * y) * 2], axis=-1).clip(0, 255).astype(np.uint8)


def _encoded(fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_photo()).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return _encoded("JPEG", quality=90, exif=exif)


@pytest.mark.parametrize("kind", ["rotated_jpeg", "jpeg_444", "png", "gif", "bmp"])
def test_training_and_serving_decode_the_same_pixels(tmp_path, kind):
    raw = {
        "rotated_jpeg": _rotated_jpeg,
        "jpeg_444": lambda: _encoded("JPEG", quality=75, subsampling=0),
        "png": lambda: _encoded("PNG"),
        "gif": lambda: _encoded("GIF"),
        "bmp": lambda: _encoded("BMP"),
    }[kind]()
    path = tmp_path / f"image.{kind.split('_')[-1]}"
    path.write_bytes(raw)
    if kind == "rotated_jpeg":
        with Image.open(path) as image:
            assert image.getexif()[ORIENTATION] == 6  # the tag really is there

    training = data.decode_rgb(path)  # what a folder source feeds the model
    serving = data.decode_image_bytes(tf.constant(raw)).numpy()  # what serve_bytes sees
    assert training.shape == serving.shape == (32, 48, 3)  # stored orientation, not rotated
    np.testing.assert_array_equal(training, serving)
    # TensorFlow's plain decoder agrees on the orientation (its fast DCT rounds differently).
    plain = tf.io.decode_image(raw, channels=3, expand_animations=False).numpy()
    assert plain.shape == serving.shape


def test_folder_source_and_graph_decode_ignore_exif_rotation(tmp_path):
    raw = _rotated_jpeg()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "photo.jpg").write_bytes(raw)
    ds = data.load(f"folder:{tmp_path}", validation_fraction=0.0)
    image, _ = next(iter(ds.train))
    decode = tf.function(data.decode_image_bytes, input_signature=[tf.TensorSpec([], tf.string)])
    np.testing.assert_array_equal(image.numpy(), decode(tf.constant(raw)).numpy())
    upright = data.load(f"folder:{tmp_path}", validation_fraction=0.0, exif_transpose=True)
    assert next(iter(upright.train))[0].shape == (48, 32, 3)  # the opt-in still rotates
