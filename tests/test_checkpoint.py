"""Checkpoint layouts, the real checkpoint's key list, and files that are not checkpoints."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY, TINY_CHECKPOINT, TINY_TEXT
from transformers import BertConfig

from mmkd_utils import CheckpointError, TextEncoderError, load_model
from mmkd_utils.model.checkpoint import (
    check_text_config,
    model_config_from_state_dict,
    normalize_state_dict,
    read_checkpoint,
    to_open_clip_keys,
)
from mmkd_utils.model.loading import build_model

SHAPES_FILE = Path(__file__).parent / "data" / "mmkd_b16_state_dict_shapes.json"


@pytest.fixture(scope="module")
def raw_state_dict():
    return torch.load(TINY_CHECKPOINT, weights_only=True)["state_dict"]


def _features(clip, reference):
    return clip.encode_texts([str(p) for p in reference["prompts"]]).numpy()


@pytest.mark.parametrize(
    "layout", ["wrapped_prefixed", "bare_prefixed", "bare_plain", "wrapped_plain"]
)
def test_every_upstream_layout_loads_the_same_model(layout, raw_state_dict, tmp_path, reference):
    sd = dict(raw_state_dict)
    if layout.endswith("plain"):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    obj = {"epoch": 1, "state_dict": sd} if layout.startswith("wrapped") else sd
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    clip = load_model(path, text_encoder=TINY_TEXT, device="cpu")
    assert np.abs(_features(clip, reference) - reference["text_features"]).max() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_become_fp32(dtype, raw_state_dict, tmp_path, reference):
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in raw_state_dict.items()}
    sd["module.text_encoder.transformer.embeddings.position_ids"] = torch.arange(512)[None]
    path = tmp_path / "half.pth"
    torch.save({"state_dict": sd}, path)
    clip = load_model(path, text_encoder=TINY_TEXT, device="cpu")
    assert all(p.dtype == torch.float32 for p in clip.model.parameters())
    # Rounded weights: close to the fp32 reference, not equal.
    assert np.abs(_features(clip, reference) - reference["text_features"]).max() < 0.05


def test_stale_position_ids_are_ignored(raw_state_dict):
    sd = dict(raw_state_dict)
    sd["module.text_encoder.transformer.embeddings.position_ids"] = torch.arange(512)[None]
    assert "text_encoder.transformer.embeddings.position_ids" not in normalize_state_dict(sd)


def _real_shapes():
    with open(SHAPES_FILE) as f:
        return json.load(f)


def _biomedbert_folder(tmp_path):
    """BiomedBERT-base's architecture, as its public config states it (no weights)."""
    config = BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        type_vocab_size=2,
    )
    config.save_pretrained(tmp_path / "biomedbert")
    return str(tmp_path / "biomedbert")


def test_real_key_list_maps_onto_open_clip(tmp_path):
    shapes = _real_shapes()
    assert len(shapes) == 352
    sd = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    cfg = model_config_from_state_dict(sd, _biomedbert_folder(tmp_path))
    assert cfg["embed_dim"] == 512
    assert cfg["vision_cfg"] == {
        "image_size": 224,
        "patch_size": 16,
        "width": 768,
        "layers": 12,
        "head_width": 64,
        "mlp_ratio": 4.0,
    }
    # BiomedBERT-base's config fits the text tower (vocabulary, width, layers, positions).
    check_text_config(sd, BertConfig.from_pretrained(cfg["text_cfg"]["hf_model_name"]), "bert")
    with pytest.raises(TextEncoderError, match="num_hidden_layers: checkpoint 12, config 2"):
        check_text_config(sd, BertConfig(num_hidden_layers=2), "bert")
    from open_clip import CustomTextCLIP

    with torch.device("meta"):
        model = CustomTextCLIP(**cfg)
    assert model.visual.transformer.resblocks[0].attn.num_heads == 12
    expected = {k: v.shape for k, v in model.state_dict().items()}
    renamed = to_open_clip_keys(sd)
    assert set(expected) == set(renamed)
    for k, v in renamed.items():  # nothing mis-shaped
        assert tuple(expected[k]) == tuple(v.shape), k
    model.load_state_dict(renamed, strict=True, assign=True)
    # An older transformers' stale position_ids is dropped before the mapping.
    sd["text_encoder.transformer.embeddings.position_ids"] = torch.empty(1, 512, device="meta")
    assert set(to_open_clip_keys(normalize_state_dict(sd))) == set(expected)
    assert sum(int(np.prod(v)) for v in shapes.values()) == 195_903_489


