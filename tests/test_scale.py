"""embed_dataset, build_index, search_index and `mmkd-clip embed/search` on a local Ray cluster.

One small cluster (2 CPUs) serves the whole module, and one embedding (a run killed after its
first shard, then resumed by the CLI) most tests; the model is the tiny test checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image
from support import TINY_CHECKPOINT, TINY_TEXT, LocalServer

import mmkd_utils.tasks.scale as scale
from mmkd_utils.cli import main
from mmkd_utils.errors import ShardMismatchError
from mmkd_utils.tasks.scale import (
    build_index,
    embed_dataset,
    search_index,
    source_paths,
    write_shard,
)

N_IMAGES = 200
BAD = {"bad.png": b"not an image", "empty.png": b""}
TINY = {"checkpoint": TINY_CHECKPOINT, "text_encoder": TINY_TEXT}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module: 2 CPUs, a small object store, no dashboard."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """N_IMAGES small random PNGs in two folders, and two files that are not images."""
    root, rng = tmp_path_factory.mktemp("scale_images"), np.random.default_rng(0)
    for i in range(N_IMAGES):
        path = root / f"group_{i % 2}" / f"img{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
    for name, data in BAD.items():
        (root / name).write_bytes(data)
    return root


KILLED_RUN = """
import sys, time
import mmkd_utils.tasks.scale as scale
write = scale.write_shard
def write_then_hang(*args, **kwargs):  # the first shard is written, then the run is killed
    write(*args, **kwargs)
    time.sleep(120)
scale.write_shard = write_then_hang
scale.embed_dataset(sys.argv[1], sys.argv[2], batch_size=32, concurrency=1,
                    checkpoint=sys.argv[3], text_encoder=sys.argv[4])
