"""Large collections (extra ``scale``, notebook 09): :func:`embed_dataset` embeds on Ray Data
into Parquet shards (``path``, ``embedding``, ``error``; the model fingerprint in the metadata),
each written whole, so a rerun embeds only what is missing; :func:`build_index` and
:func:`search_index`: faiss. Ray, pyarrow and faiss are imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import socket
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from mmkd_utils.config import ENV_VARS
from mmkd_utils.errors import (
    ArgumentError,
    ArgumentTypeError,
    ImageLoadError,
    MissingDependencyError,
    ShardMismatchError,
)
from mmkd_utils.images import pipeline
from mmkd_utils.model.clip import MMKDModel
from mmkd_utils.model.registry import DEFAULT_MODEL, load_registered
from mmkd_utils.tasks.embeddings import list_images

SCALE = 'pip install "mmkd-utils[scale]" (ray[data], pyarrow, faiss-cpu) and restart the kernel.'
#: Key of the model fingerprint in each shard's Parquet metadata.
FINGERPRINT_KEY = b"mmkd.fingerprint"
SHARDS = "part-*.parquet"
#: The index folder; pyarrow and pandas skip names that start with "_" or "." in a dataset.
INDEX_DIR = "_index"
#: Up to this many vectors ``kind="auto"`` builds an exact index: this project's limit on query
#: time (a flat query over 200,000 × 512 took 0.09–0.14 s on 2 cores: ~0.5 s or more at 1M).
#: Above, HNSW with 32 links per vector: (4·d + 256) B each (faiss wiki, "Guidelines to choose
#: an index").
EXACT_LIMIT = 1_000_000
#: Variables passed on to the actors (a local cluster's workers keep those of its start).
PASSED_ON = (*ENV_VARS, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")


def _need(name: str) -> Any:
    """Import a package of the ``scale`` extra, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingDependencyError(f"This needs {name.split('.')[0]} ({err}): {SCALE}") from err


def source_paths(source: Any) -> list[str]:
    """The images of ``source``: a folder (:func:`list_images`), a list of paths or URLs, or
    a ``.parquet``/``.csv`` file with a ``path`` column (relative paths from the table's
    folder, others from the current one); a path listed twice is kept once.

    Example:
        >>> [Path(p).name for p in source_paths(imgs)][:2]
        ['ct_abdomen.png', 'ct_head.png']
    """
    if isinstance(source, (str, os.PathLike)):
        src = Path(source).expanduser()
        if src.is_dir():
            items = list_images(src)
        elif src.suffix.lower() in (".parquet", ".csv") and src.is_file():
            table = pd.read_parquet(src) if src.suffix.lower() == ".parquet" else pd.read_csv(src)
            if "path" not in table.columns:
                raise ArgumentError(f"{src} has no 'path' column (it has {list(table.columns)}).")
            if any(not isinstance(p, str) for p in table["path"]):
                raise ArgumentError(f"{src} has empty or non-text path cells: fill or drop them.")
            items = [p if "://" in p else src.parent / os.path.expanduser(p) for p in table["path"]]
        else:
            raise ImageLoadError(
                f"source={str(source)!r} is not a folder nor a .parquet/.csv file (from "
                f"{Path.cwd()}): pass a folder of images, a list of paths, or such a table."
            )
    elif isinstance(source, Iterable) and not isinstance(source, bytes):
        items = list(source)
    else:
        raise ArgumentTypeError(f"source must be a folder, a table or a list, not {source!r}.")
    paths = [str(p) if "://" in str(p) else os.path.abspath(os.path.expanduser(p)) for p in items]
    if not paths:
        raise ImageLoadError(f"source={str(source)!r} holds no images: check it.")
    return list(dict.fromkeys(paths))


def load_named(model: Any, checkpoint: Any = None, text_encoder: Any = None, device="cpu"):
    """``model`` if an ``MMKDModel``, else the registered model of that name ("mmkd-clip":
    mmkd-clip-b16), its weights from ``checkpoint`` if given.

    Example:
        >>> load_named("mmkd-clip", tiny_checkpoint, tiny_text_encoder).model_name
        'mmkd-clip-b16'
    """
    if isinstance(model, MMKDModel):
        return model
    name = DEFAULT_MODEL if model == "mmkd-clip" else model
    return load_registered(name, source=checkpoint, text_encoder=text_encoder, device=device)


