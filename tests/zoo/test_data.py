"""Tests for zoo.data: sources, splits, corrupt files, colour modes, pipelines, augmentation."""

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoo import data
from zoo.data import fashion_mnist, sources

# -- fixtures -----------------------------------------------------------------------------


def _save(path: Path, image: Image.Image, fmt: str | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return path


def _rgb(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _make_good_folder(root: Path, per_class: int = 5) -> list[str]:
    """3 classes, ``per_class`` images each, in every supported format; returns rel paths."""
    formats = [("jpg", "JPEG"), ("png", "PNG"), ("bmp", "BMP"), ("gif", "GIF"), ("webp", "WEBP")]
    rel = []
    for c, name in enumerate(["cat", "dog", "fox"]):
        for i in range(per_class):
            ext, fmt = formats[i % len(formats)]
            image = _rgb(100 * c + i, size=(40 + i, 30))
            _save(root / name / f"img{i}.{ext}", image, fmt)
            rel.append(f"{name}/img{i}.{ext}")
    return rel


def _add_broken(root: Path) -> dict[str, str]:
    """Five kinds of broken file; returns {absolute path: kind}."""
    jpeg = io.BytesIO()
    _rgb(7).save(jpeg, "JPEG")
    png = io.BytesIO()
    _rgb(8).save(png, "PNG")
    corrupt_png = bytearray(png.getvalue())
    middle = len(corrupt_png) // 2
    corrupt_png[middle : middle + 20] = b"\xff" * 20  # damages the compressed pixel data
    broken = {
        root / "cat" / "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        root / "dog" / "text.jpg": b"this is not a JPEG at all\n",
        root / "dog" / "zero.png": b"",
        root / "fox" / "corrupt.png": bytes(corrupt_png),
    }
    for path, content in broken.items():
        path.write_bytes(content)
    unreadable = root / "fox" / "unreadable.jpg"
    os.symlink(root / "no-such-target.jpg", unreadable)  # unreadable even for root
    kinds = ["truncated", "text", "zero", "corrupt", "unreadable"]
    return {str(p): k for p, k in zip([*broken, unreadable], kinds, strict=True)}


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    good = _make_good_folder(root)
    bad = _add_broken(root)
    return root, good, bad


@pytest.fixture(scope="module")
def fashion():
    """The real Fashion-MNIST from Debian's package, parsed once for this module."""
    return data.load("fashion_mnist", validation_fraction=0.1, seed=0)


# -- Fashion-MNIST ------------------------------------------------------------------------


def test_fashion_mnist_real_counts_shapes_and_labels(fashion):
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[-1] == "Ankle boot"
    assert len(fashion.class_names) == 10
    n_train, n_val = fashion.num_examples("train"), fashion.num_examples("validation")
    assert n_train + n_val == 60_000
    assert 0.09 * 60_000 < n_val < 0.11 * 60_000
    assert fashion.num_examples("test") == 10_000
    train, val = fashion.class_counts("train"), fashion.class_counts("validation")
    assert all(train[c] + val[c] == 6_000 for c in fashion.class_names)
    assert set(fashion.class_counts("test").values()) == {1_000}
    assert fashion.origin == str(sources.DEBIAN_FASHION_MNIST_DIR)
    image, label = next(iter(fashion.test))
    assert image.shape == (28, 28, 3) and image.dtype == tf.uint8 and label.dtype == tf.int64
    assert np.array_equal(image[..., 0], image[..., 2])  # greyscale repeated
    # The first test image of Fashion-MNIST is an ankle boot (label 9).
    assert int(label) == 9


def test_fashion_mnist_pipeline_resizes_in_batches(fashion):
    batches = fashion.pipeline("validation", (64, 48), batch_size=16, training=False)
    images, labels = next(iter(batches))
    assert images.shape == (16, 64, 48, 3) and images.dtype == tf.float32
    assert labels.shape == (16,) and labels.dtype == tf.int64
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0
    first, _ = next(iter(fashion.validation))
    expected = tf.image.resize(tf.cast(first, tf.float32), (64, 48))
    np.testing.assert_allclose(images[0].numpy(), np.clip(expected.numpy(), 0, 255), atol=1e-3)


def test_fashion_mnist_missing_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(data.DatasetUnavailableError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist")
    with pytest.raises(FileNotFoundError, match=r"keras/datasets/fashion-mnist"):
        data.load("fashion_mnist")


def _write_idx(path: Path, array: np.ndarray, magic: bytes | None = None) -> None:
    header = magic or bytes([0, 0, 8, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + dims + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_keras_cache_and_idx_validation(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cache = tmp_path / "keras" / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 40), ("t10k", 20)):
        _write_idx(cache / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(cache / f"{part}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    small = data.load("fashion_mnist", validation_fraction=0.0)
    assert small.num_examples("train") == 40 and small.num_examples("test") == 20
    assert small.validation is None and small.origin == str(cache)

    _write_idx(cache / "t10k-labels-idx1-ubyte.gz", np.arange(20), magic=b"\0\0\x09\x01")
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        data.load("fashion_mnist")
    with gzip.open(cache / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (20).to_bytes(4, "big") + bytes(5))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.load("fashion_mnist")


# -- image folders: corrupt files, strict mode, one training step -------------------------


def test_folder_skips_exactly_the_broken_files_and_trains(broken_folder):
    root, good, bad = broken_folder
    ds = data.load(f"folder:{root}", validation_fraction=0.2, seed=0)
    assert ds.class_names == ["cat", "dog", "fox"]
    assert {p for p, _ in ds.skipped} == set(bad)
    reasons = dict(ds.skipped)
    assert "0 bytes" in reasons[str(root / "dog" / "zero.png")]
    assert "cannot read" in reasons[str(root / "fox" / "unreadable.jpg")]
    loaded = ds.identities("train") + ds.identities("validation")
    assert sorted(loaded) == sorted(good)

    train = ds.pipeline("train", (32, 32), batch_size=4, training=True, augment=["flip"])
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(train, epochs=1, verbose=0)  # a whole epoch: no decode error mid-epoch
    assert np.isfinite(history.history["loss"][0])


def test_folder_strict_refuses_naming_every_broken_file(broken_folder):
    root, _, bad = broken_folder
    with pytest.raises(data.CorruptImagesError, match="5 file") as info:
        data.load(f"folder:{root}", strict=True)
    for path in bad:
        assert path in str(info.value)


def test_folder_structure_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'missing'}")
    _save(tmp_path / "one" / "only" / "a.png", _rgb(0))
    with pytest.raises(ValueError, match="at least 2 classes"):
        data.load(f"folder:{tmp_path / 'one'}")
    _save(tmp_path / "two" / "a" / "x.png", _rgb(0))
    (tmp_path / "two" / "b").mkdir()
    (tmp_path / "two" / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"Empty class folder\(s\) .*: b "):
        data.load(f"folder:{tmp_path / 'two'}")
    (tmp_path / "two" / "b" / "bad.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="b in .* have no decodable image"):
        data.load(f"folder:{tmp_path / 'two'}")
    with pytest.raises(ValueError, match="Unknown option.*bogus"):
        data.load(f"folder:{tmp_path / 'two'}", bogus=1)
    with pytest.raises(ValueError, match="Unknown data source"):
        data.load("imagenet")


# -- colour modes -------------------------------------------------------------------------


def _mode_images(root: Path) -> dict[str, tuple[Path, tuple[int, int, int]]]:
    """One file per mode, with the RGB value expected at pixel (0, 0)."""
    w, h = 24, 16
    grey = Image.new("L", (w, h), 77)
    rgba = Image.new("RGBA", (w, h), (10, 200, 30, 0))
    palette = Image.new("P", (w, h), 1)
    palette.putpalette([0, 0, 0, 250, 20, 60] + [0] * 762)
    cmyk = Image.new("CMYK", (w, h), (0, 0, 0, 0))  # no ink = white
    wide = Image.fromarray(np.full((h, w), 32896, dtype=np.uint16))  # 128 * 257
    return {
        "L": (_save(root / "grey.png", grey), (77, 77, 77)),
        "RGBA": (_save(root / "rgba.png", rgba), (10, 200, 30)),
        "P": (_save(root / "palette.gif", palette), (250, 20, 60)),
        "CMYK": (_save(root / "cmyk.jpg", cmyk, "JPEG", quality=100), (255, 255, 255)),
        "I;16": (_save(root / "wide.png", wide), (128, 128, 128)),
    }


def test_every_mode_decodes_to_rgb_uint8(tmp_path):
    for mode, (path, expected) in _mode_images(tmp_path).items():
        with Image.open(path) as im:
            assert im.mode.startswith(mode[:1]), (mode, im.mode)
        pixels = data.decode_rgb(path)
        assert pixels.shape == (16, 24, 3) and pixels.dtype == np.uint8, mode
        np.testing.assert_allclose(pixels[0, 0], expected, atol=2, err_msg=mode)


def test_modes_through_folder_and_pipeline(tmp_path):
    images = _mode_images(tmp_path / "src")
    for i, (path, _) in enumerate(images.values()):
        target = tmp_path / "ds" / ("a" if i % 2 else "b") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    ds = data.load(f"folder:{tmp_path / 'ds'}", validation_fraction=0.0)
    assert ds.skipped == []
    for image, _ in ds.train:
        assert image.shape == (16, 24, 3) and image.dtype == tf.uint8
    batches = ds.pipeline("train", (20, 10), batch_size=8, crop_to_aspect_ratio=True)
    x, y = next(iter(batches))
    assert x.shape == (5, 20, 10, 3) and x.dtype == tf.float32 and y.shape == (5,)


def test_crop_to_aspect_ratio_keeps_the_centre():
    image = np.zeros((10, 30, 3), np.uint8)
    image[:, 10:20] = 255  # white centre third
    out = data.resize(image, (10, 10), crop_to_aspect_ratio=True, method="nearest")
    assert float(tf.reduce_min(out)) == 255.0
    stretched = data.resize(image, (10, 10), method="nearest")
    assert float(tf.reduce_min(stretched)) == 0.0


# -- tfds ---------------------------------------------------------------------------------


def test_tfds_flowers_under_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30):
        ds = data.load("tfds:tf_flowers", validation_fraction=0.3, seed=1)
        assert ds.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
        train = [int(y) for _, y in ds.train]
        val = [int(y) for _, y in ds.validation]
        assert len(train) + len(val) == 30 and 0 < len(val) < 30
        x, y = next(iter(ds.pipeline("train", (32, 32), batch_size=4, training=True)))
        assert x.shape == (4, 32, 32, 3) and y.dtype == tf.int64
        small = data.load("tfds:tf_flowers", validation_fraction=0.0, per_class=1)
        assert len(list(small.train)) == small.num_examples("train") <= 5


def test_tfds_offline_not_prepared_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(data.DatasetUnavailableError, match="not prepared.*tfds build tf_flowers"):
        data.load("tfds:tf_flowers", data_dir=str(tmp_path))


# -- splits -------------------------------------------------------------------------------

_CHILD = """
import json, sys
from zoo import data
ds = data.load("folder:" + sys.argv[1], validation_fraction=0.3, seed=0)
print(json.dumps(sorted(ds.identities("validation"))))
"""


def test_split_is_stable_across_processes_and_additions(tmp_path):
    root = tmp_path / "photos"
    _make_good_folder(root, per_class=8)
    here = data.load(f"folder:{root}", validation_fraction=0.3, seed=0)
    validation = sorted(here.identities("validation"))
    assert 0 < len(validation) < 24

    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # Python's hash() must not matter
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD), str(root)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(child.stdout.strip().splitlines()[-1]) == validation

    other = data.load(f"folder:{root}", validation_fraction=0.3, seed=1)
    assert sorted(other.identities("validation")) != validation

    _save(root / "dog" / "new.png", _rgb(999))
    grown = data.load(f"folder:{root}", validation_fraction=0.3, seed=0)
    grown_val = set(grown.identities("validation"))
    grown_train = set(grown.identities("train"))
    assert grown_val - {"dog/new.png"} == set(validation)
    assert grown_train - {"dog/new.png"} == set(here.identities("train"))
    # The fingerprint changes for the split that got the new file, and only for it.
    changed = "validation" if "dog/new.png" in grown_val else "train"
    for split in ("train", "validation"):
        same = grown.fingerprint(split) == here.fingerprint(split)
        assert same == (split != changed), split


def test_array_splits_subsampling_and_fingerprints():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1000, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(4), [400, 300, 200, 100])
    a = data.load((x, y), validation_fraction=0.2, seed=0)
    b = data.load((x, y), validation_fraction=0.2, seed=0)
    c = data.load((x, y), validation_fraction=0.2, seed=3)
    assert a.identities("validation") == b.identities("validation")
    assert a.identities("validation") != c.identities("validation")
    assert a.fingerprint("validation") == b.fingerprint("validation")
    assert a.fingerprint("validation") != c.fingerprint("validation")
    assert a.fingerprint("train") != a.fingerprint("validation")
    assert 150 < a.num_examples("validation") < 250

    sub = data.load((x, y), validation_fraction=0.2, seed=0, train_size=100)
    assert sub.num_examples("train") == 100
    available = np.array(list(a.class_counts("train").values()))
    kept = np.array(list(sub.class_counts("train").values()))
    assert np.all(np.abs(kept - 100 * available / available.sum()) < 1)  # stratified
    assert sub.identities("validation") == a.identities("validation")
    assert set(sub.identities("train")) <= set(a.identities("train"))
    per = data.load((x, y), validation_fraction=0.2, seed=0, per_class=5)
    again = data.load((x, y), validation_fraction=0.2, seed=0, per_class=5)
    other = data.load((x, y), validation_fraction=0.2, seed=9, per_class=5)
    assert set(per.class_counts("train").values()) == {5}
    assert per.identities("train") == again.identities("train") != other.identities("train")
    image, _ = next(iter(per.train))
    assert image.shape == (8, 8, 3) and image.dtype == tf.uint8

    x2 = x.copy()
    x2[0, 0, 0] ^= 1  # one pixel of example "0" changes: its split's fingerprint must change
    home = "train" if "0" in a.identities("train") else "validation"
    changed = data.load((x2, y), validation_fraction=0.2, seed=0)
    assert changed.fingerprint(home) != a.fingerprint(home)


def test_array_errors():
    x = np.zeros((6, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"out of range: \[3\]"):
        data.load((x, np.array([0, 1, 2, 3, 0, 1])), class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"out of range: \[-1\]"):
        data.load((x, np.array([0, 1, -1, 1, 0, 1])))
    with pytest.raises(ValueError, match="at least 2"):
        data.load((x, np.zeros(6, int)))
    with pytest.raises(ValueError, match="2 channels"):
        data.load((np.zeros((6, 4, 4, 2), np.uint8), np.arange(6) % 2))
    with pytest.raises(ValueError, match=r"y has shape \(5,\)"):
        data.load((x, np.arange(5) % 2))
    with pytest.raises(ValueError, match="validation_fraction=1.5"):
        data.load((x, np.arange(6) % 2), validation_fraction=1.5)


# -- pipeline and augmentation ------------------------------------------------------------


def _toy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 12, 12, 3), dtype=np.uint8)
    return data.load((x, np.arange(64) % 4), validation_fraction=0.25, seed=0)


def test_training_order_is_seeded_and_eval_is_in_order():
    ds = _toy()

    def labels(pipe):
        return np.concatenate([y.numpy() for _, y in pipe])

    def ids(seed):
        return labels(ds.pipeline("train", (8, 8), 8, training=True, seed=seed))

    assert np.array_equal(ids(0), ids(0))
    assert not np.array_equal(ids(0), ids(1))
    plain = labels(ds.pipeline("train", (8, 8), 8, training=False))
    in_order = np.array([int(y) for _, y in ds.train])
    assert np.array_equal(plain, in_order) and not np.array_equal(ids(0), in_order)


def test_mixup_makes_one_hot_labels_and_eval_is_not_augmented():
    ds = _toy()
    train = ds.pipeline("train", (12, 12), 8, training=True, augment={"mixup": 0.4, "flip": True})
    x, y = next(iter(train))
    assert y.shape == (8, 4) and y.dtype == tf.float32
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert np.any((y.numpy() > 0.01) & (y.numpy() < 0.99))  # some labels were mixed

    val = ds.pipeline("validation", (12, 12), 8, training=False, augment=["mixup", "rotation"])
    xv, yv = next(iter(val))
    assert yv.shape == (8, 4) and set(np.unique(yv.numpy())) <= {0.0, 1.0}
    first = np.stack([x.numpy() for x, _ in ds.validation.take(8)]).astype(np.float32)
    np.testing.assert_allclose(xv.numpy(), first, atol=1e-3)  # same size: pixels untouched


def test_augmentation_stack_order_config_and_errors():
    stack = data.augmentation(
        {"cutmix": True, "rand_augment": {"num_ops": 1}, "zoom": 0.2, "flip": "vertical"}
    )
    kinds = [type(layer).__name__ for layer in (*stack.layers, *stack.mixes)]
    assert kinds == ["RandomFlip", "RandomZoom", "RandAugment", "CutMix"]
    assert stack.layers[0].mode == "vertical" and data.mixes_labels(stack)
    assert not data.mixes_labels(data.augmentation("flip,rotation"))
    with pytest.raises(ValueError, match="Unknown augmentation.*sharpen"):
        data.augmentation(["flip", "sharpen"])
    with pytest.raises(ValueError, match="crop needs image_size"):
        data.augmentation(["crop"])
    with pytest.raises(ValueError, match="image_size=.*batch_size=0"):
        data.pipeline(_toy().train, (0, 4), 0)

    ds = _toy()
    # RandAugment is only built above: tracing it in tf.data takes ~15 s on 2 cores.
    crop = ds.pipeline("train", (10, 10), 8, training=True, augment=["crop", "zoom"])
    x, y = next(iter(crop))
    assert x.shape == (8, 10, 10, 3) and y.dtype == tf.int64
    assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 255.0


def test_cli_datasets_lists_sources(capsys):
    from recipes.cli import main

    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist" in out and "tfds:tf_flowers" in out and "folder:PATH" in out
    line = next(row for row in out.splitlines() if row.startswith("fashion_mnist"))
    assert line.split()[1] == "yes"
