"""The data a stage fits on: cached activations or the plain training batches.

On the TensorFlow backend ``fit`` reads ``tf.data`` (the fast path, benchmarked);
TensorFlow is imported inside functions only. On other backends (JAX, PyTorch) the same
batches come as a :class:`keras.utils.PyDataset` over numpy arrays, in the same order.
Every kind of stage data offers the same two methods, so the stage loop does not care
which it has:

* :class:`CachedData`: batches of stored activations, each epoch's order a function of
  (seed, epoch) alone (:func:`epoch_permutation`), so a resumed run sees the same batches;
* :class:`PlainData`: the caller's pixel dataset, epochs streamed so that each one makes
  exactly one iterator of it (:class:`TrainIterations` counts them for exact resume);
* :class:`ArrayPlainData`: the caller's ``(x, y)`` arrays (:class:`ArrayInput`), epoch
  k's order a function of (seed, k), k counted by :class:`TrainIterations` as above.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from zoo.caching.store import Activations

log = logging.getLogger("zoo.training")

LabelTransform = Callable[[Any, Any], tuple[Any, Any]] | None


def without_autotune(dataset: Any) -> Any:
    """``dataset`` with tf.data's autotuning off.

    Autotuning (and the prefetch tf.data injects under it) runs a model thread that the
    iterator's deletion waits for: up to 5 s per pass measured on a 2-core CPU, longer
    than the whole pass on small datasets. A single pass gains nothing from tuning, nor
    does a pipeline of trivial steps; parallel calls set to ``AUTOTUNE`` then use
    ``min(16, cores)`` threads. Element order and any shuffle seed are the dataset's
    own: the options wrap it.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def tensorflow_backend() -> bool:
    """Whether Keras runs on TensorFlow, where ``fit`` is fed ``tf.data`` (the fast path)."""
    return keras.backend.backend() == "tensorflow"


