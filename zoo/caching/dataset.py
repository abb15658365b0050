"""The data a stage fits on, as tf.data: cached activations or the plain training batches.

TensorFlow is the point here (``fit`` reads ``tf.data`` datasets); it is imported inside
functions only. Both kinds of stage data offer the same two methods, so the stage loop
does not care which it has:

* :class:`CachedData`: batches of stored activations, each epoch's order a function of
  (seed, epoch) alone (:func:`epoch_permutation`), so a resumed run sees the same batches;
* :class:`PlainData`: the caller's pixel dataset, epochs streamed so that each one makes
  exactly one iterator of it (:class:`TrainIterations` counts them for exact resume).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

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
    """The example order of ``epoch``: a function of (seed, epoch) only, so resume is exact."""
    return np.random.default_rng([seed, epoch]).permutation(n)


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
    canonical = acts.canonical if shuffle and acts.canonical is not None else np.arange(n)

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Training data is endless (Keras stops after ``epochs``; epoch e's order depends on
        # e only); evaluation data is one pass.
        for epoch in itertools.count(first_epoch) if epochs is None else range(first_epoch, epochs):
            order = epoch_permutation(n, seed, epoch) if shuffle else np.arange(n)
            for s in range(steps):
                # A batch holds its examples in canonical order (the sum of the gradients
                # depends on it), read in stored order (memmap reads stay sequential).
                rows = canonical[np.sort(order[s * batch_size : (s + 1) * batch_size])]
                by_row = np.argsort(rows)
                back = np.argsort(by_row)
                yield acts.x[rows[by_row]][back], acts.y[rows[by_row]][back]

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
