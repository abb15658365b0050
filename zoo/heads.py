"""Classification heads: pooled backbone features -> class logits.

A head is one serializable Keras layer taking the backbone's feature map
``(batch, height, width, channels)`` (or already pooled features ``(batch, channels)``)
to logits ``(batch, num_classes)``. Probabilities are ``softmax(logits)`` for a
single-label head and ``sigmoid(logits)`` for a multi-label one; the head never applies
them itself, so losses use ``from_logits=True`` (numerically stabler) and exports can add
the activation they need.

Heads compute in float32 by default (``dtype="float32"``), also under a
``"mixed_bfloat16"`` / ``"mixed_float16"`` global policy: the Keras mixed-precision guide
keeps the last layers and the softmax in float32 for numeric stability.

Pooling: ``"avg"`` (global average), ``"max"`` (global max) or ``"gem"``: generalized
mean pooling, Radenović, Tolias and Chum, "Fine-tuning CNN Image Retrieval with No Human
Annotation", TPAMI 2018, https://arxiv.org/abs/1711.02512.

Vision transformers return tokens ``(batch, tokens, dim)`` instead of feature maps; a head
pools them by ``token_pooling``: ``"cls"`` takes the class token (the first), ``"mean"``
averages the patch tokens (those after the ``prefix_tokens`` class, register and
distillation tokens). :func:`make_head` fills both in from the backbone's spec
(``BackboneSpec.token_pooling``, ``prefix_tokens``) unless the head sets its own.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from zoo.errors import InvalidTypeError, InvalidValueError

POOLINGS = ("avg", "max", "gem")
TOKEN_POOLINGS = ("cls", "mean")
NORMALIZATIONS = (None, "batchnorm", "layernorm")


@keras.saving.register_keras_serializable(package="zoo")
class GeMPooling2D(keras.layers.Layer):
    """Generalized mean (GeM) pooling over height and width.

    ``out[b, c] = (mean_{h,w} max(x[b, h, w, c], eps) ** p) ** (1 / p)``: ``p = 1`` is
    average pooling, ``p -> inf`` approaches max pooling. Radenović et al., TPAMI 2018,
    https://arxiv.org/abs/1711.02512 (they learn ``p``, starting from 3).

    Input ``(batch, height, width, channels)``; output ``(batch, channels)``.

    Args:
        p: the initial (or fixed) exponent, > 0.
        learnable: learn ``p`` with the rest of the head (it is a trainable scalar weight).
        eps: lower clamp of the features, > 0 (keeps the power defined for ReLU zeros
            and negative swish outputs).

    Raises:
        ValueError: ``p`` or ``eps`` is not positive; the input is not 4-D.
    """

    def __init__(
        self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not p > 0 or not eps > 0:
            raise InvalidValueError(f"GeM pooling needs p > 0 and eps > 0; got p={p}, eps={eps}.")
        self.p_init = float(p)
        self.learnable = bool(learnable)
        self.eps = float(eps)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 4:
            raise InvalidValueError(
                f"GeM pooling expects feature maps (batch, height, width, channels); got "
                f"shape {tuple(input_shape)}."
            )
        self.p = self.add_weight(
            name="p",
            shape=(),
            initializer=keras.initializers.Constant(self.p_init),
            trainable=self.learnable,
        )

    def call(self, inputs: Any) -> Any:
        p = ops.cast(self.p, inputs.dtype)
        x = ops.power(ops.maximum(inputs, self.eps), p)
        return ops.power(ops.mean(x, axis=(1, 2)), 1.0 / p)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(p=self.p_init, learnable=self.learnable, eps=self.eps)
        return config


@keras.saving.register_keras_serializable(package="zoo")
class TokenPooling(keras.layers.Layer):
    """Pools a transformer's tokens to one vector per image.

    Input ``(batch, tokens, dim)``; output ``(batch, dim)``.

    Args:
        mode: ``"cls"``: the first token (the class token, as ViT's classifier reads it);
            ``"mean"``: the mean of the tokens after the first ``prefix_tokens``.
        prefix_tokens: class, register and distillation tokens before the patch tokens.

    Raises:
        ValueError: unknown ``mode``, negative ``prefix_tokens``, an input that is not
            3-D or has no patch tokens left to average.
    """

    def __init__(self, mode: str = "cls", prefix_tokens: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in TOKEN_POOLINGS or int(prefix_tokens) < 0:
            raise InvalidValueError(
                f"TokenPooling needs mode in {TOKEN_POOLINGS} and prefix_tokens >= 0; got "
                f"mode={mode!r}, prefix_tokens={prefix_tokens!r}."
            )
        self.mode = mode
        self.prefix_tokens = int(prefix_tokens)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        tokens = input_shape[1] if len(input_shape) == 3 else None
        if len(input_shape) != 3 or (
            self.mode == "mean" and tokens is not None and tokens <= self.prefix_tokens
        ):
            raise InvalidValueError(
                f"TokenPooling({self.mode!r}) expects tokens (batch, tokens, dim) with patch "
                f"tokens after {self.prefix_tokens} prefix tokens; got shape "
                f"{tuple(input_shape)}."
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        if self.mode == "cls":
            return inputs[:, 0]
        return ops.mean(inputs[:, self.prefix_tokens :], axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(mode=self.mode, prefix_tokens=self.prefix_tokens)
        return config


class Head(keras.layers.Layer):
    """Base class of zoo's heads: pooling, then the subclass's layers, then logits.

    Input: ``(batch, height, width, channels)`` feature maps, ``(batch, tokens, dim)``
    transformer tokens (pooled by ``token_pooling``), or ``(batch, channels)`` features
    that are already pooled (the pooling step is then skipped).
    Output: logits ``(batch, num_classes)``, float32 unless another ``dtype`` is given.

    Args:
        num_classes: number of classes (>= 1); may stay ``None`` until
            :func:`zoo.build_classifier` fills it in.
        pooling: ``"avg"``, ``"max"`` or ``"gem"``.
        dropout: dropout rate in [0, 1) right before the classifier layer.
        multi_label: ``True`` for independent sigmoid outputs (several labels per
            image), ``False`` for one softmax over the classes.
        gem_p: GeM's initial exponent (``pooling="gem"`` only).
        gem_learnable: whether GeM's exponent is learned.
        token_pooling: for token inputs, ``"cls"`` or ``"mean"`` (see
            :class:`TokenPooling`); ``None`` takes the backbone's (:func:`make_head`).
        prefix_tokens: tokens before the patch tokens, left out of ``"mean"``.
        **kwargs: Keras layer arguments (``name`` defaults to ``"head"``, ``dtype`` to
            ``"float32"``).

    Raises:
        ValueError: bad ``num_classes``, ``pooling``, ``token_pooling`` or ``dropout``
            (all reported at once).
    """

    _dropout_before_logits = True

    def __init__(
        self,
        num_classes: int | None = None,
        pooling: str = "avg",
        dropout: float = 0.0,
        multi_label: bool = False,
        gem_p: float = 3.0,
        gem_learnable: bool = True,
        token_pooling: str | None = None,
        prefix_tokens: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "head")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        problems = []
        if num_classes is not None:
            problems += _check_num_classes(num_classes)
        if pooling not in POOLINGS:
            problems.append(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        if token_pooling is not None and token_pooling not in TOKEN_POOLINGS:
            problems.append(
                f"unknown token_pooling {token_pooling!r}; expected one of {TOKEN_POOLINGS}"
            )
        if not 0.0 <= dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {dropout}")
        _raise_if(problems, type(self).__name__)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.pooling = pooling
        self.dropout = float(dropout)
        self.multi_label = bool(multi_label)
        self.gem_p = float(gem_p)
        self.gem_learnable = bool(gem_learnable)
        self.token_pooling = token_pooling
        self.prefix_tokens = int(prefix_tokens)

    @property
    def output_activation(self) -> str:
        """``"sigmoid"`` (multi-label) or ``"softmax"`` (single-label), applied to logits."""
        return "sigmoid" if self.multi_label else "softmax"

    def loss(self, label_smoothing: float = 0.0) -> keras.losses.Loss:
        """The matching Keras loss on logits.

        Single-label: sparse categorical cross-entropy on integer labels ``(batch,)``
        (categorical cross-entropy when ``label_smoothing`` > 0, which needs one-hot
        labels ``(batch, num_classes)``). Multi-label: binary cross-entropy on
        multi-hot labels ``(batch, num_classes)``.
        """
        if self.multi_label:
            return keras.losses.BinaryCrossentropy(
                from_logits=True, label_smoothing=label_smoothing
            )
        if label_smoothing:
            return keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=label_smoothing
            )
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if self.num_classes is None:
            raise InvalidValueError(
                f"{type(self).__name__} has no num_classes; pass num_classes=... or build it "
                "through zoo.build_classifier(backbone, num_classes, head=...)."
            )
        if len(input_shape) not in (2, 3, 4):
            raise InvalidValueError(
                f"{type(self).__name__} expects (batch, height, width, channels) feature maps, "
                f"(batch, tokens, dim) tokens or (batch, channels) features; got shape "
                f"{tuple(input_shape)}."
            )
        self.pool = None
        if len(input_shape) == 3:
            self.pool = self._make_token_pooling()
            self.pool.build(input_shape)
        if len(input_shape) == 4:
            self.pool = self._make_pooling()
            self.pool.build(input_shape)
        features = self._build_hidden(input_shape[-1])
        self.drop = None
        if self._dropout_before_logits and self.dropout > 0:
            self.drop = keras.layers.Dropout(self.dropout, name="dropout", dtype=self.dtype_policy)
        self.logits = keras.layers.Dense(self.num_classes, name="logits", dtype=self.dtype_policy)
        self.logits.build((input_shape[0], features))

    def _make_token_pooling(self) -> keras.layers.Layer:
        if self.token_pooling is None:
            raise InvalidValueError(
                f"{type(self).__name__} got tokens (batch, tokens, dim) but no token_pooling; "
                "pass token_pooling='cls' or 'mean', or build it through "
                "zoo.build_classifier, which takes the backbone's."
            )
        return TokenPooling(
            self.token_pooling,
            self.prefix_tokens,
            name=f"{self.token_pooling}_token_pool",
            dtype=self.dtype_policy,
        )

    def _make_pooling(self) -> keras.layers.Layer:
        if self.pooling == "gem":
            return GeMPooling2D(
                self.gem_p, self.gem_learnable, name="gem_pool", dtype=self.dtype_policy
            )
        pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}
        return pool[self.pooling](name=f"{self.pooling}_pool", dtype=self.dtype_policy)

    def _build_hidden(self, features: int) -> int:
        """Builds the layers between pooling and dropout; returns their output width."""
        return features

    def _call_hidden(self, x: Any, training: bool | None) -> Any:
        return x

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = self.pool(inputs) if self.pool is not None else inputs
        x = self._call_hidden(x, training)
        if self.drop is not None:
            x = self.drop(x, training=training)
        return self.logits(x)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.num_classes)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            pooling=self.pooling,
            dropout=self.dropout,
            multi_label=self.multi_label,
            gem_p=self.gem_p,
            gem_learnable=self.gem_learnable,
            token_pooling=self.token_pooling,
            prefix_tokens=self.prefix_tokens,
        )
        return config


@keras.saving.register_keras_serializable(package="zoo")
class LinearHead(Head):
    """Pooling -> optional dropout -> one Dense layer giving logits.

    The classic linear probe / "replace the top" head. Input ``(batch, height, width,
    channels)``; output logits ``(batch, num_classes)``. Arguments as :class:`Head`.
    """


@keras.saving.register_keras_serializable(package="zoo")
class MLPHead(Head):
    """Pooling -> [Dense -> normalization -> activation -> dropout] per hidden layer -> logits.

    The head of the Keras InceptionV3 fine-tuning example is ``MLPHead(units=(1024,))``:
    global average pooling, ``Dense(1024, relu)``, a softmax classifier.

    Input ``(batch, height, width, channels)``; output logits ``(batch, num_classes)``.

    Args:
        num_classes: number of classes; see :class:`Head`.
        units: widths of the hidden Dense layers, bottom to top (at least one, each >= 1).
        dropout: dropout rate after every hidden layer (so also before the classifier).
        activation: a Keras activation name, e.g. ``"relu"``, ``"gelu"``, ``"swish"``.
        normalization: ``None``, ``"batchnorm"`` or ``"layernorm"`` after each hidden
            Dense, before the activation.
        **kwargs: ``pooling``, ``multi_label``, ``gem_p``, ``gem_learnable`` and Keras
            layer arguments, as :class:`Head`.

    Raises:
        ValueError: bad ``units``, ``activation`` or ``normalization``, plus everything
            :class:`Head` checks.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        units: Sequence[int] = (512,),
        dropout: float = 0.0,
        activation: str = "relu",
        normalization: str | None = None,
        **kwargs: Any,
    ) -> None:
        problems = []
        if isinstance(units, int) and not isinstance(units, bool):
            units = (units,)
        units = tuple(units)
        if not units or any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in units):
            problems.append(f"units must be positive integers, e.g. (1024,); got {units!r}")
        if normalization not in NORMALIZATIONS:
            problems.append(
                f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}"
            )
        try:
            keras.activations.get(activation)
        except (ValueError, TypeError):
            problems.append(f"unknown activation {activation!r}; use a Keras name like 'relu'")
        _raise_if(problems, "MLPHead")
        super().__init__(num_classes=num_classes, dropout=dropout, **kwargs)
        self.units = units
        self.activation = activation
        self.normalization = normalization

    _dropout_before_logits = False  # every hidden layer ends with dropout already

    def _build_hidden(self, features: int) -> int:
        self.hidden = []
        for i, width in enumerate(self.units):
            layers = [keras.layers.Dense(width, name=f"dense_{i}", dtype=self.dtype_policy)]
            if self.normalization == "batchnorm":
                layers.append(
                    keras.layers.BatchNormalization(name=f"bn_{i}", dtype=self.dtype_policy)
                )
            elif self.normalization == "layernorm":
                layers.append(
                    keras.layers.LayerNormalization(name=f"ln_{i}", dtype=self.dtype_policy)
                )
            layers.append(
                keras.layers.Activation(self.activation, name=f"act_{i}", dtype=self.dtype_policy)
            )
            layers.append(
                keras.layers.Dropout(self.dropout, name=f"dropout_{i}", dtype=self.dtype_policy)
            )
            shape = (None, features)
            for layer in layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
            features = width
            self.hidden.extend(layers)
        return features

    def _call_hidden(self, x: Any, training: bool | None) -> Any:
        for layer in self.hidden:
            x = layer(x, training=training)
        return x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            units=list(self.units), activation=self.activation, normalization=self.normalization
        )
        return config


