"""Decoding images to RGB uint8, the same way in training and in serving.

One function, :func:`decode_rgb` (Pillow), both validates the files before training and
decodes them during training, so a file that passed validation cannot fail mid-epoch.
:func:`decode_image_bytes` (TensorFlow) decodes encoded bytes inside a graph, for the
SavedModel's ``serve_bytes`` and the Predictor, and gives the same pixels.

The one behaviour: pixels as stored, EXIF orientation ignored, as TensorFlow's decoders
and ``keras.utils.image_dataset_from_directory`` do. A phone photo whose EXIF tag says
"rotate" is seen unrotated in training and in serving alike; rotate such files once
(``PIL.ImageOps.exif_transpose``) if they should be upright. JPEGs are decoded with
libjpeg's accurate integer DCT on both paths (TensorFlow's default, the fast DCT, differs
by a few levels).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.errors import InvalidValueError

# Extensions looked at in a class folder; other files (README, .DS_Store) are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp")
# Formats Pillow may report for such files (the content decides, not the extension).
IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "DIB", "GIF", "WEBP"})
# Modes holding more than 8 bits per sample: scaled down, not clipped (see _to_rgb).
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def decode_rgb(path: str | os.PathLike, exif_transpose: bool = False) -> np.ndarray:
    """Reads an image file as RGB pixels.

    Greyscale, palette, RGBA (alpha dropped, as TensorFlow's decoders do), CMYK, YCbCr and
    16-bit images are all converted; animated GIF/WebP give their first frame. The EXIF
    orientation tag is ignored, as in serving (see the module docstring).

    Args:
        path: the image file.
        exif_transpose: apply the EXIF orientation tag instead (then served images must be
            rotated the same way before they reach the model).

    Returns:
        uint8 array of shape ``(height, width, 3)``.

    Raises:
        OSError, ValueError, PIL.UnidentifiedImageError, Image.DecompressionBombError: for a
            file Pillow cannot read completely (truncated, not an image, unsupported format).
    """
    with warnings.catch_warnings():
        # Palette-with-transparency and EXIF warnings are harmless here.
        warnings.simplefilter("ignore", UserWarning)
        with Image.open(path) as image:
            if image.format not in IMAGE_FORMATS:
                raise InvalidValueError(
                    f"format {image.format} is not one of {', '.join(sorted(IMAGE_FORMATS))}"
                )
            image.load()  # decodes everything: a truncated file fails here, not later
            if exif_transpose:
                image = ImageOps.exif_transpose(image)
            return _to_rgb(image)


def decode_image_bytes(data: tf.Tensor) -> tf.Tensor:
    """Decodes one encoded image (JPEG, PNG, GIF, BMP) in a TensorFlow graph.

    The serving twin of :func:`decode_rgb`: same pixels for the same file (EXIF
    orientation ignored, JPEG with the accurate integer DCT, first frame of a GIF,
    greyscale repeated to RGB, alpha dropped). Call it in ``serve_bytes`` and wherever
    a model is fed encoded bytes.

    Args:
        data: scalar string tensor, the file's bytes.

    Returns:
        uint8 tensor ``(height, width, 3)``.

    Raises:
        tf.errors.InvalidArgumentError: at run time, for bytes that are not such an image.
    """

    def jpeg() -> tf.Tensor:
        return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

    def other() -> tf.Tensor:
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)

    image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in _WIDE_MODES:
        # Pillow's convert("RGB") clips 16-bit values at 255; scale 0..65535 -> 0..255.
        wide = np.asarray(image, dtype=np.int64)
        grey = np.clip((wide + 128) // 257, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.asarray(image), 0, 255).round().astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def check_image(path: str | os.PathLike, exif_transpose: bool = False) -> str | None:
    """Decodes ``path`` once; returns ``None`` if it is usable, else the reason it is not."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        pixels = decode_rgb(path, exif_transpose)
    except FileNotFoundError:
        return "cannot read: missing (broken link?)"
    except PermissionError:
        return "cannot read: permission denied"
    except UnidentifiedImageError:
        return "not an image Pillow can identify"
    except Image.DecompressionBombError as error:
        return f"too large to decode safely ({error})"
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        reason = str(error) or type(error).__name__
        return f"cannot decode: {reason}"
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        return f"image has no pixels (shape {pixels.shape})"
    return None


def check_images(
    paths: Sequence[str | os.PathLike], exif_transpose: bool = False, threads: int | None = None
) -> list[str | None]:
    """:func:`check_image` for each path, in parallel threads (Pillow releases the GIL)."""
    threads = threads or min(8, os.cpu_count() or 1)
    if threads <= 1 or len(paths) < 16:
        return [check_image(p, exif_transpose) for p in paths]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda p: check_image(p, exif_transpose), paths))


def list_class_files(root: Path) -> tuple[list[str], dict[str, list[Path]]]:
    """Class names (sorted sub-folder names) and each class's image files (sorted, recursive).

    Hidden files and folders (names starting with ".") are ignored, and so are files whose
    extension is not in :data:`IMAGE_EXTENSIONS`.
    """
    classes = sorted(
        entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    files: dict[str, list[Path]] = {}
    for name in classes:
        found = []
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [
                Path(dirpath) / f
                for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
            ]
        files[name] = found
    return classes, files
