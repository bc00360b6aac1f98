"""``doctor``: check the installation, the GPU, the cache, the weights and the network.

Each check is a small function returning a :class:`Check` (``OK``, ``WARNING`` or
``ERROR``, what was found, and for a problem what to do). :func:`doctor` runs them all
and returns a :class:`DoctorReport`, which prints one line per check (and shows a table
in a notebook). A check that fails internally becomes an ``ERROR`` line; the doctor
itself never raises. Nothing is downloaded, and no model is loaded: the network checks
only ask whether the hosts answer, and only when ``network=True``.

The module imports only the standard library at import time (torch and the rest are
imported inside the checks), so a broken package shows up as a line, not a traceback.

Introduced in the troubleshooting tip of ``notebooks/01_quickstart.ipynb`` and in
``README.md``; on the command line it is ``mmkd-clip doctor [--offline] [--verify]``.

The checks live in this module (``mmkd_utils.doctor``); ``mmkd_utils.doctor`` is
the function that runs them all.

Example:
    >>> import mmkd_utils
    >>> report = mmkd_utils.doctor(network=False)  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    OK      python: 3.11.7 (/usr/bin/python3)
    WARNING gpu: no CUDA GPU and no Apple MPS: runs on the CPU: slower; ...
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import html
import http.client
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mmkd_utils.config as paths

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"
STATUSES = (OK, WARNING, ERROR)

#: The sections of the report, in order.
SECTIONS = ("system", "packages", "cache", "weights", "text encoder", "demo images", "network")

#: Hosts the network checks contact (module constants so tests can point them elsewhere).
HF_HUB_URL = "https://huggingface.co"
WEIGHTS_HOST_URL = "https://drive.google.com"
DEMO_HOST_URL = "https://raw.githubusercontent.com"

#: Size of the released weights; the converted copy is as large again.
WEIGHTS_SIZE = "784 MB"
#: Below this much free space in the cache the disk check warns (weights + converted copy).
MIN_FREE_BYTES = 2 * 10**9
#: Python versions older than this cannot run the package.
MIN_PYTHON = (3, 10)
MIN_TORCH = "2.1"

_OFFLINE_README = "see README 'Offline machines'"
_SLOW_README = "runs on the CPU: slower; see README 'Slow CPUs'"
_HOME_FIX = (
    "set MMKD_HOME to a writable folder with about 2 GB free "
    "(e.g. export MMKD_HOME=$HOME/mmkd-cache), or fix the folder's permissions"
)


@dataclass(frozen=True)
class Check:
    """The result of one check: ``status`` is ``"OK"``, ``"WARNING"`` or ``"ERROR"``.

    ``detail`` says what was found; ``fix`` what to do about a problem (empty when OK);
    ``section`` is filled in by :func:`doctor`.

    Example:
        >>> print(Check("python", "OK", "3.11.7"))
        OK      python: 3.11.7
    """

    name: str
    status: str
    detail: str
    fix: str = ""
    section: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")

    def line(self) -> str:
        """The report line: status, name, detail and (for a problem) the fix.

        Example:
            >>> Check("gpu", "WARNING", "no GPU", "use a GPU").line()
            'WARNING gpu: no GPU -- fix: use a GPU'
        """
        text = f"{self.status:<7} {self.name}: {self.detail}"
        if self.fix and self.status != OK:
            text += f" -- fix: {self.fix}"
        return text

    def __str__(self) -> str:
        return self.line()


@dataclass(repr=False)
class DoctorReport:
    """All checks of one :func:`doctor` run; ``str()`` gives one line per check.

    Example:
        >>> report = DoctorReport([Check("python", "OK", "3.11.7", section="system")])
        >>> report.ok, report["python"].status
        (True, 'OK')
    """

    checks: list[Check] = field(default_factory=list)

    @property
    def errors(self) -> list[Check]:
        """The checks with status ERROR.

        Example:
            >>> DoctorReport([Check("a", "ERROR", "x")]).errors[0].name
            'a'
        """
        return [c for c in self.checks if c.status == ERROR]

    @property
    def warnings(self) -> list[Check]:
        """The checks with status WARNING.

        Example:
            >>> DoctorReport([Check("a", "WARNING", "x")]).warnings[0].name
            'a'
        """
        return [c for c in self.checks if c.status == WARNING]

    @property
    def ok(self) -> bool:
        """True when no check is an ERROR (warnings allowed).

        Example:
            >>> DoctorReport([Check("a", "WARNING", "x")]).ok
            True
        """
        return not self.errors

    @property
    def sections(self) -> list[str]:
        """The sections present, in report order.

        Example:
            >>> DoctorReport([Check("a", "OK", "x", section="cache")]).sections
            ['cache']
        """
        return list(dict.fromkeys(c.section for c in self.checks))

    def __getitem__(self, name: str) -> Check:
        """The check called ``name`` (KeyError if there is none).

        Example:
            >>> DoctorReport([Check("a", "OK", "x")])["a"].detail
            'x'
        """
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def __iter__(self) -> Iterator[Check]:
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def summary(self) -> str:
        """One sentence counting the statuses.

        Example:
            >>> DoctorReport([Check("a", "OK", "x")]).summary()
            '1 checks: 1 OK, 0 WARNING, 0 ERROR.'
        """
        counts = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
        text = f"{len(self.checks)} checks: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES)
        if counts[ERROR]:
            return text + ". Fix the ERROR lines first: MMKD-CLIP will not work as it is."
        return text + "."

    def __str__(self) -> str:
        return "\n".join(c.line() for c in self.checks)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        colours = {OK: "#1a7f37", WARNING: "#9a6700", ERROR: "#cf222e"}
        cell = "text-align:left;vertical-align:top;padding:2px 8px"
        rows = []
        for section in self.sections:
            rows.append(
                f'<tr><th colspan="4" style="{cell};padding-top:8px">'
                f"{html.escape(section or 'other')}</th></tr>"
            )
            for c in (c for c in self.checks if c.section == section):
                rows.append(
                    f'<tr><td style="{cell};color:{colours[c.status]};font-weight:bold">'
                    f"{c.status}</td>"
                    f'<td style="{cell}">{html.escape(c.name)}</td>'
                    f'<td style="{cell}">{html.escape(c.detail)}</td>'
                    f'<td style="{cell}">{html.escape(c.fix if c.status != OK else "")}</td></tr>'
                )
        return (
            '<table class="mmkd-doctor">'
            f'<caption style="text-align:left">{html.escape(self.summary())}</caption>'
            f'<thead><tr><th style="{cell}">status</th><th style="{cell}">check</th>'
            f'<th style="{cell}">found</th><th style="{cell}">fix</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        )


# --------------------------------------------------------------------------- helpers


def _size(n: float) -> str:
    """Human-readable size in decimal units.

    Example:
        >>> _size(784_000_000)
        '784 MB'
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{int(n)} bytes"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hf_offline() -> list[str]:
    """The set ones of HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE (both forbid hub downloads)."""
    return [n for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _truthy(os.environ.get(n))]


