"""Tests of mmkd_utils.download against a local HTTP server (no network needed)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import CHECKPOINT_BYTES, HTML_PAGE, Route, dead_url

from mmkd_utils import download as dl
from mmkd_utils.download import download_checkpoint, download_url, sha256_file
from mmkd_utils.errors import DownloadError, MMKDError


def part_path(dest: Path) -> Path:
    """The finished, not yet verified download of ``dest``."""
    return Path(f"{dest}.part")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)  # several 1 MiB chunks plus a tail


# --------------------------------------------------------------------- download_url


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(PAYLOAD)
    assert sha256_file(path) == _sha(PAYLOAD)


def test_fresh_download_verifies_sha_and_leaves_no_part(server, tmp_path):
    server.set("/f.bin", PAYLOAD)
    dest = tmp_path / "sub" / "f.bin"
    got = download_url(server.url("/f.bin"), dest, sha256=_sha(PAYLOAD).upper())
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()


def test_sha_mismatch_raises_and_leaves_nothing(server, tmp_path):
    server.set("/f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download_url(server.url("/f.bin"), dest, sha256=wrong)
    message = str(info.value)
    assert server.url("/f.bin") in message
    assert wrong in message and _sha(PAYLOAD) in message
    assert not dest.exists()
    assert not part_path(dest).exists()


def _stale_partial(dest: Path, data: bytes) -> None:
    """A partial file of an earlier download of ``dest``, named as gdown names them."""
    Path(f"{part_path(dest)}a1b2c3d4.part").write_bytes(data)


def test_interrupted_download_keeps_part_and_resumes_with_range(server, tmp_path):
    half = len(PAYLOAD) // 2
    server.set("/f.bin", Route(PAYLOAD, cut_after=half))
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        download_url(server.url("/f.bin"), dest, sha256=_sha(PAYLOAD))
    assert not dest.exists() and not part_path(dest).exists()
    kept = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert len(kept) == 1
    assert "resume" in str(info.value) and str(kept[0]) in str(info.value)
    kept_size = kept[0].stat().st_size  # gdown keeps the whole blocks it wrote
    assert 0 < kept_size <= half
    assert kept[0].read_bytes() == PAYLOAD[:kept_size]

    server.set("/f.bin", PAYLOAD)
    download_url(server.url("/f.bin"), dest, sha256=_sha(PAYLOAD))
    assert server.hits("/f.bin")[-1].get("Range") == f"bytes={kept_size}-"
    assert dest.read_bytes() == PAYLOAD
    assert [p for p in tmp_path.iterdir() if ".part" in p.name] == []


def test_resume_restarts_from_zero_when_server_ignores_range(server, tmp_path):
    server.set("/f.bin", Route(PAYLOAD, ranges=False))
    dest = tmp_path / "f.bin"
    _stale_partial(dest, b"stale bytes of another file")
    download_url(server.url("/f.bin"), dest, sha256=_sha(PAYLOAD))
    assert "bytes=27-" in [h.get("Range") for h in server.hits("/f.bin")]
    assert dest.read_bytes() == PAYLOAD
    assert [p for p in tmp_path.iterdir() if ".part" in p.name] == []


def test_part_longer_than_file_restarts_after_416(server, tmp_path):
    server.set("/f.bin", b"short")
    dest = tmp_path / "f.bin"
    _stale_partial(dest, b"much longer than the file on the server")
    download_url(server.url("/f.bin"), dest, sha256=_sha(b"short"))
    assert dest.read_bytes() == b"short"
    assert [h.get("Range") for h in server.hits("/f.bin")] == [None, "bytes=39-", None]


def test_finished_part_is_verified_before_reuse(server, tmp_path):
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(PAYLOAD)  # a finished download, not yet moved into place
    assert download_url(dead_url(), dest, sha256=_sha(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD and not part_path(dest).exists()
    other = tmp_path / "other.bin"
    part_path(other).write_bytes(b"garbage")
    server.set("/f.bin", PAYLOAD)
    assert download_url(server.url("/f.bin"), other, sha256=_sha(PAYLOAD)) == other
    assert other.read_bytes() == PAYLOAD and len(server.hits("/f.bin")) == 1


def test_existing_good_dest_is_returned_without_network(server, tmp_path):
    server.set("/f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.write_bytes(PAYLOAD)
    assert download_url(server.url("/f.bin"), dest, sha256=_sha(PAYLOAD)) == dest
    assert download_url(dead_url(), dest) == dest  # no sha: existence is enough
    assert server.requests == []


def test_failed_download_never_replaces_existing_dest(server, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old good copy")
    server.set("/f.bin", Route(PAYLOAD, cut_after=1000))
    for url in (server.url("/f.bin"), server.url("/missing"), dead_url()):
        with pytest.raises(DownloadError):
            download_url(url, dest, sha256=_sha(PAYLOAD))  # hash differs: re-download
        assert dest.read_bytes() == b"old good copy"
    server.set("/f.bin", PAYLOAD)
    with pytest.raises(DownloadError):
        download_url(server.url("/f.bin"), dest, sha256="f" * 64)
    assert dest.read_bytes() == b"old good copy"


def test_verify_failure_deletes_part_and_chains(server, tmp_path):
    server.set("/f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    seen = []

    def verify(path: Path) -> None:
        seen.append(path)
        raise ValueError("not a real file")

    with pytest.raises(DownloadError) as info:
        download_url(server.url("/f.bin"), dest, verify=verify)
    assert seen == [part_path(dest)]
    assert isinstance(info.value.__cause__, ValueError)
    assert "not a real file" in str(info.value) and str(dest) in str(info.value)
    assert not dest.exists() and not part_path(dest).exists()


def test_unreachable_server_names_url_and_dest(tmp_path):
    dest = tmp_path / "f.bin"
    url = dead_url()
    with pytest.raises(DownloadError) as info:
        download_url(url, dest, timeout=5)
    assert url in str(info.value) and str(dest) in str(info.value)
    assert isinstance(info.value, MMKDError)
    assert not dest.exists() and not part_path(dest).exists()


def test_http_error_names_status_and_dest(server, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download_url(server.url("/nothing"), dest)
    assert str(dest) in str(info.value)


def test_concurrent_threads_share_one_download(server, tmp_path):
    server.set("/f.bin", Route(PAYLOAD, delay=0.3))
    dest = tmp_path / "f.bin"
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(download_url(server.url("/f.bin"), dest, sha256=_sha(PAYLOAD)))
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert results == [dest, dest]
    assert dest.read_bytes() == PAYLOAD
    assert len(server.hits("/f.bin")) == 1  # the second waited and reused the file
    assert not part_path(dest).exists()


def test_concurrent_processes_end_with_identical_file(server, tmp_path):
    server.set("/f.bin", Route(PAYLOAD, delay=0.5))
    dest = tmp_path / "f.bin"
    code = (
        "import sys; from mmkd_utils.download import download_url; "
        "print(download_url(sys.argv[1], sys.argv[2], sha256=sys.argv[3]))"
    )
    args = [sys.executable, "-c", code, server.url("/f.bin"), str(dest), _sha(PAYLOAD)]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(dest), str(dest)]
    assert dest.read_bytes() == PAYLOAD
    assert len(server.hits("/f.bin")) == 1


# -------------------------------------------------------------- download_checkpoint


def test_checkpoint_lands_at_dest(server, tmp_path):
    server.set("/MMKD_B16.pth", CHECKPOINT_BYTES)
    dest = tmp_path / "w" / "MMKD_B16.pth"
    assert download_checkpoint(dest, url=server.url("/MMKD_B16.pth")) == dest
    assert dest.read_bytes() == CHECKPOINT_BYTES
    assert sorted(p.name for p in dest.parent.iterdir() if ".part" in p.name) == []


def test_checkpoint_default_dest_is_in_mmkd_home(server, tmp_path):
    server.set("/c.pth", CHECKPOINT_BYTES)
    got = download_checkpoint(url=server.url("/c.pth"))
    assert got == Path(os.environ["MMKD_HOME"]) / "MMKD_B16.pth"
    assert got.read_bytes() == CHECKPOINT_BYTES


def test_existing_checkpoint_is_returned_without_network(tmp_path):
    dest = tmp_path / "MMKD_B16.pth"
    dest.write_bytes(b"whatever is there")
    assert download_checkpoint(dest, url=dead_url()) == dest
    assert dest.read_bytes() == b"whatever is there"


def test_html_page_is_refused_and_good_copy_kept(server, tmp_path):
    server.set("/uc", Route(HTML_PAGE, content_type="text/html; charset=utf-8"))
    dest = tmp_path / "MMKD_B16.pth"
    dest.write_bytes(CHECKPOINT_BYTES)
    with pytest.raises(DownloadError) as info:
        download_checkpoint(dest, url=server.url("/uc"), force=True)
    message = str(info.value)
    assert "web page" in message and "quota" in message and "permission" in message
    assert f"https://drive.google.com/file/d/{dl.paths.DRIVE_FILE_ID}/view" in message
    assert str(dest) in message and "MMKD_CHECKPOINT" in message
    assert dest.read_bytes() == CHECKPOINT_BYTES
    assert not part_path(dest).exists()
    assert server.hits("/uc")  # force really went to the server


def test_truncated_checkpoint_is_refused(server, tmp_path):
    server.set("/c.pth", CHECKPOINT_BYTES[: len(CHECKPOINT_BYTES) // 2])
    dest = tmp_path / "MMKD_B16.pth"
    with pytest.raises(DownloadError, match="incomplete or corrupt") as info:
        download_checkpoint(dest, url=server.url("/c.pth"))
    assert str(dest) in str(info.value)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_checkpoint_offline_names_dest_and_env_var(tmp_path):
    dest = tmp_path / "MMKD_B16.pth"
    with pytest.raises(DownloadError) as info:
        download_checkpoint(dest, url=dead_url("/uc"))
    message = str(info.value)
    assert "no network" in message
    assert str(dest) in message and "MMKD_CHECKPOINT" in message
    assert not dest.exists()


def test_checkpoint_http_error_keeps_good_copy(server, tmp_path):
    dest = tmp_path / "MMKD_B16.pth"
    dest.write_bytes(CHECKPOINT_BYTES)
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download_checkpoint(dest, url=server.url("/gone"), force=True)
    assert str(dest) in str(info.value)
    assert dest.read_bytes() == CHECKPOINT_BYTES


def test_interrupted_checkpoint_download_resumes(server, tmp_path):
    half = len(CHECKPOINT_BYTES) // 2
    server.set("/c.pth", Route(CHECKPOINT_BYTES, cut_after=half))
    dest = tmp_path / "MMKD_B16.pth"
    with pytest.raises(DownloadError, match="resume"):
        download_checkpoint(dest, url=server.url("/c.pth"))
    assert not dest.exists()
    kept = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert len(kept) == 1
    kept_size = kept[0].stat().st_size  # gdown keeps the whole chunks it wrote
    assert 0 < kept_size <= half
    assert kept[0].read_bytes() == CHECKPOINT_BYTES[:kept_size]

    server.set("/c.pth", CHECKPOINT_BYTES)
    download_checkpoint(dest, url=server.url("/c.pth"))
    assert f"bytes={kept_size}-" in [h.get("Range") for h in server.hits("/c.pth")]
    assert dest.read_bytes() == CHECKPOINT_BYTES
    assert [p for p in tmp_path.iterdir() if ".part" in p.name] == []


def test_checkpoint_restarts_when_server_cannot_resume(server, tmp_path):
    server.set("/c.pth", Route(CHECKPOINT_BYTES, cut_after=len(CHECKPOINT_BYTES) // 2))
    dest = tmp_path / "MMKD_B16.pth"
    with pytest.raises(DownloadError):
        download_checkpoint(dest, url=server.url("/c.pth"))
    server.set("/c.pth", Route(CHECKPOINT_BYTES, ranges=False))
    assert download_checkpoint(dest, url=server.url("/c.pth")) == dest
    assert any("Range" in h for h in server.hits("/c.pth"))  # resume was tried, then redone
    assert dest.read_bytes() == CHECKPOINT_BYTES
    assert [p for p in tmp_path.iterdir() if ".part" in p.name] == []


def test_leftover_part_is_verified_before_reuse(server, tmp_path):
    dest = tmp_path / "MMKD_B16.pth"
    part_path(dest).write_bytes(CHECKPOINT_BYTES)  # a finished download, not yet moved
    assert download_checkpoint(dest, url=dead_url()) == dest
    assert dest.read_bytes() == CHECKPOINT_BYTES

    other = tmp_path / "other" / "MMKD_B16.pth"
    other.parent.mkdir()
    part_path(other).write_bytes(b"garbage left by something else")
    server.set("/c.pth", CHECKPOINT_BYTES)
    assert download_checkpoint(other, url=server.url("/c.pth")) == other
    assert other.read_bytes() == CHECKPOINT_BYTES
    assert len(server.hits("/c.pth")) == 1


def test_drive_retrieval_error_explains_quota(monkeypatch, tmp_path):
    import gdown

    def refuse(**kwargs: object) -> None:
        raise gdown.exceptions.FileURLRetrievalError("Too many users have viewed this file")

    monkeypatch.setattr(gdown, "download", refuse)
    dest = tmp_path / "MMKD_B16.pth"
    with pytest.raises(DownloadError, match="quota") as info:
        download_checkpoint(dest)
    assert str(dest) in str(info.value)
    assert isinstance(info.value.__cause__, gdown.exceptions.FileURLRetrievalError)


def test_concurrent_checkpoint_downloads_share_one(server, tmp_path):
    server.set("/c.pth", Route(CHECKPOINT_BYTES, delay=0.3))
    dest = tmp_path / "MMKD_B16.pth"
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(download_checkpoint(dest, url=server.url("/c.pth")))
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert results == [dest, dest]
    assert dest.read_bytes() == CHECKPOINT_BYTES
    assert len(server.hits("/c.pth")) == 1


def test_unwritable_folder_is_a_download_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    for call in (
        lambda: download_url(dead_url(), blocker / "f.bin"),
        lambda: download_checkpoint(blocker / "MMKD_B16.pth", url=dead_url()),
    ):
        with pytest.raises(DownloadError, match="Could not create the folder") as info:
            call()
        assert str(blocker) in str(info.value)
