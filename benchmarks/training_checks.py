"""Checks of the training additions that need no full run: class weights on an imbalanced
Fashion-MNIST, the top-losses view on flipped labels, and flip TTA on a run's validation split.

    python -m benchmarks.training_checks imbalanced   # class_weight "balanced" vs none
    python -m benchmarks.training_checks noise        # flipped labels in the top 100 losses
    python -m benchmarks.training_checks tta RUN_DIR  # validation top-1, one view vs flip

``imbalanced`` and ``noise`` train a linear head on EfficientNet-Lite0's ImageNet features
(80 px, cached once; the main job's first stage) on a stratified subset of the Fashion-MNIST
training images, and evaluate on the 10,000 test images. Each prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SIZE, BATCH, TRAIN, CUT, KEEP = 80, 64, 12000, (0, 2, 4), 0.05


def _fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from zoo.data.fashion_mnist import fashion_mnist_search_dirs, find_idx, read_idx

    for directory in fashion_mnist_search_dirs():
        files = find_idx(directory)
        if files:
            arrays = {k: read_idx(p) for k, p in files.items()}
            return (
                arrays["train_images"],
                arrays["train_labels"].astype(np.int64),
                arrays["test_images"],
                arrays["test_labels"].astype(np.int64),
            )
    raise SystemExit("Fashion-MNIST IDX files not found (apt-get install dataset-fashion-mnist)")


def _subset(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A stratified subset of ``n`` indices, sorted."""
    per = n // 10
    return np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in range(10)])
    )


def _head_run(x, y, xt, yt, class_weight=None, seed=0):
    """Trains the head (3 epochs, Adam 1e-3) on cached features; returns the model, data."""
    import keras

    from zoo import data as zoo_data
    from zoo.classifier import build_classifier
    from zoo.policies import FreezeBackbone
    from zoo.training import Stage, fine_tune

    keras.utils.set_random_seed(seed)
    names = [f"c{i}" for i in range(10)]
    data = zoo_data.load((x, y), validation_fraction=0.05, test=(xt, yt), class_names=names)
    model = build_classifier(
        "efficientnet_lite0", 10, weights="imagenet", input_shape=(SIZE, SIZE, 3)
    )
    stage = Stage("head", FreezeBackbone(), 3, 1e-3, class_weight=class_weight)
    start = time.perf_counter()
    fine_tune(
        model,
        data.pipeline("train", (SIZE, SIZE), BATCH, training=True),
        data.pipeline("validation", (SIZE, SIZE), BATCH, training=False),
        [stage],
        verbose=0,
    )
    return model, data, time.perf_counter() - start


def _logits(model, data, split):
    from zoo.caching.fold import fold_batchnorm

    folded = fold_batchnorm(model)[0]
    labels, logits = [], []
    for images, batch in data.pipeline(split, (SIZE, SIZE), 256, training=False):
        logits.append(np.asarray(folded.predict_on_batch(images), np.float32))
        labels.append(np.asarray(batch))
    return np.concatenate(labels), np.concatenate(logits)


def imbalanced() -> dict:
    from recipes.report import classification_metrics

    x, y, xt, yt = _fashion_mnist()
    rng = np.random.default_rng(0)
    keep = _subset(y, TRAIN, rng)
    cut = np.isin(y[keep], CUT)
    drop = cut & (rng.random(len(keep)) > KEEP)
    keep = keep[~drop]
    x, y = x[keep], y[keep]
    counts = np.bincount(y, minlength=10)
    out = {"train_images": int(len(y)), "class_counts": counts.tolist(), "cut": list(CUT)}
    for name in ("none", "balanced"):
        weights = None
        if name == "balanced":
            weights = {c: len(y) / (10 * counts[c]) for c in range(10)}
        model, data, seconds = _head_run(x, y, xt, yt, weights)
        labels, logits = _logits(model, data, "test")
        m = classification_metrics(labels, logits.argmax(1), [str(c) for c in range(10)], logits)
        recall = [c["recall"] for c in m["per_class"]]
        out[name] = {
            "top1": m["top1"],
            "balanced_accuracy": m["balanced_accuracy"],
            "recall_cut_classes": [recall[c] for c in CUT],
            "seconds": seconds,
        }
        print(name, json.dumps(out[name]), flush=True)
    return out


def noise(share: float = 0.02, top: int = 100) -> dict:
    from recipes.report import error_analysis

    x, y, xt, yt = _fashion_mnist()
    rng = np.random.default_rng(1)
    keep = _subset(y, TRAIN, rng)
    x, clean = x[keep], y[keep]
    flipped = rng.choice(len(clean), int(share * len(clean)), replace=False)
    noisy = clean.copy()
    noisy[flipped] = (clean[flipped] + rng.integers(1, 10, len(flipped))) % 10
    model, data, seconds = _head_run(x, noisy, xt, yt)
    labels, logits = _logits(model, data, "train")
    identities = data.identities("train")
    found = error_analysis(labels, logits, [str(c) for c in range(10)], identities, top=top)
    wrong = {str(i) for i in flipped}
    in_train = len(wrong & set(identities))
    hits = sum(e["identity"] in wrong for e in found["top_losses"])
    return {
        "train_images": len(identities),
        "flipped_in_train_split": in_train,
        "top": top,
        "flipped_in_top": hits,
        "precision_at_top": hits / top,
        "recall_of_flipped": hits / in_train,
        "seconds": seconds,
    }


def tta(run_dir: str) -> dict:
    """Validation top-1 of a finished run's model, one view and averaged with the flip."""
    import keras

    from recipes.config import load_recipe
    from recipes.runner import _batches, _load_data
    from zoo.caching.fold import fold_batchnorm

    run = Path(run_dir)
    recipe = load_recipe(run / "recipe.toml")
    data, _, _ = _load_data(recipe, lambda line: None)
    model = fold_batchnorm(keras.models.load_model(run / "export" / "model.keras"))[0]
    labels, one, two, seconds = [], [], [], 0.0
    for images, batch in _batches(recipe, data, "validation", training=False):
        one.append(np.asarray(model.predict_on_batch(images)))
        start = time.perf_counter()
        mirror = np.ascontiguousarray(np.asarray(images)[:, :, ::-1, :])
        two.append(np.asarray(model.predict_on_batch(mirror)))
        seconds += time.perf_counter() - start
        labels.append(np.asarray(batch))
    y, a, b = np.concatenate(labels), np.concatenate(one), np.concatenate(two)
    return {
        "validation_images": int(len(y)),
        "top1_one_view": float(np.mean(a.argmax(1) == y)),
        "top1_flip_tta": float(np.mean((a + b).argmax(1) == y)),
        "extra_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("imbalanced", "noise", "tta"))
    parser.add_argument("run_dir", nargs="?")
    args = parser.parse_args()
    if args.check == "tta":
        result = tta(args.run_dir)
    else:
        result = imbalanced() if args.check == "imbalanced" else noise()
    print(json.dumps({"check": args.check, **result}))


if __name__ == "__main__":
    main()
