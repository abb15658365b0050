"""Helpers shared by the family files that wrap ``keras.applications`` architectures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo.registry import WeightSource

_HASH_ALGORITHMS = {32: "md5", 64: "sha256"}


def keras_builder(application: Callable[..., Any]) -> Callable[..., Any]:
    """A spec builder ``builder(include_top, input_shape)`` around a Keras application.

    The model is built with random weights (``weights=None``) and no pooling; zoo loads
    weights itself (see :mod:`zoo.weights`).
    """

    def build(include_top: bool = False, input_shape: tuple[int, int, int] | None = None):
        return application(include_top=include_top, weights=None, input_shape=input_shape)

    build.__name__ = build.__qualname__ = f"build_{application.__name__}"
    build.__doc__ = f"``keras.applications.{application.__name__}`` with random weights."
    return build


def keras_weights(
    base_url: str,
    top: tuple[str, str | None],
    notop: tuple[str, str | None],
) -> tuple[WeightSource, WeightSource]:
    """The with-top and without-top weight files of a Keras application.

    Args:
        base_url: the folder URL the files live under, ending in ``/``.
        top: ``(file name, hash)`` of the file with the ImageNet classifier.
        notop: ``(file name, hash)`` of the file without it.

    Hashes are as Keras publishes them: 32 hex digits are md5, 64 are sha256; ``None``
    where Keras publishes no hash.
    """
    return (
        _source(base_url + top[0], top[1], include_top=True),
        _source(base_url + notop[0], notop[1], include_top=False),
    )


def _source(url: str, file_hash: str | None, include_top: bool) -> WeightSource:
    algorithm = "sha256" if file_hash is None else _HASH_ALGORITHMS[len(file_hash)]
    return WeightSource(url, file_hash, algorithm, include_top=include_top)
