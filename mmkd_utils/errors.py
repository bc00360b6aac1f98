"""Error and warning types. Every error for a bad input, a missing file or a failed download is
an :class:`MMKDError` and the built-in it stands for; each message says what to do.

Example:
    >>> issubclass(ImageLoadError, MMKDError), issubclass(ImageLoadError, ValueError)
    (True, True)
"""

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with lone surrogates (bytes of a non-UTF-8 file name) shown as ``\\xNN``.

    Example:
        >>> import os
        >>> printable(os.fsdecode(b"scan_\\xff.png"))
        'scan_\\\\xff.png'
    """

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    return _SURROGATE.sub(escape, text)


class MMKDError(Exception):
    """Base class of every error raised by ``mmkd_utils``; its message is always printable."""

    def __str__(self) -> str:
        return printable(super().__str__())


class ArgumentError(MMKDError, ValueError):
    """An argument has a value the function cannot use (``batch_size=0``, an unknown option)."""


class ArgumentTypeError(MMKDError, TypeError):
    """An argument has a type the function cannot use (a number where a list is needed)."""


class CheckpointError(MMKDError, ValueError):
    """A checkpoint file is missing, unreadable, unsafe, or of another architecture."""


class DownloadError(MMKDError, OSError):
    """Weights or demo images could not be downloaded, saved, or verified."""


class TextEncoderError(MMKDError, OSError):
    """The text encoder's config or tokenizer could not be found or does not fit."""


class ImageLoadError(MMKDError, ValueError):
    """An image could not be read or converted to RGB."""


class PromptError(MMKDError, ValueError):
    """A prompt list is empty or holds something that is not usable text."""


class BankError(PromptError):
    """A prompt bank file is unreadable or invalid; ``path``, ``field`` and ``line`` say where."""

    def __init__(self, message: str, *, path=None, field=None, line=None) -> None:
        super().__init__(message)
        self.path, self.field, self.line = path, field, line


class EvaluationError(MMKDError, ValueError):
    """An image folder does not fit the one-folder-per-class layout or the classes."""


class ProbeError(MMKDError, ValueError):
    """Embeddings, labels or settings a linear probe cannot use."""


class RetrievalError(MMKDError, ValueError):
    """Queries or an index that cannot be searched (wrong shape or type, no model)."""


class ShardMismatchError(MMKDError, ValueError):
    """Shards or an index that do not fit the run: another model's, unreadable, stale, locked."""


class MissingDependencyError(MMKDError, ImportError):
    """An optional package (such as ``umap-learn``) is needed but not installed."""


class SamplesNotFoundError(MMKDError, FileNotFoundError):
    """The ``imgs/`` folder of sample images (or one of its files) is not there."""


class DatasetNotFoundError(MMKDError, FileNotFoundError):
    """A MedMNIST file is missing and cannot be downloaded, or is not a MedMNIST file."""


class UnknownModalityError(MMKDError, ValueError):
    """``sample_images`` was asked for a modality that no sample has."""


class SkippedImagesWarning(UserWarning):
    """Images skipped by ``on_error="skip"``; ``failures`` holds ``(index, image, reason)``."""

    def __init__(self, message: str, failures: list[tuple[int, str, str]]) -> None:
        super().__init__(message)
        self.failures = failures

    def __str__(self) -> str:
        return printable(super().__str__())


class PrecisionFallbackWarning(UserWarning):
    """A half-precision forward pass gave NaN or infinity; those batches were redone in fp32."""