"""


@pytest.fixture(scope="module")
def embedded(cluster, images, tmp_path_factory):
    """A run killed (SIGKILL) once its first shard is written, then `mmkd-clip embed` again.

    The source is a CSV table: the folder's files and two URLs (one served, one missing).
    """
    out, mp = tmp_path_factory.mktemp("scale") / "out", pytest.MonkeyPatch()
    mp.setenv("MMKD_HOME", str(tmp_path_factory.mktemp("scale_home")))
    mp.setenv("MMKD_CHECKPOINT", str(TINY_CHECKPOINT))
    mp.setenv("MMKD_TEXT_ENCODER", str(TINY_TEXT))
    served = (images / "group_0" / "img000.png").read_bytes()
    try:
        with LocalServer({"/x.png": served}) as server:
            urls = [server.url("/x.png"), server.url("/missing.png")]
            table = out.parent / "images.csv"
            pd.DataFrame({"path": [*source_paths(images), *urls]}).to_csv(table)
            (out / scale.INDEX_DIR).mkdir(parents=True)  # an index, stale after a new shard
            first = _killed_run(cluster, table, out)
            index_after_kill = (out / scale.INDEX_DIR).exists()
            stale_lock = (out / ".lock").is_file()  # the killed run's: taken over
            (out / ".part-x.parquet.123-abcd.tmp").write_bytes(b"PAR1 half a shard")
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                args = ["--batch-size", "64", "--concurrency", "1"]  # one actor on 2 CPUs
                code = main(["embed", str(table), "--out", str(out), *args])
    finally:
        mp.undo()
    found = {"index_after_kill": index_after_kill, "stale_lock": stale_lock}
    return {
        "out": out,
        "urls": urls,
        "first": first,
        "code": code,
        "printed": printed.getvalue(),
    } | found


def _killed_run(cluster: str, source: Path, out: Path) -> pd.DataFrame:
    """Run embed_dataset in a process on the test cluster; SIGKILL it after its first shard."""
    env = dict(os.environ, RAY_ADDRESS=cluster)  # connects to the running cluster
    cmd = [sys.executable, "-c", KILLED_RUN, str(source), str(out), *map(str, TINY.values())]
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not list(out.glob("part-*.parquet")) and run.poll() is None:
        assert time.monotonic() < deadline, "no shard after 90 s"
        time.sleep(0.1)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, run.stderr.read().decode()[-2000:]
    return pd.read_parquet(out)


def test_a_killed_run_resumes_with_every_path_once(embedded, images):
    first, frame = embedded["first"], pd.read_parquet(embedded["out"])  # pandas reads shards
    assert 0 < len(first) < N_IMAGES and len(list(embedded["out"].glob("part-*"))) > 1
    assert sorted(frame["path"]) == sorted([*source_paths(images), *embedded["urls"]])
    missing, failed = len(frame) - len(first), 3 - first["error"].notna().sum()
    assert embedded["code"] == 0 and embedded["stale_lock"] and not embedded["index_after_kill"]
    assert not (embedded["out"] / ".lock").exists()
    assert (
        f"{missing} embedded ({failed} unreadable), {len(first)} there before"
        in (embedded["printed"])
    )


def test_embeddings_equal_encode_images_and_bad_images_are_rows(embedded, images, tiny_model):
    out, (url, missing) = embedded["out"], embedded["urls"]
    frame = pd.read_parquet(out)
    failed = frame[frame["error"].notna()].set_index("path")
    assert set(failed.index) == {str(images / name) for name in BAD} | {missing}
    assert failed["embedding"].isna().all() and "404" in failed.loc[missing, "error"]
    ok = frame[frame["error"].isna()].set_index("path")
    local = [p for p in source_paths(images) if Path(p).name not in BAD][::5]  # both runs
    chunks = [local[i : i + 32] for i in range(0, len(local), 32)]  # no worker processes
    expected = np.concatenate([tiny_model.encode_images(c).numpy() for c in chunks])
    got = np.stack(ok.loc[local, "embedding"].to_numpy())
    assert got.dtype == np.float32 and np.abs(got - expected).max() <= 1e-5
    np.testing.assert_allclose(ok.loc[url, "embedding"], expected[0], atol=1e-5)  # img000
    shard = sorted(out.glob("part-*.parquet"))[0]
    schema = pq.read_schema(shard)
    assert str(schema.field("embedding").type) == "fixed_size_list<element: float>[64]"
    assert schema.metadata[scale.FINGERPRINT_KEY].decode() == tiny_model.fingerprint


def test_cli_search(embedded, capsys, monkeypatch):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(TINY_CHECKPOINT))
    monkeypatch.setenv("MMKD_TEXT_ENCODER", str(TINY_TEXT))
    assert main(["search", str(embedded["out"]), "A chest X-ray.", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "path", "score"] and len(lines) == 4
    assert Path(lines[1].split()[1]).is_file()


def test_exact_index_search_equals_brute_force(embedded, tiny_model, tmp_path, monkeypatch):
    out = embedded["out"]
    assert build_index(out)["kind"] == "flat"
    frame = pd.read_parquet(out).dropna(subset=["embedding"])
    vectors, paths = np.stack(frame["embedding"].to_numpy()), frame["path"].to_numpy()
    for query in ("A chest X-ray.", Path(paths[5])):
        found = search_index(out, query, k=10, model=tiny_model)
        q = (tiny_model.encode_texts if isinstance(query, str) else tiny_model.encode_images)(
            [query]
        )
        scores = vectors @ q.numpy()[0]
        best = np.argsort(-scores)[:10]
        assert found["path"].tolist() == paths[best].tolist()
        np.testing.assert_allclose(found["score"], scores[best], atol=1e-5)
    assert found["path"][0] == paths[5] and found["score"][0] == pytest.approx(1, abs=1e-5)
    copy = shutil.copytree(out, tmp_path / "copy")  # above EXACT_LIMIT: HNSW, approximate
    monkeypatch.setattr(scale, "EXACT_LIMIT", 10)
    assert build_index(copy)["kind"] == "hnsw"
    approx = search_index(copy, "A chest X-ray.", k=10, model=tiny_model)
    exact = search_index(out, "A chest X-ray.", k=10, model=tiny_model)
    assert len(set(approx["path"]) & set(exact["path"])) >= 8


def test_another_model_is_refused(images, tiny_model, tmp_path):
    folder, other = tmp_path / "other", "0" * 64  # shards of another model's fingerprint
    folder.mkdir()
    write_shard(folder / "part-a.parquet", ["x.png"], np.ones((1, 64)), [""], other)
    with pytest.raises(ShardMismatchError, match="another model") as err:
        embed_dataset(images, folder, **TINY)  # refused before any Ray work
    assert isinstance(err.value, ValueError)
    assert [p.name for p in folder.iterdir()] == ["part-a.parquet"]
    build_index(folder)
    with pytest.raises(ShardMismatchError, match="another model"):
        search_index(folder, "A chest X-ray.", model=tiny_model)


def test_source_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = Path("tables") / "list.csv"  # relative paths: from the table's folder
    table.parent.mkdir()
    pd.DataFrame({"path": ["b.png", "a.png", "b.png", "s3://bucket/c.png"]}).to_csv(table)
    here = tmp_path / "tables"
    expected = [str(here / "b.png"), str(here / "a.png"), "s3://bucket/c.png"]
    assert source_paths(table) == expected
    pd.read_csv(table).to_parquet(here / "list.parquet")
    assert source_paths(here / "list.parquet") == expected
    pd.DataFrame({"path": ["a.png", None]}).to_csv(table)
    with pytest.raises(ValueError, match="empty or non-text path cells"):
        source_paths(table)
    pd.DataFrame({"file": ["a.png"]}).to_csv(table)
    with pytest.raises(ValueError, match="no 'path' column"):
        source_paths(table)


def test_inputs_refused_before_any_ray_work(images, tiny_model, tmp_path):
    with pytest.raises(TypeError, match="registered name"):
        embed_dataset(images, tmp_path, model=tiny_model)
    with pytest.raises(ValueError, match="local or NFS folder"):
        embed_dataset(images, "s3://bucket/out", **TINY)
    (tmp_path / "part-0.parquet").write_bytes(b"PAR1 not a shard")
    (tmp_path / ".lock").write_text(f"another-host {os.getpid()}")
    with pytest.raises(ShardMismatchError, match=r"\.lock \(another-host \d+\): another run"):
        embed_dataset(images, tmp_path, **TINY)  # the shards are read under the lock only
    (tmp_path / ".lock").unlink()
    with pytest.raises(ShardMismatchError, match="part-0.parquet is not a readable shard"):
        embed_dataset(images, tmp_path, **TINY)
    assert not (tmp_path / ".lock").exists()


def test_non_utf8_names_are_error_rows(tiny_model, tmp_path):
    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / os.fsdecode(b"img_\xff.png"))
    for _ in range(2):  # the rerun finds it done
        summary = embed_dataset(folder, out, **TINY)
    frame = pd.read_parquet(out)
    assert summary.done_before == 1 and len(frame) == 1
    assert frame["path"][0].endswith("img_\\xff.png") and "not valid UTF-8" in frame["error"][0]


def test_index_is_rebuilt_shard_by_shard_once_per_path_and_stale_is_refused(tiny_model, tmp_path):
    rows = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    write_shard(
        tmp_path / "part-a.parquet", ["x", "y"], rows[:2], [None, "bad"], tiny_model.fingerprint
    )
    write_shard(
        tmp_path / "part-b.parquet", ["x", "y"], rows[1:], [None, None], tiny_model.fingerprint
    )
    info = build_index(tmp_path)  # a second run's rows for the same paths are left out
    assert (info["vectors"], info["rows"], info["shards"]) == (
        2,
        4,
        ["part-a.parquet", "part-b.parquet"],
    )
    found = search_index(tmp_path, "A chest X-ray.", k=2, model=tiny_model).set_index("path")
    q = tiny_model.encode_texts(["A chest X-ray."]).numpy()[0]
    expected = rows[[0, 2]] @ q / np.linalg.norm(rows[[0, 2]], axis=1)
    np.testing.assert_allclose(found.loc[["x", "y"], "score"], expected, atol=1e-5)
    (tmp_path / "part-b.parquet").unlink()
    with pytest.raises(ShardMismatchError, match="stale: run build_index"):
        search_index(tmp_path, "A chest X-ray.", model=tiny_model)


NO_EXTRA = """
import sys
for name in ("ray", "faiss", "pyarrow"):
    sys.modules[name] = None  # as if the scale extra were not installed
