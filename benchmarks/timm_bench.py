"""The peer: timm (PyTorch) on the same backbone, input, batch and precision as zoo.

timm is not a dependency of zoo: it lives in the optional ``peer`` extra, installed by
``scripts/setup_peer.sh`` into ``.venv-peer`` beside TensorFlow, so the benchmarks run both
in the same process layout. Where timm is not installed (the plain ``.venv``), every timm
figure is the string :data:`SKIP_NEEDS_PEER` instead of a number, never an error.

timm runs the way its users run inference on a CPU: ``timm.create_model(name,
pretrained=False)``, ``eval()``, channels-last memory, float32, eager calls inside
``torch.inference_mode()``, ``torch.set_num_threads`` = the cores this process may use.
Random weights: speed does not depend on their values. Nothing here imports torch or timm
at module level.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.common import cores

SKIP_NEEDS_PEER = "skipped: needs the peer extra (scripts/setup_peer.sh)"

# zoo backbone -> the same architecture in timm.
TIMM_NAMES = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "mobilenet_v2": "mobilenetv2_100",
    "efficientnet_b0": "efficientnet_b0",
    "resnet50": "resnet50",
    "inception_v3": "inception_v3",
}


def has_timm() -> bool:
    """Whether timm is installed here (found without importing it).

    A timm that is installed but fails to import (say, a torchvision built for another
    torch) is not "absent": importing it later raises, and the measurement reports it.
    """
    return importlib.util.find_spec("timm") is not None


def timm_model(backbone: str, num_classes: int) -> Any:
    """timm's model for zoo's ``backbone``: random weights, eval mode, channels-last.

    Args:
        backbone: a key of :data:`TIMM_NAMES`.
        num_classes: classes of the new head (as zoo's classifier has).

    Returns:
        A ``torch.nn.Module``: ``(batch, 3, height, width)`` float32 -> logits
        ``(batch, num_classes)``.

    Raises:
        KeyError: ``backbone`` has no timm counterpart listed.
    """
    import timm
    import torch

    torch.set_num_threads(cores())
    model = timm.create_model(TIMM_NAMES[backbone], pretrained=False, num_classes=num_classes)
    return model.eval().to(memory_format=torch.channels_last)


def timm_runner(backbone: str, num_classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """A callable like zoo's runtimes: float32 images ``(batch, h, w, 3)`` -> logits.

    The NHWC array is handed to torch as an NCHW view of the same memory, which is
    exactly channels-last: no copy, no layout change, the input zoo's runtimes get.
    """
    import torch

    model = timm_model(backbone, num_classes)

    def run(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            return model(x).numpy()

    return run


def versions() -> dict[str, str | None]:
    """torch, torchvision and timm versions (None where absent), for the results file."""
    from benchmarks.common import version

    return {name: version(name) for name in ("torch", "torchvision", "timm")}


# zoo's top 2 blocks (``BackboneSpec.blocks[-2:]``) as timm module names. BatchNorm stays
# frozen in both, so the BatchNorm layers inside these modules are not trained.
TOP2_MODULES = {
    "inception_v3": ("Mixed_7b", "Mixed_7c"),  # zoo: mixed9, mixed10
    "resnet50": ("layer4.1", "layer4.2"),  # zoo: conv5_block2, conv5_block3
    "efficientnet_b0": ("blocks.6", "conv_head"),  # zoo: block7a, top
    "mobilenet_v2": ("blocks.6", "conv_head"),  # zoo: block_16, top
    "efficientnet_lite0": ("blocks.6", "conv_head"),  # zoo: block7a, top
}


def measure_timm_peer(
    backbone: str,
    batch_size: int = 32,
    input_size: int | None = None,
    repeats: int = 5,
    num_classes: int = 10,
    train_batch_size: int | None = None,
    train_input_size: int | None = None,
) -> dict[str, Any]:
    """timm's forward images/s and top-2-blocks training step images/s for ``backbone``.

    The training step runs at ``train_batch_size`` / ``train_input_size`` (default the
    forward's), so each figure can match the zoo measurement it is compared with.

    Forward: the backbone without its classifier (``num_classes=0``, pooled features) in
    ``torch.inference_mode()``. Training step: a ``num_classes`` head, every parameter
    frozen except those of :data:`TOP2_MODULES` and the head, BatchNorm frozen (eval mode,
    its affine parameters frozen too), Adam, cross-entropy on random labels. Random
    weights, float32, channels-last, ``torch.set_num_threads(cores)``; one warm-up call,
    then medians of ``repeats``.

    Returns:
        ``forward_images_per_second``, ``train_step_images_per_second``, ``trainable_params``,
        ``timm_model``, ``batch_size``, ``input_size``, ``versions``; without timm
        ``{"skipped": SKIP_NEEDS_PEER, ...}`` with those numbers None.
    """
    fields = ("forward_images_per_second", "train_step_images_per_second")
    if not has_timm():
        return {"skipped": SKIP_NEEDS_PEER, **dict.fromkeys(fields)}
    import torch

    from benchmarks.common import time_calls
    from zoo.registry import get_spec

    size = input_size or get_spec(backbone).input_size[0]
    train_size = train_input_size or get_spec(backbone).input_size[0]
    train_batch = train_batch_size or batch_size
    x = _pixels(batch_size, size)
    x_train = _pixels(train_batch, train_size)
    y = torch.from_numpy(np.random.default_rng(1).integers(0, num_classes, train_batch))

    features = timm_model(backbone, num_classes=0)

    def forward() -> None:
        with torch.inference_mode():
            features(x)

    model = timm_model(backbone, num_classes)
    trainable = _freeze_all_but_top2(model, backbone)
    optimizer = torch.optim.Adam(trainable, lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x_train), y).backward()
        optimizer.step()

    rates = {
        field: batch / time_calls(fn, repeats)["median_seconds"]
        for field, fn, batch in zip(
            fields, (forward, train_step), (batch_size, train_batch), strict=True
        )
    }
    return {
        "backbone": backbone,
        "timm_model": TIMM_NAMES[backbone],
        "batch_size": batch_size,
        "input_size": [size, size],
        "train_batch_size": train_batch,
        "train_input_size": [train_size, train_size],
        "trainable_params": sum(p.numel() for p in trainable),
        "versions": versions(),
        **rates,
    }


def _pixels(batch: int, size: int) -> Any:
    """Random float32 pixels 0..255 as an NCHW view of NHWC memory (channels-last)."""
    import torch

    images = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def _freeze_all_but_top2(model: Any, backbone: str) -> list[Any]:
    """Freezes ``model`` except the top 2 blocks' and the head's non-BatchNorm parameters."""
    import torch

    model.eval()  # BatchNorm frozen: running statistics used and never updated
    for p in model.parameters():
        p.requires_grad_(False)
    modules = [model.get_submodule(n) for n in TOP2_MODULES[backbone]]
    trainable = []
    for module in [*modules, model.get_classifier()]:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                continue
            for p in m.parameters(recurse=False):
                p.requires_grad_(True)
                trainable.append(p)
    return trainable


def peer_ratios(
    runs: dict[str, dict[str, Any]], forward: dict[str, Any], fine_tune: dict[str, Any]
) -> dict[str, Any]:
    """zoo / timm ratios per backbone, where both sides were measured in this run.

    Args:
        runs: :func:`measure_timm_peer` results per backbone.
        forward: the run's ``forward`` section (zoo float32 images/s per backbone).
        fine_tune: the run's ``fine_tune`` section (zoo's training images/s per backbone,
            with the settings zoo chose; its precision is recorded beside the ratio).

    Returns:
        Per backbone the timm result plus ``zoo_forward_images_per_second``,
        ``forward_ratio``, ``zoo_train_images_per_second``, ``zoo_train_settings`` and
        ``train_ratio`` (None where a side is missing).
    """
    out: dict[str, Any] = {}
    for name, timm in runs.items():
        zoo_forward = ((forward.get(name) or {}).get("float32") or {}).get("images_per_second")
        zoo_train = (fine_tune.get(name) or {}).get("zoo_images_per_second")
        timm_forward = timm.get("forward_images_per_second")
        timm_train = timm.get("train_step_images_per_second")
        out[name] = {
            **timm,
            "zoo_forward_images_per_second": zoo_forward,
            "forward_ratio": zoo_forward / timm_forward if zoo_forward and timm_forward else None,
            "zoo_train_images_per_second": zoo_train,
            "zoo_train_settings": (fine_tune.get(name) or {}).get("zoo_settings"),
            "train_ratio": zoo_train / timm_train if zoo_train and timm_train else None,
        }
    return out
