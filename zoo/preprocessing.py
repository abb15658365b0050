"""Per-backbone input scaling as a serializable Keras layer (raw pixels 0..255 in)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from zoo.errors import InvalidValueError
from zoo.registry import BackboneSpec, Preprocessing


@keras.saving.register_keras_serializable(package="zoo")
class Preprocess(keras.layers.Layer):
    """Maps raw pixels in 0..255 to what a backbone expects.

    Input: ``(batch, height, width, 3)`` RGB pixels, any numeric dtype, values 0..255.
    Output: same shape, float, ``(x[..., order] - mean) / std`` as described by the
    backbone's :class:`zoo.registry.Preprocessing` (keras.applications'
    ``imagenet_utils.preprocess_input`` modes, without a Lambda layer so ``.keras`` files
    load with ``safe_mode=True``).

    Args:
        spec: a :class:`BackboneSpec`, a :class:`Preprocessing`, or a registry name.
        mode: the stored field ``Preprocessing.mode`` (used by ``from_config``).
        mean: the stored per-channel mean (used by ``from_config``).
        std: the stored per-channel standard deviation (used by ``from_config``).
        channel_order: the stored ``"rgb"`` or ``"bgr"`` (used by ``from_config``).

    Raises:
        ValueError: the input does not have 3 channels.
    """

    def __init__(
        self,
        spec: BackboneSpec | Preprocessing | str | None = None,
        *,
        mode: str | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        channel_order: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "preprocess")
        super().__init__(**kwargs)
        if isinstance(spec, str):
            from zoo.registry import get_spec

            spec = get_spec(spec)
        if isinstance(spec, BackboneSpec):
            spec = spec.preprocessing
        if spec is None:
            spec = Preprocessing(mode, tuple(mean), tuple(std), channel_order)
        self.preprocessing = spec
        self._mean = [float(v) for v in spec.mean]
        self._inv_std = [1.0 / float(v) for v in spec.std]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if input_shape[-1] != 3:
            raise InvalidValueError(
                f"Preprocess expects RGB images (batch, height, width, 3); got shape "
                f"{tuple(input_shape)}. Convert greyscale or RGBA images to RGB first."
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.preprocessing.channel_order == "bgr":
            x = ops.flip(x, axis=-1)
        mean = ops.convert_to_tensor(self._mean, dtype=self.compute_dtype)
        inv_std = ops.convert_to_tensor(self._inv_std, dtype=self.compute_dtype)
        return (x - mean) * inv_std

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        p = self.preprocessing
        config.update(
            mode=p.mode, mean=list(p.mean), std=list(p.std), channel_order=p.channel_order
        )
        return config
