"""tfds image-classification datasets as a source: ``"tfds:NAME[:SPLIT]"``.

TensorFlow Datasets (``tensorflow_datasets``) is imported when such a source is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.data import splits as _splits
from zoo.data.datasource import DatasetUnavailableError, DataSource, build_source
from zoo.data.plans import SplitPlan, to_rgb
from zoo.errors import InvalidValueError


def load_tfds(spec: str, options: dict[str, Any]) -> DataSource:
    import tensorflow_datasets as tfds

    name, _, split = spec.partition(":")
    split = split or "train"
    data_dir = options.get("data_dir")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own DatasetNotFoundError
        raise InvalidValueError(f"Unknown tfds dataset {name!r}: {error}") from error
    info = builder.info
    image_key, label_key = info.supervised_keys or ("image", "label")
    features = info.features
    problems = []
    if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
        problems.append(f"no image feature {image_key!r}")
    if label_key not in features or not isinstance(features[label_key], tfds.features.ClassLabel):
        problems.append(f"no class-label feature {label_key!r}")
    if problems:
        raise InvalidValueError(
            f"tfds dataset {name!r} is not an image-classification dataset ({'; '.join(problems)}); "
            "expected supervised keys (image, label) with an Image and a ClassLabel feature."
        )
    class_names = list(features[label_key].names)
    _ensure_prepared(builder, name, options.get("download"))
    test_split = _tfds_test_split(info, split, options)
    seed = int(options["seed"])
    fractions = (float(options["validation_fraction"]), float(options.get("test_fraction") or 0))
    n_cls = len(class_names)

    def reader(tfds_split: str, part: int | None) -> Callable[[], tf.data.Dataset]:
        def make() -> tf.data.Dataset:
            ds = builder.as_dataset(
                split=tfds_split,
                shuffle_files=False,
                read_config=tfds.ReadConfig(add_tfds_id=True),
            )
            if part is not None and sum(fractions) > 0:
                ds = ds.filter(lambda ex: _part_of(ex["tfds_id"], seed, *fractions) == part)
            return ds.map(
                lambda ex: (to_rgb(ex[image_key]), tf.cast(ex[label_key], tf.int64)),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )

        return make

    plans = {"train": SplitPlan("tfds", n_cls, make=reader(split, 0))}
    if fractions[0] > 0:
        plans["validation"] = SplitPlan("tfds", n_cls, make=reader(split, 1))
    if fractions[1] > 0:
        plans["test"] = SplitPlan("tfds", n_cls, make=reader(split, 2))
    elif test_split:
        plans["test"] = SplitPlan("tfds", n_cls, make=reader(test_split, None))
    if options["train_size"] is not None or options["per_class"] is not None:
        plans["train"] = _subsample_tfds(
            builder, split, (image_key, label_key), options, plans["train"]
        )
    version = str(getattr(builder, "version", ""))
    data = build_source(f"tfds:{name}:{split}", class_names, plans, options)
    data.options.update({"tfds_version": version, "test_split": test_split})
    data.origin = str(builder.data_dir)
    return data


def _tfds_test_split(info: Any, split: str, options: dict[str, Any]) -> str | None:
    """The tfds split used as test: ``test_split``, else "test" if it exists; none when
    ``test_fraction`` holds the test set out of ``split``."""
    test_split = options.get("test_split")
    if options.get("test_fraction"):
        if test_split is not None:
            raise InvalidValueError(
                f"Give either test_split={test_split!r} or test_fraction="
                f"{options['test_fraction']!r}, not both."
            )
        return None
    if test_split is None and "test" in info.splits and not split.startswith("test"):
        test_split = "test"
    return test_split


def _part(identity: str, seed: int, validation: float, test: float) -> int:
    """0 train, 1 validation, 2 test: as :func:`zoo.data.splits.assign_splits` decides."""
    h = _splits.unit_hash(identity, seed)
    return 1 if h < validation else 2 if h < validation + test else 0


def _part_of(tfds_id: tf.Tensor, seed: int, validation: float, test: float) -> tf.Tensor:
    """In-graph :func:`_part` of a tfds id (int32 scalar)."""

    def _code(identity: bytes) -> np.int32:
        return np.int32(_part(identity.decode(), seed, validation, test))

    code = tf.numpy_function(_code, [tfds_id], tf.int32, stateful=False)
    code.set_shape([])
    return code


def _subsample_tfds(
    builder: Any, split: str, keys: tuple[str, str], options: dict[str, Any], plan: SplitPlan
) -> SplitPlan:
    """Reads ids and labels once (images not decoded), then keeps a stratified subset."""
    import tensorflow_datasets as tfds

    image_key, label_key = keys
    seed = int(options["seed"])
    fractions = (float(options["validation_fraction"]), float(options.get("test_fraction") or 0))
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        read_config=tfds.ReadConfig(add_tfds_id=True),
        decoders={image_key: tfds.decode.SkipDecoding()},
    )
    ids, labels = [], []
    for ex in ds.map(lambda ex: (ex["tfds_id"], ex[label_key])).as_numpy_iterator():
        identity = ex[0].decode()
        if _part(identity, seed, *fractions) == 0:
            ids.append(identity)
            labels.append(int(ex[1]))
    labels = np.array(labels, dtype=np.int64)
    keep = _splits.stratified_subsample(
        ids, labels, seed, size=options["train_size"], per_class=options["per_class"]
    )
    kept_ids = [ids[i] for i in keep]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(kept_ids, tf.string), tf.ones(len(keep), tf.int64)
        ),
        default_value=0,
    )

    def make() -> tf.data.Dataset:
        reader = builder.as_dataset(
            split=split, shuffle_files=False, read_config=tfds.ReadConfig(add_tfds_id=True)
        )
        chosen = reader.filter(lambda ex: table.lookup(ex["tfds_id"]) > 0)
        return chosen.map(
            lambda ex: (to_rgb(ex[image_key]), tf.cast(ex[label_key], tf.int64)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    return SplitPlan("tfds", plan.num_classes, kept_ids, labels[keep], make=make)


def _ensure_prepared(builder: Any, name: str, download: bool | None) -> None:
    """Downloads and prepares the dataset when allowed; raises a clear error otherwise."""
    if builder.is_prepared():
        return
    if download is None:
        download = not os.environ.get("ZOO_OFFLINE")
    if download:
        _check_network(name, builder)
        try:
            builder.download_and_prepare()
        except Exception as error:  # network, checksum and tfds' own errors alike
            raise DatasetUnavailableError(
                f"tfds dataset {name!r} could not be downloaded and prepared: {error}. "
                f"Prepare it on a machine with internet access (`tfds build {name}`) and copy "
                f"{builder.data_dir} here (or pass data_dir=)."
            ) from error
        return
    # Offline: as_dataset may still work (tfds.testing.mock_data); try it before giving up.
    try:
        builder.as_dataset(split=tfds_first_split(builder))
    except Exception as error:
        raise DatasetUnavailableError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir} and downloading is "
            f"off{' (ZOO_OFFLINE is set)' if os.environ.get('ZOO_OFFLINE') else ''}. Prepare it "
            f"where the internet is (`tfds build {name}`) and copy the folder there, or pass "
            "data_dir= / download=True."
        ) from error


# tfds fetches prepared datasets from this host first. Its downloader retries a failed
# connection 10 times with backoff (about 3.5 minutes), so a machine with no network would
# wait that long for the error; a name lookup answers at once.
TFDS_HOST = "storage.googleapis.com"


def _check_network(name: str, builder: Any) -> None:
    """Fails at once, as offline weights do, when the network cannot even resolve names."""
    import socket

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return  # a proxy resolves names for us
    try:
        socket.getaddrinfo(TFDS_HOST, 443)
    except OSError as error:
        raise DatasetUnavailableError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir} and cannot be "
            f"downloaded: no network ({TFDS_HOST}: {error}). Prepare it on a machine with "
            f"internet access (`tfds build {name}`) and copy {builder.data_dir} here (or pass "
            "data_dir=)."
        ) from error


def tfds_first_split(builder: Any) -> str:
    """ "train" if the dataset has it (or the splits are unknown), else its first split."""
    splits = list(builder.info.splits.keys())
    return "train" if not splits or "train" in splits else splits[0]
