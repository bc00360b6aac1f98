"""Safe downloads (the checkpoint, files of known SHA-256): gdown fetches and resumes into
``<dest>.part``, which is verified, then moved to ``dest`` under the lock ``<dest>.lock``.
So a cached file is complete or absent, and a good one is never lost."""

import contextlib
import errno
import hashlib
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import gdown
import requests
import torch
from filelock import FileLock

import mmkd_utils.config as paths
from mmkd_utils.errors import DownloadError

PathLike = str | os.PathLike[str]
_DRIVE_PAGE = "Drive sent a web page, not the file (its quota is used up, or it asks permission)"


def sha256_file(path: PathLike, algorithm: str = "sha256") -> str:
    """The hex SHA-256 (or another ``hashlib`` ``algorithm``) of the file at ``path``.

    Example:
        >>> _ = (tmp / "a.txt").write_bytes(b"abc")
        >>> sha256_file(tmp / "a.txt")[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.new(algorithm, usedforsecurity=False)  # FIPS builds then allow MD5
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: PathLike) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of ``path``, or None when it does not exist.

    Example:
        >>> file_identity(tmp / "not-there") is None
        True
    """
    with contextlib.suppress(FileNotFoundError):
        st = Path(path).stat()
        return st.st_ino, st.st_size, st.st_mtime_ns
    return None


def _partials(dest: Path) -> list[Path]:
    """gdown's files of an unfinished transfer to ``dest`` (``<dest>.partXXXXXXXX.part``)."""
    return sorted(dest.parent.glob(f"{dest.name}.part{'?' * 8}.part"))


@contextlib.contextmanager
def _saving(what: str, dest: Path) -> Iterator[None]:
    """Turn an OSError of a file operation for ``dest`` into a DownloadError saying what to do."""
    try:
        yield
    except DownloadError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            why = "the disk is full. Free some disk space, or set MMKD_HOME to a disk with room"
            for p in _partials(dest):  # what was written only takes space
                p.unlink(missing_ok=True)
        else:  # a read-only folder may be a classroom kit that lacks the file
            why = (
                f"{exc.strerror or exc}. Set MMKD_HOME to a writable folder, or, for a read-only "
                f"classroom kit without {dest.name}, complete it with `{paths.KIT_COMMAND}`"
            )
        raise DownloadError(f"{what}: {why}, then run again.") from exc


def set_aside(dest: PathLike, seen: tuple[int, int, int] | None) -> Path | None:
    """Move ``dest`` to ``<dest>.corrupt`` (``.2.corrupt``...) if it is still ``seen``; else None.

    Example:
        >>> _ = (tmp / "w.pth").write_bytes(b"bad")
        >>> set_aside(tmp / "w.pth", file_identity(tmp / "w.pth")).name
        'w.pth.corrupt'
    """
    dest = Path(dest)
    with FileLock(f"{dest}.lock"):  # an OSError (read-only folder) is for the caller to explain
        if seen is None or file_identity(dest) != seen:
            return None
        n = 1
        while (aside := Path(f"{dest}.{n}.corrupt" if n > 1 else f"{dest}.corrupt")).exists():
            n += 1
        os.replace(dest, aside)
    return aside


def _fetch(url: str, part: Path, dest: Path, hint: str, timeout: float) -> None:
    """gdown ``url`` into ``part``, resuming a partial transfer; errors become DownloadError."""
    shown = {"output": f"To: {dest}\n"}  # not the staging file
    try:
        gdown.download(url=url, output=str(part), resume=True, timeout=timeout, log_messages=shown)
    except (gdown.exceptions.DownloadError, requests.RequestException) as exc:
        if "byte range" in str(exc) and _partials(dest):  # the server cannot resume: restart
            for p in _partials(dest):
                p.unlink()
            return _fetch(url, part, dest, hint, timeout)
        why = f"the download was interrupted ({exc})"
        if isinstance(exc, gdown.exceptions.FileURLRetrievalError):
            why = _DRIVE_PAGE
        elif getattr(exc, "response", None) is not None:
            why = f"the server answered HTTP {exc.response.status_code}"
        elif isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            why = f"there seems to be no network ({type(exc).__name__})"
        kept = "".join(f" Run again to resume from {p}." for p in _partials(dest))
        raise DownloadError(f"Could not download {url}: {why}.{kept} {hint}") from exc