def _version_tuple(version: str) -> tuple[int, ...]:
    """Leading numeric parts of a version string.

    Example:
        >>> _version_tuple("2.14.1+cu130"), _version_tuple("2.6.0rc1")
        ((2, 14, 1), (2, 6, 0))
    """
    out = []
    for part in version.split("+")[0].split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if digits != part:
            break
    return tuple(out)


def _older(version: str, minimum: str) -> bool:
    have, want = _version_tuple(version), _version_tuple(minimum)
    return bool(have) and have < want


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _checkpoint_choice() -> tuple[Path, str]:
    """The checkpoint load_model() would use, and where that choice comes from."""
    env = paths.env_path("MMKD_CHECKPOINT")
    if env is not None:
        return env, "MMKD_CHECKPOINT"
    return paths.default_checkpoint_path(), "default"


def _offline_weights_fix() -> str:
    return (
        f"work offline: put {paths.CHECKPOINT_NAME} at {paths.default_checkpoint_path()} "
        f"(or set MMKD_CHECKPOINT to its path); {_OFFLINE_README}"
    )


def _offline_text_fix() -> str:
    return (
        "work offline: put the BiomedBERT config.json, vocab.txt and tokenizer_config.json "
        f"({paths.DEFAULT_TEXT_ENCODER}) in a folder and set MMKD_TEXT_ENCODER to it; "
        f"{_OFFLINE_README}"
    )


def _offline_demo_fix() -> str:
    from mmkd_utils.demo import demo_image_dir

    return (
        "work offline: put the nine demo images in a folder and set MMKD_DEMO_IMAGES to it "
        f"(or copy them into {demo_image_dir()}); {_OFFLINE_README}"
    )


# --------------------------------------------------------------------------- system


