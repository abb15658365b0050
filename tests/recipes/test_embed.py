"""``zoo.embed`` / ``zoo embed`` (pooled features, written atomically) and ``zoo curve``.

On the tiny test backbone (two conv blocks) so each embedding pass takes a fraction of a
second; what is checked is the plumbing (order, labels, splits, files, the export's own
backbone), and that the folded forward pass gives the backbone's pooled output.
"""

import csv
import json

import keras
import numpy as np
import pytest

import zoo
from recipes.cli import main
from recipes.config import RecipeError, load_recipe
from recipes.curve import METHODS, learning_curve, nested_subset
from recipes.verify import verify_export
from tests.recipes import export_testlib as tl
from zoo.embeddings import embedding_model, save_embeddings


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return tl.colour_squares(tmp_path_factory.mktemp("photos"), per_class=4)


def _arrays():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 20, 20, 3), dtype=np.uint8)
    y = np.arange(12) % 3
    return x, y


def test_embed_arrays_is_the_pooled_backbone_in_split_order():
    tl.ensure_registered()
    x, y = _arrays()
    result = zoo.embed(
        (x, y), tl.BACKBONE, weights=None, image_size=(32, 32), batch_size=5,
        validation_fraction=0.25, splits=("validation", "train"),
    )  # fmt: skip
    assert result.vectors.shape == (12, 16) and result.vectors.dtype == np.float32
    assert list(result.splits) == sorted(result.splits, reverse=True)  # validation rows first
    rows = [int(p) for p in result.paths]  # array sources name rows by their index
    np.testing.assert_array_equal(result.labels, y[rows])
    assert result.weights == {"source": None, "sha256": None}
    assert np.isfinite(result.vectors).all() and result.vectors.std() > 0
    assert len(result.class_names) == 3


def test_embed_matches_the_backbone_given_as_model():
    tl.ensure_registered()
    x, y = _arrays()
    backbone = tl.pretrained_like(
        zoo.create_backbone(tl.BACKBONE, weights=None, input_shape=(32, 32, 3))
    )
    model = embedding_model(backbone, zoo.get_spec(tl.BACKBONE).preprocessing)
    result = zoo.embed(
        (x, y), tl.BACKBONE, model=model, image_size=(32, 32), validation_fraction=0.0,
        dtype="float16",
    )  # fmt: skip
    assert result.vectors.dtype == np.float16 and set(result.splits) == {"train"}
    rows = [int(p) for p in result.paths]
    images = keras.ops.image.resize(x[rows].astype("float32"), (32, 32))
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(result.vectors, expected, rtol=2e-3, atol=2e-3)  # float16