HEADS: dict[str, type[Head]] = {"linear": LinearHead, "mlp": MLPHead}


def make_head(
    head: str | Head | None,
    num_classes: int,
    multi_label: bool | None = None,
    token_pooling: str | None = None,
    prefix_tokens: int = 0,
) -> Head:
    """A fresh, unbuilt head named ``"head"`` for ``num_classes`` classes.

    A :class:`Head` instance is copied through its config (so the caller's instance is
    never shared between two models); a string names a head with default settings.

    Args:
        head: ``None`` (a :class:`LinearHead`), ``"linear"``, ``"mlp"``, or a head.
        num_classes: number of classes, >= 1.
        multi_label: overrides the head's ``multi_label`` when not ``None``.
        token_pooling: the backbone's token pooling (``BackboneSpec.token_pooling``), used
            when the head sets none of its own; ``None`` for feature-map backbones.
        prefix_tokens: the backbone's tokens before the patch tokens (always the
            backbone's, for a token backbone).

    Raises:
        ValueError: unknown head name, bad ``num_classes``, or a head instance whose own
            ``num_classes`` differs from ``num_classes``.
        TypeError: ``head`` is neither a string nor a :class:`Head`.
    """
    _raise_if(_check_num_classes(num_classes), "build_classifier")
    if head is None:
        head = "linear"
    if isinstance(head, str):
        if head not in HEADS:
            raise InvalidValueError(
                f"Unknown head {head!r}; expected one of {sorted(HEADS)} or a zoo.heads.Head "
                "instance such as zoo.MLPHead(units=(1024,))."
            )
        head = HEADS[head]()
    if not isinstance(head, Head):
        raise InvalidTypeError(
            f"head must be 'linear', 'mlp' or a zoo.heads.Head instance; got {type(head).__name__}."
        )
    if head.num_classes is not None and head.num_classes != num_classes:
        raise InvalidValueError(
            f"The head was made for {head.num_classes} classes but the classifier has "
            f"{num_classes}; leave the head's num_classes unset."
        )
    config = head.get_config()
    config.update(name="head", num_classes=int(num_classes))
    if multi_label is not None:
        config["multi_label"] = bool(multi_label)
    if token_pooling is not None:  # a token backbone: its prefix, the head's choice first
        config["token_pooling"] = config.get("token_pooling") or token_pooling
        config["prefix_tokens"] = int(prefix_tokens)
    return type(head).from_config(config)


def _check_num_classes(num_classes: Any) -> list[str]:
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        return [f"num_classes must be an integer >= 1, got {num_classes!r}"]
    return []


def _raise_if(problems: list[str], where: str) -> None:
    if problems:
        raise InvalidValueError(f"{where}: " + "; ".join(problems) + ".")