def _download(
    url: str, dest: Path, sha: str, verify: Callable | None, hint: str, force: bool, timeout: float
) -> Path:
    """Fetch ``url`` to ``<dest>.part`` under ``dest``'s lock, verify it, move it to ``dest``."""
    part = Path(f"{dest}.part")  # finished, not yet verified

    def good() -> bool:  # the cached file can be used as it is
        return not force and dest.is_file() and (not sha or sha256_file(dest) == sha)

    def check() -> None:  # the download is good, or it is deleted
        try:
            if sha and (got := sha256_file(part)) != sha:
                raise DownloadError(f"its SHA-256 is {got}, expected {sha}")
            if verify is not None:
                verify(part)
        except Exception as exc:
            part.unlink()
            raise DownloadError(f"The file from {url} is bad ({exc}); run again. {hint}") from exc

    if good():
        return dest
    with _saving(f"Could not create the folder {dest.parent} or the lock file {dest}.lock", dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        before = file_identity(dest)
        lock = FileLock(f"{dest}.lock").acquire()
    with lock:
        if file_identity(dest) not in (None, before) or good():
            return dest  # another process finished it while we waited
        if part.is_file() and not force:  # a finished download that was not moved into place
            with contextlib.suppress(DownloadError):
                check()
        if force or not part.is_file():
            part.unlink(missing_ok=True)
            with _saving(f"Could not save {url} as {dest}", dest):
                _fetch(url, part, dest, hint, timeout)
            check()
        with _saving(f"Could not move {part} to {dest}", dest):
            os.replace(part, dest)
    return dest


def download_url(
    url: str,
    dest: PathLike,
    *,
    sha256: str | None = None,
    verify: Callable[[Path], object] | None = None,
    timeout: float = 60.0,
) -> Path:
    """``dest``, downloaded from ``url`` unless there (with the right ``sha256``, if given); a
    download must match ``sha256`` and pass ``verify(path)``, else :class:`DownloadError`.

    Example:
        >>> _ = (tmp / "x.txt").write_text("cached")
        >>> download_url("https://example.org/x.txt", tmp / "x.txt").name
        'x.txt'
    """
    dest = Path(dest).expanduser()
    hint = f"Or download it by hand and put it at {dest}."
    return _download(url, dest, (sha256 or "").lower(), verify, hint, False, timeout)


def _check_checkpoint(part: Path) -> None:
    """Raise DownloadError unless torch can load ``part`` (a Drive web page, a cut file)."""
    with open(part, "rb") as f:
        if f.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith((b"<!doc", b"<html")):
            raise DownloadError(_DRIVE_PAGE)
    try:
        torch.load(part, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(part))
    except Exception as exc:
        raise DownloadError(f"the checkpoint is incomplete or corrupt ({exc})") from exc


def download_checkpoint(
    dest: PathLike | None = None,
    *,
    url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """The released ``MMKD_B16.pth`` (784 MB) at ``dest`` (default: in the cache), fetched from
    Google Drive unless there (or ``force``); a web page or unreadable file is refused.

    Example:
        >>> _ = (tmp / "MMKD_B16.pth").write_bytes(b"already here")
        >>> download_checkpoint(tmp / "MMKD_B16.pth").name
        'MMKD_B16.pth'
    """
    dest = Path(dest).expanduser() if dest is not None else paths.default_checkpoint_path()
    hint = f"Or download it from {paths.DRIVE_VIEW_URL} to {dest}, or set MMKD_CHECKPOINT to it."
    return _download(url or paths.DRIVE_URL, dest, "", _check_checkpoint, hint, force, timeout)
