"""Safe downloads: the released checkpoint and any file with a known SHA-256.

Every download goes into ``<dest>.part`` next to ``dest``, is verified, and only then
moved into place with :func:`os.replace`, so a file in the cache is either complete or
absent. An existing good file is never deleted by a failed download. A lock file
``<dest>.lock`` makes a second process wait for the first one and then reuse its file.

Example:
    >>> from mmkd_utils.download import download_checkpoint
    >>> path = download_checkpoint()  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'MMKD_B16.pth'
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

import mmkd_utils.config as paths
from mmkd_utils.errors import DownloadError

_CHUNK = 1 << 20
_NETWORK_ERRORS = (OSError, http.client.HTTPException)
_DRIVE_VIEW_URL = f"https://drive.google.com/file/d/{paths.DRIVE_FILE_ID}/view"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 of the file at ``path``, read in 1 MiB chunks.

    Example:
        >>> sha256_file("MMKD_B16.pth")  # doctest: +SKIP
        '3f5a...'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def part_path(dest: str | os.PathLike[str]) -> Path:
    """Return the staging file ``<dest>.part`` a download of ``dest`` is written to.

    Example:
        >>> part_path("/cache/MMKD_B16.pth").name
        'MMKD_B16.pth.part'
    """
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _lock(dest: Path) -> FileLock:
    """Return the inter-process lock guarding ``dest``."""
    return FileLock(str(dest) + ".lock")


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """Hold ``dest``'s lock; a lock file that cannot be created is a DownloadError."""
    lock = _lock(dest)
    try:
        lock.acquire()
    except OSError as exc:
        raise DownloadError(
            f"Could not create the lock file {lock.lock_file} for {dest.name} "
            f"({exc.strerror or exc}). Check that {dest.parent} is writable, or set MMKD_HOME "
            "to a writable folder, then run again."
        ) from exc
    try:
        yield
    finally:
        lock.release()


def _is_good(dest: Path, sha256: str | None) -> bool:
    """True when ``dest`` is a file and, if ``sha256`` is given, has that hash."""
    return dest.is_file() and (sha256 is None or sha256_file(dest) == sha256.lower())


def _make_parent(dest: Path) -> None:
    """Create the folder of ``dest``, or raise DownloadError saying what to do."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"Could not create the folder {dest.parent} for {dest.name}: {exc}. Choose a "
            f"writable folder (set MMKD_HOME, or pass another destination) and run again."
        ) from exc


def _unlink(path: Path) -> None:
    """Delete ``path`` if it exists."""
    path.unlink(missing_ok=True)


def _write_error(exc: OSError, url: str, part: Path, dest: Path) -> DownloadError:
    """The error for a local write that failed (full disk, read-only folder) mid-download.

    The partial file is deleted: on a full disk it only takes space, and ``dest`` (if it
    exists) is never touched.
    """
    _unlink_quietly(part)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        problem = (
            f"the disk is full (no space left on the device that holds {dest.parent}). "
            f"Free some disk space, or set MMKD_HOME to a folder on a disk with room, "
            "then run again"
        )
    else:
        problem = (
            f"the file could not be written ({exc.strerror or exc}). Check that "
            f"{dest.parent} is writable, or set MMKD_HOME to a writable folder, then run again"
        )
    return DownloadError(f"Could not save {url} as {dest}: {problem}.")


def _unlink_quietly(path: Path) -> None:
    """Delete ``path`` if possible; a failure here must not hide the original error."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _move_into_place(part: Path, dest: Path, url: str) -> None:
    """``os.replace(part, dest)``, raising DownloadError (dest untouched) when it fails."""
    try:
        os.replace(part, dest)
    except OSError as exc:
        raise DownloadError(
            f"The file downloaded from {url} is complete but could not be moved to {dest} "
            f"({exc.strerror or exc}). Check that {dest.parent} is writable (or set MMKD_HOME "
            f"to a writable folder) and run again; the download is kept in {part}."
        ) from exc


