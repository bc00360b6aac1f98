"""Helpers shared by the tests: fixture paths and a local HTTP server (no network)."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import re
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
TINY = FIXTURES / "tiny_upstream"
TINY_CHECKPOINT = TINY / "checkpoint.pt"
TINY_TEXT = TINY / "tiny-biomedbert"
#: The published demo images, beside the repository in CI (absent in a lone clone).
SHARED_DEMO = TESTS.parents[1] / "shared" / "reference" / "demo_images"
CHECKPOINT_BYTES = TINY_CHECKPOINT.read_bytes()

HTML_PAGE = (
    b"\n  <!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
    b"<body><p class='uc-error-subcaption'>Too many users have viewed or downloaded this "
    b"file recently.</p></body></html>\n"
)


# --------------------------------------------------------------------------- server


@dataclass
class Route:
    """What the local server answers for one path."""

    body: bytes
    content_type: str = "application/octet-stream"
    cut_after: int | None = None  # send only this many body bytes, then close
    ranges: bool = True  # honour "Range: bytes=N-" with 206
    delay: float = 0.0  # seconds to wait before sending the body


class _Handler(BaseHTTPRequestHandler):
    timeout = 5  # a stuck client cannot hold a server thread for long

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        owner: LocalServer = self.server.owner  # type: ignore[attr-defined]
        with owner.lock:
            owner.requests.append((self.path, dict(self.headers)))
            route = owner.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        body, start, status = route.body, 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and route.ranges:
            start = int(match[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        chunk = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        time.sleep(route.delay)
        try:
            self.wfile.write(chunk if route.cut_after is None else chunk[: route.cut_after])
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


class LocalServer:
    """An HTTP server on 127.0.0.1 in a thread, serving ``routes`` (path -> Route/bytes).

    Use as a context manager; ``requests`` records (path, headers) of every GET.
    """

    def __init__(self, routes: dict[str, Route | bytes] | None = None) -> None:
        self.lock = threading.Lock()
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        for path, route in (routes or {}).items():
            self.set(path, route)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def set(self, path: str, route: Route | bytes) -> None:
        with self.lock:
            self.routes[path] = route if isinstance(route, Route) else Route(route)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def hits(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [headers for p, headers in self.requests if p == path]

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _head(handler: _Handler) -> None:
    """What the hub answers to ``hf_hub_download``'s metadata request (HEAD, not recorded)."""
    route = handler.server.owner.routes.get(handler.path)  # type: ignore[attr-defined]
    handler.send_response(404 if route is None else 200)
    if route is None:
        handler.send_header("X-Error-Code", "EntryNotFound")  # the hub's word for no such file
    handler.send_header("Content-Length", str(len(route.body) if route else 0))
    if route is not None:
        handler.send_header("ETag", f'"{hash(route.body) & 0xFFFFFFFF:08x}"')
        handler.send_header("X-Repo-Commit", "0" * 40)
    handler.end_headers()


