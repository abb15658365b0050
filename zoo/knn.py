"""A k-nearest-neighbour head: a classifier from stored embeddings, without training.

:class:`KNNHead` pools the backbone's feature map like the other heads
(:mod:`zoo.heads`), then votes among the ``k`` stored training embeddings most similar to
it by cosine similarity of the features centred on the training mean (Wang et al., 2019,
"SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot Learning"). It has no
variables: the stored embeddings, their labels and the mean are constants that
:meth:`KNNHead.set_memory` fills, ``.keras`` and ``.weights.h5`` files carry
(``save_own_variables``) and a SavedModel embeds in its graph, so an export classifies on
its own. Its logits are ``log`` of each class's share of the ``k`` votes (ties broken by the
voters' similarity), so ``softmax(logits)`` is that share.

Registered as ``zoo.heads.HEADS["knn"]``, so recipes name it ``[model.head] type = "knn"``.
Backend-neutral Keras 3.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
from keras import ops

from zoo.errors import InvalidValueError
from zoo.heads import HEADS, Head

__all__ = ["KNNHead", "fit_knn_head"]

_MEMORY_KEYS = ("memory", "labels", "mean")


@keras.saving.register_keras_serializable(package="zoo")
class KNNHead(Head):
    """Pooling -> centred, L2-normalized features -> a vote of the ``k`` nearest stored ones.

    Input ``(batch, height, width, channels)`` feature maps (or pooled ``(batch,
    channels)``); output logits ``(batch, num_classes)``: ``log`` of each class's share of
    the ``k`` votes, plus a thousandth of its voters' mean cosine similarity (which breaks
    ties), floored at ``1e-6``. Until :meth:`set_memory` is called every logit is 0.

    Args:
        num_classes: number of classes (filled in by ``zoo.build_classifier``).
        pooling: ``"avg"`` or ``"max"``.
        k: neighbours that vote, at least 1 (capped at the stored rows).
        **kwargs: :class:`zoo.heads.Head` arguments (``multi_label`` must stay False).

    Raises:
        InvalidValueError: ``k`` below 1, GeM pooling, or ``multi_label``.
    """

    _dropout_before_logits = False

    def __init__(
        self, num_classes: int | None = None, pooling: str = "avg", k: int = 10, **kwargs: Any
    ):
        kwargs.pop("dropout", None)
        super().__init__(num_classes=num_classes, pooling=pooling, dropout=0.0, **kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidValueError(f"KNNHead: k must be an int >= 1; got {k!r}.")
        if pooling == "gem" or self.multi_label:
            raise InvalidValueError(
                "KNNHead: pooling must be 'avg' or 'max' and multi_label False (one class per "
                "image votes)."
            )
        self.k = int(k)
        self._memory: dict[str, np.ndarray] | None = None

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if self.num_classes is None or len(input_shape) not in (2, 3, 4):
            raise InvalidValueError(
                "KNNHead needs num_classes and (batch, height, width, channels), (batch, "
                f"tokens, dim) or (batch, channels) features; got num_classes="
                f"{self.num_classes}, shape {tuple(input_shape)}. Build it through "
                "zoo.build_classifier."
            )
        self.pool = None
        if len(input_shape) in (3, 4):  # the same pooling layer as the other heads
            make = self._make_token_pooling if len(input_shape) == 3 else self._make_pooling
            self.pool = make()
            self.pool.build(input_shape)
        self.drop = None
        self.channels = int(input_shape[-1])

    def set_memory(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Stores the training embeddings ``(n, channels)`` and labels ``(n,)`` it votes with.

        Raises:
            InvalidValueError: shapes that do not fit, or labels outside ``[0, num_classes)``.
        """
        vectors = np.asarray(vectors, np.float32)
        labels = np.asarray(labels).astype(np.int64)
        channels = getattr(self, "channels", None)
        if vectors.ndim != 2 or len(vectors) != len(labels) or labels.ndim != 1 or not len(labels):
            raise InvalidValueError(
                f"KNNHead.set_memory needs vectors (n, channels) and labels (n,), n >= 1; got "
                f"{vectors.shape} and {labels.shape}."
            )
        if channels is not None and vectors.shape[1] != channels:
            raise InvalidValueError(
                f"KNNHead.set_memory: vectors have {vectors.shape[1]} channels, the backbone "
                f"gives {channels}."
            )
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise InvalidValueError(
                f"KNNHead.set_memory: labels must be in [0, {self.num_classes}); got "
                f"{labels.min()}..{labels.max()}."
            )
        mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
        self._memory = {"memory": _normalized(vectors - mean), "labels": labels, "mean": mean}

    @property
    def memory_size(self) -> int:
        """Stored embeddings (0 before :meth:`set_memory`)."""
        return 0 if self._memory is None else len(self._memory["labels"])

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = self.pool(inputs) if self.pool is not None else inputs
        if self._memory is None:
            return ops.zeros((ops.shape(x)[0], self.num_classes), dtype=self.compute_dtype)
        x = ops.cast(x, "float32")
        mean = ops.convert_to_tensor(self._memory["mean"])
        memory = ops.convert_to_tensor(self._memory["memory"])
        labels = ops.convert_to_tensor(self._memory["labels"])
        q = x - mean
        q = q / ops.maximum(ops.sqrt(ops.sum(q * q, axis=-1, keepdims=True)), 1e-12)
        similarity = ops.matmul(q, ops.transpose(memory))  # (batch, stored)
        k = min(self.k, self.memory_size)
        top, index = ops.top_k(similarity, k)  # (batch, k)
        votes = ops.one_hot(ops.take(labels, index), self.num_classes)  # (batch, k, classes)
        counts = ops.sum(votes, axis=1)
        ties = ops.sum(votes * ops.expand_dims(top, -1), axis=1) / k
        score = (counts + 1e-3 * ties) / k
        return ops.cast(ops.log(ops.maximum(score, 1e-6)), self.compute_dtype)

    def get_weights(self) -> list[np.ndarray]:
        """The stored embeddings, labels and mean (none before :meth:`set_memory`)."""
        return [] if self._memory is None else [self._memory[key] for key in _MEMORY_KEYS]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """The inverse of :meth:`get_weights` (as model surgery copies a layer)."""
        if not weights:
            self._memory = None
            return
        if len(weights) != len(_MEMORY_KEYS):
            raise InvalidValueError(
                f"KNNHead.set_weights takes {_MEMORY_KEYS}; got {len(weights)} arrays."
            )
        self._memory = dict(zip(_MEMORY_KEYS, (np.asarray(w) for w in weights), strict=True))

    def save_own_variables(self, store: Any) -> None:
        for key, value in zip(_MEMORY_KEYS, self.get_weights(), strict=False):
            store[key] = value

    def load_own_variables(self, store: Any) -> None:
        if all(key in store.keys() for key in _MEMORY_KEYS):  # noqa: SIM118 (an H5 store)
            self.set_weights([np.asarray(store[key]) for key in _MEMORY_KEYS])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(k=self.k)
        config.pop("dropout", None)
        return config


