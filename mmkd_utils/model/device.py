"""Choosing the device and the numeric precision.

Introduced in ``notebooks/01_quickstart.ipynb``.

Example:
    >>> from mmkd_utils.model.device import resolve_device, resolve_precision
    >>> resolve_precision("auto", resolve_device("cpu"))
    'fp32'
"""

from __future__ import annotations

import os

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


#: Most threads :meth:`~mmkd_utils.model.loading.MMKDModel.encode_images` decodes images with.
MAX_PREPROCESS_THREADS = 8


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one).

    Example:
        >>> usable_cpus() >= 1
        True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def preprocess_threads(cpus: int | None = None) -> int:
    """Threads a model decodes and preprocesses images with: one per usable core, at most 8.

    Pillow releases the GIL while it decodes and resizes, so on a 2-core laptop two
    images of a batch are prepared at once, instead of one core idling while the forward
    pass waits; at most this many full-size images are held in memory at a time. Each
    model keeps one such pool of threads; a single core gets none.

    Example:
        >>> preprocess_threads(cpus=2), preprocess_threads(cpus=64)
        (2, 8)
    """
    if cpus is None:
        cpus = usable_cpus()
    return max(1, min(cpus, MAX_PREPROCESS_THREADS))


#: Rough activation memory of one ViT-B/16 image in inference, with a safety margin.
BYTES_PER_IMAGE = 32 * 2**20
#: Image batch size on the CPU and Apple MPS: bounded memory on a 16 GB laptop.
CPU_IMAGE_BATCH = 32


def auto_image_batch_size(device: torch.device, cap: int = 256) -> int:
    """Default image batch size: from free GPU memory on CUDA, a fixed 32 elsewhere.

    On CUDA half of the currently free memory is budgeted at ``BYTES_PER_IMAGE`` per
    image, between 1 and ``cap``.

    Example:
        >>> import torch
        >>> auto_image_batch_size(torch.device("cpu"))
        32
    """
    if device.type != "cuda":
        return CPU_IMAGE_BATCH
    free, _total = torch.cuda.mem_get_info(device)
    return max(1, min(cap, int(free * 0.5) // BYTES_PER_IMAGE))


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a CPU batch to ``device``; on CUDA through pinned memory, without blocking.

    Example:
        >>> import torch
        >>> to_device(torch.zeros(2), torch.device("cpu")).device.type
        'cpu'
    """
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
