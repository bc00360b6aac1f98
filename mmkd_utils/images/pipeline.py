"""The one image pipeline (``encode_images``, ``embed_folder``...): a ``Dataset`` that decodes
and preprocesses, and its ``DataLoader``. An image that cannot be read does not stop its
batch: it comes back in :attr:`Batch.failures`, and the caller raises or skips it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from mmkd_utils.errors import ArgumentError, ImageLoadError
from mmkd_utils.images.decode import ImageInput, to_rgb

#: Images per forward pass on the CPU: bounded memory on a 16 GB laptop.
DEFAULT_BATCH_SIZE = 32
MAX_WORKERS = 4


class Batch(NamedTuple):
    """Positions of the images that loaded, their pixels, and ``(position, error)`` failures."""

    indices: list[int]
    pixels: torch.Tensor | None
    failures: list[tuple[int, ImageLoadError]]


class ImageDataset(Dataset):
    """Item ``i`` is ``(i, preprocess(to_rgb(image)), None)``, or ``(i, None, error)``.

    Example:
        >>> import torchvision.transforms as T
        >>> ImageDataset([xray], T.ToTensor())[0][1].shape[0]
        3
    """

    def __init__(self, images: Sequence[ImageInput], preprocess: Callable[[Any], torch.Tensor]):
        self.images, self.preprocess = list(images), preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, ImageLoadError | None]:
        image = self.images[i]
        try:
            return i, self.preprocess(to_rgb(image)), None
        except ImageLoadError as err:
            return i, None, err
        except Exception as err:  # any decoder failure is reported, never fatal here
            name = os.fsdecode(image) if isinstance(image, (str, bytes, os.PathLike)) else "image"
            error = ImageLoadError(f"{name} could not be read ({type(err).__name__}: {err})")
            return i, None, error


def _collate(items: list[tuple[int, torch.Tensor | None, ImageLoadError | None]]) -> Batch:
    """Stack the pixels of the images that loaded; keep the failures beside them."""
    ok = [(i, px) for i, px, _ in items if px is not None]
    return Batch(
        indices=[i for i, _ in ok],
        pixels=torch.stack([px for _, px in ok]) if ok else None,
        failures=[(i, err) for i, px, err in items if px is None],
    )


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


def default_num_workers(n_images: int, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Worker processes: none below two batches (nothing to overlap), else one per core, ≤ 4.

    Example:
        >>> default_num_workers(10)
        0
    """
    return 0 if n_images < 2 * batch_size else min(MAX_WORKERS, usable_cpus())


def check_count(value: Any, name: str, default: int | None, minimum: int = 1) -> int | None:
    """``value`` if it is a whole number ≥ ``minimum``, ``default`` for None; else ArgumentError.

    Example:
        >>> check_count(None, "per_class", 6), check_count(3, "per_class", 6)
        (6, 3)
    """
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArgumentError(f"{name}={value!r}: pass a whole number ≥ {minimum}, or None.")
    return value


def check_batch_size(batch_size: Any, default: int = DEFAULT_BATCH_SIZE) -> int:
    """``batch_size``, or ``default`` for None; anything but a positive whole number is refused.

    Example:
        >>> check_batch_size(None), check_batch_size(8)
        (32, 8)
    """
    return check_count(batch_size, "batch_size", default)


def check_num_workers(num_workers: Any) -> int | None:
    """``num_workers`` if it is None or a whole number ≥ 0; anything else is refused.

    Example:
        >>> check_num_workers(2)
        2
    """
    return check_count(num_workers, "num_workers", None, minimum=0)


def image_loader(
    images: Sequence[ImageInput] | Dataset,
    preprocess: Callable[[Any], torch.Tensor],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The ``DataLoader`` of :class:`ImageDataset` over ``images``: :class:`Batch` es in order.

    Example:
        >>> import torchvision.transforms as T
        >>> next(iter(image_loader([xray, xray], T.ToTensor(), batch_size=2))).indices
        [0, 1]
    """
    dataset = images if isinstance(images, Dataset) else ImageDataset(images, preprocess)
    return DataLoader(
        dataset, batch_size, num_workers=num_workers, collate_fn=_collate, pin_memory=pin_memory
    )


def image_batches(
    images: Sequence[ImageInput],
    preprocess: Callable[[Any], torch.Tensor],
    *,
    batch_size: int | None = None,
    num_workers: int | None = None,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Batches of ``images`` in order, decoded by worker processes when there are enough.

    ``num_workers=None`` picks :func:`default_num_workers`. If the worker processes fail
    (a sandbox without shared memory, say), a warning says so and the remaining images
    are decoded in this process.

    Example:
        >>> import torchvision.transforms as T
        >>> [b.indices for b in image_batches([xray] * 3, T.ToTensor(), batch_size=2)]
        [[0, 1], [2]]
    """
    size, dataset = check_batch_size(batch_size), ImageDataset(images, preprocess)
    workers = check_num_workers(num_workers)
    workers = default_num_workers(len(dataset), size) if workers is None else workers
    done, kwargs = 0, {"batch_size": size, "pin_memory": pin_memory}
    if workers > 0:
        it = None
        try:
            it = iter(image_loader(dataset, preprocess, num_workers=workers, **kwargs))
            for batch in it:
                done += len(batch.indices) + len(batch.failures)
                yield batch
            return
        except Exception as err:  # the dataset catches its own errors: this is the workers
            warnings.warn(
                f"DataLoader worker processes failed ({type(err).__name__}: {err}); decoding "
                "the remaining images in this process. Pass num_workers=0 to skip this attempt.",
                stacklevel=2,
            )
        finally:
            del it  # shuts the worker processes down now, even if the caller raised
    rest = Subset(dataset, range(done, len(dataset)))  # items keep their own positions
    yield from image_loader(rest, preprocess, **kwargs)
