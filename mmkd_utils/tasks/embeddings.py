"""Embedding every image of a folder, fast and only once: :func:`embed_folder`.

Images are decoded and preprocessed in :class:`torch.utils.data.DataLoader` worker
processes while the model embeds the previous batch, and every embedding is kept in an
on-disk cache keyed by the SHA-256 of the file's bytes, one folder per model
(:attr:`~mmkd_utils.model.loading.MMKDModel.fingerprint`)::

    <MMKD_HOME>/embeddings/<fingerprint[:16]>/<sha[:2]>/<sha>.npy   (float32 [D])

So a second run over the same folder decodes nothing and runs no forward pass; a file
whose bytes changed is embedded again; a run that was interrupted resumes where it
stopped (entries are written as each batch completes). Each entry is written to a
temporary file and moved into place with :func:`os.replace`, so an entry is complete or
absent, and concurrent runs can share a cache; an entry that is nevertheless unreadable
(e.g. truncated by a full disk) is detected, embedded again and rewritten.

Introduced in ``notebooks/04_embedding_maps.ipynb``.

Example:
    >>> from mmkd_utils import embed_folder, load_model
    >>> clip = load_model()  # doctest: +SKIP
    >>> emb = embed_folder(clip, "data/chest")  # doctest: +SKIP
    >>> emb  # doctest: +SKIP
    FolderEmbeddings(root='data/chest', 412 images × 512, labels ['normal', 'pneumonia'], ...)
    >>> emb.embeddings.shape  # doctest: +SKIP
    torch.Size([412, 512])
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from mmkd_utils.config import cache_dir
from mmkd_utils.download import sha256_file
from mmkd_utils.errors import ImageLoadError, SkippedImagesWarning
from mmkd_utils.images.decode import to_rgb
from mmkd_utils.images.pipeline import DEFAULT_BATCH_SIZE as DEFAULT_IMAGE_BATCH
from mmkd_utils.images.pipeline import check_batch_size as _check_batch_size
from mmkd_utils.tasks.evaluation import IMAGE_SUFFIXES, list_images

if TYPE_CHECKING:
    import pandas as pd

    from mmkd_utils.model.loading import MMKDModel

__all__ = ["FolderEmbeddings", "cache_folder", "default_num_workers", "embed_folder"]

#: Most DataLoader worker processes :func:`embed_folder` starts by default.
MAX_DEFAULT_WORKERS = 4
# How many failures the one SkippedImagesWarning lists before "... and N more".
_WARN_LINES = 10
# How far from 1 the norm of a cached (L2-normalised) embedding may be.
_NORM_TOLERANCE = 1e-3


@dataclass(eq=False, repr=False)
class FolderEmbeddings:
    """The embeddings of the images of a folder, from :func:`embed_folder`.

    Attributes:
        root: The folder that was embedded.
        paths: The images embedded, sorted by their path below ``root``.
        labels: Per image, the sub-folder of ``root`` it is in (the first path
            component below ``root``), or None for an image directly in ``root``.
        embeddings: float32 CPU tensor [N, D], L2-normalised; row i belongs to
            ``paths[i]``.
        skipped: ``path, reason`` of every image left out with ``on_error="skip"``.
        from_cache: How many of the embeddings were read from the on-disk cache.

    Example:
        >>> emb = embed_folder(clip, "data/chest")  # doctest: +SKIP
        >>> len(emb), emb.embeddings.shape[1]  # doctest: +SKIP
        (412, 512)
    """

    root: Path
    paths: list[Path]
    labels: list[str | None]
    embeddings: torch.Tensor
    skipped: pd.DataFrame
    from_cache: int = 0

    def __len__(self) -> int:
        return len(self.paths)

    def to_frame(self) -> pd.DataFrame:
        """One row per image: ``path`` (str) and ``label``, in the order of the embeddings.

        Example:
            >>> emb.to_frame().head(2)  # doctest: +SKIP
                               path      label
            0  data/chest/normal/a.png   normal
            1  data/chest/normal/b.png   normal
        """
        import pandas as pd

        return pd.DataFrame(
            {
                "path": pd.Series([str(p) for p in self.paths], dtype=object),
                "label": pd.Series(self.labels, dtype=object),  # None stays None
            }
        )

    def __repr__(self) -> str:
        names = sorted({label for label in self.labels if label is not None})
        shown = names[:5] + (["..."] if len(names) > 5 else [])
        unlabelled = sum(label is None for label in self.labels)
        labels = f"labels {shown}" if names else "no labels"
        if names and unlabelled:
            labels += f" + {unlabelled} unlabelled"
        return (
            f"FolderEmbeddings(root={str(self.root)!r}, {len(self)} images × "
            f"{self.embeddings.shape[1]}, {labels}, {self.from_cache} from cache, "
            f"{len(self.skipped)} skipped)"
        )


# --------------------------------------------------------------------------- finding images


def _find_images(root: Path, pattern: str | None) -> list[Path]:
    """The images under ``root`` (matching ``pattern``), sorted; errors say what to do."""
    if not root.exists():
        raise ImageLoadError(
            f"The image folder {root} does not exist: check the path (relative paths start "
            f"from {Path.cwd()})."
        )
    if not root.is_dir():
        raise ImageLoadError(
            f"{root} is a file, not a folder: pass the folder that holds the images (or use "
            "model.encode_images for single files)."
        )
    images = list_images(root)
    if pattern is not None:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"pattern={pattern!r}: pass a glob such as '**/*.png', or None.")
        try:
            wanted = {p.relative_to(root).as_posix() for p in root.glob(pattern)}
        except (ValueError, NotImplementedError) as err:
            raise ValueError(
                f"pattern={pattern!r} is not a usable glob relative to {root} ({err}); use "
                "e.g. '**/*.png' (any depth) or '*/*.dcm' (one folder down)."
            ) from None
        images = [p for p in images if p.relative_to(root).as_posix() in wanted]
    if not images:
        matching = f" matching {pattern!r}" if pattern is not None else ""
        raise ImageLoadError(
            f"No image files{matching} under {root} (hidden files are ignored; images end "
            f"in {', '.join(IMAGE_SUFFIXES)}). Check the folder"
            + (" and the pattern" if pattern is not None else "")
            + "."
        )
    return images


def _label(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


# --------------------------------------------------------------------------- the cache


def cache_folder(model: MMKDModel, cache: bool | str | os.PathLike = True) -> Path | None:
    """The folder :func:`embed_folder` keeps ``model``'s embeddings in (None: no cache).

    ``cache=True`` means ``cache_dir() / "embeddings"``; a path replaces that folder.
    Either way the entries go into a sub-folder named after the model's fingerprint, so
    different models never share entries.

    Example:
        >>> cache_folder(clip).parent.name  # doctest: +SKIP
        'embeddings'
    """
    if cache is False or cache is None:
        return None
    if cache is True:
        base = cache_dir() / "embeddings"
    elif isinstance(cache, (str, os.PathLike)):
        base = Path(cache).expanduser()
    else:
        raise ValueError(f"cache={cache!r}: pass True, False or a folder path.")
    return base / model.fingerprint[:16]


def _entry_path(folder: Path, key: str) -> Path:
    return folder / key[:2] / f"{key}.npy"


def _hash_or_none(path: Path) -> str | None:
    """SHA-256 of the file's bytes; None if it cannot be read (decoding will say why)."""
    try:
        return sha256_file(path)
    except OSError:
        return None


