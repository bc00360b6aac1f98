"""Safe downloads: the released checkpoint and any file with a known SHA-256.

gdown fetches every file (Google Drive links and plain URLs alike) and resumes an
interrupted transfer with an HTTP Range request. The finished file ``<dest>.part`` is
verified and only then moved to ``dest`` with :func:`os.replace`: a cached file is complete
or absent, and a failed download never touches a good one. A lock file ``<dest>.lock``
makes a second process wait for the first one and then reuse its file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from filelock import FileLock
from tqdm.auto import tqdm

import mmkd_utils.config as paths
from mmkd_utils.errors import DownloadError

DRIVE_VIEW_URL = f"https://drive.google.com/file/d/{paths.DRIVE_FILE_ID}/view"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of the file at ``path``, read in 1 MiB blocks.

    Example:
        >>> (tmp / "a.txt").write_bytes(b"abc")
        3
        >>> sha256_file(tmp / "a.txt")[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def part_path(dest: str | os.PathLike[str]) -> Path:
    """The finished but not yet verified download of ``dest``: ``<dest>.part``.

    Example:
        >>> part_path("/cache/MMKD_B16.pth").name
        'MMKD_B16.pth.part'
    """
    return Path(f"{dest}.part")


def file_identity(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of ``path``, or None when it does not exist.

    Example:
        >>> file_identity(tmp / "not-there") is None
        True
    """
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _local_error(what: str, exc: OSError, dest: Path) -> DownloadError:
    """A DownloadError for a local file operation that failed, saying what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = (
            f"the disk is full (no space left on the device that holds {dest.parent}). "
            "Free some disk space, or set MMKD_HOME to a folder on a disk with room, then run again"
        )
    else:
        advice = (
            f"{exc.strerror or exc}. Check that {dest.parent} is writable (or set MMKD_HOME to "
            "a writable folder), then run again"
        )
    return DownloadError(f"{what}: {advice}.")


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """Hold ``dest``'s inter-process lock; a lock file that cannot be made is a DownloadError."""
    lock = FileLock(f"{dest}.lock")
    try:
        lock.acquire()
    except OSError as exc:
        raise _local_error(f"Could not create the lock file {lock.lock_file}", exc, dest) from exc
    try:
        yield
    finally:
        lock.release()


def set_aside(dest: str | os.PathLike[str], seen: tuple[int, int, int] | None) -> Path | None:
    """Rename a cached file that failed to verify to ``<dest>.corrupt`` (kept, not deleted).

    Under ``dest``'s lock, and only if ``dest`` is still the file ``seen`` (its
    :func:`file_identity`); else None. Older ``.corrupt`` files stay (``<dest>.2.corrupt``...).

    Example:
        >>> (tmp / "w.pth").write_bytes(b"bad")
        3
        >>> set_aside(tmp / "w.pth", file_identity(tmp / "w.pth")).name
        'w.pth.corrupt'
    """
    dest = Path(dest)
    with _locked(dest):
        if seen is None or file_identity(dest) != seen:
            return None
        aside, n = Path(f"{dest}.corrupt"), 1
        while aside.exists():
            n += 1
            aside = Path(f"{dest}.{n}.corrupt")
        os.replace(dest, aside)
    return aside


def _partials(part: Path) -> list[Path]:
    """gdown's files of an unfinished transfer into ``part`` (``<part>XXXXXXXX.part``)."""
    return sorted(part.parent.glob(part.name + "?" * 8 + ".part"))


def _fetch(url: str, part: Path, dest: Path, hint: str, timeout: float) -> None:
    """gdown ``url`` into ``part`` (resuming a partial transfer); errors become DownloadError."""
    import gdown
    import requests

    def get() -> None:
        with tqdm(
            unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=None
        ) as bar:

            def progress(done: int, total: int | None) -> None:
                bar.total = total
                bar.update(done - bar.n)

            gdown.download(
                url=url,
                output=str(part),
                quiet=True,
                resume=True,
                progress=progress,
                timeout=timeout,
            )

    def kept() -> str:
        return "".join(
            f" The part received so far is kept in {p}; run again to resume."
            for p in _partials(part)[:1]
            if p.stat().st_size
        )

    try:
        try:
            get()
        except gdown.exceptions.DownloadError as exc:
            if "byte range" not in str(exc):
                raise
            for p in _partials(part):  # the server cannot resume: start again
                p.unlink()
            get()
    except gdown.exceptions.FileURLRetrievalError as exc:
        raise DownloadError(
            f"Google Drive sent a web page instead of the file at {url} (usually the file's "
            f"download quota is exceeded for today, or Drive asks for a permission). {hint}"
        ) from exc
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "error"
        raise DownloadError(
            f"Could not download {url}: the server answered HTTP {status}. {hint}"
        ) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise DownloadError(
            f"Could not download {url}: there seems to be no network ({type(exc).__name__})."
            f"{kept()} Without network: {hint}"
        ) from exc
    except (gdown.exceptions.DownloadError, requests.exceptions.RequestException) as exc:
        raise DownloadError(
            f"The download of {url} failed ({exc}).{kept() or ' Run again.'} {hint}"
        ) from exc
    except OSError as exc:  # a full disk: what was written only takes space
        for p in _partials(part):
            p.unlink(missing_ok=True)
        raise _local_error(f"Could not save {url} as {dest}", exc, dest) from exc


