"""Error types raised by :mod:`mmkd_utils`.

Every error the package raises on purpose is a subclass of :class:`MMKDError`, so a
notebook can catch them all with one ``except MMKDError``. Each message names the input
that caused it and says what to do next.

Example:
    >>> from mmkd_utils.errors import MMKDError, ImageLoadError
    >>> issubclass(ImageLoadError, MMKDError)
    True
"""

from __future__ import annotations


class MMKDError(Exception):
    """Base class of every error raised by ``mmkd_utils``."""


class CheckpointError(MMKDError, ValueError):
    """A checkpoint file is missing, unreadable, unsafe, or of another architecture."""


class DownloadError(MMKDError, OSError):
    """Weights or demo images could not be downloaded or did not verify."""


class ImageLoadError(MMKDError, ValueError):
    """An image could not be read or converted to RGB."""


class PromptError(MMKDError, ValueError):
    """A prompt list is empty or holds something that is not usable text."""


class TextEncoderError(MMKDError, OSError):
    """The text encoder's config or tokenizer could not be found or does not fit."""


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


__all__ = [
    "SkippedImagesWarning",
    "MMKDError",
    "CheckpointError",
    "DownloadError",
    "ImageLoadError",
    "PromptError",
    "TextEncoderError",
]
