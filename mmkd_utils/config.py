"""Where things live: the cache folder, the environment variables and the release facts.

Environment variables (read at call time, never at import):

* ``MMKD_HOME`` - cache folder for weights, converted copies and demo images
  (default: ``$XDG_CACHE_HOME/mmkd-clip`` or ``~/.cache/mmkd-clip``).
* ``MMKD_CHECKPOINT`` - a checkpoint file (``.pth``) or converted folder to load instead
  of the released weights.
* ``MMKD_TEXT_ENCODER`` - a Hugging Face hub id or a local folder with the text
  encoder's ``config.json`` and tokenizer files.
* ``MMKD_DEMO_IMAGES`` - a local folder holding the nine published demo images.

Example:
    >>> import os
    >>> from mmkd_utils.config import cache_dir
    >>> os.environ["MMKD_HOME"] = "/data/mmkd"
    >>> str(cache_dir())
    '/data/mmkd'
"""

from __future__ import annotations

import os
from pathlib import Path

#: The BiomedBERT model whose config and tokenizer the text tower uses.
DEFAULT_TEXT_ENCODER = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
#: Context length of the released model (prompts are truncated to this many tokens).
CONTEXT_LENGTH = 256
#: File name and Google Drive id of the released weights.
CHECKPOINT_NAME = "MMKD_B16.pth"
DRIVE_FILE_ID = "16pDQ2rI3VKezUl_WVxm1gVmhljQWxjJR"
DRIVE_URL = f"https://drive.google.com/uc?id={DRIVE_FILE_ID}"


def cache_dir() -> Path:
    """Return the cache folder (``MMKD_HOME`` or the user's cache folder); not created.

    Example:
        >>> cache_dir().name  # doctest: +SKIP
        'mmkd-clip'
    """
    home = os.environ.get("MMKD_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mmkd-clip"


def default_checkpoint_path() -> Path:
    """Where the released checkpoint is (or will be) cached.

    Example:
        >>> default_checkpoint_path().name
        'MMKD_B16.pth'
    """
    return cache_dir() / CHECKPOINT_NAME


def env_path(name: str) -> Path | None:
    """Return the path in environment variable ``name``, or None when it is unset or empty.

    Example:
        >>> env_path("MMKD_SURELY_UNSET") is None
        True
    """
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None