def serve_hub(monkeypatch, server: LocalServer) -> LocalServer:
    """``server`` is the Hugging Face hub for this test (HF_ENDPOINT, HEAD answered, online)."""
    import huggingface_hub.constants
    import huggingface_hub.file_download

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.file_download.time, "sleep", lambda s: None)
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    monkeypatch.setattr(_Handler, "do_HEAD", _head, raising=False)
    # HF_ENDPOINT, as huggingface_hub read it at import (and for new processes):
    monkeypatch.setenv("HF_ENDPOINT", server.url(""))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url(""))
    template = server.url("/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    return server


def dead_url(path: str = "/file") -> str:
    """A URL on a local port where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


# --------------------------------------------------------------------------- stand-ins
# Tiny stand-ins for the registry's other models, shared by the tests and by
# notebooks/conftest.py (which runs notebook 07 on them).

REAL_BIOMEDCLIP_TEXT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


@functools.cache  # legacy torch.save output varies from call to call
def unimed_bytes(*, numpy_1_names: bool = True, seed: int = 7) -> bytes:
    """The tiny checkpoint with perturbed weights and NumPy scalars, as UniMed-CLIP's.

    The published file was pickled with NumPy 1.x (``numpy.core.multiarray.scalar``);
    with ``numpy_1_names`` the stand-in names the scalar constructor the same way.
    """
    import numpy as np
    import torch

    ckpt = torch.load(TINY_CHECKPOINT, map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(seed)
    ckpt["state_dict"] = {
        k: (v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v)
        if "logit_scale" not in k
        else v
        for k, v in ckpt["state_dict"].items()
    }
    ckpt["best_zero_shot"] = np.float64(0.5)
    ckpt["step"] = np.int64(1200)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer, _use_new_zipfile_serialization=not numpy_1_names)
    data = buffer.getvalue()
    if numpy_1_names:  # legacy format: the pickle's GLOBAL opcodes are plain text
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    return data


def write_biomedclip_stand_in(folder: Path, *, text_name: str = REAL_BIOMEDCLIP_TEXT) -> Path:
    """A tiny BiomedCLIP-shaped open_clip model in the layout of its hub repository."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "timm_model_name": "test_vit",  # timm's tiny ViT (real: vit_base_patch16_224)
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 160,
        },
        "text_cfg": {
            "hf_model_name": str(TINY_TEXT),
            "hf_tokenizer_name": text_name,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    }
    torch.manual_seed(3)
    text_cfg = {**model_cfg["text_cfg"], "hf_model_pretrained": False}  # no BERT weights
    model = open_clip.CustomTextCLIP(**{**model_cfg, "text_cfg": text_cfg})
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    model_cfg["text_cfg"]["hf_model_name"] = text_name  # as the published config
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_TEXT / name, folder / name)
    return folder


def load_file(path: Path, name: str):
    """The Python file ``path`` as module ``name`` (a tool or a conftest), no sys.path edit."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- MedMNIST
#: Images per class in (train, val, test) of the synthetic MedMNIST files.
MEDMNIST_COUNTS = (6, 4, 3)


def write_medmnist(
    root: Path, flag: str, size: int = 28, counts: tuple[int, int, int] = MEDMNIST_COUNTS
) -> Path:
    """A synthetic ``<flag>[_<size>].npz`` in the layout of the real files (keys, dtypes,
    shapes: uint8 images [N, size, size(, 3)], uint8 labels [N, 1] or [N, L]). Each class
    has a bright square in its own place, so a probe can learn it; ``counts`` per class
    (multi-label: per label, plus as many images with no finding)."""
    import medmnist
    import numpy as np

    info, rng = medmnist.INFO[flag], np.random.default_rng(sum(map(ord, flag)))
    n_classes, arrays = len(info["label"]), {}
    for split, per_class in zip(("train", "val", "test"), counts, strict=True):
        if info["task"].startswith("multi-label"):
            labels = (rng.random((per_class * (n_classes + 1), n_classes)) < 0.15).astype(np.uint8)
            labels[np.arange(per_class * n_classes), np.repeat(np.arange(n_classes), per_class)] = 1
            labels[per_class * n_classes :] = 0  # images with no finding
            level = labels.argmax(axis=1) + labels.any(axis=1)
        else:
            labels = np.repeat(np.arange(n_classes), per_class)[:, None].astype(np.uint8)
            level = labels[:, 0]
        shape = (len(labels), size, size) + ((3,) if info["n_channels"] == 3 else ())
        images = rng.integers(40, 80, shape)
        cell = size // 4  # class k: a bright square in cell k of a 4 x 4 grid
        for i, k in enumerate(level):
            row, col = divmod(int(k) % 16, 4)
            images[i, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = 230
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{flag}{'' if size == 28 else f'_{size}'}.npz"
    np.savez_compressed(path, **arrays)
    return path


def fresh_fact(facts: dict, step: str) -> dict:
    """One step's facts; a step that raised fails the test that reads it, with its traceback."""
    fact = facts[step]
    assert "error" not in fact, fact.get("error")
    return fact
