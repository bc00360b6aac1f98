"""Choosing the device and the numeric precision.

Introduced in ``notebooks/01_quickstart.ipynb``.

Example:
    >>> from mmkd_utils.device import resolve_device, resolve_precision
    >>> resolve_precision("auto", resolve_device("cpu"))
    'fp32'
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is checked.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'."
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for but CUDA is not available here; "
            "use device='auto' or 'cpu'."
        )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(
            f"device={device!r} was asked for but Apple MPS is not available "
            "here; use device='auto' or 'cpu'."
        )
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: autocast on CUDA (bf16 where supported, else fp16), fp32 elsewhere.

    Example:
        >>> import torch
        >>> resolve_precision("fp16", torch.device("cpu"))
        'fp16'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision, or None for plain fp32.

    Example:
        >>> autocast_dtype("fp32") is None
        True
    """
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
