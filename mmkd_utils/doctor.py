"""``doctor()`` (also ``mmkd-clip doctor``): one line per check, OK, WARNING or ERROR, what
it found and, for a problem, the fix. Nothing is downloaded; hosts are asked only when online.
"""

import concurrent.futures
import importlib.metadata
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import torch
from huggingface_hub import constants, try_to_load_from_cache
from packaging.requirements import Requirement
from packaging.version import Version

from mmkd_utils.config import MANIFEST_NAME, cache_dir, default_checkpoint_path, env_path
from mmkd_utils.demo import DEMO_IMAGE_NAMES, DEMO_SHA256, demo_image_dir
from mmkd_utils.download import sha256_file
from mmkd_utils.model.checkpoint import read_checkpoint
from mmkd_utils.model.device import resolve_device
from mmkd_utils.model.loading import WEIGHTS_NAME, converted_folder, text_encoder_source

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"
OFFLINE = "see README 'Offline machines'"
#: The hosts asked when online: the text encoder's, the weights' and the demo images'.
HOSTS = ("https://huggingface.co", "https://drive.google.com", "https://raw.githubusercontent.com")


class Check(NamedTuple):
    """One line of the report: ``status`` is OK, WARNING or ERROR; ``fix`` says what to do.

    Example:
        >>> print(Check("device", "WARNING", "cpu", "use a GPU"))
        WARNING device: cpu -- fix: use a GPU
    """

    name: str
    status: str
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        fix = f" -- fix: {self.fix}" if self.status != OK else ""
        return f"{self.status:<7} {self.name}: {self.detail}{fix}"


class DoctorReport(list):
    """The checks of one :func:`doctor` run; printed as one line per check.

    Example:
        >>> report = DoctorReport([Check("device", "WARNING", "cpu", "use a GPU")])
        >>> print(report.ok, report)
        True WARNING device: cpu -- fix: use a GPU
        1 checks: 0 OK, 1 WARNING, 0 ERROR.
    """

    @property
    def ok(self) -> bool:
        """True when no check is an ERROR (warnings are fine); see the class example."""
        return all(check.status != ERROR for check in self)

    def __str__(self) -> str:
        counts = ", ".join(f"{sum(c.status == s for c in self)} {s}" for s in (OK, WARNING, ERROR))
        return "\n".join([*map(str, self), f"{len(self)} checks: {counts}."])

    __repr__ = __str__


def _packages() -> tuple[str, ...]:
    reqs = [Requirement(r) for r in importlib.metadata.requires("mmkd-utils") or []]
    needed = [r for r in reqs if not r.marker or r.marker.evaluate({"extra": ""})]
    found = {r: [d.version for d in importlib.metadata.distributions(name=r.name)] for r in needed}
    bad = [f'"{r}"' for r, have in found.items() if not any(r.specifier.filter(have, True))]
    if bad:
        return ERROR, f"need {', '.join(bad)}", f"pip install {' '.join(bad)}; restart the kernel"
    return OK, f"the {len(needed)} that mmkd-utils requires, at supported versions"


def _torch() -> tuple[str, ...]:
    have = Version(torch.__version__)
    want = f"0.{have.minor + 15}.{have.micro}"  # torchvision 0.(x+15).y is made for torch 2.x.y
    fix = f"pip install torch=={have.base_version} torchvision=={want} (from pytorch.org for GPUs)"
    found = f"{have} ({f'CUDA {torch.version.cuda}' if torch.version.cuda else 'CPU-only'} build)"
    try:
        tv = importlib.import_module("torchvision").__version__
    except Exception as err:  # a mismatched pair fails here ("torchvision::nms does not exist")
        return ERROR, f"{found}; torchvision does not import: {err}", fix
    same = Version(tv).release[:2] == Version(want).release[:2]
    return OK if same else WARNING, f"{found}, torchvision {tv} (made for it: {want})", fix


def _device() -> tuple[str, ...]:
    device = resolve_device("auto")
    if device.type == "cpu":
        return WARNING, "cpu: no CUDA GPU or Apple MPS", "fine for a few images; README 'Slow CPUs'"
    return OK, torch.cuda.get_device_name(0) if device.type == "cuda" else "Apple GPU (mps)"


def _cache() -> tuple[str, ...]:
    folder = cache_dir()
    there = next(p for p in (folder, *folder.parents) if p.exists())
    fix = "set MMKD_HOME to a writable folder with 2 GB free (or fix its permissions)"
    if not (there.is_dir() and os.access(there, os.W_OK)):
        if (folder / MANIFEST_NAME).is_file():  # read-only is how a classroom kit is shared
            return OK, f"{folder}: a read-only classroom kit (mmkd-clip download --check)"
        return ERROR, f"{folder}: cannot write in {there}", fix
    free = shutil.disk_usage(there).free / 1e9  # the weights and their converted copy: 1.6 GB
    return OK if free >= 2 else WARNING, f"{folder} (writable, {free:.1f} GB free)", fix


