"""Where things live: the cache, the environment variables (read at call time), release facts."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

#: The BiomedBERT model whose config and tokenizer the text tower uses.
DEFAULT_TEXT_ENCODER = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
#: Context length of the released model (prompts are truncated to this many tokens).
CONTEXT_LENGTH = 256
#: File name and Google Drive id of the released weights.
CHECKPOINT_NAME = "MMKD_B16.pth"
UNIMED_REPO, UNIMED_FILE = "UzairK/unimed-clip-vit-b16", "unimed-clip-vit-b16.pt"
DRIVE_FILE_ID = "16pDQ2rI3VKezUl_WVxm1gVmhljQWxjJR"
DRIVE_URL = f"https://drive.google.com/uc?id={DRIVE_FILE_ID}"
DRIVE_VIEW_URL = f"https://drive.google.com/file/d/{DRIVE_FILE_ID}/view"
#: A classroom kit in MMKD_HOME: the hub files' folders, its manifest, the command making it.
TEXT_ENCODER_DIR, BIOMEDCLIP_DIR, MANIFEST_NAME = "biomedbert", "biomedclip", "MANIFEST.sha256"
KIT_COMMAND = "mmkd-clip download --all --home DIR"
#: Every environment variable the package reads.
ENV_VARS = (
    "MMKD_HOME",
    "MMKD_CHECKPOINT",
    "MMKD_TEXT_ENCODER",
    "MMKD_DEMO_IMAGES",
    "MMKD_UNIMED_CHECKPOINT",
    "MMKD_BIOMEDCLIP",
)


def cache_dir() -> Path:
    """``MMKD_HOME``, else the user's cache folder (Linux: ``~/.cache/mmkd-clip``); not created.

    Example:
        >>> cache_dir() == tmp.parent / "mmkd_home"  # MMKD_HOME is set for examples
        True
    """
    return env_path("MMKD_HOME") or Path(platformdirs.user_cache_dir("mmkd-clip", False))


def default_checkpoint_path() -> Path:
    """Where the released checkpoint is (or will be) cached.

    Example:
        >>> default_checkpoint_path().name
        'MMKD_B16.pth'
    """
    return cache_dir() / CHECKPOINT_NAME


def env_path(name: str) -> Path | None:
    """The path in environment variable ``name``, or None when it is unset or empty.

    Example:
        >>> env_path("MMKD_CHECKPOINT") is None  # unset while examples run
        True
    """
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None
