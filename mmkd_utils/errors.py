"""Error and warning types of :mod:`mmkd_utils`, all in one place.

Every error the package raises on purpose is a subclass of :class:`MMKDError`, so a
notebook can catch them all with one ``except MMKDError``. Each message names the input
that caused it and says what to do next. Each error also derives from the built-in
exception it refines (``ValueError``, ``OSError``, ...), so older ``except`` clauses keep
working. The modules that raise them re-export them (``mmkd_utils.samples`` still has
``SampleSourceError``, ``mmkd_utils.prompts`` still has ``BankError``, ...).

Example:
    >>> from mmkd_utils.errors import MMKDError, ImageLoadError
    >>> issubclass(ImageLoadError, MMKDError)
    True
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with lone surrogates escaped, so it can always be printed as UTF-8.

    A file name that is not valid UTF-8 reaches Python with its bad bytes as surrogates
    (``os.fsdecode(b"scan_\\xff.png")``); printing such a string raises
    ``UnicodeEncodeError``. Here each such byte is shown as ``\\xNN`` instead.

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
    """Base class of every error raised by ``mmkd_utils``.

    Its message is always printable: file names that are not valid UTF-8 are shown with
    their bad bytes as ``\\xNN`` (see :func:`printable`).
    """

    def __str__(self) -> str:
        return printable(super().__str__())


# --------------------------------------------------------------------------- arguments


class ArgumentError(MMKDError, ValueError):
    """An argument has a value the function cannot use (``batch_size=0``, an unknown option)."""


class ArgumentTypeError(MMKDError, TypeError):
    """An argument has a type the function cannot use (a number where a list is needed)."""


# --------------------------------------------------------------------------- weights


class CheckpointError(MMKDError, ValueError):
    """A checkpoint file is missing, unreadable, unsafe, or of another architecture."""


class DownloadError(MMKDError, OSError):
    """Weights or demo images could not be downloaded or did not verify."""


class TextEncoderError(MMKDError, OSError):
    """The text encoder's config or tokenizer could not be found or does not fit."""


# --------------------------------------------------------------------------- inputs


class ImageLoadError(MMKDError, ValueError):
    """An image could not be read or converted to RGB."""


class PromptError(MMKDError, ValueError):
    """A prompt list is empty or holds something that is not usable text."""


class BankError(PromptError):
    """A prompt bank file is unreadable or invalid; ``path``, ``field`` and ``line`` say where.

    Example:
        >>> err = BankError("x.yaml: tasks: missing", path="x.yaml", field="tasks")
        >>> err.field
        'tasks'
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.field = field
        self.line = line


# --------------------------------------------------------------------------- analyses


class EvaluationError(MMKDError, ValueError):
    """An image folder does not fit the ImageFolder layout or the classifier's classes."""


class ProbeError(MMKDError, ValueError):
    """Embeddings, labels or settings a linear probe cannot use."""


class RetrievalError(MMKDError, ValueError):
    """Queries or an index that cannot be searched (wrong shape, type, or missing model)."""


class MissingDependencyError(MMKDError, ImportError):
    """An optional package (such as ``umap-learn``) is needed but not installed.

    Example:
        >>> issubclass(MissingDependencyError, ImportError)
        True
    """


# --------------------------------------------------------------------------- sample images


class SamplesNotFoundError(MMKDError, FileNotFoundError):
    """The committed ``imgs/`` folder (or one of its files) is not there."""


class SampleSourceError(MMKDError, RuntimeError):
    """A source package is not installed, or its file is not the one the samples came from."""


class UnknownModalityError(MMKDError, ValueError):
    """``sample_images`` was asked for a modality that no sample has."""


# --------------------------------------------------------------------------- warnings


class SkippedImagesWarning(UserWarning):
    """Some images could not be read and were skipped (``on_error="skip"``).

    ``failures`` lists ``(index, image, reason)`` for every skipped input, so the rows
    that were returned can be matched to the inputs.

    Example:
        >>> w = SkippedImagesWarning("1 image skipped", [(3, "a.png", "missing")])
        >>> w.failures[0][0]
        3
    """

    def __init__(self, message: str, failures: list[tuple[int, str, str]]) -> None:
        super().__init__(message)
        self.failures = failures

    def __str__(self) -> str:
        return printable(super().__str__())


class PrecisionFallbackWarning(UserWarning):
    """A half-precision (fp16/bf16) forward pass gave NaN or infinity; fp32 was used instead.

    Issued once per model; the affected batches are recomputed in fp32, so no NaN reaches
    the results. ``load_model(..., precision="fp32")`` avoids the recomputation.
    """


__all__ = [
    "MMKDError",
    "ArgumentError",
    "ArgumentTypeError",
    "BankError",
    "CheckpointError",
    "DownloadError",
    "EvaluationError",
    "ImageLoadError",
    "MissingDependencyError",
    "PrecisionFallbackWarning",
    "ProbeError",
    "PromptError",
    "RetrievalError",
    "SampleSourceError",
    "SamplesNotFoundError",
    "SkippedImagesWarning",
    "TextEncoderError",
    "UnknownModalityError",
    "printable",
]