def _normalized(x: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=-1, keepdims=True))
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


HEADS["knn"] = KNNHead


def fit_knn_head(model: keras.Model, train: Any, verbose: int = 0) -> dict[str, Any]:
    """Fills a classifier's :class:`KNNHead` with the pooled embeddings of ``train``.

    Freezes the backbone (``zoo.FreezeBackbone``: every backbone variable, BatchNorm
    included, stays as loaded), runs the frozen prefix once in inference mode over
    ``train`` (``zoo.caching.compute_activations``: the head stage's cache build, on its probed
    inference engine), pools as the head pools, and stores the result with the labels.

    Args:
        model: a classifier from ``zoo.build_classifier`` with ``head=KNNHead(...)``.
        train: batched ``(pixels 0..255, integer labels)``: a ``tf.data.Dataset`` or
            ``zoo.caching.dataset.ArrayInput``.
        verbose: 1 shows a progress bar.

    Returns:
        ``{"stored": rows, "seconds": wall time of the pass, "k": k}``.

    Raises:
        InvalidValueError: the head is not a :class:`KNNHead`.
    """
    from zoo.caching import compute_activations, frozen_layers_in_inference, plan_cut, split_model
    from zoo.policies import FreezeBackbone

    head = model.get_layer("head")
    if not isinstance(head, KNNHead):
        raise InvalidValueError(
            f"fit_knn_head needs a KNNHead; the model's head is {type(head).__name__}."
        )
    FreezeBackbone().apply(model)
    with frozen_layers_in_inference(model):
        plan = plan_cut(model)
    prefix = split_model(model, plan).prefix
    pooled = prefix.outputs[0] if head.pool is None else head.pool(prefix.outputs[0])
    embedder = keras.Model(prefix.inputs, pooled, name="zoo_knn_embedder")
    start = time.perf_counter()
    acts = compute_activations(embedder, train, budget_bytes=2**62, verbose=verbose, label="train")
    head.set_memory(np.asarray(acts.x, np.float32), np.asarray(acts.y))
    return {"stored": head.memory_size, "seconds": time.perf_counter() - start, "k": head.k}
