"""The model registry: three models through one API, on tiny offline stand-ins.

* ``mmkd-clip-b16`` and ``unimed-clip-b16``: the tiny upstream checkpoint (UniMed-CLIP
  has the same layout); the UniMed stand-in has perturbed weights and, like the published
  file, NumPy scalars pickled next to its state dict.
* ``biomedclip``: a tiny open_clip ``CustomTextCLIP`` (timm ``test_vit`` image tower, the
  tiny BERT text tower) saved in open_clip's folder layout with the real model's config
  fields, loaded through ``local-dir:``; the published model differs only in ``hf-hub:``.
* The UniMed-CLIP download runs against the local server of ``tests/support.py``.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from support import (
    TINY,
    TINY_CHECKPOINT,
    TINY_TEXT,
    Route,
    serve_hub,
    unimed_bytes,
    write_biomedclip_stand_in,
)

import mmkd_utils.config as paths
import mmkd_utils.model.registry as registry
from mmkd_utils import MMKDModel, list_models, load_model
from mmkd_utils.errors import CheckpointError, DownloadError, MMKDError
from mmkd_utils.model.checkpoint import read_checkpoint

IMAGES = sorted((TINY / "images").iterdir())[:3]
PROMPTS = ["A chest X-ray.", "An MRI scan of the brain.", "A fundus photograph."]
UNIMED_PATH = f"/{registry.UNIMED_REPO}/resolve/main/{registry.UNIMED_FILE}"


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch):
    """notebooks/conftest.py sets these for the notebooks; unit tests start without them."""
    for name in ("MMKD_UNIMED_CHECKPOINT", "MMKD_BIOMEDCLIP", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def biomedclip_dir(tmp_path_factory):
    return write_biomedclip_stand_in(tmp_path_factory.mktemp("biomedclip"))


@pytest.fixture(scope="session")
def unimed_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("unimed") / registry.UNIMED_FILE
    path.write_bytes(unimed_bytes())
    return path


@pytest.fixture
def stand_ins(monkeypatch, biomedclip_dir, unimed_file):
    """Every registered model points to its stand-in, as in the notebook tests."""
    monkeypatch.setenv("MMKD_CHECKPOINT", str(TINY_CHECKPOINT))
    monkeypatch.setenv("MMKD_UNIMED_CHECKPOINT", str(unimed_file))
    monkeypatch.setenv("MMKD_BIOMEDCLIP", str(biomedclip_dir))
    monkeypatch.setenv("MMKD_TEXT_ENCODER", str(TINY_TEXT))


def check_probs(probs: torch.Tensor, n: int, m: int) -> None:
    assert probs.shape == (n, m)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(n), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- listing


def test_list_models_describes_every_entry():
    table = list_models()
    assert list(table["name"]) == ["mmkd-clip-b16", "unimed-clip-b16", "biomedclip"]
    for column in ("source", "licence", "preprocessing", "context_length", "env", "url"):
        assert column in table.columns
    for _, row in table.iterrows():
        for column in ("title", "source", "licence", "preprocessing", "citation", "url"):
            assert isinstance(row[column], str) and row[column].strip(), (row["name"], column)
        assert row["context_length"] == 256
        assert row["env"].startswith("MMKD_")
    assert list(table.loc[table["default"], "name"]) == [registry.DEFAULT_MODEL]
    assert "UzairK/unimed-clip-vit-b16" in table.set_index("name").loc["unimed-clip-b16", "source"]
    assert registry.BIOMEDCLIP_ID in table.set_index("name").loc["biomedclip", "source"]
    assert set(registry.SOURCES) == set(registry.MODELS)


def test_licences_as_their_authors_state_them():
    licence = list_models().set_index("name")["licence"]
    assert licence["mmkd-clip-b16"] == "not stated by the authors"  # no licence published
    assert licence["unimed-clip-b16"].startswith("CC BY-NC 4.0")  # model card: cc-by-nc-4.0
    assert licence["biomedclip"].startswith("MIT") and "research" in licence["biomedclip"]


@pytest.mark.parametrize("name", ["unimed", "BiomedCLIP", "clip-b16"])
def test_unknown_names_list_the_registered_ones(name):
    with pytest.raises(CheckpointError) as info:
        load_model(name, device="cpu")
    for known in registry.MODELS:
        assert known in str(info.value)
    with pytest.raises(CheckpointError, match="biomedclip"):
        registry.get_spec(name)


def test_paths_are_not_names(tmp_path, monkeypatch):
    assert not registry.is_model_name("weights/MMKD_B16.pth")
    assert not registry.is_model_name(Path("biomedclip"))
    assert not registry.is_model_name(None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_weights").write_bytes(b"x")
    assert not registry.is_model_name("my_weights")  # an existing file is a file
    assert registry.is_model_name("biomedclip")  # registered names always are names


# --------------------------------------------------------------------------- all three


def test_three_models_one_api(stand_ins):
    loaded = {name: load_model(name, device="cpu") for name in list_models()["name"]}
    assert isinstance(loaded["biomedclip"], MMKDModel)
    for name, clip in loaded.items():
        assert isinstance(clip, MMKDModel), name
        assert clip.model_name == name
        images = clip.encode_images(IMAGES)
        texts = clip.encode_texts(PROMPTS)
        assert images.shape == (len(IMAGES), clip.embed_dim)
        assert texts.shape == (len(PROMPTS), clip.embed_dim)
        torch.testing.assert_close(images.norm(dim=1), torch.ones(len(IMAGES)))
        check_probs(clip.zero_shot(IMAGES, PROMPTS), len(IMAGES), len(PROMPTS))
        classifier = clip.classifier(["pneumonia", "normal"], ["A chest X-ray showing {}."])
        check_probs(clip.zero_shot(IMAGES, classifier), len(IMAGES), 2)
        assert clip.tokenizer.context_length == 256
    # Three different models: the stand-ins do not give the same numbers.
    mmkd, unimed = (
        loaded[n].zero_shot(IMAGES, PROMPTS) for n in ("mmkd-clip-b16", "unimed-clip-b16")
    )
    assert not torch.allclose(mmkd, unimed)
    assert loaded["biomedclip"].embed_dim == 32 != loaded["mmkd-clip-b16"].embed_dim


def test_mmkd_entry_is_the_existing_loader(monkeypatch):
    monkeypatch.setitem(registry.SOURCES, "mmkd-clip-b16", str(TINY_CHECKPOINT))
    by_name = load_model("mmkd-clip-b16", text_encoder=TINY_TEXT, device="cpu")
    by_path = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    assert type(by_name) is MMKDModel
    assert by_name.fingerprint == by_path.fingerprint
    torch.testing.assert_close(
        by_name.zero_shot(IMAGES, PROMPTS), by_path.zero_shot(IMAGES, PROMPTS), atol=0, rtol=0
    )
    assert registry.resolve_source("mmkd-clip-b16", "x.pth") == "x.pth"  # source= wins


def test_mmkd_entry_leaves_mmkd_checkpoint_to_the_loader(monkeypatch, tmp_path):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match="MMKD_CHECKPOINT points to"):
        load_model("mmkd-clip-b16", text_encoder=TINY_TEXT, device="cpu")


# --------------------------------------------------------------------------- UniMed-CLIP


def test_unimed_numpy_scalars_are_allowed_for_unimed_only(unimed_file, tmp_path):
    with pytest.raises(CheckpointError, match="Refused"):
        read_checkpoint(unimed_file)  # the general loader refuses any non-tensor object
    with registry.allow_numpy_scalars():
        assert "visual.conv1.weight" in read_checkpoint(unimed_file)
    zipped = tmp_path / "numpy2.pt"
    zipped.write_bytes(unimed_bytes(numpy_1_names=False))
    with registry.allow_numpy_scalars():
        read_checkpoint(zipped)
    # Only NumPy numbers: any other object is still refused, nothing runs.
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "when": datetime.date(2024, 1, 1)}, other)
    with registry.allow_numpy_scalars(), pytest.raises(CheckpointError, match="Refused"):
        read_checkpoint(other)
    with pytest.raises(CheckpointError, match="Refused"):
        read_checkpoint(unimed_file)  # the allowance ends with the block


def test_unimed_from_environment_variable(monkeypatch, unimed_file):
    monkeypatch.setenv("MMKD_UNIMED_CHECKPOINT", str(unimed_file))
    clip = load_model("unimed-clip-b16", text_encoder=TINY_TEXT, device="cpu")
    assert clip.source == str(unimed_file)
    check_probs(clip.zero_shot(IMAGES, PROMPTS), len(IMAGES), len(PROMPTS))
    # A second load comes from the converted copy (safetensors, no pickle at all).
    again = load_model("unimed-clip-b16", text_encoder=TINY_TEXT, device="cpu")
    assert again.fingerprint == clip.fingerprint


def test_unimed_missing_local_file(monkeypatch, tmp_path):
    monkeypatch.setenv("MMKD_UNIMED_CHECKPOINT", str(tmp_path / "nope.pt"))
    with pytest.raises(CheckpointError, match="MMKD_UNIMED_CHECKPOINT"):
        load_model("unimed-clip-b16", text_encoder=TINY_TEXT, device="cpu")


def _unimed_cache() -> Path:
    return paths.cache_dir() / "unimed" / registry.UNIMED_FILE


@pytest.fixture
def online(monkeypatch, server):
    """The hub is the local server; HF_HUB_OFFLINE (set for all tests) is lifted."""
    return serve_hub(monkeypatch, server)


def test_unimed_download_lands_in_cache_once(online):
    online.set(UNIMED_PATH, unimed_bytes())
    assert huggingface_hub.constants.ENDPOINT + UNIMED_PATH == online.url(UNIMED_PATH)
    clip = load_model("unimed-clip-b16", text_encoder=TINY_TEXT, device="cpu")
    dest = paths.cache_dir() / "unimed" / registry.UNIMED_FILE
    assert dest.is_file() and dest.read_bytes() == unimed_bytes()
    assert clip.source == str(dest)
    assert not list(dest.parent.glob("*.part"))
    check_probs(clip.zero_shot(IMAGES, PROMPTS), len(IMAGES), len(PROMPTS))
    assert len(online.hits(UNIMED_PATH)) == 1
    load_model("unimed-clip-b16", text_encoder=TINY_TEXT, device="cpu")
    assert registry.unimed_checkpoint() == dest
    assert len(online.hits(UNIMED_PATH)) == 1  # the second time: no network at all


def test_unimed_html_page_is_refused(online):
    from support import HTML_PAGE

    online.set(UNIMED_PATH, Route(HTML_PAGE, content_type="text/html"))
    with pytest.raises(DownloadError) as info:
        registry.unimed_checkpoint()
    message = str(info.value)
    dest = _unimed_cache()
    assert "web page" in message and str(dest) in message and "MMKD_UNIMED_CHECKPOINT" in message
    assert not dest.exists() and not list(dest.parent.glob("*.part"))


def test_unimed_interrupted_download_is_refused_then_resumed(online):
    good = unimed_bytes()
    dest = _unimed_cache()
    # A server that always breaks off and cannot resume: refused, nothing at dest.
    online.set(UNIMED_PATH, Route(good, cut_after=len(good) // 3, ranges=False))
    with pytest.raises(DownloadError, match="interrupted"):
        registry.unimed_checkpoint()
    assert not dest.exists()
    # A connection that breaks off twice: resumed with a Range where it stopped.
    online.set(UNIMED_PATH, Route(good, cut_after=len(good) // 3))
    assert registry.unimed_checkpoint().read_bytes() == good
    assert online.hits(UNIMED_PATH)[-1].get("Range", "").startswith("bytes=")


def test_unimed_truncated_file_is_refused(online):
    online.set(UNIMED_PATH, unimed_bytes()[:5000])  # served whole, but not a checkpoint
    with pytest.raises(DownloadError, match="did not verify"):
        registry.unimed_checkpoint()
    dest = _unimed_cache()
    assert not dest.exists() and not list(dest.parent.glob("*.part"))


def test_unimed_offline_says_where_to_put_the_file(monkeypatch, server):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", server.url(""))
    server.set(UNIMED_PATH, unimed_bytes())
    with pytest.raises(DownloadError) as info:
        load_model("unimed-clip-b16", text_encoder=TINY_TEXT, device="cpu")
    message = str(info.value)
    assert str(_unimed_cache()) in message
    assert "MMKD_UNIMED_CHECKPOINT" in message and "HF_HUB_OFFLINE" in message
    assert server.hits(UNIMED_PATH) == []


# --------------------------------------------------------------------------- BiomedCLIP


def test_biomedclip_from_local_dir(monkeypatch, biomedclip_dir):
    monkeypatch.setenv("MMKD_BIOMEDCLIP", str(biomedclip_dir))
    clip = load_model("biomedclip", text_encoder=TINY_TEXT, device="cpu")
    assert isinstance(clip, MMKDModel)
    assert clip.source == f"local-dir:{biomedclip_dir.resolve()}"
    assert clip.embed_dim == 32 and "embed_dim=32" in repr(clip)
    check_probs(clip.zero_shot(IMAGES, PROMPTS), len(IMAGES), len(PROMPTS))
    # Its own preprocessing (160 px here) and tokenizer (from the folder, context 256).
    assert clip.preprocess(_gray()).shape == (3, 160, 160)
    assert clip.tokenizer.context_length == 256
    ids = clip.tokenize(["A chest X-ray.", "A much longer prompt about a brain MRI scan."])
    assert ids.shape[0] == 2 and ids.shape[1] < 256  # padded to the longest, not to 256
    assert (ids[:, 0] == clip.tokenizer.tokenizer.cls_token_id).all()


def _gray():
    from PIL import Image

    return Image.new("RGB", (200, 120), (90, 90, 90))


def test_biomedclip_text_encoder_from_environment(monkeypatch, biomedclip_dir):
    monkeypatch.setitem(registry.SOURCES, "biomedclip", f"local-dir:{biomedclip_dir}")
    monkeypatch.setenv("MMKD_TEXT_ENCODER", str(TINY_TEXT))
    clip = load_model("biomedclip", device="cpu")
    check_probs(clip.zero_shot(IMAGES[:1], PROMPTS), 1, len(PROMPTS))


def test_biomedclip_offline_needs_the_text_config(monkeypatch, biomedclip_dir):
    # The config names BiomedBERT on the hub, which the tests cannot reach.
    monkeypatch.setenv("MMKD_BIOMEDCLIP", str(biomedclip_dir))
    with pytest.raises(MMKDError, match="MMKD_TEXT_ENCODER"):
        load_model("biomedclip", device="cpu")


def test_biomedclip_hub_offline_says_where_to_put_the_files(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(registry.SOURCES, "biomedclip", "hf-hub:nobody/not-a-cached-model")
    with pytest.raises(DownloadError) as info:
        load_model("biomedclip", text_encoder=TINY_TEXT, device="cpu")
    message = str(info.value)
    assert "MMKD_BIOMEDCLIP" in message and "open_clip_config.json" in message


def test_biomedclip_source_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("MMKD_BIOMEDCLIP", str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="MMKD_BIOMEDCLIP"):
        load_model("biomedclip", text_encoder=TINY_TEXT, device="cpu")
