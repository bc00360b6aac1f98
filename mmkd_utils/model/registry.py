"""Named models: MMKD-CLIP and two of the biomedical CLIPs it learned from, one API.

``load_model(name)`` loads any model listed by :func:`list_models` as the same
:class:`~mmkd_utils.model.loading.MMKDModel` object (``encode_images``, ``encode_texts``,
``zero_shot`` and ``classifier`` work unchanged), so the models can be compared on the
same images and prompts (:mod:`mmkd_utils.tasks.compare`).

* ``mmkd-clip-b16`` (the default): the released ``MMKD_B16.pth`` (Google Drive),
  through the MMKD-CLIP loader.
* ``unimed-clip-b16``: UniMed-CLIP ViT-B/16, ``unimed-clip-vit-b16.pt`` from the Hugging
  Face hub repository ``UzairK/unimed-clip-vit-b16``. Same architecture and key layout as
  MMKD-CLIP (ViT-B/16 QuickGELU + BiomedBERT + MLP projection), so the same loader reads
  it.
* ``biomedclip``: BiomedCLIP, open_clip's
  ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``, with its own
  preprocessing and tokenizer.

Where each model comes from, first match wins: the ``source=`` argument of
:func:`load_registered`; the model's environment variable (``MMKD_CHECKPOINT``,
``MMKD_UNIMED_CHECKPOINT`` or ``MMKD_BIOMEDCLIP``: a local copy); :data:`SOURCES`; the
published location.

**UniMed-CLIP download.** The file is fetched with the package's own
:func:`~mmkd_utils.download.download_url` from
``<hub>/UzairK/unimed-clip-vit-b16/resolve/main/unimed-clip-vit-b16.pt`` into
``MMKD_HOME/unimed/``: atomic (``.part`` file, then renamed), resumable, checked to be a
UniMed/MMKD-CLIP checkpoint (an HTML page or a truncated file is refused and deleted),
and never fetched again once it is there. ``<hub>`` is :data:`HUB_ENDPOINT`, else the
``HF_ENDPOINT`` environment variable (a hub mirror), else ``https://huggingface.co``.
``huggingface_hub.hf_hub_download`` was not used: its cache layout (blobs and symlinks),
its metadata requests and its offline switch (read once, when ``huggingface_hub`` is
imported) would give this one file a second download path with its own failure modes,
and would make the download hard to test offline. With ``HF_HUB_OFFLINE=1`` nothing is
downloaded and the error says where to put the file.

The UniMed-CLIP checkpoint holds NumPy scalars next to its weights (values its
training code saved with them). The loader reads checkpoints with
``torch.load(weights_only=True)``, which refuses any Python object it does not know;
for this model only, NumPy's scalar and numeric dtype constructors are allowed as well
(they build numbers and run no other code). Everything else is still refused.

**BiomedCLIP** is built by open_clip (``create_model_and_transforms`` and
``get_tokenizer``) from ``hf-hub:...`` or from a local folder (``local-dir:``) holding
``open_clip_config.json``, the weights and the tokenizer files. Its text tower's config
is BiomedBERT's: when ``text_encoder=`` or ``MMKD_TEXT_ENCODER`` names one (as for
MMKD-CLIP), that config is used, so the model also loads without network.

Introduced in ``notebooks/07_compare_models.ipynb``.

Example:
    >>> from mmkd_utils import list_models, load_model
    >>> list(list_models()["name"])
    ['mmkd-clip-b16', 'unimed-clip-b16', 'biomedclip']
    >>> unimed = load_model("unimed-clip-b16")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import mmkd_utils.config as paths
from mmkd_utils.errors import CheckpointError, DownloadError, TextEncoderError
from mmkd_utils.model.loading import MMKDModel, load_model

if TYPE_CHECKING:
    import pandas as pd

#: The model ``load_model()`` loads when no name is given.
DEFAULT_MODEL = "mmkd-clip-b16"
#: The public Hugging Face hub.
HUB_URL = "https://huggingface.co"
#: Base URL for UniMed-CLIP's weights; None: ``HF_ENDPOINT`` if set, else :data:`HUB_URL`.
HUB_ENDPOINT: str | None = None
#: Hub repository and file of UniMed-CLIP ViT-B/16.
UNIMED_REPO = "UzairK/unimed-clip-vit-b16"
UNIMED_FILE = "unimed-clip-vit-b16.pt"
#: open_clip's hub id of BiomedCLIP.
BIOMEDCLIP_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
_HF_HUB = "hf-hub:"
_LOCAL_DIR = "local-dir:"
_KIND_CHECKPOINT = "mmkd-checkpoint"
_KIND_OPEN_CLIP = "open_clip"


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model is, where it comes from and how it is used.

    ``kind`` says how it loads: ``"mmkd-checkpoint"`` (a ``.pth`` of the MMKD-CLIP
    layout, through the MMKD-CLIP loader) or ``"open_clip"`` (open_clip's own factory).
    ``env`` names the environment variable that points to a local copy.

    Example:
        >>> get_spec("biomedclip").context_length
        256
    """

    name: str
    title: str
    description: str
    kind: str
    architecture: str
    source: str
    licence: str
    preprocessing: str
    context_length: int
    env: str
    citation: str
    url: str
    default: bool = False


