"""Predictor: every input kind, resizing, clear errors, threads, and `zoo predict`."""

import threading

import export_testlib as lib
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from recipes import cli
from recipes.export import export_saved_model
from recipes.predict import Predictor


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = lib.build_model()
    lib.freeze_backbone(model)
    path = export_saved_model(model, tmp_path_factory.mktemp("predict") / "export").path
    return model, path, Predictor(path, top_k=2)


def _images(n: int, seed: int, size=lib.INPUT_SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3)).astype(np.uint8)


def _keras_probabilities(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    logits = model(np.asarray(pixels, np.float32))
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits))


def test_every_input_kind_gives_the_keras_models_probabilities(exported, tmp_path):
    model, _, predictor = exported
    batch = _images(3, seed=1)
    expected = _keras_probabilities(model, batch)
    png = tmp_path / "first.png"
    Image.fromarray(batch[0]).save(png)
    inputs = {
        "uint8 batch": (batch, expected),
        "float batch": (batch.astype(np.float64), expected),
        "int64 batch": (batch.astype(np.int64), expected),
        "single array": (batch[1], expected[1:2]),
        "tf.Tensor": (tf.constant(batch, tf.float32), expected),
        "tf.Variable": (tf.Variable(batch.astype(np.float32)), expected),
        "PIL image": (Image.fromarray(batch[2]), expected[2:]),
        "path": (str(png), expected[:1]),
        "bytes": (png.read_bytes(), expected[:1]),
        "mixed list": ([png, batch[1], Image.fromarray(batch[2])], expected),
    }
    for name, (images, wanted) in inputs.items():
        np.testing.assert_allclose(predictor.probabilities(images), wanted, atol=1e-5, err_msg=name)


def test_webp_predicts_as_in_training(exported, tmp_path, capsys):
    # One set of image formats for training and prediction: WebP is read by Pillow in
    # training; serve_bytes cannot decode it, so zoo predict reads it the training way.
    from zoo.data import decode_rgb

    model, path, predictor = exported
    batch = _images(2, seed=3)
    webp = tmp_path / "lossless.webp"
    Image.fromarray(batch[0]).save(webp, lossless=True)
    lossy = tmp_path / "lossy.webp"
    Image.fromarray(batch[1]).save(lossy, quality=50)
    expected = _keras_probabilities(model, np.stack([batch[0], decode_rgb(lossy)]))
    np.testing.assert_allclose(predictor.probabilities([webp, lossy]), expected, atol=1e-5)
    assert cli.main(["predict", str(path), str(webp)]) == 0
    assert "lossless.webp" in capsys.readouterr().out


def test_predict_returns_top_k_names_sorted_by_probability(exported):
    model, _, predictor = exported
    batch = _images(2, seed=2)
    expected = _keras_probabilities(model, batch)
    predictions = predictor.predict(batch)
    assert len(predictions) == 2
    for prediction, row in zip(predictions, expected, strict=True):
        order = np.argsort(-row)[:2]
        assert prediction.class_names == tuple(lib.CLASS_NAMES[i] for i in order)
        assert prediction.class_ids == tuple(int(i) for i in order)
        np.testing.assert_allclose(prediction.probabilities, row[order], atol=1e-5)
        assert prediction.top == prediction.class_names[0]
    assert len(predictor.predict(batch[0], top_k=10)[0].class_names) == 3  # clipped


def test_images_of_other_sizes_are_resized_inside(exported):
    model, _, predictor = exported
    big = _images(2, seed=3, size=(48, 40))
    resized = tf.image.resize(big.astype(np.float32), lib.INPUT_SIZE).numpy()
    np.testing.assert_allclose(
        predictor.probabilities(big), _keras_probabilities(model, resized), atol=1e-5
    )