def _download(
    url: str,
    dest: Path,
    check: Callable[[Path], None],
    hint: str,
    *,
    good: Callable[[], bool],
    force: bool = False,
    timeout: float,
) -> Path:
    """Fetch ``url`` to ``dest`` under its lock: ``<dest>.part``, ``check`` it, move it into place."""
    if good() and not force:
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _local_error(
            f"Could not create the folder {dest.parent} for {dest.name}", exc, dest
        ) from exc
    before, part = file_identity(dest), part_path(dest)
    with _locked(dest):
        if (good() and not force) or (force and file_identity(dest) not in (None, before)):
            return dest  # another process finished it while we waited
        if part.is_file() and not force:  # finished earlier, not yet moved into place
            try:
                check(part)
            except DownloadError:
                part.unlink()
        if force or not part.is_file():
            part.unlink(missing_ok=True)
            _fetch(url, part, dest, hint, timeout)
            try:
                check(part)
            except DownloadError:
                part.unlink()
                raise
        try:
            os.replace(part, dest)
        except OSError as exc:
            raise _local_error(
                f"The download is complete but could not be moved to {dest} (it is kept in {part})",
                exc,
                dest,
            ) from exc
    return dest


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    verify: Callable[[Path], object] | None = None,
    desc: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` safely and return ``dest``; raises :class:`DownloadError`.

    An existing ``dest`` (with the right ``sha256``, if given) is returned without network.
    Otherwise the download is checked against ``sha256`` and ``verify(path)`` first.
    ``desc`` is accepted for compatibility (the progress bar shows the file name).

    Example:
        >>> (tmp / "x.txt").write_text("cached")
        6
        >>> download_url("https://example.org/x.txt", tmp / "x.txt", sha256=sha256_file(tmp / "x.txt")).name
        'x.txt'
    """
    dest = Path(dest).expanduser()

    def check(part: Path) -> None:
        if sha256 is not None and (got := sha256_file(part)) != sha256.lower():
            raise DownloadError(
                f"The file downloaded from {url} has SHA-256 {got}, expected {sha256.lower()}; "
                f"it was deleted. Run again, or download it by hand, check it and put it at {dest}."
            )
        try:
            if verify is not None:
                verify(part)
        except Exception as exc:
            raise DownloadError(
                f"The file downloaded from {url} did not verify ({exc}); it was deleted. Run "
                f"again, or download it by hand and put it at {dest}."
            ) from exc

    def good() -> bool:
        return dest.is_file() and (sha256 is None or sha256_file(dest) == sha256.lower())

    hint = f"Or download {url} by hand and put it at {dest}."
    return _download(url, dest, check, hint, good=good, timeout=timeout)


def download_checkpoint(
    dest: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download the released ``MMKD_B16.pth`` (~784 MB) and return its path.

    ``dest`` defaults to :func:`~mmkd_utils.config.default_checkpoint_path`, ``url`` to the
    release's Google Drive link. An existing file is returned as is unless ``force``. A
    Drive web page (quota, permission) or a file torch cannot read is refused.

    Example:
        >>> (tmp / "MMKD_B16.pth").write_bytes(b"already here")
        12
        >>> download_checkpoint(tmp / "MMKD_B16.pth").name
        'MMKD_B16.pth'
    """
    dest = Path(dest).expanduser() if dest is not None else paths.default_checkpoint_path()
    url = url or paths.DRIVE_URL
    hint = (
        f"Download {paths.CHECKPOINT_NAME} by hand from {DRIVE_VIEW_URL} and put it at "
        f"{dest}, or set MMKD_CHECKPOINT to the path of the file you saved."
    )

    def check(part: Path) -> None:
        with open(part, "rb") as f:
            head = f.read(1024).removeprefix(b"\xef\xbb\xbf").lstrip().lower()
        if head.startswith((b"<!doctype", b"<html")):
            raise DownloadError(
                f"Google Drive sent a web page instead of the weights from {url} (usually the "
                f"file's download quota is exceeded for today, or Drive asks for a permission "
                f"or confirmation). {hint}"
            )
        try:
            torch.load(part, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(part))
        except Exception as exc:
            raise DownloadError(
                f"The checkpoint downloaded from {url} is incomplete or corrupt ({exc}); it was deleted. Run again. {hint}"
            ) from exc

    return _download(url, dest, check, hint, good=dest.is_file, force=force, timeout=timeout)


__all__ = [
    "sha256_file",
    "part_path",
    "download_url",
    "download_checkpoint",
    "file_identity",
    "set_aside",
]