def test_zoo_embed_writes_a_folder_index(photos, tmp_path, capsys):
    tl.ensure_registered()
    out = tmp_path / "emb"
    code = main(
        ["embed", str(photos), "--backbone", tl.BACKBONE, "--weights", "none",
         "--image-size", "32", "32", "--validation-fraction", "0.25", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "embedded 8 images" in capsys.readouterr().out
    vectors = np.load(out / "embeddings.npy")
    with open(out / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert vectors.shape == (8, 16) and len(rows) == 8
    assert {r["split"] for r in rows} <= {"train", "validation", "test"}
    assert all(r["path"].split("/")[0] == r["label"] for r in rows)  # red/0.png is "red"
    meta = json.loads((out / "embeddings.json").read_text())
    assert meta["backbone"] == tl.BACKBONE and meta["shape"] == [8, 16]
    assert meta["engine"]["asked"] == "auto" and not meta["engine"]["probed"]  # 8 images
    assert not list(out.glob(".*part*")), "no temporary left behind"


def test_zoo_embed_with_an_export_uses_its_fine_tuned_backbone(photos, tmp_path):
    model = tl.build_model(num_classes=2, seed=3)  # weights unlike a fresh backbone's
    export = tmp_path / "export"
    export.mkdir()
    model.save(export / "model.keras")
    out = tmp_path / "emb"
    assert main(["embed", str(photos), "--export", str(export), "--out", str(out)]) == 0
    vectors = np.load(out / "embeddings.npy")
    with open(out / "index.csv", newline="") as f:
        paths = [photos / r["path"] for r in csv.DictReader(f)]
    pixels = np.stack([np.asarray(keras.utils.load_img(p), np.float32) for p in paths])
    pixels = keras.ops.image.resize(pixels, tl.INPUT_SIZE)
    features = model.get_layer("backbone")(model.get_layer("preprocess")(pixels))
    expected = keras.ops.convert_to_numpy(keras.ops.mean(features, axis=(1, 2)))
    np.testing.assert_allclose(vectors, expected, rtol=1e-4, atol=1e-4)


def test_zoo_embed_errors_are_one_line(tmp_path, capsys):
    assert main(["embed", "fashion_mnist", "--out", str(tmp_path)]) == 2
    assert "needs one of --backbone NAME or --export" in capsys.readouterr().err
    assert main(["embed", "folder:/no/such/dir", "--backbone", "vgg16", "--out", "x"]) == 2
    assert main(["embed", "fashion_mnist", "--export", str(tmp_path), "--out", "x"]) == 2
    assert "holds no model.keras" in capsys.readouterr().err


def test_save_embeddings_is_atomic(tmp_path, monkeypatch):
    tl.ensure_registered()
    result = zoo.Embeddings(
        vectors=np.ones((2, 3), np.float32), labels=np.array([0, 1]),
        splits=np.array(["train", "test"]), paths=["a.png", "b.png"],
        class_names=["x", "y"], backbone=tl.BACKBONE,
    )  # fmt: skip
    save_embeddings(result, tmp_path)
    monkeypatch.setattr(np, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    result.vectors = np.zeros((2, 3), np.float32)
    with pytest.raises(OSError, match="disk full"):
        save_embeddings(result, tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "embeddings.npy"), np.ones((2, 3)))


# -- zoo curve ---------------------------------------------------------------------------


def test_nested_subsets_grow_by_class():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 3)
    small, large = nested_subset(labels, 2, seed=1), nested_subset(labels, 5, seed=1)
    assert set(small) <= set(large)
    assert np.bincount(labels[small]).tolist() == [2, 2, 2]
    assert np.bincount(labels[large]).tolist() == [5, 5, 3]  # class 2 gives all it has
    assert len(nested_subset(labels, None)) == len(labels)


def _clusters(n_per_class, noise, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (3, 32))
    y = np.repeat(np.arange(3), n_per_class)
    return (centres[y] + noise * rng.normal(0, 1, (len(y), 32))).astype("float32"), y


def test_curve_separates_clusters_and_not_noise():
    train_x, train_y = _clusters(20, 0.3, seed=0)
    val_x, val_y = _clusters(20, 0.3, seed=0)
    val_x = val_x + 0.3 * np.random.default_rng(9).normal(0, 1, val_x.shape).astype("float32")
    result = learning_curve(train_x, train_y, val_x, val_y, points=(3, None), seed=0)
    assert [p.train_images for p in result.points] == [9, 60]
    for point in result.points:
        assert all(point.top1[m] > 0.9 for m in METHODS), point
    # Labels unrelated to the features: no method beats chance by much.
    shuffled = np.random.default_rng(1).permutation(train_y)
    noise = learning_curve(
        train_x, shuffled, val_x, val_y, points=(None,), methods=("knn", "probe")
    )
    assert all(v < 0.7 for v in noise.points[0].top1.values()), noise.points[0]


def test_zoo_curve_on_a_folder_writes_table_and_plot(photos, tmp_path, capsys):
    tl.ensure_registered()
    out = tmp_path / "curve"
    code = main(
        ["curve", str(photos), "--backbone", tl.BACKBONE, "--weights", "none",
         "--image-size", "32", "32", "--validation-fraction", "0.5", "--points", "1", "all",
         "--method", "knn", "--method", "probe", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "images per class  train images  knn top-1" in printed
    with open(out / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["images per class"] for r in rows] == ["1", "all"]
    assert rows[0]["train images"] == "2"
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "curve.json").read_text())["methods"] == ["knn", "probe"]


def test_zoo_curve_errors_are_one_line(photos, tmp_path, capsys):
    args = ["curve", str(photos), "--backbone", tl.BACKBONE, "--out", str(tmp_path)]
    assert main([*args, "--points", "0"]) == 2
    assert "whole numbers >= 1 or 'all'" in capsys.readouterr().err
    assert main([*args, "--points", "few"]) == 2
    assert "--points takes whole numbers or 'all'; got 'few'" in capsys.readouterr().err


# -- the kNN head in zoo run ----------------------------------------------------------------


def _knn_recipe(photos, tmp_path):
    path = tmp_path / "knn.toml"
    path.write_text(
        tl.tiny_recipe(photos, top_epochs=None) + '\n[model.head]\ntype = "knn"\nk = 3\n'
    )
    return path


def test_knn_recipe_checks(photos, tmp_path):
    path = _knn_recipe(photos, tmp_path)
    assert load_recipe(path).model.head.kwargs() == {"pooling": "avg", "k": 3}
    with pytest.raises(RecipeError, match=r'stages\[0\].policy: a "knn" head is stored'):
        load_recipe(path, ["stages.0.policy=full"])
    with pytest.raises(RecipeError, match="model.head.k: only used by"):
        load_recipe(path, ["model.head.type=linear"])


def test_knn_head_run_exports_verifies_and_serves(photos, tmp_path):
    """The real command with ImageNet weights: the whole backbone proven, a plain client."""
    import tensorflow as tf

    path = _knn_recipe(photos, tmp_path)
    run_dir = tmp_path / "run"
    sets = ["--set", "model.weights=imagenet", "--set", "model.head.k=1"]
    assert main(["run", str(path), "--out", str(run_dir), *sets]) == 0
    result = verify_export(run_dir / "export")
    assert result.passed and result.num_proven == result.num_frozen > 200  # whole backbone
    served = tf.saved_model.load(str(run_dir / "export")).signatures["serving_default"]
    files = sorted(photos.glob("*/*.png"))
    pixels = np.stack([np.asarray(keras.utils.load_img(p), np.float32) for p in files])
    names = served(images=tf.constant(pixels))["class_name"].numpy().astype(str)
    # k = 1: a stored image is its own nearest neighbour; the others are near-duplicates.
    assert (names == [p.parent.name for p in files]).mean() >= 0.9
    report = json.loads((run_dir / "report.json").read_text())
    assert "training embeddings stored" in report["stages"][0]["kept_reason"]


def test_embed_pools_a_vision_transformer_as_its_head_does():
    from zoo.caching.dataset import ArrayInput
    from zoo.knn import KNNHead, fit_knn_head

    pytest.importorskip("keras_hub")
    name = "vit_small_patch14_dinov2"  # random weights, 28 px: 4 patch tokens + the class token
    pixels = np.random.default_rng(1).uniform(0, 255, (12, 28, 28, 3)).astype("float32")
    labels = np.arange(12) % 3
    result = zoo.embed(
        (pixels, labels), name, weights=None, image_size=(28, 28), validation_fraction=0.0
    )
    assert result.vectors.shape == (12, zoo.get_spec(name).feature_dim)
    # A kNN head on the same tokens, pooled the same way: each stored image is its own
    # nearest neighbour, so k=1 gives back the training labels.
    model = zoo.build_classifier(name, 3, head=KNNHead(k=1), weights=None, input_shape=(28, 28, 3))
    fit_knn_head(model, ArrayInput(pixels, labels, batch_size=6, shuffle=False))
    logits = keras.ops.convert_to_numpy(model(pixels, training=False))
    np.testing.assert_array_equal(logits.argmax(-1), labels)


def test_embedding_a_token_output_needs_its_pooling():
    inputs = keras.Input((8, 8, 3))
    tokens = keras.Model(inputs, keras.layers.Reshape((16, 12))(inputs), name="tokens")
    with pytest.raises(ValueError, match="returns tokens"):
        embedding_model(tokens, zoo.get_spec("efficientnet_lite0").preprocessing)
