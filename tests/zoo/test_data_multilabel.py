"""Tests for multi-label folder sources: a labels CSV gives multi-hot labels."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoo import data


def _folder(root, rows):
    for i in range(len(rows)):
        Image.fromarray(np.full((6, 5, 3), 20 * i, np.uint8)).save(root / f"{i}.png")
    lines = ["path,labels", *(f"{i}.png,{labels}" for i, labels in enumerate(rows))]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def test_labels_csv_gives_multi_hot_batches(tmp_path):
    rows = ["cat;dog", "dog", "cat", "bird;cat", "dog;bird;cat", "bird"] * 2
    _folder(tmp_path, rows)
    ds = data.load(f"folder:{tmp_path}", labels_csv="labels.csv", validation_fraction=0.0)
    assert ds.class_names == ["bird", "cat", "dog"] and ds.multi_label
    assert ds.class_counts("train") == {"bird": 6, "cat": 8, "dog": 6}
    x, y = next(iter(ds.pipeline("train", (8, 8), batch_size=12)))
    assert x.shape == (12, 8, 8, 3) and y.shape == (12, 3) and y.dtype == tf.float32
    by_pixel = {
        int(round(float(img[0, 0, 0]) / 20)): row for img, row in zip(x, y.numpy(), strict=True)
    }
    np.testing.assert_array_equal(by_pixel[0], [0, 1, 1])  # cat;dog
    np.testing.assert_array_equal(by_pixel[4], [1, 1, 1])  # dog;bird;cat
    split = data.load(f"folder:{tmp_path}", labels_csv="labels.csv", validation_fraction=0.3)
    assert split.num_examples("train") + split.num_examples("validation") == 12
    assert len(split.fingerprint("train")) == 64


def test_labels_csv_lists_every_problem(tmp_path):
    _folder(tmp_path, ["a", "b"])
    (tmp_path / "bad.csv").write_text("0.png,a\nmissing.png,b\n1.png,\n0.png,b\n")
    with pytest.raises(
        ValueError, match="line 2: no file .*missing.png.*line 3.*line 4: 0.png listed twice"
    ):
        data.load(f"folder:{tmp_path}", labels_csv="bad.csv")
    with pytest.raises(FileNotFoundError, match="Labels CSV .*nope.csv"):
        data.load(f"folder:{tmp_path}", labels_csv="nope.csv")
    with pytest.raises(ValueError, match="per_class subsample by class"):
        data.load(f"folder:{tmp_path}", labels_csv="labels.csv", per_class=1)