@dataclass(frozen=True)
class ArrayInput:
    """Training or validation data given as numpy arrays, batched and shuffled by zoo.

    Attributes:
        x: pixels 0..255, ``(n, height, width, 3)``, float32 or uint8.
        y: int labels ``(n,)`` or multi-hot ``(n, classes)``.
        batch_size: images per batch; the last batch of a pass may be smaller.
        seed: seed of the shuffling.
        shuffle: reshuffle on every pass (training); False keeps the stored order.
    """

    x: np.ndarray
    y: np.ndarray
    batch_size: int
    seed: int = 0
    shuffle: bool = True

    @property
    def steps(self) -> int:
        """Batches per pass."""
        return -(-len(self.x) // self.batch_size)

    def order(self, iteration: int | None) -> np.ndarray:
        """The example order of pass ``iteration``: a function of (seed, iteration) only,
        as a tf.data pipeline that reshuffles each iteration draws it; None: stored order."""
        n = len(self.x)
        if iteration is None or not self.shuffle:
            return np.arange(n)
        return _permutation(n, (self.seed, 1, iteration))

    def batch(self, order: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``step`` of ``order``: float32 pixels and the labels."""
        rows = np.sort(order[step * self.batch_size : (step + 1) * self.batch_size])
        return self.x[rows].astype(np.float32, copy=False), self.y[rows]

    def batches(self, iteration: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass of batches in the order of ``iteration`` (see :meth:`order`)."""
        order = self.order(iteration)
        return (self.batch(order, s) for s in range(self.steps))


class NumpyBatches(keras.utils.PyDataset):
    """Batches made by ``make(index)`` for ``fit`` on any backend (``keras.utils.PyDataset``).

    ``count`` batches, or endless with None (``fit`` with ``steps_per_epoch``): a batch is
    a function of its index alone, so nothing depends on how far Keras reads ahead.
    """

    def __init__(self, make: Callable[[int], tuple[Any, ...]], count: int | None) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.make, self.count = make, count

    @property
    def num_batches(self) -> int | None:
        return self.count

    def __len__(self) -> int:
        return self.count if self.count is not None else 2**62

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return self.make(index)


def _labelled(batch: tuple[np.ndarray, np.ndarray], to_labels: LabelTransform) -> Any:
    return to_labels(*batch) if to_labels is not None else batch


@dataclass
class TrainIterations:
    """Counts the iterators made of the training dataset in this :func:`fine_tune` call.

    A dataset that reshuffles every iteration (``shuffle(..., seed=s,
    reshuffle_each_iteration=True)``) draws iteration k's order from (s, k); the count is
    what a resumed run must replay (:meth:`skip_to`) to see the orders the interrupted
    one would have seen.
    """

    count: int = 0

    def look(self, dataset: Any) -> Iterator[Any]:
        """``iter(dataset)``, counted: each new iterator draws the next shuffle order."""
        self.count += 1
        if isinstance(dataset, ArrayInput):
            return dataset.batches(self.count - 1)
        return iter(dataset)

    def skip_to(self, dataset: Any, target: int) -> None:
        """Iterates ``dataset`` (without reading it) until ``target`` iterations are made."""
        if target < self.count:
            log.warning(
                "Resume cannot be exact: train was iterated %d times, the checkpoint says %d.",
                self.count,
                target,
            )
        while self.count < target:
            self.look(dataset)


@dataclass(frozen=True)
class PlainData:
    """A stage trained the plain way, on the caller's batches of pixels.

    Attributes:
        train: batched ``tf.data.Dataset`` of ``(pixels, labels)``.
        validation: the same for validation, or None.
        augment: a Keras layer applied to training batches (``training=True``), a
            ``zoo.data.Augmentation`` (mapped over ``(images, labels)``), or None.
        steps: batches per epoch.
        examples: images per epoch (``steps`` times the first batch's size).
    """

    train: Any
    validation: Any
    augment: Any
    steps: int
    examples: int
    cached = False

    @classmethod
    def of(cls, train: Any, validation: Any, augment: Any, counter: TrainIterations) -> PlainData:
        """Measures ``train`` (one counted look, two when its length is unknown)."""
        steps = int(train.cardinality())
        if steps < 0:
            steps = sum(1 for _ in counter.look(train))
        batch = int(next(counter.look(train))[0].shape[0])
        return cls(train, validation, augment, steps, steps * batch)

    def train_dataset(self, first_epoch: int, epochs: int, to_labels: LabelTransform) -> Any:
        """Epochs ``first_epoch..epochs-1`` as one stream (``fit`` with ``steps_per_epoch``).

        Each epoch makes exactly one iterator of ``train`` when it begins (Keras' own
        per-epoch iterators make two), and nothing reads ahead into an epoch that early
        stopping cancels.
        """
        import tensorflow as tf

        ds, augment = self.train, self.augment
        if getattr(augment, "soft_labels", False):  # zoo.data.Augmentation: mixes labels too
            ds = ds.map(augment, tf.data.AUTOTUNE)
        elif augment is not None:
            ds = ds.map(lambda x, y: (augment(x, training=True), y), tf.data.AUTOTUNE)
        ds = ds.map(to_labels) if to_labels is not None else ds
        stream = tf.data.Dataset.range(first_epoch, epochs).flat_map(lambda epoch: ds)
        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False
        return stream.with_options(options)

    def validation_dataset(self, to_labels: LabelTransform) -> Any:
        if self.validation is None or to_labels is None:
            return self.validation
        return self.validation.map(to_labels)


@dataclass(frozen=True)
class ArrayPlainData:
    """A stage trained the plain way on the caller's arrays (any backend, no augmentation).

    Attributes:
        train: the training arrays.
        validation: the validation arrays, or None.
        counter: the call's :class:`TrainIterations`; plain epoch j of the stage shuffles
            with the count at its start plus j, as one iterator of a tf.data pipeline
            would.
    """

    train: ArrayInput
    validation: ArrayInput | None
    counter: TrainIterations
    cached = False

    @property
    def steps(self) -> int:
        return self.train.steps

    @property
    def examples(self) -> int:
        return len(self.train.x)

    def train_dataset(self, first_epoch: int, epochs: int, to_labels: LabelTransform) -> Any:
        """Endless batches from ``first_epoch`` on (``fit`` stops after ``epochs``)."""
        # The stage loop has counted the passes up to ``first_epoch`` already.
        base, train, steps = self.counter.count, self.train, self.train.steps

        def make(index: int) -> Any:
            epoch, step = divmod(index, steps)
            return _labelled(train.batch(train.order(base + epoch), step), to_labels)

        return NumpyBatches(make, None)

    def validation_dataset(self, to_labels: LabelTransform) -> Any:
        va = self.validation
        if va is None:
            return None
        order = va.order(None)
        return NumpyBatches(lambda s: _labelled(va.batch(order, s), to_labels), va.steps)


@dataclass(frozen=True)
class CachedData:
    """A stage trained on cached activations (the suffix model's input).

    Attributes:
        train: the training activations.
        validation: the validation activations, or None.
        batch_size: batch size of training and evaluation.
        shuffle: reshuffle every epoch (:func:`epoch_permutation`); False keeps the
            stored order.
        seed: seed of the shuffling.
    """

    train: Activations
    validation: Activations | None
    batch_size: int
    shuffle: bool
    seed: int
    cached = True

    @property
    def steps(self) -> int:
        return -(-len(self.train.x) // self.batch_size)

    @property
    def examples(self) -> int:
        return len(self.train.x)

    def train_dataset(self, first_epoch: int, epochs: int, to_labels: LabelTransform) -> Any:
        """Endless batches from ``first_epoch`` on (``fit`` stops after ``epochs``)."""
        if not tensorflow_backend():
            acts, b, steps = self.train, self.batch_size, self.steps

            def make(index: int) -> Any:
                epoch, step = divmod(index, steps)
                x, y = cached_batch(acts, b, self.shuffle, self.seed, first_epoch + epoch, step)
                return _labelled((x.astype(np.float32, copy=False), y), to_labels)

            return NumpyBatches(make, None)
        return cached_dataset(
            self.train,
            self.batch_size,
            first_epoch=first_epoch,
            epochs=None,
            shuffle=self.shuffle,
            seed=self.seed,
            label_transform=to_labels,
        )

    def validation_dataset(self, to_labels: LabelTransform) -> Any:
        if self.validation is None:
            return None
        if not tensorflow_backend():
            va, b = self.validation, self.batch_size

            def make(step: int) -> Any:
                x, y = cached_batch(va, b, False, 0, 0, step)
                return _labelled((x.astype(np.float32, copy=False), y), to_labels)

            return NumpyBatches(make, -(-len(va.x) // b))
        return cached_dataset(
            self.validation,
            self.batch_size,
            first_epoch=0,
            epochs=1,
            shuffle=False,
            seed=self.seed,
            label_transform=to_labels,
        )


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of ``epoch``: a function of (seed, epoch) only, so resume is exact.

    Read-only: the last few are kept, as batches ask for their epoch's order one by one.
    """
    return _permutation(n, (seed, epoch))


@functools.lru_cache(maxsize=4)
def _permutation(n: int, entropy: tuple[int, ...]) -> np.ndarray:
    order = np.random.default_rng(list(entropy)).permutation(n)
    order.flags.writeable = False
    return order


def cached_dataset(
    acts: Activations,
    batch_size: int,
    *,
    first_epoch: int,
    epochs: int | None,
    shuffle: bool,
    seed: int,
    label_transform: LabelTransform = None,
) -> Any:
    """Batches of ``(activations float32, labels)`` for epochs ``first_epoch..epochs-1``.

    ``epochs=None`` repeats without end (for ``fit`` with ``steps_per_epoch``).

    Each epoch's order is :func:`epoch_permutation` of the canonical order (or the stored
    order when ``shuffle`` is False); the last batch of an epoch may be smaller. Use with
    ``steps_per_epoch=ceil(N / batch_size)`` so Keras keeps one iterator across epochs.
    """
    import tensorflow as tf

    n = len(acts.x)
    steps = -(-n // batch_size)

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Training data is endless (Keras stops after ``epochs``; epoch e's order depends on
        # e only); evaluation data is one pass.
        for epoch in itertools.count(first_epoch) if epochs is None else range(first_epoch, epochs):
            for s in range(steps):
                x, y = cached_batch(acts, batch_size, shuffle, seed, epoch, s)
                yield x, y

    spec = (
        tf.TensorSpec((None, *acts.x.shape[1:]), tf.as_dtype(acts.x.dtype)),
        tf.TensorSpec((None, *acts.y.shape[1:]), tf.as_dtype(acts.y.dtype)),
    )
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    if epochs is not None:  # tells Keras the length, so it does not warn at the end
        ds = ds.apply(tf.data.experimental.assert_cardinality((epochs - first_epoch) * steps))
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    if label_transform is not None:
        ds = ds.map(label_transform)
    # A fixed prefetch, no autotuning: its thread would stall the iterator's deletion at
    # the end of ``fit`` for seconds (0.4 to 9.8 s measured), and the maps are trivial.
    return without_autotune(ds.prefetch(2))


def cached_batch(
    acts: Activations, batch_size: int, shuffle: bool, seed: int, epoch: int, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``step`` of ``epoch`` in :func:`cached_dataset`'s order: activations, labels.

    A batch holds its examples in canonical order (the sum of the gradients depends on
    it), read in stored order (memmap reads stay sequential).
    """
    n = len(acts.x)
    canonical = acts.canonical if shuffle and acts.canonical is not None else np.arange(n)
    order = epoch_permutation(n, seed, epoch) if shuffle else np.arange(n)
    rows = canonical[np.sort(order[step * batch_size : (step + 1) * batch_size])]
    by_row = np.argsort(rows)
    back = np.argsort(by_row)
    return acts.x[rows[by_row]][back], acts.y[rows[by_row]][back]