def test_other_architecture_names_the_tensors(raw_state_dict, tmp_path):
    sd = dict(raw_state_dict)
    sd["module.visual.ln_post.weight"] = torch.ones(5)
    del sd["module.visual.transformer.resblocks.1.ln_2.bias"]
    sd["module.extra.head.weight"] = torch.ones(3)
    path = tmp_path / "other.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, text_encoder=TINY_TEXT, device="cpu")
    msg = str(err.value)
    assert "visual.ln_post.weight" in msg and "torch.Size([5])" in msg
    assert "visual.transformer.resblocks.1.ln_2.bias" in msg
    assert "extra.head.weight" in msg


def test_plain_clip_checkpoint_is_not_mmkd(tmp_path):
    sd = {
        "visual.conv1.weight": torch.zeros(64, 3, 16, 16),
        "token_embedding.weight": torch.zeros(10, 8),
        "logit_scale": torch.tensor(1.0),
    }
    path = tmp_path / "clip.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="not an MMKD-CLIP checkpoint.*text_encoder"):
        load_model(path, text_encoder=TINY_TEXT, device="cpu")


def test_text_config_that_does_not_fit(tmp_path):
    folder = tmp_path / "wrong_text"
    BertConfig(
        vocab_size=476,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
    ).save_pretrained(folder)
    with pytest.raises(TextEncoderError, match="hidden_size: checkpoint 128, config 64"):
        load_model(TINY_CHECKPOINT, text_encoder=folder, device="cpu")


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > PWNED_MARKER",))


def _bad_files(tmp_path):
    files = {}
    files["html"] = b"<!DOCTYPE html><html><body>Google Drive - Quota exceeded</body></html>"
    files["random"] = np.random.default_rng(0).bytes(4096)
    files["empty"] = b""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "not a checkpoint")
    files["zip"] = buf.getvalue()
    full = TINY_CHECKPOINT.read_bytes()
    files["truncated"] = full[: len(full) // 2]
    return files


@pytest.mark.parametrize("kind", ["html", "random", "empty", "zip", "truncated"])
def test_files_that_are_not_checkpoints(kind, tmp_path):
    path = tmp_path / f"{kind}.pth"
    path.write_bytes(_bad_files(tmp_path)[kind])
    with pytest.raises(CheckpointError) as err:
        load_model(path, text_encoder=TINY_TEXT, device="cpu")
    assert str(path) in str(err.value)
    if kind == "html":
        assert "web page" in str(err.value) and "quota" in str(err.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["pickle", "torch_save"])
def test_pickle_that_would_run_code_is_refused(how, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    if how == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": {"logit_scale": _RunsCode()}}))
    else:
        torch.save({"state_dict": {"logit_scale": _RunsCode()}}, path)
    with pytest.raises(CheckpointError, match="Refused|not a torch checkpoint"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_model(path, text_encoder=TINY_TEXT, device="cpu")
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_non_tensor_entries_are_rejected(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": {"logit_scale": 3}}, path)
    with pytest.raises(CheckpointError, match="logit_scale.*not a tensor"):
        read_checkpoint(path)


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth does not exist"):
        load_model(missing, text_encoder=TINY_TEXT, device="cpu")


def test_folder_that_is_not_converted(tmp_path):
    with pytest.raises(CheckpointError, match="open_clip_config.json is missing"):
        load_model(tmp_path, device="cpu")


def test_meta_buffers_are_restored(raw_state_dict):
    sd = normalize_state_dict(raw_state_dict)
    cfg = model_config_from_state_dict(sd, str(TINY_TEXT))
    model = build_model(cfg, to_open_clip_keys(sd), "tiny")
    ids = dict(model.named_buffers())["text.transformer.embeddings.position_ids"]
    assert ids.device.type == "cpu"
    assert torch.equal(ids[0], torch.arange(512))
    assert not any(t.device.type == "meta" for t in model.state_dict().values())


def test_tiny_reference_checkpoint_is_where_we_expect():
    assert (TINY / "reference_outputs.npz").is_file()
