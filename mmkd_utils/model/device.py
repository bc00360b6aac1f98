"""Choosing the device, the numeric precision and the image batch size."""

from __future__ import annotations

import torch

from mmkd_utils.errors import ArgumentError
from mmkd_utils.images.pipeline import DEFAULT_BATCH_SIZE

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: Rough activation memory of one ViT-B/16 image in inference, with a safety margin.
BYTES_PER_IMAGE = 32 * 2**20


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is checked.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ArgumentError(
            f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'."
        ) from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if dev.type in available and not available[dev.type]():
        name = "CUDA" if dev.type == "cuda" else "Apple MPS"
        raise ArgumentError(f"device={device!r}: {name} is not available; use 'auto' or 'cpu'.")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: autocast on CUDA (bf16 where supported, else fp16), fp32 elsewhere.

    Example:
        >>> resolve_precision("fp16", torch.device("cpu"))
        'fp16'
    """
    if precision not in PRECISIONS:
        raise ArgumentError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def auto_image_batch_size(device: torch.device, cap: int = 256) -> int:
    """Default image batch size: half the free GPU memory on CUDA (1 to ``cap``), else 32.

    Example:
        >>> auto_image_batch_size(torch.device("cpu"))
        32
    """
    if device.type != "cuda":
        return DEFAULT_BATCH_SIZE  # CPU and Apple MPS: bounded memory on a 16 GB laptop
    free, _total = torch.cuda.mem_get_info(device)
    return max(1, min(cap, int(free * 0.5) // BYTES_PER_IMAGE))