_OPENAI_PREPROCESS = "224 px: shortest side resized (bicubic), centre crop, OpenAI CLIP mean/std"

#: The registered models, by name (in the order :func:`list_models` lists them).
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="mmkd-clip-b16",
            title="MMKD-CLIP ViT-B/16",
            description=(
                "Distilled from nine biomedical CLIP models (among them UniMed-CLIP and "
                "BiomedCLIP); nine imaging modalities."
            ),
            kind=_KIND_CHECKPOINT,
            architecture="ViT-B/16 (QuickGELU) + BiomedBERT, MLP projection, 512-d",
            source=f"Google Drive: {paths.CHECKPOINT_NAME} (file id {paths.DRIVE_FILE_ID})",
            licence="not recorded here: check the MMKD-CLIP repository",
            preprocessing=_OPENAI_PREPROCESS,
            context_length=paths.CONTEXT_LENGTH,
            env="MMKD_CHECKPOINT",
            citation="Wang et al., arXiv:2506.22567 (2025)",
            url="https://github.com/wangshansong1/MMKD-CLIP",
            default=True,
        ),
        ModelSpec(
            name="unimed-clip-b16",
            title="UniMed-CLIP ViT-B/16",
            description=(
                "Trained on UniMed, 5.3 million open image-text pairs of six modalities "
                "(X-ray, CT, MRI, ultrasound, pathology, fundus)."
            ),
            kind=_KIND_CHECKPOINT,
            architecture="ViT-B/16 (QuickGELU) + BiomedBERT, MLP projection, 512-d",
            source=f"Hugging Face hub: {UNIMED_REPO}, file {UNIMED_FILE}",
            licence="CC BY-NC 4.0 (model card): non-commercial use only",
            preprocessing=_OPENAI_PREPROCESS,
            context_length=256,
            env="MMKD_UNIMED_CHECKPOINT",
            citation="Khattak et al., arXiv:2412.10372 (2024)",
            url="https://github.com/mbzuai-oryx/UniMed-CLIP",
        ),
        ModelSpec(
            name="biomedclip",
            title="BiomedCLIP",
            description=(
                "Trained on PMC-15M, 15 million figure-caption pairs from PubMed Central articles."
            ),
            kind=_KIND_OPEN_CLIP,
            architecture="ViT-B/16 (timm) + PubMedBERT (BiomedBERT), MLP projection, 512-d",
            source=f"Hugging Face hub: {BIOMEDCLIP_ID} (open_clip)",
            licence="MIT (model card)",
            preprocessing="its own open_clip preprocessing (open_clip_config.json)",
            context_length=256,
            env="MMKD_BIOMEDCLIP",
            citation="Zhang et al., NEJM AI (2025), arXiv:2303.00915",
            url=f"https://huggingface.co/{BIOMEDCLIP_ID}",
        ),
    )
}

#: Where each model's weights come from when neither ``source=`` nor its environment
#: variable says otherwise. None: the published location (downloaded into ``MMKD_HOME``).
#: For ``biomedclip``: an open_clip id (``hf-hub:...`` or ``local-dir:...``) or a folder.
SOURCES: dict[str, str | None] = {
    "mmkd-clip-b16": None,
    "unimed-clip-b16": None,
    "biomedclip": _HF_HUB + BIOMEDCLIP_ID,
}


# --------------------------------------------------------------------------- listing