def _weights(verify: bool) -> tuple[str, ...]:
    env = env_path("MMKD_CHECKPOINT")
    path = env or default_checkpoint_path()
    if env and not path.exists():
        return ERROR, f"MMKD_CHECKPOINT={path} does not exist", "fix or unset MMKD_CHECKPOINT"
    if not path.exists():
        fix = f"nothing to do online; offline, put it there or set MMKD_CHECKPOINT ({OFFLINE})"
        return WARNING, f"{path}: downloaded on first load (784 MB)", fix
    if path.is_dir():  # a converted copy: load_model() checks it
        return OK, f"{path} (a converted copy)"
    try:
        found = f"{len(read_checkpoint(path))} tensors" if verify else "--verify reads it"
    except Exception as err:
        return ERROR, str(err), "run `mmkd-clip download --force` or set MMKD_CHECKPOINT"
    copy = converted_folder(path)
    made = "" if (copy / WEIGHTS_NAME).is_file() else "the first load writes "
    return OK, f"{path} ({found}); converted copy: {made}{copy}"


def _text_encoder() -> tuple[str, ...]:
    fix = f"set MMKD_TEXT_ENCODER to a folder with config.json and vocab.txt; {OFFLINE}"
    try:
        source = text_encoder_source(None)
        if Path(source).is_dir():
            lacks = [n for n in ("config.json", "vocab.txt") if not Path(source, n).is_file()]
            return (ERROR, f"{source} lacks {lacks}", fix) if lacks else (OK, f"folder {source}")
        if isinstance(try_to_load_from_cache(source, "config.json"), str):
            return OK, f"{source}: in the Hugging Face cache"
    except Exception as err:  # not an existing folder, nor a valid hub id
        return ERROR, str(err), fix
    if constants.HF_HUB_OFFLINE:
        return ERROR, f"{source}: not in the Hugging Face cache and HF_HUB_OFFLINE is set", fix
    return WARNING, f"{source}: fetched on first load (under 1 MB)", fix


def _demo_images() -> tuple[str, ...]:
    env, total = env_path("MMKD_DEMO_IMAGES"), len(DEMO_IMAGE_NAMES)
    folder = env or demo_image_dir()
    found = [n for n in DEMO_IMAGE_NAMES if (folder / n).is_file()]
    same = sum(sha256_file(folder / n) == DEMO_SHA256[n] for n in found)
    detail = f"{folder}: {len(found)} of {total}, {same} as published"
    if env:  # the user's own folder must hold all nine
        status = ERROR if len(found) < total else WARNING if same < total else OK
        return status, f"{detail} (MMKD_DEMO_IMAGES)", "put the nine there or unset the variable"
    fix = f"nothing to do online; offline, set MMKD_DEMO_IMAGES to a folder of them ({OFFLINE})"
    return OK if same == total else WARNING, detail, fix


def _host(url: str, timeout: float) -> tuple[str, ...]:
    if "huggingface.co" in url and constants.HF_HUB_OFFLINE:
        return OK, "not asked: HF_HUB_OFFLINE is set"
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError as err:  # an HTTP error is an answer
        err.close()
    except Exception as err:
        return WARNING, f"not reachable ({getattr(err, 'reason', err)})", f"work offline: {OFFLINE}"
    return OK, "answers"


def _run(name: str, check) -> Check:
    try:
        return Check(name, *check())
    except Exception as err:  # one broken check must not hide the others
        return Check(name, ERROR, f"the check failed: {err!r}", "fix that, or report it")


def doctor(*, network: bool = True, timeout: float = 3.0, verify_weights: bool = False):
    """Run every check (side by side) and return a :class:`DoctorReport`; never raises.

    ``network=False`` asks no host; ``verify_weights=True`` also reads the weights.

    Example:
        >>> report = doctor(network=False, verify_weights=True)
        >>> [check.name for check in report][:3], report[-1].detail
        (['python', 'packages', 'torch'], 'not checked (offline)')
    """
    checks = {"python": lambda: (OK, f"{sys.version.split()[0]} ({sys.executable})")}
    checks |= {"packages": _packages, "torch": _torch, "device": _device, "cache folder": _cache}
    checks |= {"weights": lambda: _weights(verify_weights), "text encoder": _text_encoder}
    hosts = {url: lambda url=url: _host(url, timeout) for url in HOSTS}
    checks |= {"demo images": _demo_images}
    checks |= hosts if network else {"network": lambda: (OK, "not checked (offline)")}
    with concurrent.futures.ThreadPoolExecutor(len(checks)) as pool:
        return DoctorReport(pool.map(_run, checks, checks.values()))
