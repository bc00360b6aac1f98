"""Embed every image of a folder once: :func:`embed_folder` and its on-disk cache.

Each embedding is written atomically under the SHA-256 of the file's bytes, one folder per
model: ``<MMKD_HOME>/embeddings/<fingerprint[:16]>/<sha[:2]>/<sha>.npy`` (float32 [D]). A warm
run decodes nothing; changed files and unreadable entries are embedded again. Notebook 04.
"""

import contextlib
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import platformdirs
import torch
from tqdm.auto import tqdm
from tqdm.contrib.concurrent import thread_map

from mmkd_utils.config import cache_dir
from mmkd_utils.download import sha256_file
from mmkd_utils.errors import ArgumentError, ImageLoadError, SkippedImagesWarning
from mmkd_utils.images import pipeline

#: Image endings (any case): torchvision's IMG_EXTENSIONS (slow to import), GIF, DICOM, NIfTI.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGE_SUFFIXES += (".gif", ".dcm", ".dicom", ".nii", ".nii.gz")


@dataclass(eq=False, repr=False)
class FolderEmbeddings:
    """What :func:`embed_folder` returns: ``paths`` (sorted below ``root``), ``labels``
    (each image's first folder below ``root``, None directly in it), ``embeddings``
    (float32 [N, D], L2-normalised), ``skipped`` (``path, reason``), ``from_cache`` (a count).

    Example:
        >>> embed_folder(clip, imgs, pattern="xray*").to_frame().columns.tolist()
        ['path', 'label']
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
            >>> embed_folder(clip, imgs, pattern="xray*").to_frame().shape
            (1, 2)
        """
        paths = pd.Series([str(p) for p in self.paths], dtype=object)
        return pd.DataFrame({"path": paths, "label": pd.Series(self.labels, dtype=object)})

    def __repr__(self) -> str:
        names = sorted({label for label in self.labels if label is not None})
        labels = f"labels {names[:5] + ['...'] * (len(names) > 5)}" if names else "no labels"
        if names and None in self.labels:
            labels += f" + {self.labels.count(None)} unlabelled"
        return (
            f"FolderEmbeddings(root={str(self.root)!r}, {len(self)} images × "
            f"{self.embeddings.shape[1]}, {labels}, {self.from_cache} from cache, "
            f"{len(self.skipped)} skipped)"
        )