def model_names() -> list[str]:
    """Names of the registered models, default first.

    Example:
        >>> model_names()
        ['mmkd-clip-b16', 'unimed-clip-b16', 'biomedclip']
    """
    return list(MODELS)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model; an unknown name lists the known ones.

    Example:
        >>> get_spec("unimed-clip-b16").env
        'MMKD_UNIMED_CHECKPOINT'
    """
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        pass
    no_file = isinstance(name, str) and not Path(name).exists()
    also = " (and no file or folder of that name exists)" if no_file else ""
    raise CheckpointError(
        f"Unknown model {name!r}{also}. "
        f"Registered models: {', '.join(MODELS)} (see mmkd_utils.list_models()). To load a "
        "checkpoint file or a converted folder, pass its path."
    )


def list_models() -> pd.DataFrame:
    """The registered models as a table, one row per model, the default first.

    Columns: ``name`` (what :func:`~mmkd_utils.load_model` takes), ``title``,
    ``default``, ``kind``, ``architecture``, ``source`` (where the published weights
    are), ``licence``, ``preprocessing``, ``context_length`` (tokens), ``env`` (the
    variable pointing to a local copy), ``citation``, ``url`` and ``description``.

    Example:
        >>> table = list_models()
        >>> table.loc[table["name"] == "biomedclip", "licence"].item()
        'MIT (model card)'
    """
    import pandas as pd

    first, last = ["name", "title", "default"], ["description"]
    middle = [f.name for f in fields(ModelSpec) if f.name not in first + last]
    rows = [asdict(spec) for spec in MODELS.values()]
    return pd.DataFrame(rows, columns=first + middle + last)


def is_model_name(value: Any) -> bool:
    """True when ``load_model(value)`` means a model name rather than a file.

    Registered names always are. A string that looks like a name (no folder separator,
    no file extension) and is no existing file or folder is treated as a name too, so
    that a misspelt name gets the list of registered names instead of "file not found".
    To load a file that is called like a registered name, pass a ``Path`` or ``./name``.

    Example:
        >>> is_model_name("biomedclip"), is_model_name("weights/MMKD_B16.pth")
        (True, False)
    """
    if not isinstance(value, str):
        return False
    if value in MODELS:
        return True
    looks_like_name = bool(value.strip()) and not any(c in value for c in "/\\.~:")
    return looks_like_name and not Path(value).exists()


def resolve_source(name: str, source: str | os.PathLike | None = None) -> str | None:
    """Where ``name`` would be loaded from: ``source``, its variable, :data:`SOURCES`.

    None means the published location (downloaded into ``MMKD_HOME`` when needed).

    Example:
        >>> resolve_source("biomedclip")  # doctest: +SKIP
        'hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224'
    """
    spec = get_spec(name)
    if source is not None and str(source).strip():
        return str(source)
    from_env = os.environ.get(spec.env, "").strip()
    if from_env:
        return from_env
    return SOURCES.get(name)


# --------------------------------------------------------------------------- loading


def load_registered(
    name: str,
    *,
    source: str | os.PathLike | None = None,
    text_encoder: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> MMKDModel:
    """Load a registered model as an :class:`~mmkd_utils.model.loading.MMKDModel`.

    ``load_model(name)`` calls this. ``source`` overrides where the weights come from
    (a file or folder; for ``biomedclip`` also an open_clip id), see
    :func:`resolve_source`. ``text_encoder``, ``device`` and ``precision`` work as in
    :func:`~mmkd_utils.model.loading.load_model`. The returned model's ``model_name`` is
    ``name``.

    Example:
        >>> clip = load_registered("biomedclip", device="cpu")  # doctest: +SKIP
        >>> clip.zero_shot(["xray.png"], ["A chest X-ray.", "A brain MRI."])  # doctest: +SKIP
        tensor([[0.9921, 0.0079]])
    """
    spec = get_spec(name)
    where = resolve_source(name, source)
    if spec.kind == _KIND_OPEN_CLIP:
        clip = _load_open_clip(spec, where, text_encoder, device, precision)
    else:  # the MMKD-CLIP loader, on the released weights or on a local/downloaded file
        fetch = _CHECKPOINT_FETCHERS.get(name)
        if fetch is not None:
            path = fetch(where)
        else:  # MMKD_CHECKPOINT is left to the loader, which explains a wrong path itself
            from_env = source is None and where == os.environ.get(spec.env, "").strip()
            path = None if where is None or from_env else Path(where)
        with allow_numpy_scalars() if fetch else contextlib.nullcontext():
            clip = load_model(path, text_encoder=text_encoder, device=device, precision=precision)
    clip.model_name = name
    return clip


# --------------------------------------------------------------------------- UniMed-CLIP


def hub_endpoint() -> str:
    """Base URL of the Hugging Face hub used for UniMed-CLIP's weights.

    Example:
        >>> hub_endpoint()  # doctest: +SKIP
        'https://huggingface.co'
    """
    base = HUB_ENDPOINT or os.environ.get("HF_ENDPOINT", "").strip() or HUB_URL
    return base.rstrip("/")


def unimed_url() -> str:
    """Download URL of ``unimed-clip-vit-b16.pt`` (the ``main`` revision).

    Example:
        >>> unimed_url()  # doctest: +SKIP
        'https://huggingface.co/UzairK/unimed-clip-vit-b16/resolve/main/unimed-clip-vit-b16.pt'
    """
    return f"{hub_endpoint()}/{UNIMED_REPO}/resolve/main/{UNIMED_FILE}"


def unimed_cache_path() -> Path:
    """Where the UniMed-CLIP weights are (or will be) cached: ``MMKD_HOME/unimed/``.

    Example:
        >>> unimed_cache_path().parent.name
        'unimed'
    """
    return paths.cache_dir() / "unimed" / UNIMED_FILE


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def unimed_checkpoint(source: str | os.PathLike | None = None) -> Path:
    """The local UniMed-CLIP weights: ``source``, else the cached copy, else downloaded.

    Without network access, or with ``HF_HUB_OFFLINE=1`` (then nothing is tried), the
    :class:`~mmkd_utils.errors.DownloadError` says where to put the file.

    Example:
        >>> unimed_checkpoint().name  # doctest: +SKIP
        'unimed-clip-vit-b16.pt'
    """
    env = MODELS["unimed-clip-b16"].env
    if source is not None:
        path = Path(source).expanduser()
        if not path.exists():
            raise CheckpointError(
                f"The UniMed-CLIP checkpoint {path} does not exist (from source= or {env}). "
                f"Fix the path, or unset {env} to download {UNIMED_FILE} into the cache."
            )
        return path
    dest = unimed_cache_path()
    if dest.is_file():
        return dest
    url = unimed_url()
    if _hub_offline():
        raise DownloadError(
            f"UniMed-CLIP's weights are not in the cache, and HF_HUB_OFFLINE is set, so "
            f"they are not downloaded. Download {url} on a machine with network access "
            f"and put it at {dest}, or set {env} to the file."
        )
    from mmkd_utils.download import download_url

    try:
        return download_url(url, dest, verify=_verify_unimed, desc=UNIMED_FILE)
    except DownloadError as err:
        raise DownloadError(f"{err} You can also set {env} to a copy of the file.") from err


def _verify_unimed(part: Path) -> None:
    """Raise unless ``part`` is a checkpoint of the UniMed/MMKD-CLIP layout."""
    from mmkd_utils.model.checkpoint import model_config_from_state_dict, read_checkpoint

    with open(part, "rb") as f:
        head = f.read(1024).removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if head.startswith((b"<!doctype", b"<html")):
        raise DownloadError(
            "the hub sent a web page (HTML) instead of the weights (a login, error or "
            "rate-limit page)"
        )
    with allow_numpy_scalars():
        model_config_from_state_dict(read_checkpoint(part))


def _numpy_scalar_globals() -> list[Any]:
    """NumPy's scalar and numeric dtype constructors, under both module names.

    Checkpoints pickled with NumPy 1.x name the scalar constructor
    ``numpy.core.multiarray.scalar``, NumPy 2.x ``numpy._core.multiarray.scalar``.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}
    names = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
    return [*((scalar, n) for n in names), np.dtype, *sorted(dtypes, key=str)]