def _fetch(path: str, folder: str, i: int) -> str:
    """A local file for ``path``: itself, or a URL's bytes copied into ``folder``."""
    if "://" not in path:
        return path
    local = os.path.join(folder, f"{i}-{os.path.basename(path.split('?')[0])}")
    if path.startswith(("http://", "https://")):
        with urllib.request.urlopen(path, timeout=60) as answer, open(local, "wb") as f:
            shutil.copyfileobj(answer, f)
    else:  # s3://, gs://, hdfs://...: pyarrow's filesystems
        fs, where = _need("pyarrow.fs").FileSystem.from_uri(path)
        with fs.open_input_stream(where) as stream, open(local, "wb") as f:
            shutil.copyfileobj(stream, f)
    return local


class _Embedder:
    """A Ray Data actor: loads the model once, then embeds each batch of paths it is given."""

    def __init__(self, model, checkpoint, text_encoder, device, fingerprint) -> None:
        self.clip = load_named(model, checkpoint, text_encoder, device)
        if self.clip.fingerprint != fingerprint:
            raise ShardMismatchError(
                f"{model}'s weights on this node are not the driver's ({fingerprint[:12]}...): "
                "every node needs the same checkpoint (shared storage, MMKD_CHECKPOINT)."
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        emb = np.full((len(paths), self.clip.embed_dim), np.nan, dtype=np.float32)
        errors, local = [""] * len(paths), list(paths)
        with tempfile.TemporaryDirectory(prefix="mmkd_fetch_") as scratch:
            for i, path in enumerate(paths):
                try:
                    local[i] = _fetch(path, scratch, i)
                except Exception as err:  # reported in its row, never fatal to the job
                    errors[i] = f"{path} could not be fetched ({type(err).__name__}: {err})"
            todo = [i for i in range(len(paths)) if not errors[i]]
            images = [local[i] for i in todo]
            one = {"batch_size": max(1, len(images)), "num_workers": 0}  # a forward pass per block
            for part in pipeline.image_batches(images, self.clip.preprocess, **one):
                for pos, err in part.failures:
                    errors[todo[pos]] = str(err).replace(local[todo[pos]], paths[todo[pos]])
                if part.pixels is not None:
                    rows = [todo[pos] for pos in part.indices]
                    emb[rows] = self.clip.encode_pixels(part.pixels).numpy()
        return {"path": np.array(paths), "embedding": emb, "error": np.array(errors)}


def write_shard(path: Any, paths: Any, embeddings: Any, errors: list, fingerprint: str) -> Path:
    """Write one shard whole: a hidden temporary file, then renamed to ``path``. An empty
    error (``""`` or None) marks a row that has its embedding; the others get a null one.

    Example:
        >>> import numpy as np
        >>> shard = write_shard(tmp / "part-0.parquet", ["a.png", "b.png"],
        ...                     np.eye(2, 4, dtype=np.float32), [None, "unreadable"], "f" * 64)
        >>> pd.read_parquet(shard)["embedding"].isna().tolist()
        [False, True]
    """
    pa, pq = _need("pyarrow"), _need("pyarrow.parquet")
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    flat, failed = pa.array(emb.reshape(-1)), pa.array([bool(e) for e in errors])
    column = pa.FixedSizeListArray.from_arrays(flat, emb.shape[1], mask=failed)
    names = pa.array([str(p) for p in paths], pa.string())
    reasons = pa.array([e if e else None for e in errors], pa.string())
    table = pa.table({"path": names, "embedding": column, "error": reasons})
    table = table.replace_schema_metadata({FINGERPRINT_KEY: fingerprint.encode()})
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:  # on the disk before the rename, the rename after it
            os.fsync(f.fileno())
        os.replace(tmp, target)
        if hasattr(os, "O_DIRECTORY"):  # POSIX
            folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(folder)
            os.close(folder)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _shards(folder: Path, fingerprint: str | None = None) -> tuple[list[Path], str | None]:
    """The shards of ``folder`` and their fingerprint; every one must match ``fingerprint``."""
    pq, files = _need("pyarrow.parquet"), sorted(folder.glob(SHARDS))
    for file in files:
        try:
            found = (pq.read_schema(file).metadata or {}).get(FINGERPRINT_KEY, b"").decode()
        except _need("pyarrow").ArrowException as err:
            raise ShardMismatchError(f"{file} is not a readable shard ({err}): delete it.") from err
        if fingerprint is not None and found != fingerprint:
            raise ShardMismatchError(
                f"{folder} holds embeddings of another model ({file.name}: fingerprint "
                f"{found[:12] or 'none'}..., this model {fingerprint[:12]}...). Write to a new "
                "folder, or pass resume=False (--no-resume) to replace them."
            )
        fingerprint = found
    return files, fingerprint


@dataclass
class EmbedSummary:
    """What :func:`embed_dataset` did: ``images`` in the source, ``done_before`` (already in
    ``output_dir``), ``embedded`` now, of which ``failed`` unreadable, in ``seconds``; the
    first shard (start-up: cluster, actors, model loads; one batch) after ``first_seconds``.

    Example:
        >>> EmbedSummary(Path("out"), 10, 4, 6, 1, 3.0, 1.0, 2).images_per_second
        2.0
    """

    output_dir: Path
    images: int
    done_before: int
    embedded: int
    failed: int
    seconds: float
    first_seconds: float = float("nan")
    first_images: int = 0

    @property
    def images_per_second(self) -> float:
        """Images per second after the first shard (start-up left out); nan with one shard."""
        n, t = self.embedded - self.first_images, self.seconds - self.first_seconds
        return n / t if n > 0 and t > 0 else float("nan")


def embed_dataset(
    source: Any,
    output_dir: str | os.PathLike,
    *,
    model: Any = "mmkd-clip",
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 64,
    concurrency: int | None = None,
    num_gpus: float = 0,
    resume: bool = True,
    text_encoder: str | os.PathLike | None = None,
) -> EmbedSummary:
    """Embed the images of ``source`` (see :func:`source_paths`) on Ray into Parquet shards
    of at most ``batch_size`` rows (one per batch: many small files for millions of images).

    Ray: ``RAY_ADDRESS``, this process's cluster or this machine's ``ray start``, else a new
    local one. ``concurrency``: actors (None: 1 up to one per GPU, or per CPU and 2 GiB of
    Ray's memory, as each holds a model: ~1 GB for the released one); ``num_gpus`` per actor.
    ``model``: a registered name, with ``checkpoint``, ``text_encoder`` (:func:`load_named`).
    ``output_dir``: local or NFS (POSIX renames), one run at a time (a ``.lock`` file). Rows
    with an error count as done: to retry them, delete the shards that hold them (or pass
    ``resume=False``, which deletes every shard first).

    Example:
        >>> embed_dataset(imgs, tmp, batch_size=0)
        Traceback (most recent call last):
        mmkd_utils.errors.ArgumentError: batch_size=0: pass a whole number ≥ 1, or None.
    """
    size = pipeline.check_count(batch_size, "batch_size", 64)
    actors = pipeline.check_count(concurrency, "concurrency", None)
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, float)) or num_gpus < 0:
        raise ArgumentError(f"num_gpus={num_gpus!r}: pass the GPUs per actor, ≥ 0 (0: CPU).")
    if isinstance(model, MMKDModel):  # every actor would receive a copy
        why = "pass model= its registered name (and checkpoint= its weights), not a loaded model"
        raise ArgumentTypeError(f"{why}: each actor loads its own.")
    if "://" in str(output_dir):
        raise ArgumentError(f"output_dir={output_dir!r}: shards need a local or NFS folder.")
    paths, out = source_paths(source), Path(output_dir).expanduser()
    local = [checkpoint, text_encoder]  # the actors' working folder is not this one
    checkpoint, text_encoder = (os.path.abspath(p) if p and os.path.exists(p) else p for p in local)
    ray, pq = _need("ray"), _need("pyarrow.parquet")
    named = (model, checkpoint, text_encoder)
    clip = load_named(*named)
    out.mkdir(parents=True, exist_ok=True)
    start, failed, first = time.perf_counter(), 0, (float("nan"), 0)
    with _lock(out):  # what is done, then the rest: one run at a time
        for file in out.glob(SHARDS) if not resume else ():
            file.unlink()
        files, _ = _shards(out, clip.fingerprint)
        done = set(pq.read_table(files, columns=["path"])["path"].to_pylist()) if files else set()
        todo = [p for p in paths if _text(p) not in done]
        if todo:
            shutil.rmtree(out / INDEX_DIR, ignore_errors=True)  # stale once a shard is added
        run = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        bad = [_text(p) for p in todo if _text(p) != p]
        if bad:  # pyarrow strings are UTF-8
            why = ["file name is not valid UTF-8; rename it"] * len(bad)
            nan = np.full((len(bad), clip.embed_dim), np.nan, np.float32)
            write_shard(out / f"part-{run}-names.parquet", bad, nan, why, clip.fingerprint)
        failed, good = len(bad), [p for p in todo if _text(p) == p]
        batches = _batches(ray, good, size, actors, num_gpus, clip, named) if good else []
        bar = tqdm(total=len(paths), initial=len(paths) - len(good), unit="image", disable=None)
        with bar:
            for n, batch in enumerate(batches):
                errors = batch["error"].tolist()
                shard = out / f"part-{run}-{n:06d}.parquet"
                write_shard(shard, batch["path"], batch["embedding"], errors, clip.fingerprint)
                failed += sum(map(bool, errors))
                first = (time.perf_counter() - start, len(errors)) if n == 0 else first
                bar.update(len(errors))
    seconds = time.perf_counter() - start
    return EmbedSummary(out, len(paths), len(paths) - len(todo), len(todo), failed, seconds, *first)