def check_python(version: tuple[int, ...] | None = None) -> Check:
    """Python must be 3.10 or newer; also names the interpreter (the notebook's kernel).

    Example:
        >>> check_python((3, 9, 18)).status
        'ERROR'
    """
    version = tuple(sys.version_info[:3]) if version is None else tuple(version)
    text = ".".join(map(str, version))
    where = f"{text} ({sys.executable or 'unknown interpreter'})"
    if version[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check(
            "python",
            ERROR,
            f"{where} is too old: MMKD-CLIP needs Python {need} or newer",
            f"create an environment with Python >= {need} (conda env create -f environment.yml) "
            "and select it as the notebook kernel",
        )
    return Check("python", OK, where)


def check_torch() -> Check:
    """torch imports; its version and build (CUDA, ROCm or CPU only).

    Example:
        >>> check_torch().detail  # doctest: +SKIP
        '2.14.1 (CUDA 13.0 build)'
    """
    try:
        torch = importlib.import_module("torch")
    except Exception as err:
        return Check(
            "torch",
            ERROR,
            f"torch cannot be imported: {_first_line(err)}",
            "pip install torch torchvision (for a GPU build see https://pytorch.org/get-started/locally/)",
        )
    cuda = getattr(torch.version, "cuda", None)
    hip = getattr(torch.version, "hip", None)
    build = f"CUDA {cuda} build" if cuda else f"ROCm {hip} build" if hip else "CPU-only build"
    detail = f"{torch.__version__} ({build})"
    if _older(torch.__version__, MIN_TORCH):
        return Check(
            "torch",
            WARNING,
            f"{detail} is older than the supported {MIN_TORCH}",
            f'pip install "torch>={MIN_TORCH}" torchvision (install both together)',
        )
    return Check("torch", OK, detail)


def check_gpu() -> Check:
    """CUDA (device name and memory) or Apple MPS; without either, a WARNING.

    Example:
        >>> check_gpu().status in ("OK", "WARNING")  # doctest: +SKIP
        True
    """
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        memory = _size(props.total_memory)
        try:
            free, _total = torch.cuda.mem_get_info(0)
            memory += f", {_size(free)} free"
        except Exception:  # noqa: BLE001 - free memory is a nice-to-have
            pass
        more = f"; {count - 1} more CUDA device(s)" if count > 1 else ""
        return Check("gpu", OK, f"CUDA: {props.name} ({memory}){more}")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Check("gpu", OK, f"Apple MPS available ({platform.machine()} Mac); no CUDA")
    has_driver = shutil.which("nvidia-smi") is not None
    if has_driver and not torch.version.cuda:
        fix = (
            "this machine has an NVIDIA driver but torch is a CPU-only build: install a CUDA "
            "build of torch and torchvision (https://pytorch.org/get-started/locally/)"
        )
    elif has_driver:
        fix = (
            "torch is a CUDA build but sees no GPU: check `nvidia-smi`, the driver version "
            "and CUDA_VISIBLE_DEVICES"
        )
    else:
        fix = (
            "fine for a few images; for many images use a machine with an NVIDIA GPU "
            "(or Apple silicon), or keep batches small"
        )
    return Check("gpu", WARNING, f"no CUDA GPU and no Apple MPS: {_SLOW_README}", fix)


def check_device() -> Check:
    """The device, precision and image batch size that ``device="auto"`` picks.

    Example:
        >>> check_device().detail  # doctest: +SKIP
        "device='auto' picks cpu (precision fp32, image batch 32)"
    """
    from mmkd_utils.model.device import auto_image_batch_size, resolve_device, resolve_precision

    dev = resolve_device("auto")
    precision = resolve_precision("auto", dev)
    batch = auto_image_batch_size(dev)
    return Check(
        "device", OK, f"device='auto' picks {dev} (precision {precision}, image batch {batch})"
    )


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision release built for ``torch_version`` (2.x.y -> 0.(x+15).y), or None.

    Example:
        >>> matching_torchvision("2.14.1+cu130")
        '0.29.1'
    """
    parts = _version_tuple(torch_version)
    if len(parts) < 2 or parts[0] != 2 or parts[1] < 1:
        return None
    patch = parts[2] if len(parts) > 2 else 0
    return f"0.{parts[1] + 15}.{patch}"


def _torchvision_fix(torch_version: str) -> str:
    wanted = matching_torchvision(torch_version)
    if wanted is None:
        return "install a matching pair together: pip install --upgrade torch torchvision"
    base = torch_version.split("+")[0]
    local = torch_version.split("+")[1] if "+" in torch_version else ""
    index = f" --index-url https://download.pytorch.org/whl/{local}" if local else ""
    return f"install a matching pair: pip install torch=={base} torchvision=={wanted}{index}"


def check_torchvision() -> Check:
    """torchvision imports, ``torchvision.ops.nms`` runs, and it is the release for this torch.

    Example:
        >>> check_torchvision().detail  # doctest: +SKIP
        '0.29.1 matches torch 2.14.1 (torchvision.ops.nms works)'
    """
    import torch

    fix = _torchvision_fix(torch.__version__)
    try:
        tv = importlib.import_module("torchvision")
    except Exception as err:
        return Check(
            "torchvision",
            ERROR,
            f"torchvision cannot be imported with torch {torch.__version__}: {_first_line(err)}",
            fix,
        )
    try:
        kept = tv.ops.nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1.0]), 0.5)
        if kept.tolist() != [0]:
            raise RuntimeError(f"it returned {kept.tolist()} instead of [0]")
    except Exception as err:
        return Check(
            "torchvision",
            ERROR,
            f"torchvision {tv.__version__} does not work with torch {torch.__version__} "
            f"(torchvision.ops.nms fails: {_first_line(err)})",
            fix,
        )
    wanted = matching_torchvision(torch.__version__)
    if wanted and _version_tuple(tv.__version__)[:2] != _version_tuple(wanted)[:2]:
        return Check(
            "torchvision",
            WARNING,
            f"torchvision {tv.__version__} is not the release built for torch "
            f"{torch.__version__} (that is {wanted})",
            fix,
        )
    return Check(
        "torchvision",
        OK,
        f"{tv.__version__} matches torch {torch.__version__} (torchvision.ops.nms works)",
    )


# --------------------------------------------------------------------------- packages


@dataclass(frozen=True)
class Package:
    """A package the tutorials use: distribution and import names, minimum, role.

    Example:
        >>> Package("pandas", "pandas", "2", True, "result tables").pip()
        'pip install "pandas>=2"'
    """

    dist: str
    module: str
    minimum: str
    required: bool
    purpose: str

    def pip(self, flag: str = "") -> str:
        """The pip command installing this package (``flag``: e.g. ``--upgrade``).

        Example:
            >>> Package("numpy", "numpy", "1.24", True, "arrays").pip("--force-reinstall")
            'pip install --force-reinstall "numpy>=1.24"'
        """
        return " ".join(
            ["pip install", *([flag] if flag else []), f'"{self.dist}>={self.minimum}"']
        )


#: The packages checked by :func:`check_package`; a missing optional one is a WARNING.
PACKAGES: tuple[Package, ...] = (
    Package("open_clip_torch", "open_clip", "3.0", True, "builds the model"),
    Package("transformers", "transformers", "4.40", True, "text encoder config and tokenizer"),
    Package("safetensors", "safetensors", "0.4", True, "the converted copy of the weights"),
    Package("pillow", "PIL", "10", True, "reading images"),
    Package("numpy", "numpy", "1.24", True, "arrays"),
    Package("scikit-learn", "sklearn", "1.3", True, "linear probes, metrics, embedding maps"),
    Package("pandas", "pandas", "2", True, "result tables"),
    Package("matplotlib", "matplotlib", "3.7", True, "plots"),
    Package("pydicom", "pydicom", "2.4", False, "reading DICOM files"),
    Package("nibabel", "nibabel", "5", False, "reading NIfTI volumes"),
    Package("ipywidgets", "ipywidgets", "8", False, "progress bars and widgets in notebooks"),
)


def check_package(package: Package) -> Check:
    """Installed version of ``package``, and whether it imports; missing optional: WARNING.

    Example:
        >>> check_package(PACKAGES[0]).detail  # doctest: +SKIP
        '3.3.0'
    """
    problem = ERROR if package.required else WARNING
    role = "required" if package.required else "optional"
    try:
        version = importlib.metadata.version(package.dist)
    except importlib.metadata.PackageNotFoundError:
        return Check(
            package.dist,
            problem,
            f"not installed ({role}: {package.purpose})",
            package.pip() + " (in a notebook: %pip install ...), then restart the kernel",
        )
    try:
        importlib.import_module(package.module)
    except Exception as err:
        return Check(
            package.dist,
            problem,
            f"{version} is installed but `import {package.module}` fails: {_first_line(err)}",
            package.pip("--force-reinstall") + ", then restart the kernel",
        )
    if _older(version, package.minimum):
        return Check(
            package.dist,
            WARNING,
            f"{version} is older than the supported {package.minimum} ({package.purpose})",
            package.pip("--upgrade") + ", then restart the kernel",
        )
    return Check(package.dist, OK, version)


# --------------------------------------------------------------------------- cache


def check_cache_folder() -> Check:
    """The cache folder (``MMKD_HOME``) exists or can be made, and a file can be written in it.

    Example:
        >>> check_cache_folder().detail  # doctest: +SKIP
        '~/.cache/mmkd-clip (default; exists; writable)'
    """
    folder = paths.cache_dir()
    origin = "from MMKD_HOME" if os.environ.get("MMKD_HOME") else "default; MMKD_HOME moves it"
    if folder.exists() and not folder.is_dir():
        return Check(
            "cache folder", ERROR, f"{folder} ({origin}) is a file, not a folder", _HOME_FIX
        )
    if folder.is_dir():
        target, state = folder, "exists"
    else:
        target = _nearest_existing(folder)
        if not target.is_dir():
            return Check(
                "cache folder",
                ERROR,
                f"{folder} ({origin}) cannot be created: {target} is a file, not a folder",
                _HOME_FIX,
            )
        state = f"not created yet, will be made inside {target}"
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".mmkd-doctor-"):
            pass
    except OSError as err:
        return Check(
            "cache folder",
            ERROR,
            f"{folder} ({origin}): cannot write in {target} ({err.strerror or err})",
            _HOME_FIX,
        )
    return Check("cache folder", OK, f"{folder} ({origin}; {state}; writable)")


def check_disk_space(min_free: int = MIN_FREE_BYTES) -> Check:
    """Free space where the cache is: the weights and their converted copy need ~1.6 GB.

    Example:
        >>> check_disk_space(min_free=0).status  # doctest: +SKIP
        'OK'
    """
    target = _nearest_existing(paths.cache_dir())
    if not target.is_dir():
        target = target.parent
    free = shutil.disk_usage(target).free
    if free < min_free:
        return Check(
            "disk space",
            WARNING,
            f"only {_size(free)} free at {target}: the weights need {WEIGHTS_SIZE} and "
            f"their converted copy another {WEIGHTS_SIZE}",
            f"free some space, or set MMKD_HOME to a folder on a disk with {_size(min_free)} free",
        )
    return Check("disk space", OK, f"{_size(free)} free at {target}")


# --------------------------------------------------------------------------- weights


def _verify_converted(folder: Path) -> str:
    """Check a converted folder's config and safetensors header; describe it or raise."""
    from safetensors import safe_open

    from mmkd_utils.errors import CheckpointError
    from mmkd_utils.model.checkpoint import REQUIRED_KEYS, to_open_clip_keys
    from mmkd_utils.model.loading import CONFIG_NAME, WEIGHTS_NAME

    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    try:
        json.loads(config_path.read_text(encoding="utf-8"))["model_cfg"]["vision_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{config_path} is not a valid open_clip config ({err})") from err
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            keys = set(f.keys())
    except Exception as err:
        raise CheckpointError(
            f"{weights_path} has no readable header ({_first_line(err)})"
        ) from err
    needed = to_open_clip_keys(dict.fromkeys(REQUIRED_KEYS))
    missing = sorted(k for k in needed if k not in keys)
    if not keys or missing:
        raise CheckpointError(
            f"{weights_path} holds {len(keys)} tensors and lacks {', '.join(missing[:4])}"
        )
    return f"{len(keys)} tensors, header readable"


def _partial_download(dest: Path) -> str:
    parts = sorted(dest.parent.glob(dest.name + ".part*")) if dest.parent.is_dir() else []
    size = sum(p.stat().st_size for p in parts if p.is_file())
    return f"; a partial download ({_size(size)}) is kept and resumes" if size else ""


def check_weights(verify: bool = False) -> Check:
    """The checkpoint ``load_model()`` would use: present? with ``verify``: readable?

    Example:
        >>> check_weights().detail  # doctest: +SKIP
        '~/.cache/mmkd-clip/MMKD_B16.pth (default; 784 MB; not verified, ...)'
    """
    from mmkd_utils.model.checkpoint import model_config_from_state_dict, read_checkpoint
    from mmkd_utils.model.checkpoint import sniff as _sniff
    from mmkd_utils.model.loading import CONFIG_NAME, WEIGHTS_NAME

    path, origin = _checkpoint_choice()
    default = paths.default_checkpoint_path()
    if origin == "MMKD_CHECKPOINT" and not path.exists():
        return Check(
            "weights",
            ERROR,
            f"MMKD_CHECKPOINT points to {path}, which does not exist",
            f"fix the path, or unset MMKD_CHECKPOINT to use the released weights at {default}",
        )
    if not path.exists():
        return Check(
            "weights",
            WARNING,
            f"{paths.CHECKPOINT_NAME} is not at {path}: it will be downloaded on first load "
            f"({WEIGHTS_SIZE}){_partial_download(path)}",
            f"nothing to do with network access (or run `mmkd-clip download` now); offline, "
            f"put it at {path} or set MMKD_CHECKPOINT",
        )
    redo = (
        f"download it again (mmkd-clip download --force, or by hand from {paths.DRIVE_URL}) "
        "or point MMKD_CHECKPOINT to a good file"
    )
    if path.is_dir():
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
        if missing:
            return Check(
                "weights",
                ERROR,
                f"{path} ({origin}) is a folder but not a converted copy: "
                f"{', '.join(missing)} missing",
                "point MMKD_CHECKPOINT to MMKD_B16.pth or to a complete converted folder",
            )
        if not verify:
            return Check("weights", OK, f"{path} ({origin}; converted folder; not verified)")
        try:
            described = _verify_converted(path)
        except Exception as err:
            return Check("weights", ERROR, str(err), redo)
        return Check("weights", OK, f"{path} ({origin}; converted folder; {described})")
    size = _size(path.stat().st_size)
    problem = _sniff(path)
    if problem:
        return Check("weights", ERROR, f"{path} ({origin}; {size}): {problem}", redo)
    if not verify:
        return Check(
            "weights",
            OK,
            f"{path} ({origin}; {size}; not verified: verify_weights=True or --verify reads it)",
        )
    try:
        state_dict = read_checkpoint(path)
        cfg = model_config_from_state_dict(state_dict)
    except Exception as err:
        message = str(err) if str(path) in str(err) else f"{path}: {err}"
        return Check("weights", ERROR, message, redo)
    vision = cfg["vision_cfg"]
    return Check(
        "weights",
        OK,
        f"{path} ({origin}; {size}; verified: {len(state_dict)} tensors, ViT "
        f"{vision['layers']} layers x {vision['width']}, patch {vision['patch_size']}, "
        f"image {vision['image_size']}, embed_dim {cfg['embed_dim']})",
    )


def check_converted_copy(verify: bool = False) -> Check:
    """Whether the checkpoint's converted copy is cached (with ``verify``: its header reads).

    Example:
        >>> check_converted_copy().detail  # doctest: +SKIP
        'none yet: the first load converts the checkpoint and caches it in ...'
    """
    from mmkd_utils.errors import TextEncoderError
    from mmkd_utils.model.loading import CONFIG_NAME, WEIGHTS_NAME, converted_folder

    path, origin = _checkpoint_choice()
    if path.is_dir():
        return Check("converted copy", OK, f"{origin} is itself a converted folder: {path}")
    if not path.is_file():
        return Check(
            "converted copy", OK, "none: there is no checkpoint yet (made on the first load)"
        )
    try:
        folder = converted_folder(path)
    except TextEncoderError as err:
        return Check(
            "converted copy",
            WARNING,
            f"cannot tell: {_first_line(err)}",
            "fix the text encoder (see the 'text encoder' line)",
        )
    if not folder.exists():
        return Check(
            "converted copy",
            OK,
            f"none yet: the first load converts {path.name} and caches it in {folder} "
            f"({WEIGHTS_SIZE}; later loads are faster)",
        )
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]
    if missing:
        return Check(
            "converted copy",
            WARNING,
            f"{folder} is incomplete ({', '.join(missing)} missing): the next load converts again",
            f"nothing to do, or delete {folder}",
        )
    if not verify:
        return Check("converted copy", OK, f"{folder} (not verified)")
    try:
        described = _verify_converted(folder)
    except Exception as err:
        return Check(
            "converted copy",
            WARNING,
            f"{err}: the next load converts {path.name} again",
            f"nothing to do (load_model replaces it), or delete {folder} now",
        )
    return Check("converted copy", OK, f"{folder} ({described})")