@contextlib.contextmanager
def allow_numpy_scalars() -> Iterator[None]:
    """Let ``torch.load(weights_only=True)`` build NumPy scalars (and nothing else new).

    Example:
        >>> with allow_numpy_scalars():  # doctest: +SKIP
        ...     sd = read_checkpoint("unimed-clip-vit-b16.pt")
    """
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5: such checkpoints are refused, with a clear error
        yield
        return
    with safe_globals(_numpy_scalar_globals()):
        yield


#: Models of the MMKD-CLIP layout that are fetched by this module (not by the loader).
_CHECKPOINT_FETCHERS = {"unimed-clip-b16": unimed_checkpoint}


# --------------------------------------------------------------------------- open_clip


class _OpenCLIPModel(MMKDModel):
    """An :class:`MMKDModel` around any open_clip model.

    BiomedCLIP's image tower is a timm model without ``visual.proj``, from which
    :class:`MMKDModel` reads the embedding size; here it comes from the model config.
    """

    def __init__(self, *args: Any, embed_dim: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._embed_dim = int(embed_dim)

    @property
    def embed_dim(self) -> int:
        """Size of the joint image-text embedding space (from the model config)."""
        return self._embed_dim


def _open_clip_id(source: str) -> str:
    """``source`` as an open_clip model id: a folder becomes ``local-dir:<folder>``."""
    if source.startswith(_HF_HUB):
        return source
    folder = source[len(_LOCAL_DIR) :] if source.startswith(_LOCAL_DIR) else source
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"BiomedCLIP source {source!r} is neither 'hf-hub:<repo>' nor an existing "
            "folder. Pass a folder holding open_clip_config.json, the weights and the "
            "tokenizer files (set MMKD_BIOMEDCLIP to it), or unset MMKD_BIOMEDCLIP."
        )
    return _LOCAL_DIR + str(path.resolve())