def test_wrong_inputs_raise_clear_errors(exported, tmp_path):
    _, _, predictor = exported
    gray = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match=r"got rank 2 shape \(32, 32\)"):
        predictor.predict(gray)
    with pytest.raises(ValueError, match="RGBA: drop the alpha channel"):
        predictor.predict(np.zeros((1, 32, 32, 4), np.uint8))
    with pytest.raises(ValueError, match=r"channels-first\?"):
        predictor.predict(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="got dtype bool"):
        predictor.predict(np.zeros((32, 32, 3), bool))
    with pytest.raises(ValueError, match=r"0\.\.255 \(item 1\); got int64 values 1000\.\.1000"):
        predictor.predict([np.zeros((32, 32, 3)), np.full((32, 32, 3), 1000)])
    with pytest.raises(ValueError, match="empty list"):
        predictor.predict([])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt is not a BMP, .*WEBP image"):
        predictor.predict(text)
    with pytest.raises(FileNotFoundError, match="No image file at"):
        predictor.predict(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="top_k must be a positive integer; got 0"):
        predictor.predict(_images(1, 0), top_k=0)
    with pytest.warns(UserWarning, match="expects 0..255"):
        predictor.predict(np.full((32, 32, 3), 0.5, np.float32))
    with pytest.raises(FileNotFoundError, match="is not a zoo export"):
        Predictor(tmp_path)


def test_eight_threads_agree_with_one_and_change_no_weight(exported):
    _, path, predictor = exported
    before = predictor.manifest_hashes()
    batches = [_images(4, seed=10 + i) for i in range(8)]
    alone = [predictor.probabilities(b) for b in batches]
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()  # start together so the calls overlap
        results[i] = [predictor.probabilities(batches[i]) for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(8):
        for repeat in results[i]:
            np.testing.assert_array_equal(repeat, alone[i])
    assert predictor.manifest_hashes() == before
    manifest = (path / "assets" / "zoo_manifest.json").read_text()
    assert all(sha in manifest for sha in before.values())


@pytest.fixture(scope="module")
def every_format(tmp_path_factory):
    """An export of the tiny classifier with every deployed format beside the SavedModel."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnxruntime")
    from recipes import deploy

    model = lib.build_model()
    path = export_saved_model(model, tmp_path_factory.mktemp("formats") / "export").path
    calibration = _images(32, seed=20).astype(np.float32)
    evaluation = (_images(12, seed=21).astype(np.float32), np.arange(12) % 3)
    deploy.deploy(path, list(deploy.FORMATS), model, calibration, evaluation)
    return path


@pytest.mark.parametrize("name", ["saved_model", "tflite", "tflite-fp16", "tflite-int8", "onnx"])
def test_eight_threads_agree_with_one_in_every_format(every_format, name):
    """One Predictor, 8 threads calling at once: each thread's answers equal what one
    thread alone gets (LiteRT's interpreter refuses overlapping calls unless they take
    turns)."""
    predictor = Predictor(every_format, format=name)
    batches = [_images(1 + i % 3, seed=30 + i) for i in range(8)]
    alone = [predictor.probabilities(b) for b in batches]
    results: list = [None] * 8
    errors: list = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = [predictor.probabilities(batches[i]) for _ in range(6)]
        except Exception as error:  # noqa: BLE001  (reported below, per thread)
            errors.append(f"thread {i}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for i in range(8):
        for repeat in results[i]:
            np.testing.assert_allclose(repeat, alone[i], rtol=0, atol=1e-6)


def test_zoo_predict_prints_top_k_per_image(exported, tmp_path, capsys):
    model, path, _ = exported
    batch = _images(2, seed=4)
    files = []
    for i, image in enumerate(batch):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(image).save(files[-1])
    assert cli.main(["predict", str(path), *map(str, files), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = _keras_probabilities(model, batch)
    assert lines[0] == str(files[0]) and lines[3] == str(files[1])
    best = lib.CLASS_NAMES[int(expected[1].argmax())]
    assert lines[4].split() == [best, f"{expected[1].max():.4f}"]
    assert len(lines) == 6

    assert cli.main(["predict", str(path), str(tmp_path / "none.png")]) == 2
    assert "zoo: error: No image file at" in capsys.readouterr().err