def _batches(ray, todo: list, size: int, actors, num_gpus: float, clip, named: tuple):
    """The embedded batches of ``todo`` from a pool of ``_Embedder`` actors."""
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS, else the last `ray start` here, else a new local cluster
    if actors:
        pool = ray.data.ActorPoolStrategy(size=actors)
    else:  # a model per actor: ~1 GB in fp32 for the released one
        res = ray.cluster_resources()
        cpu = min(res.get("CPU", 1), res.get("memory", 2**31) / 2**31)
        most = max(1, int(res.get("GPU", 0) / num_gpus if num_gpus else cpu))
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=most)
    blocks = -(-len(todo) // size)
    data = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=blocks)
    data = data.map_batches(
        _Embedder,
        fn_constructor_args=(*named, "cuda" if num_gpus else "cpu"),
        fn_constructor_kwargs={"fingerprint": clip.fingerprint},
        batch_size=None,  # a block (≤ batch_size images) per call: no regrouping
        num_gpus=num_gpus or None,
        compute=pool,
        runtime_env={"env_vars": {k: os.environ[k] for k in PASSED_ON if k in os.environ}},
    )
    data.context.enable_progress_bars = False  # one bar, ours
    yield from data.iter_batches(batch_size=None, batch_format="numpy")


def _text(path: str) -> str:
    """``path`` with the bytes of a non-UTF-8 file name escaped (``\\xff``)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@contextlib.contextmanager
def _lock(out: Path):
    """Hold ``out/.lock`` (host, pid) while embedding; taken over from a dead process here."""
    lock, host = out / ".lock", socket.gethostname()
    owner = lock.read_text(encoding="utf-8") if lock.exists() else ""
    where, _, pid = owner.partition(" ")
    if os.name == "posix" and where == host and pid.isdigit():  # Windows: os.kill kills
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # its run was killed
            lock.unlink(missing_ok=True)
        except PermissionError:  # another user's
            pass
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        why = f"{lock} ({owner}): another run writes into {out}. Wait, or delete it if none does."
        raise ShardMismatchError(why) from None
    os.write(fd, f"{host} {os.getpid()}".encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def build_index(output_dir: str | os.PathLike, *, kind: str = "auto") -> dict[str, Any]:
    """A faiss index of the embeddings in ``output_dir`` (rows with an error left out), saved in
    its ``_index`` folder with the paths. ``kind``: "flat" (exact inner product, i.e. cosine of
    the normalised vectors), "hnsw" (approximate), or "auto": flat up to :data:`EXACT_LIMIT`.

    Example:
        >>> import numpy as np
        >>> _ = write_shard(tmp / "part-0.parquet", ["a.png", "b.png"],
        ...                 np.eye(2, 64, dtype=np.float32), [None, None], clip.fingerprint)
        >>> build_index(tmp)["kind"], build_index(tmp)["vectors"]
        ('flat', 2)
    """
    if kind not in ("auto", "flat", "hnsw"):
        raise ArgumentError(f"kind={kind!r}: use 'auto', 'flat' or 'hnsw'.")
    faiss, pq = _need("faiss"), _need("pyarrow.parquet")
    folder = Path(output_dir).expanduser()
    files, fingerprint = _shards(folder)
    if not files:
        raise ArgumentError(f"{folder} holds no shards ({SHARDS}): run embed_dataset first.")
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    kind = ("flat" if rows <= EXACT_LIMIT else "hnsw") if kind == "auto" else kind
    dim = pq.read_schema(files[0]).field("embedding").type.list_size
    spec = {"flat": "Flat", "hnsw": "HNSW32"}[kind]  # HNSW: 32 links per vector
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", 64)
    paths: dict[str, None] = {}
    for file in files:  # shard by shard: one copy of the vectors, in the index
        table = pq.read_table(file, columns=["path", "embedding", "error"])
        pairs = zip(*table.select(["path", "error"]).to_pydict().values(), strict=True)
        keep = [p not in paths and not e for p, e in pairs]
        table = table.filter(keep)
        paths.update(dict.fromkeys(table.column("path").to_pylist()))  # two runs: once each
        emb = table.column("embedding").combine_chunks().flatten().to_numpy()
        vectors = np.ascontiguousarray(emb.reshape(table.num_rows, dim), np.float32)
        faiss.normalize_L2(vectors)
        index.add(vectors)
    if not paths:
        raise ImageLoadError(f"Every image in {folder} failed (see its error column).")
    target = folder / INDEX_DIR
    tmp = folder / f".{INDEX_DIR}.{uuid.uuid4().hex[:8]}"  # the new index replaces the old whole
    tmp.mkdir()
    faiss.write_index(index, str(tmp / "index.faiss"))
    pq.write_table(_need("pyarrow").table({"path": list(paths)}), tmp / "paths.parquet")
    names = [f.name for f in files]  # search_index: stale if they changed
    info = {"kind": kind, "vectors": len(paths), "dim": dim, "fingerprint": fingerprint}
    info |= {"rows": rows, "shards": names}
    (tmp / "index.json").write_text(json.dumps(info), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return info


def search_index(
    index_dir: str | os.PathLike,
    query: Any,
    k: int = 10,
    *,
    model: Any = "mmkd-clip",
    checkpoint: str | os.PathLike | None = None,
    text_encoder: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The ``k`` images of :func:`build_index`'s index most similar to ``query``: a prompt
    (str) or an image (``pathlib.Path``, PIL, numpy), embedded by ``model`` (an ``MMKDModel``
    or as :func:`load_named`), which must be the model of the index. Columns: rank, path, score.

    Example:
        >>> import numpy as np
        >>> _ = write_shard(tmp / "part-0.parquet", ["a.png", "b.png"],
        ...                 np.eye(2, 64, dtype=np.float32), [None, None], clip.fingerprint)
        >>> _ = build_index(tmp)
        >>> search_index(tmp, "A chest X-ray.", k=2, model=clip).columns.tolist()
        ['rank', 'path', 'score']
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ArgumentError(f"k={k!r}: pass a positive whole number of results.")
    faiss, pq = _need("faiss"), _need("pyarrow.parquet")
    folder = Path(index_dir).expanduser() / INDEX_DIR
    if not (folder / "index.json").is_file():
        raise ArgumentError(f"No index in {folder.parent}: run build_index on it first.")
    info = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    if info.get("shards") != [f.name for f in sorted(folder.parent.glob(SHARDS))]:
        raise ShardMismatchError(f"The index in {folder.parent} is stale: run build_index.")
    clip = load_named(model, checkpoint, text_encoder)
    if clip.fingerprint != info["fingerprint"]:
        raise ShardMismatchError(
            f"The index in {folder.parent} was built with another model (fingerprint "
            f"{info['fingerprint'][:12]}..., this one {clip.fingerprint[:12]}...): pass its model."
        )
    if isinstance(query, str):
        vector = clip.encode_texts([query])
    elif isinstance(query, (os.PathLike, Image.Image, np.ndarray)):
        vector = clip.encode_images([query])
    else:
        raise ArgumentTypeError(f"query must be a prompt (str) or an image, not {query!r}.")
    scores, ids = faiss.read_index(str(folder / "index.faiss")).search(vector.numpy(), k)
    paths = pq.read_table(folder / "paths.parquet").column("path").to_pylist()
    ok = ids[0] >= 0  # fewer than k vectors: -1
    found = {"path": [paths[i] for i in ids[0][ok]], "score": scores[0][ok].tolist()}
    return pd.DataFrame({"rank": range(1, ok.sum() + 1), **found})