import mmkd_utils, mmkd_utils.cli, mmkd_utils.plotting
from mmkd_utils.cli import main
print(main(["embed", sys.argv[1], "--out", sys.argv[2]]), main(["search", sys.argv[2], "x"]))
"""


def test_without_the_extra_the_cli_says_how_to_install_it(images, tmp_path):
    cmd = [sys.executable, "-c", NO_EXTRA, str(images), str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]
    assert done.stderr.count('pip install "mmkd-utils[scale]"') == 2
    assert "Traceback" not in done.stderr


class _FakeRay:
    """Just enough of ray for scale._batches: records the actor pool it is asked for."""

    def __init__(self, resources):
        self.resources, self.pools, self.data = resources, [], self

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return self.resources

    def ActorPoolStrategy(self, **kwargs):  # noqa: N802 (ray's name)
        self.pools.append(kwargs)
        return kwargs

    def from_items(self, items, override_num_blocks):
        return self

    def map_batches(self, *args, **kwargs):
        return types.SimpleNamespace(
            context=types.SimpleNamespace(), iter_batches=lambda **kw: iter([])
        )


@pytest.mark.parametrize(
    ("resources", "concurrency", "num_gpus", "pool"),
    [
        ({"CPU": 16, "memory": 8 * 2**30}, None, 0, {"min_size": 1, "max_size": 4}),  # 2 GiB each
        ({"CPU": 2, "memory": 64 * 2**30}, None, 0, {"min_size": 1, "max_size": 2}),
        ({"CPU": 8, "GPU": 2, "memory": 64 * 2**30}, None, 0.5, {"min_size": 1, "max_size": 4}),
        ({"CPU": 1, "memory": 2**29}, None, 0, {"min_size": 1, "max_size": 1}),
        ({"CPU": 16, "memory": 8 * 2**30}, 3, 0, {"size": 3}),
    ],
)
def test_the_actor_pool_fits_cpus_memory_and_gpus(
    tiny_model, resources, concurrency, num_gpus, pool
):
    ray_ = _FakeRay(resources)
    named = ("mmkd-clip", None, None)
    assert list(scale._batches(ray_, ["a.png"], 8, concurrency, num_gpus, tiny_model, named)) == []
    assert ray_.pools == [pool]


def test_a_shard_is_flushed_before_and_after_its_rename(tiny_model, tmp_path, monkeypatch):
    flushed, fsync = [], os.fsync

    def record(fd):  # which file or folder (Linux's /proc)
        flushed.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    write_shard(
        tmp_path / "part-a.parquet", ["x"], np.ones((1, 64)), [None], tiny_model.fingerprint
    )
    assert len(flushed) == 2 and flushed[1] == tmp_path
    assert flushed[0].name.startswith(".part-a.parquet.") and flushed[0].suffix == ".tmp"