def _hash_files(paths: Sequence[Path]) -> list[str | None]:
    """Content hashes of ``paths``, in threads (hashlib releases the GIL on large files)."""
    from tqdm.auto import tqdm

    workers = min(8, os.cpu_count() or 1, max(1, len(paths)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            tqdm(
                pool.map(_hash_or_none, paths),
                total=len(paths),
                desc="Hashing",
                unit="image",
                disable=None if len(paths) > 1000 else True,
            )
        )


def _read_entry(folder: Path, key: str, dim: int) -> np.ndarray | None:
    """The cached embedding, or None if it is absent or not a valid [dim] unit vector."""
    try:
        with open(_entry_path(folder, key), "rb") as f:
            vec = np.lib.format.read_array(f, allow_pickle=False)
    except Exception:  # absent, truncated, bad header, not a .npy file: recompute
        return None
    if vec.shape != (dim,) or vec.dtype != np.float32 or not np.isfinite(vec).all():
        return None
    if abs(float(np.linalg.norm(vec)) - 1.0) > _NORM_TOLERANCE:
        return None
    return vec


class _CacheWriter:
    """Writes entries atomically; on the first failure, warns once and stops writing."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def write(self, key: str, vec: np.ndarray) -> None:
        if self.folder is None:
            return
        target = _entry_path(self.folder, key)
        tmp = target.with_name(f".{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(vec, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, target)
        except OSError as err:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            if _read_entry(self.folder, key, vec.shape[0]) is not None:
                return  # another run wrote the same entry at the same moment (Windows)
            warnings.warn(
                f"Could not write to the embedding cache {self.folder} ({err}); continuing "
                "without caching, so the next run embeds these images again. Set MMKD_HOME "
                "(or pass cache=<folder>) to a writable folder, or cache=False.",
                stacklevel=3,
            )
            self.folder = None


# --------------------------------------------------------------------------- decoding


class _Batch(NamedTuple):
    """A collated batch: dataset positions, pixels of the readable ones, and the failures."""

    positions: list[int]
    pixels: torch.Tensor | None
    failures: list[tuple[int, str]]


class _ImageDataset(Dataset):
    """Decodes and preprocesses one file per item; a failure becomes an error marker.

    An item is ``(position, pixels, None)`` or ``(position, None, reason)``, so one bad
    file does not kill a worker process or the run.
    """

    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Any], torch.Tensor]):
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        path = self.paths[i]
        try:
            return i, self.preprocess(to_rgb(path)), None
        except ImageLoadError as err:
            return i, None, str(err)
        except Exception as err:  # any decoder failure: reported, never fatal here
            return i, None, f"Image {path} could not be read ({type(err).__name__}: {err})"


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> _Batch:
    ok = [(i, px) for i, px, _ in items if px is not None]
    return _Batch(
        positions=[i for i, _, _ in items],
        pixels=torch.stack([px for _, px in ok]) if ok else None,
        failures=[(i, reason) for i, px, reason in items if px is None],
    )


def default_num_workers(n_images: int, batch_size: int = DEFAULT_IMAGE_BATCH) -> int:
    """Worker processes :func:`embed_folder` uses when ``num_workers=None``.

    ``min(4, os.cpu_count())``, but 0 (decode in this process) for fewer than two
    batches of images, where starting the workers would cost more than it saves.

    Example:
        >>> default_num_workers(10)
        0
    """
    if n_images < 2 * batch_size:
        return 0
    return min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)


def _loader(dataset: Dataset, batch_size: int, num_workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin,
    )


def _batches(
    dataset: _ImageDataset, batch_size: int, num_workers: int, pin: bool
) -> Iterator[_Batch]:
    """Collated batches in order; if worker processes fail, warn and go on in this process."""
    done = 0
    if num_workers > 0:
        it = None
        try:
            it = iter(_loader(dataset, batch_size, num_workers, pin))
            while True:
                batch = next(it)
                done += len(batch.positions)
                yield batch
        except StopIteration:
            return
        except Exception as err:  # the dataset catches its own errors: this is the workers
            warnings.warn(
                f"DataLoader worker processes failed ({type(err).__name__}: {err}); "
                "decoding the remaining images in this process instead (num_workers=0). "
                "Pass num_workers=0 to skip this attempt.",
                stacklevel=3,
            )
        finally:
            del it  # shuts the worker processes down now, even if the caller raised
    rest = Subset(dataset, range(done, len(dataset)))
    for batch in _loader(rest, batch_size, 0, pin):
        yield batch._replace(
            positions=[done + i for i in batch.positions],
            failures=[(done + i, reason) for i, reason in batch.failures],
        )


# --------------------------------------------------------------------------- the entry point


def _check_num_workers(num_workers: int | None) -> int | None:
    if num_workers is None:
        return None
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers={num_workers!r}: pass 0, a positive whole number or None.")
    return num_workers


def _skip_report(failed: list[tuple[int, Path, str]], total: int) -> None:
    lines = [f"  {path}: {reason}" for _, path, reason in failed]
    if len(lines) > _WARN_LINES:
        lines = lines[:_WARN_LINES] + [f"  ... and {len(lines) - _WARN_LINES} more"]
    warnings.warn(
        SkippedImagesWarning(
            f"Skipped {len(failed)} of {total} images that could not be read; see "
            "result.skipped:\n" + "\n".join(lines),
            [(index, str(path), reason) for index, path, reason in failed],
        ),
        stacklevel=3,
    )


def embed_folder(
    model: MMKDModel,
    root: str | os.PathLike,
    *,
    pattern: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache: bool | str | os.PathLike = True,
    on_error: str = "raise",
) -> FolderEmbeddings:
    """Embed every image under ``root`` (sub-folders included), using and filling a cache.

    Args:
        model: A loaded :class:`~mmkd_utils.model.loading.MMKDModel`.
        root: The folder. Every image below it is embedded (the formats of
            :func:`~mmkd_utils.images.medical.load_image`, recognised by their suffix), sorted
            by path; hidden files and folders are ignored. The first sub-folder below
            ``root`` is an image's label (None for images directly in ``root``).
        pattern: A glob relative to ``root`` that narrows the images, e.g. ``"**/*.png"``
            (any depth) or ``"normal/*"``; non-image files never count.
        batch_size: Images per forward pass (default that of ``model.encode_images``).
        num_workers: Worker processes that decode and preprocess images. Default
            ``min(4, os.cpu_count())``, but 0 (all in this process) when fewer than two
            batches of images need embedding. If the workers cannot start (some
            platforms, or a tiny ``/dev/shm`` in containers) the run goes on with 0 and
            a warning.
        cache: True: keep embeddings in ``cache_dir()/embeddings/<fingerprint[:16]>``
            (see :func:`cache_folder`); a folder path: use it instead of
            ``cache_dir()/embeddings``; False: no cache reads or writes. Entries are keyed
            by the SHA-256 of the file's bytes, so renamed or moved files are found again
            and changed files are embedded again. An unwritable cache gives a warning.
        on_error: ``"raise"`` stops at the first unreadable image (an
            :class:`~mmkd_utils.errors.ImageLoadError` naming it; what was embedded so far
            stays cached); ``"skip"`` leaves such images out, lists them in
            ``result.skipped`` and warns once with a
            :class:`~mmkd_utils.errors.SkippedImagesWarning` (whose ``failures`` give
            each image's index among the images found).

    Returns:
        A :class:`FolderEmbeddings`; its embeddings equal ``model.encode_images(paths)``.

    Raises:
        ImageLoadError: ``root`` is missing, not a folder or holds no images; an image is
            unreadable (``on_error="raise"``); or no image at all could be read.

    Example:
        >>> emb = embed_folder(clip, "data", pattern="**/*.dcm", on_error="skip")
        ... # doctest: +SKIP
        >>> emb.to_frame().label.value_counts()  # doctest: +SKIP
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
    size = _check_batch_size(batch_size, getattr(model, "image_batch_size", DEFAULT_IMAGE_BATCH))
    workers = _check_num_workers(num_workers)
    folder = cache_folder(model, cache)
    root = Path(root).expanduser()
    paths = _find_images(root, pattern)
    dim = model.embed_dim

    # 1. Look every file up in the cache by its content hash.
    keys: list[str | None] = _hash_files(paths) if folder is not None else [None] * len(paths)
    rows: dict[int, np.ndarray] = {}
    todo: dict[str, list[int]] = {}  # one decode per distinct content (or per file)
    for index, key in enumerate(keys):
        vec = _read_entry(folder, key, dim) if folder is not None and key is not None else None
        if vec is not None:
            rows[index] = vec
        else:
            todo.setdefault(key if key is not None else f"#{index}", []).append(index)
    from_cache = len(rows)

    # 2. Decode, preprocess and embed the rest, caching each batch as it completes.
    failed: list[tuple[int, Path, str]] = []
    if todo:
        groups = list(todo.values())
        dataset = _ImageDataset([paths[g[0]] for g in groups], model.preprocess)
        if workers is None:
            workers = default_num_workers(len(groups), size)
        writer = _CacheWriter(folder)
        pin = model.device.type == "cuda"
        batches = _batches(dataset, size, workers, pin)
        try:
            with tqdm(
                total=len(paths), initial=from_cache, desc="Embedding", unit="image", disable=None
            ) as bar:
                for batch in batches:
                    for pos, reason in batch.failures:
                        index = groups[pos][0]
                        if on_error == "raise":
                            if str(paths[index]) not in reason:
                                reason = f"Image {paths[index]}: {reason}"
                            raise ImageLoadError(
                                f"{reason} Pass on_error='skip' to leave unreadable images out."
                            )
                        failed += [(i, paths[i], reason) for i in groups[pos]]
                    bad = {pos for pos, _ in batch.failures}
                    good = [pos for pos in batch.positions if pos not in bad]
                    if batch.pixels is not None:
                        feats = model.encode_pixels(batch.pixels).numpy()
                        for pos, vec in zip(good, feats, strict=True):
                            for index in groups[pos]:
                                rows[index] = vec
                            if keys[groups[pos][0]] is not None:
                                writer.write(keys[groups[pos][0]], vec)
                    bar.update(sum(len(groups[pos]) for pos in batch.positions))
        finally:
            batches.close()  # stop the worker processes now, also on an error

    if not rows:
        lines = "\n".join(f"  {path}: {reason}" for _, path, reason in failed[:_WARN_LINES])
        raise ImageLoadError(
            f"None of the {len(paths)} images under {root} could be read:\n{lines}"
        )
    if failed:
        failed.sort()
        _skip_report(failed, len(paths))
    kept = sorted(rows)
    return FolderEmbeddings(
        root=root,
        paths=[paths[i] for i in kept],
        labels=[_label(paths[i], root) for i in kept],
        embeddings=torch.from_numpy(np.stack([rows[i] for i in kept]).astype(np.float32)),
        skipped=pd.DataFrame([(str(p), r) for _, p, r in failed], columns=["path", "reason"]),
        from_cache=from_cache,
    )