def _hand_download_hint(url: str, dest: Path, first: str = "Check your network connection") -> str:
    """The 'what to do' sentence for a download that did not work."""
    return f"{first} and run again, or download {url} by hand and put it at {dest}"


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """Open ``url``, asking for the bytes from ``offset`` on when ``offset`` > 0."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def _open_resumable(url: str, offset: int, timeout: float) -> tuple[http.client.HTTPResponse, int]:
    """Open ``url`` resuming at ``offset``; return the response and where its body starts.

    A 206 whose range starts at ``offset`` resumes; anything else (200, 416, a range
    that does not fit) starts again from byte 0.
    """
    if offset:
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 416:  # 416: the kept part does not fit the file any more
                raise
            exc.close()
        else:
            content_range = response.headers.get("Content-Range", "")
            if response.status != 206:
                return response, 0
            if content_range.startswith(f"bytes {offset}-"):
                return response, offset
            response.close()
    return _open(url, 0, timeout), 0


def _stream_to_part(url: str, part: Path, dest: Path, desc: str | None, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming what is already there when possible."""
    offset = part.stat().st_size if part.is_file() else 0
    total: int | None = None
    received = 0
    try:
        response, start = _open_resumable(url, offset, timeout)
        with response:
            length = response.headers.get("Content-Length", "")
            total = start + int(length) if length.isdigit() else None
            received = start
            try:
                out = open(part, "ab" if start else "wb")
            except OSError as exc:
                raise _write_error(exc, url, part, dest) from exc
            with (
                out,
                tqdm(
                    total=total,
                    initial=start,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=desc or dest.name,
                    disable=None,
                ) as bar,
            ):
                for block in iter(lambda: response.read(_CHUNK), b""):
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise _write_error(exc, url, part, dest) from exc
                    received += len(block)
                    bar.update(len(block))
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"Could not download {url}: the server answered HTTP {exc.code} {exc.reason}. "
            f"{_hand_download_hint(url, dest, 'Check the URL')}."
        ) from exc
    except _NETWORK_ERRORS as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(
            f"Could not download {url}: {reason}.{_kept_hint(part)} "
            f"{_hand_download_hint(url, dest)}."
        ) from exc
    if total is not None and received < total:
        raise DownloadError(
            f"The download of {url} was interrupted after {received} of {total} bytes."
            f"{_kept_hint(part)} Or download the file by hand and put it at {dest}."
        )


