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