def _find_images(root: Path, pattern: str | None) -> list[Path]:
    """The images under ``root`` (matching ``pattern``), sorted; hidden ones ignored."""
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "does not exist: check the path"
        raise ImageLoadError(f"{root} {problem} (from {Path.cwd()}); pass the image folder.")
    try:
        wanted = None if pattern is None else set(root.glob(pattern))
    except (TypeError, ValueError, NotImplementedError) as err:
        raise ArgumentError(
            f"pattern={pattern!r} ({err}): pass a glob below {root}, e.g. '**/*.png', or None."
        ) from None
    found = [p for p in list_images(root) if wanted is None or p in wanted]
    if not found:
        matching = "" if pattern is None else f" matching {pattern!r}"
        raise ImageLoadError(
            f"No image files{matching} under {root} (hidden ones are ignored; images end in "
            f"{', '.join(IMAGE_SUFFIXES)}). Check the folder and the pattern."
        )
    return found


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (:data:`IMAGE_SUFFIXES`) under ``folder``, hidden ones left out, sorted.

    Example:
        >>> [path.name for path in list_images(imgs)][:2]
        ['ct_abdomen.png', 'ct_head.png']
    """
    top, found = Path(folder), []
    for parent, folders, files in os.walk(top):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [Path(parent, n) for n in files if n.lower().endswith(IMAGE_SUFFIXES)]
    found = [path for path in found if not path.name.startswith(".")]
    return sorted(found, key=lambda path: path.relative_to(top).as_posix())


def cache_folder(model: Any, cache: bool | str | os.PathLike = True) -> Path | None:
    """Where :func:`embed_folder` keeps ``model``'s embeddings; ``cache``: True, False or a folder.

    True: ``cache_dir()/"embeddings"``, or, when that home is read-only (a classroom kit), the
    ``embeddings`` folder in the user's own cache. A folder you pass is always used as it is.

    Example:
        >>> cache_folder(clip).parent.name, cache_folder(clip, cache=False)
        ('embeddings', None)
    """
    if cache is False or cache is None:
        return None
    if cache is not True and not isinstance(cache, (str, os.PathLike)):
        raise ArgumentError(f"cache={cache!r}: pass True, False or a folder path.")
    home = cache_dir()
    if cache is not True:
        base = Path(cache).expanduser()
    elif os.access(next(p for p in (home, *home.parents) if p.exists()), os.W_OK):
        base = home / "embeddings"
    else:
        base = Path(platformdirs.user_cache_dir("mmkd-clip", False)) / "embeddings"
    return base / model.fingerprint[:16]


def _hash(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:  # unreadable: decoding will say why
        return None


def _read_entry(folder: Path, key: str, dim: int) -> np.ndarray | None:
    """The cached embedding, or None if it is absent or not a finite unit vector [dim]."""
    try:
        with open(folder / key[:2] / f"{key}.npy", "rb") as f:
            vec = np.lib.format.read_array(f, allow_pickle=False)
    except Exception:  # absent, truncated, bad header, not a .npy file: recompute
        return None
    ok = vec.shape == (dim,) and vec.dtype == np.float32 and np.isfinite(vec).all()
    return vec if ok and abs(float(np.linalg.norm(vec)) - 1.0) <= 1e-3 else None


def _write(folder: Path, key: str, vec: np.ndarray) -> OSError | None:
    """Write one entry atomically (a temporary file, then os.replace); the error if it failed
    and no other run wrote the same entry at the same moment (Windows)."""
    target = folder / key[:2] / f"{key}.npy"
    tmp = target.with_name(f".{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vec, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return None if _read_entry(folder, key, vec.shape[0]) is not None else err
    return None


def embed_folder(
    model: Any,
    root: str | os.PathLike,
    *,
    pattern: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache: bool | str | os.PathLike = True,
    on_error: str = "raise",
) -> FolderEmbeddings:
    """Embed every image under ``root`` (sub-folders included), using and filling a cache.

    ``pattern`` (a glob below ``root``) narrows the images; ``cache`` is as in :func:`cache_folder`;
    ``on_error="skip"`` leaves unreadable images out (see ``result.skipped``) instead of raising.

    Example:
        >>> first = embed_folder(clip, imgs, pattern="ct_*", batch_size=2)
        >>> embed_folder(clip, imgs, pattern="ct_*").from_cache  # all read from the cache
        3
    """
    if on_error not in ("raise", "skip"):
        raise ArgumentError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
    size = pipeline.check_batch_size(batch_size, model.image_batch_size)
    workers, folder = pipeline.check_num_workers(num_workers), cache_folder(model, cache)
    root = Path(root).expanduser()
    paths = _find_images(root, pattern)

    # 1. Look every file up in the cache by its content hash (threads: hashlib drops the GIL).
    keys: list[str | None] = [None] * len(paths)
    if folder is not None:
        threads, quiet = pipeline.usable_cpus(), len(paths) <= 1000 or None
        keys = thread_map(_hash, paths, max_workers=threads, desc="Hashing", disable=quiet)
    rows: dict[int, np.ndarray] = {}
    todo: dict[str, list[int]] = {}  # one decode per distinct content (or per unhashed file)
    for i, key in enumerate(keys):
        if key and (vec := _read_entry(folder, key, model.embed_dim)) is not None:
            rows[i] = vec
        else:
            todo.setdefault(key or f"#{i}", []).append(i)
    from_cache, groups, failed = len(rows), list(todo.values()), []

    # 2. Decode, preprocess and embed the rest, caching each batch as it completes.
    batches = pipeline.image_batches(
        [paths[g[0]] for g in groups],
        model.preprocess,
        batch_size=size,
        num_workers=workers if groups else 0,
        pin_memory=model.device.type == "cuda",
    )
    bar = tqdm(total=len(paths), initial=from_cache, desc="Embedding", unit="image", disable=None)
    with bar, contextlib.closing(batches):  # closing stops the workers, also on an error
        for batch in batches:
            for pos, err in batch.failures:
                path = paths[groups[pos][0]]
                reason = str(err) if str(path) in str(err) else f"Image {path}: {err}"
                if on_error == "raise":
                    raise ImageLoadError(f"{reason} Pass on_error='skip' to leave it out.")
                failed += [(i, paths[i], reason) for i in groups[pos]]
            if batch.pixels is not None:
                feats = model.encode_pixels(batch.pixels).numpy()
                for pos, vec in zip(batch.indices, feats, strict=True):
                    rows.update(dict.fromkeys(groups[pos], vec))
                    key = keys[groups[pos][0]]
                    if folder is not None and key and (err := _write(folder, key, vec)):
                        warnings.warn(
                            f"Could not write to the embedding cache {folder} ({err}): set "
                            "MMKD_HOME (or cache=) to a writable folder, or pass cache=False.",
                            stacklevel=2,
                        )
                        folder = None
            done = batch.indices + [pos for pos, _ in batch.failures]
            bar.update(sum(len(groups[pos]) for pos in done))

    failed.sort()
    lines = "\n".join(f"  {path}: {reason}" for _, path, reason in failed[:10])
    if not rows:
        raise ImageLoadError(
            f"None of the {len(paths)} images under {root} can be read; check them:\n{lines}"
        )
    listed = [(i, str(path), reason) for i, path, reason in failed]
    if failed:
        head = f"Skipped {len(failed)} of {len(paths)} unreadable images; result.skipped has all"
        warnings.warn(SkippedImagesWarning(f"{head}:\n{lines}", listed), stacklevel=2)
    kept = [paths[i] for i in sorted(rows)]
    return FolderEmbeddings(
        root=root,
        paths=kept,
        labels=[p.relative_to(root).parts[0] if p.parent != root else None for p in kept],
        embeddings=torch.from_numpy(np.stack([rows[i] for i in sorted(rows)])),
        skipped=pd.DataFrame([r[1:] for r in listed], columns=["path", "reason"], dtype=object),
        from_cache=from_cache,
    )