# --------------------------------------------------------------------------- text encoder

_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")


def _converted_copy_with_text_files() -> Path | None:
    """A converted copy load_model() would use that carries its own text config and tokenizer."""
    try:
        from mmkd_utils.model.loading import CONFIG_NAME, converted_folder

        path, _origin = _checkpoint_choice()
        folder = path if path.is_dir() else converted_folder(path) if path.is_file() else None
        if folder is not None and (folder / CONFIG_NAME).is_file():
            if (folder / "config.json").is_file():
                return folder
    except Exception:  # noqa: BLE001 - only a hint for the text encoder line
        return None
    return None


def check_text_encoder() -> Check:
    """The BiomedBERT config and tokenizer: a complete local folder, or in the HF cache.

    Example:
        >>> check_text_encoder().detail  # doctest: +SKIP
        'microsoft/BiomedNLP-... (default): config and tokenizer in the Hugging Face cache'
    """
    from mmkd_utils.errors import TextEncoderError
    from mmkd_utils.model.loading import text_encoder_source as _text_encoder_source

    origin = "MMKD_TEXT_ENCODER" if os.environ.get("MMKD_TEXT_ENCODER", "").strip() else "default"
    try:
        source = _text_encoder_source(None)
    except TextEncoderError as err:
        return Check(
            "text encoder",
            ERROR,
            str(err),
            "set MMKD_TEXT_ENCODER to an existing folder or a hub id, or unset it",
        )
    local = Path(source)
    if local.is_dir():
        missing = [] if (local / "config.json").is_file() else ["config.json"]
        if not any((local / n).is_file() for n in _TOKENIZER_FILES):
            missing.append(" or ".join(_TOKENIZER_FILES))
        if missing:
            return Check(
                "text encoder",
                ERROR,
                f"folder {local} ({origin}) lacks {', '.join(missing)}",
                f"copy config.json, vocab.txt and tokenizer_config.json of "
                f"{paths.DEFAULT_TEXT_ENCODER} into {local}",
            )
        try:
            json.loads((local / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            return Check(
                "text encoder",
                ERROR,
                f"{local / 'config.json'} is not valid JSON ({_first_line(err)})",
                f"copy config.json of {paths.DEFAULT_TEXT_ENCODER} into {local} again",
            )
        return Check("text encoder", OK, f"folder {local} ({origin}): config and tokenizer")
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(source, name), str)

    try:
        in_cache = cached("config.json") and any(cached(n) for n in _TOKENIZER_FILES)
    except ValueError as err:  # huggingface_hub's HFValidationError: not a repo id
        return Check(
            "text encoder",
            ERROR,
            f"{source!r} ({origin}) is neither a folder nor a valid hub id ({_first_line(err)})",
            "set MMKD_TEXT_ENCODER to a folder with config.json and the tokenizer files, "
            f"or to a hub id like {paths.DEFAULT_TEXT_ENCODER}, or unset it",
        )
    if in_cache:
        return Check(
            "text encoder",
            OK,
            f"hub id {source} ({origin}): config and tokenizer in the local Hugging Face cache",
        )
    converted = _converted_copy_with_text_files()
    if converted is not None:
        return Check(
            "text encoder",
            OK,
            f"hub id {source} ({origin}) is not in the Hugging Face cache, but the converted "
            f"copy {converted} carries its config and tokenizer",
        )
    offline = _hf_offline()
    if offline:
        return Check(
            "text encoder",
            ERROR,
            f"hub id {source} ({origin}) is not in the local Hugging Face cache and "
            f"{offline[0]}=1 forbids downloading it: loading will fail",
            _offline_text_fix() + f" (or unset {' and '.join(offline)} while online)",
        )
    return Check(
        "text encoder",
        WARNING,
        f"hub id {source} ({origin}) is not in the local Hugging Face cache: its config "
        "and tokenizer (under 1 MB, no weights) are downloaded on first load",
        "nothing to do with network access; " + _offline_text_fix(),
    )


# --------------------------------------------------------------------------- demo images


def check_demo_images() -> Check:
    """The nine demo images: in ``MMKD_DEMO_IMAGES``, or cached, or downloaded on first use.

    Example:
        >>> check_demo_images().status  # doctest: +SKIP
        'WARNING'
    """
    from mmkd_utils.demo import DEMO_IMAGE_NAMES, DEMO_SHA256, demo_image_dir
    from mmkd_utils.download import sha256_file

    total = len(DEMO_IMAGE_NAMES)
    env = paths.env_path("MMKD_DEMO_IMAGES")
    if env is not None:
        if not env.is_dir():
            return Check(
                "demo images",
                ERROR,
                f"MMKD_DEMO_IMAGES points to {env}, which is not a folder",
                "create it with the nine demo images, or unset MMKD_DEMO_IMAGES",
            )
        missing = [n for n in DEMO_IMAGE_NAMES if not (env / n).is_file()]
        if missing:
            return Check(
                "demo images",
                ERROR,
                f"{env} (MMKD_DEMO_IMAGES) has {total - len(missing)} of {total}; "
                f"lacks {', '.join(missing)}",
                f"put the missing files in {env}, or unset MMKD_DEMO_IMAGES to download them",
            )
        differ = [n for n in DEMO_IMAGE_NAMES if sha256_file(env / n) != DEMO_SHA256[n]]
        if differ:
            return Check(
                "demo images",
                WARNING,
                f"{env} (MMKD_DEMO_IMAGES): {', '.join(differ)} differ from the published "
                "images; results will differ from the published demo",
                "copy the published images, or unset MMKD_DEMO_IMAGES to download them",
            )
        return Check("demo images", OK, f"{env} (MMKD_DEMO_IMAGES): {total} of {total}")
    folder = demo_image_dir()
    good = [
        n
        for n in DEMO_IMAGE_NAMES
        if (folder / n).is_file() and sha256_file(folder / n) == DEMO_SHA256[n]
    ]
    if len(good) == total:
        return Check("demo images", OK, f"{folder}: {total} of {total}")
    return Check(
        "demo images",
        WARNING,
        f"{len(good)} of {total} in {folder}: downloaded on first use",
        "nothing to do with network access (or run `mmkd-clip download --demo-images`); "
        + _offline_demo_fix(),
    )


# --------------------------------------------------------------------------- network


def probe_url(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """GET ``url`` (headers only); return (reachable, what happened). Any HTTP answer counts.

    Example:
        >>> probe_url("http://127.0.0.1:9/", timeout=1)  # doctest: +SKIP
        (False, '[Errno 111] Connection refused')
    """
    start = time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": "mmkd-clip-doctor"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 407:
            return False, "the proxy asks for authentication (HTTP 407)"
        return True, f"answered HTTP {err.code} in {time.monotonic() - start:.1f} s"
    except (OSError, http.client.HTTPException, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        return False, str(reason) or type(err).__name__
    return True, f"HTTP {status} in {time.monotonic() - start:.1f} s"


def _probe_with_deadline(url: str, timeout: float) -> tuple[bool, str]:
    """probe_url in a daemon thread, so a hanging name lookup cannot exceed ``timeout``."""
    result: list[tuple[bool, str]] = []

    def run() -> None:
        try:
            result.append(probe_url(url, timeout))
        except Exception as err:  # noqa: BLE001 - reported as unreachable
            result.append((False, _first_line(err)))

    thread = threading.Thread(target=run, name="mmkd-doctor-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.25)
    return result[0] if result else (False, f"no answer within {timeout:g} s")


def check_host(name: str, url: str, timeout: float, offline_fix: str) -> Check:
    """Whether ``url`` answers within ``timeout`` seconds; unreachable is a WARNING.

    Example:
        >>> check_host("example", "http://127.0.0.1:9/", 1.0, "work offline").status
        ... # doctest: +SKIP
        'WARNING'
    """
    reachable, what = _probe_with_deadline(url, timeout)
    if reachable:
        return Check(name, OK, f"{url} reachable ({what})")
    fix = offline_fix
    if "CERTIFICATE" in what.upper():
        fix = (
            "the TLS certificate was not trusted (a proxy inspecting traffic?): point "
            f"SSL_CERT_FILE to your organisation's CA bundle; or {offline_fix}"
        )
    return Check(name, WARNING, f"{url} not reachable ({what})", fix)


def check_hf_offline() -> Check:
    """Report HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE): set, the hub is never contacted.

    Example:
        >>> check_hf_offline().name
        'HF_HUB_OFFLINE'
    """
    names = _hf_offline()
    if names:
        return Check(
            "HF_HUB_OFFLINE",
            OK,
            f"{' and '.join(n + '=1' for n in names)}: the Hugging Face hub is never "
            "contacted; the text encoder must be a local folder or in the HF cache",
        )
    return Check(
        "HF_HUB_OFFLINE",
        OK,
        "not set: the text encoder's config and tokenizer may be fetched from the hub",
    )


def check_hub(timeout: float = 3.0) -> Check:
    """Whether the Hugging Face hub (:data:`HF_HUB_URL`) answers; not asked under HF_HUB_OFFLINE.

    Example:
        >>> check_hub(timeout=1.0).status  # doctest: +SKIP
        'OK'
    """
    name = "huggingface.co"
    offline = _hf_offline()
    if offline:
        return Check(name, OK, f"{HF_HUB_URL} not contacted: {offline[0]}=1")
    return check_host(name, HF_HUB_URL, timeout, _offline_text_fix())


def check_weights_host(timeout: float = 3.0) -> Check:
    """Whether the weights' host (:data:`WEIGHTS_HOST_URL`, Google Drive) answers.

    Example:
        >>> check_weights_host(timeout=1.0).status  # doctest: +SKIP
        'OK'
    """
    name = "drive.google.com"
    return check_host(name, WEIGHTS_HOST_URL, timeout, _offline_weights_fix())


def check_demo_host(timeout: float = 3.0) -> Check:
    """Whether the demo images' host (:data:`DEMO_HOST_URL`, GitHub raw files) answers.

    Example:
        >>> check_demo_host(timeout=1.0).status  # doctest: +SKIP
        'OK'
    """
    name = "raw.githubusercontent.com"
    return check_host(name, DEMO_HOST_URL, timeout, _offline_demo_fix())


# --------------------------------------------------------------------------- running

_Plan = list[tuple[str, str, Callable[[], Check]]]


def _plan(verify_weights: bool) -> _Plan:
    """The local checks, as (section, name, function); looked up at call time."""
    plan: _Plan = [
        ("system", "python", check_python),
        ("system", "torch", check_torch),
        ("system", "gpu", check_gpu),
        ("system", "device", check_device),
        ("system", "torchvision", check_torchvision),
    ]
    plan += [("packages", p.dist, lambda p=p: check_package(p)) for p in PACKAGES]
    plan += [
        ("cache", "cache folder", check_cache_folder),
        ("cache", "disk space", check_disk_space),
        ("weights", "weights", lambda: check_weights(verify_weights)),
        ("weights", "converted copy", lambda: check_converted_copy(verify_weights)),
        ("text encoder", "text encoder", check_text_encoder),
        ("demo images", "demo images", check_demo_images),
        ("network", "HF_HUB_OFFLINE", check_hf_offline),
    ]
    return plan


def _network_plan(timeout: float) -> _Plan:
    return [
        ("network", "huggingface.co", lambda: check_hub(timeout)),
        ("network", "drive.google.com", lambda: check_weights_host(timeout)),
        ("network", "raw.githubusercontent.com", lambda: check_demo_host(timeout)),
    ]


def _safe(section: str, name: str, fn: Callable[[], Check]) -> Check:
    """Run one check; an exception inside it becomes an ERROR line."""
    try:
        result = fn()
        if not isinstance(result, Check):
            raise TypeError(f"returned {type(result).__name__}, not a Check")
    except Exception as err:
        return Check(
            name,
            ERROR,
            f"the check itself failed: {type(err).__name__}: {_first_line(err)}",
            "the other lines still hold; please report this line with your package versions",
            section,
        )
    return dataclasses.replace(result, section=section)


def doctor(
    *, network: bool = True, timeout: float = 3.0, verify_weights: bool = False
) -> DoctorReport:
    """Check everything MMKD-CLIP needs and return a report (one line per check).

    ``network=False`` contacts no host. ``timeout`` bounds each network check (they run
    side by side, so together they take about ``timeout`` seconds at most).
    ``verify_weights=True`` also reads the checkpoint (784 MB, memory-mapped) and the
    converted copy's header, without building the model. Never raises for a problem.

    Example:
        >>> report = doctor(network=False)  # doctest: +SKIP
        >>> report.ok, len(report.errors)  # doctest: +SKIP
        (True, 0)
        >>> print(report)  # doctest: +SKIP
        OK      python: 3.11.7 (/opt/conda/bin/python)
        ...
    """
    checks: list[Check] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for section, name, fn in _plan(verify_weights):
            checks.append(_safe(section, name, fn))
    if not network:
        checks.append(
            Check("network", OK, "not checked (network=False / --offline)", section="network")
        )
        return DoctorReport(checks)
    plan = _network_plan(timeout)
    with concurrent.futures.ThreadPoolExecutor(len(plan), "mmkd-doctor") as pool:
        futures = [pool.submit(_safe, *entry) for entry in plan]
        checks += [f.result() for f in futures]
    return DoctorReport(checks)


__all__ = [
    "Check",
    "DoctorReport",
    "Package",
    "PACKAGES",
    "SECTIONS",
    "HF_HUB_URL",
    "WEIGHTS_HOST_URL",
    "DEMO_HOST_URL",
    "doctor",
    "check_python",
    "check_torch",
    "check_gpu",
    "check_device",
    "check_torchvision",
    "check_package",
    "check_cache_folder",
    "check_disk_space",
    "check_weights",
    "check_converted_copy",
    "check_text_encoder",
    "check_demo_images",
    "check_hf_offline",
    "check_hub",
    "check_weights_host",
    "check_demo_host",
    "check_host",
    "matching_torchvision",
    "probe_url",
]