def _kept_hint(part: Path) -> str:
    """Sentence saying a partial download is kept for resuming (empty if there is none)."""
    if part.is_file() and part.stat().st_size:
        return f" The part received so far is kept in {part}; run again to resume."
    return ""


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    verify: Callable[[Path], object] | None = None,
    desc: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` safely and return ``dest``.

    An existing ``dest`` (with the right ``sha256``, if given) is returned without any
    network access. Otherwise the file is streamed into ``<dest>.part`` (resuming an
    interrupted ``.part`` with an HTTP Range request), checked against ``sha256`` and
    ``verify(part_path)``, and moved into place. Raises :class:`DownloadError`.

    Example:
        >>> download_url(
        ...     "https://example.org/x.png", "cache/x.png", sha256="e102..."
        ... )  # doctest: +SKIP
        PosixPath('cache/x.png')
    """
    dest = Path(dest).expanduser()
    if _is_good(dest, sha256):
        return dest
    _make_parent(dest)
    part = part_path(dest)
    with _locked(dest):
        if _is_good(dest, sha256):  # another process finished it while we waited
            return dest
        _stream_to_part(url, part, dest, desc, timeout)
        if sha256 is not None:
            got = sha256_file(part)
            if got != sha256.lower():
                _unlink(part)
                raise DownloadError(
                    f"The file downloaded from {url} has SHA-256 {got}, expected "
                    f"{sha256.lower()}; it was deleted. Run again, or download it by hand, "
                    f"check its SHA-256 and put it at {dest}."
                )
        if verify is not None:
            try:
                verify(part)
            except Exception as exc:
                _unlink(part)
                raise DownloadError(
                    f"The file downloaded from {url} did not verify ({exc}); it was "
                    f"deleted. Run again, or download it by hand and put it at {dest}."
                ) from exc
        _move_into_place(part, dest, url)
    return dest


def _looks_like_html(path: Path) -> bool:
    """True when the file at ``path`` starts (after whitespace) with an HTML tag."""
    with open(path, "rb") as f:
        head = f.read(1024)
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return head.startswith((b"<!doctype", b"<html"))


def _drive_page_error(url: str, dest: Path) -> str:
    """Message for a Google Drive web page (quota or permission) instead of the file."""
    return (
        f"Google Drive sent a web page instead of the weights from {url} (usually the "
        f"file's download quota is exceeded for today, or Drive asks for a permission or "
        f"confirmation). Download {paths.CHECKPOINT_NAME} by hand from {_DRIVE_VIEW_URL} "
        f"and put it at {dest}, or set MMKD_CHECKPOINT to the path of the file you saved."
    )


def _verify_checkpoint(part: Path, url: str, dest: Path) -> None:
    """Raise DownloadError (deleting ``part``) unless ``part`` is a readable checkpoint."""
    if _looks_like_html(part):
        _unlink(part)
        raise DownloadError(_drive_page_error(url, dest))
    from mmkd_utils.model.checkpoint import model_config_from_state_dict, read_checkpoint

    try:
        # A dict of tensors is not enough: it must have the MMKD-CLIP towers.
        model_config_from_state_dict(read_checkpoint(part))
    except Exception as exc:
        _unlink(part)
        raise DownloadError(
            f"The checkpoint downloaded from {url} is incomplete or corrupt ({exc}); it "
            f"was deleted. Run again, or download {paths.CHECKPOINT_NAME} by hand from "
            f"{_DRIVE_VIEW_URL} and put it at {dest} (or set MMKD_CHECKPOINT)."
        ) from exc


def _gdown_partials(part: Path) -> list[Path]:
    """gdown's own partial files for ``part`` (``<part><8 random chars>.part``)."""
    return sorted(part.parent.glob(part.name + "?" * 8 + ".part"))


def _gdown_kept_hint(part: Path) -> str:
    """Sentence naming gdown's kept partial download (empty when there is none)."""
    kept = [p for p in _gdown_partials(part) if p.stat().st_size]
    return "".join(_kept_hint(p) for p in kept[:1])


def _manual_hint(dest: Path) -> str:
    """What to do instead: download by hand, put it at ``dest`` or set the env var."""
    return (
        f"download {paths.CHECKPOINT_NAME} by hand from {_DRIVE_VIEW_URL} and put it at "
        f"{dest}, or set MMKD_CHECKPOINT to the path of the file you saved."
    )


def _gdown_to_part(url: str, part: Path, dest: Path, timeout: float) -> None:
    """Fetch ``url`` into ``part`` with gdown, turning its errors into DownloadError."""
    import gdown
    import requests

    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=None) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        def fetch() -> None:
            gdown.download(
                url=url,
                output=str(part),
                quiet=True,
                resume=True,
                progress=progress,
                timeout=timeout,
            )

        try:
            try:
                fetch()
            except gdown.exceptions.DownloadError as exc:
                if "byte range" not in str(exc):
                    raise
                for stale in _gdown_partials(part):  # the server cannot resume: start over
                    _unlink(stale)
                bar.reset()
                fetch()
        except gdown.exceptions.FileURLRetrievalError as exc:
            raise DownloadError(_drive_page_error(url, dest)) from exc
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "error"
            raise DownloadError(
                f"Could not download the MMKD-CLIP weights from {url}: the server answered "
                f"HTTP {status}. Run again later, or {_manual_hint(dest)}"
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise DownloadError(
                f"Could not download the MMKD-CLIP weights from {url}: there seems to be no "
                f"network ({type(exc).__name__}).{_gdown_kept_hint(part)} Without network, "
                f"{_manual_hint(dest)}"
            ) from exc
        except (gdown.exceptions.DownloadError, requests.exceptions.RequestException) as exc:
            raise DownloadError(
                f"The download of the MMKD-CLIP weights from {url} failed ({exc})."
                f"{_gdown_kept_hint(part) or ' Run again.'} Or {_manual_hint(dest)}"
            ) from exc
        except OSError as exc:
            for stale in _gdown_partials(part):  # gdown's own partial file of this attempt
                _unlink_quietly(stale)
            raise _write_error(exc, f"the MMKD-CLIP weights from {url}", part, dest) from exc


def _stat_key(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of ``path``, or None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def file_identity(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of ``path``, or None when it does not exist.

    Example:
        >>> file_identity("/surely/not/there") is None
        True
    """
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def set_aside(dest: str | os.PathLike[str], seen: tuple[int, int, int] | None) -> Path | None:
    """Rename a cached file that failed to verify to ``<dest>.corrupt`` (kept, not deleted).

    ``seen`` is :func:`file_identity` of the file that failed. Under ``dest``'s download
    lock, the file is moved only if it is still that file; if another process already
    replaced it, nothing happens and None is returned. An older ``.corrupt`` file is kept
    too (the new one is ``<dest>.2.corrupt``, ...). Raises ``OSError`` if the rename fails.

    Example:
        >>> set_aside("MMKD_B16.pth", file_identity("MMKD_B16.pth"))  # doctest: +SKIP
        PosixPath('MMKD_B16.pth.corrupt')
    """
    dest = Path(dest)
    with _locked(dest):
        if seen is None or file_identity(dest) != seen:
            return None
        aside, n = dest.with_name(dest.name + ".corrupt"), 1
        while aside.exists():
            n += 1
            aside = dest.with_name(f"{dest.name}.{n}.corrupt")
        os.replace(dest, aside)
    return aside


def download_checkpoint(
    dest: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download the released ``MMKD_B16.pth`` (~784 MB) with gdown and return its path.

    ``dest`` defaults to :func:`mmkd_utils.config.default_checkpoint_path`; an existing
    file is returned as is unless ``force``. ``url`` defaults to the Google Drive link
    of the release. The file is fetched into ``<dest>.part`` (an interrupted download
    resumes on the next call), checked to be a real checkpoint, then moved into place.
    Raises :class:`DownloadError` (a failed download never touches an existing ``dest``).

    Example:
        >>> path = download_checkpoint()  # doctest: +SKIP
        >>> path  # doctest: +SKIP
        PosixPath('~/.cache/mmkd-clip/MMKD_B16.pth')
    """
    dest = Path(dest).expanduser() if dest is not None else paths.default_checkpoint_path()
    url = url or paths.DRIVE_URL
    if dest.is_file() and not force:
        return dest
    _make_parent(dest)
    before = _stat_key(dest)
    part = part_path(dest)
    with _locked(dest):
        now = _stat_key(dest)
        if now is not None and (not force or now != before):
            return dest  # another process downloaded it while we waited
        if part.is_file() and not force:  # finished earlier but not yet moved into place
            try:
                _verify_checkpoint(part, url, dest)
            except DownloadError:
                pass  # it was deleted; download afresh
            else:
                _move_into_place(part, dest, url)
                return dest
        _unlink(part)
        _gdown_to_part(url, part, dest, timeout)
        _verify_checkpoint(part, url, dest)
        _move_into_place(part, dest, url)
    return dest


__all__ = [
    "sha256_file",
    "part_path",
    "download_url",
    "download_checkpoint",
    "file_identity",
    "set_aside",
]