def _fetch_hub_model(repo_id: str, spec: ModelSpec) -> None:
    """Put the config and weights of an open_clip hub model into the hub cache."""
    from huggingface_hub import hf_hub_download

    offline = {"local_files_only": True} if _hub_offline() else {}
    try:
        hf_hub_download(repo_id, "open_clip_config.json", **offline)
        try:
            hf_hub_download(repo_id, "open_clip_model.safetensors", **offline)
        except Exception:  # BiomedCLIP publishes the .bin only; open_clip tries both
            hf_hub_download(repo_id, "open_clip_pytorch_model.bin", **offline)
    except Exception as err:
        raise DownloadError(
            f"Could not get {spec.title} from the Hugging Face hub ({repo_id}): "
            f"{_first_line(err)}. "
            f"Without network (or with HF_HUB_OFFLINE=1 before it is cached), download "
            f"open_clip_config.json, open_clip_pytorch_model.bin and the tokenizer files "
            f"(vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json) "
            f"from https://huggingface.co/{repo_id} into a folder and set {spec.env} to "
            "it; set MMKD_TEXT_ENCODER to a folder with the BiomedBERT config.json."
        ) from None


def _explicit_text_encoder(text_encoder: str | os.PathLike | None) -> str | None:
    """The text encoder named by the caller or ``MMKD_TEXT_ENCODER``, else None."""
    if text_encoder is None and not os.environ.get("MMKD_TEXT_ENCODER", "").strip():
        return None
    from mmkd_utils.model.loading import _text_encoder_source

    return _text_encoder_source(text_encoder)


def _load_open_clip(
    spec: ModelSpec,
    source: str | None,
    text_encoder: str | os.PathLike | None,
    device: str | torch.device,
    precision: str,
) -> MMKDModel:
    import open_clip

    from mmkd_utils.model.device import resolve_device, resolve_precision

    model_id = _open_clip_id(source or _HF_HUB + BIOMEDCLIP_ID)
    if model_id.startswith(_HF_HUB):
        _fetch_hub_model(model_id[len(_HF_HUB) :], spec)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    try:
        model_cfg = open_clip.get_model_config(model_id)
        overrides: dict[str, Any] = {}
        text_source = _explicit_text_encoder(text_encoder)
        if text_source is not None:  # BiomedBERT's config from where MMKD-CLIP gets it
            overrides["text_cfg"] = {
                **model_cfg["text_cfg"],
                "hf_model_name": text_source,
                "hf_model_pretrained": False,
            }
        model, _, preprocess = open_clip.create_model_and_transforms(model_id, **overrides)
        tokenizer = open_clip.get_tokenizer(model_id)
    except OSError as err:
        raise TextEncoderError(
            f"Could not build {spec.title} from {model_id}: {_first_line(err)}. Its text "
            "tower needs the BiomedBERT config (and, from the hub, its tokenizer): without "
            "network, pass text_encoder=<folder with config.json> or set MMKD_TEXT_ENCODER, "
            f"and set {spec.env} to a local copy of the model."
        ) from None
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"Could not build {spec.title} from {model_id}: {_first_line(err)}. Check that "
            "the folder holds the model's own open_clip_config.json and weights, and that "
            "text_encoder / MMKD_TEXT_ENCODER (if set) is BiomedBERT."
        ) from None
    return _OpenCLIPModel(
        model,
        preprocess,
        tokenizer,
        dev,
        prec,
        source=model_id,
        embed_dim=int(model_cfg["embed_dim"]),
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].rstrip(".") if text else type(err).__name__


__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "SOURCES",
    "ModelSpec",
    "allow_numpy_scalars",
    "get_spec",
    "hub_endpoint",
    "is_model_name",
    "list_models",
    "load_registered",
    "model_names",
    "resolve_source",
    "unimed_cache_path",
    "unimed_checkpoint",
    "unimed_url",
]
