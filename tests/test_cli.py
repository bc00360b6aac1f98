"""Tests of the mmkd-clip command line (no network needed)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import (
    CHECKPOINT_BYTES,
    TINY_TEXT,
    LocalServer,
    dead_url,
    serve_hub,
    unimed_bytes,
    write_biomedclip_stand_in,
)

from mmkd_utils.cli import build_parser, main
from mmkd_utils.demo import DEMO_IMAGE_NAMES


@pytest.fixture
def server():
    with LocalServer({"/MMKD_B16.pth": CHECKPOINT_BYTES}) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MMKD_DEMO_IMAGES", raising=False)


def test_download_to_path(server, tmp_path, capsys):
    dest = tmp_path / "w" / "MMKD_B16.pth"
    assert main(["download", "--to", str(dest), "--url", server.url("/MMKD_B16.pth")]) == 0
    assert dest.read_bytes() == CHECKPOINT_BYTES
    out = capsys.readouterr().out
    assert f"checkpoint: {dest}" in out


def test_download_force_fetches_again(server, tmp_path, capsys):
    dest = tmp_path / "MMKD_B16.pth"
    dest.write_bytes(b"old")
    args = ["download", "--to", str(dest), "--url", server.url("/MMKD_B16.pth")]
    assert main(args) == 0 and dest.read_bytes() == b"old"
    assert main([*args, "--force"]) == 0
    assert dest.read_bytes() == CHECKPOINT_BYTES


@pytest.mark.parametrize("where", ["missing", "dead"])
def test_bad_url_prints_error_and_returns_1(server, tmp_path, capsys, where):
    url = server.url("/missing") if where == "missing" else dead_url()
    dest = tmp_path / "MMKD_B16.pth"
    assert main(["download", "--to", str(dest), "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert str(dest) in err
    assert "Traceback" not in err
    assert not dest.exists()


def test_download_with_demo_images_from_env_folder(server, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in DEMO_IMAGE_NAMES:
        (folder / name).write_bytes(b"stand-in")
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(folder))
    with pytest.warns(UserWarning):
        code = main(["download", "--url", server.url("/MMKD_B16.pth"), "--demo-images"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {tmp_path / 'home' / 'MMKD_B16.pth'}" in out
    assert f"demo images: {folder} (9 files)" in out


def test_parser_needs_a_command_and_is_named(capsys):
    parser = build_parser()
    assert parser.prog == "mmkd-clip"
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "mmkd-clip" in capsys.readouterr().err
    assert parser.parse_args(["download", "--to", "x.pth"]).to == Path("x.pth")


# --------------------------------------------------------------------------- classroom kit
# The kit is fetched from the local server: the tiny checkpoint as MMKD_B16.pth (Drive),
# stand-in demo images (GitHub), and on a local "hub" (HF_ENDPOINT): the tiny text encoder
# as BiomedBERT, the tiny BiomedCLIP stand-in and the UniMed-CLIP stand-in.

DRIVER = r"""
import json, os, sys, warnings
from pathlib import Path

import mmkd_utils.demo as demo
from mmkd_utils import DownloadError, load_model

demo.DEMO_SHA256.update(json.loads(sys.argv[1]))
warnings.simplefilter("error", UserWarning)  # "could not cache", "differs": not in a good kit
for home in sys.argv[2:]:
    os.environ["MMKD_HOME"] = home
    try:
        (Path(home) / "probe").write_text("x")
        print("@@WRITABLE", home)
    except OSError:
        print("@@read-only", home)
    try:
        for name in ("mmkd-clip-b16", "unimed-clip-b16", "biomedclip"):
            clip = load_model(name, device="cpu")
            print("loaded", name, clip.source, clip.encode_texts(["A chest X-ray."]).shape[1])
        print("demo", len(demo.demo_images()))
    except DownloadError as err:
        print("error", err)
"""


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry below ``folder``: a folder's mtime, a file's size, mtime and SHA-256."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns,)
        + ((p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) if p.is_file() else ())
        for p in [folder, *folder.rglob("*")]
    }


def _load_read_only(folders: list[Path], published: dict[str, str]) -> list[str]:
    """Run DRIVER on each folder as MMKD_HOME, the folders made read-only: for a user by
    ``chmod -R a-w``; for root (whom permissions do not stop) by read-only bind mounts in a
    private mount namespace (``unshare``). Returns what it printed for each folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMKD_", "HF_ENDPOINT"))}
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", KIT_FOLDERS=" ".join(map(str, folders))
    )
    cmd = [sys.executable, "-c", DRIVER, json.dumps(published), *map(str, folders)]
    if not hasattr(os, "geteuid"):
        pytest.skip("needs POSIX permissions")
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("root, and no unshare to mount the kit read-only")
        mount = 'for d in $KIT_FOLDERS; do mount --bind -o ro "$d" "$d" || exit 97; done; exec "$@"'
        cmd = ["unshare", "--map-root-user", "--mount", "sh", "-c", mount, "sh", *cmd]
    for folder in folders if os.geteuid() else ():
        subprocess.run(["chmod", "-R", "a-w", str(folder)], check=True)
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    finally:
        for folder in folders:
            subprocess.run(["chmod", "-R", "u+w", str(folder)], check=True)
    if done.returncode == 97 or done.stderr.startswith("unshare:"):  # no namespaces here
        pytest.skip(f"could not mount the kit read-only here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = done.stdout.split("@@")[1:]
    assert [out.split()[0] for out in outputs] == ["read-only"] * len(folders), done.stdout
    return outputs


@pytest.fixture
def kit_sources(server, monkeypatch, tmp_path):
    """Every file of the kit on the local server; returns the demo images' SHA-256."""
    import mmkd_utils.config as config
    import mmkd_utils.demo as demo
    from mmkd_utils.model import registry

    serve_hub(monkeypatch, server)
    monkeypatch.setattr(config, "DRIVE_URL", server.url("/MMKD_B16.pth"))
    monkeypatch.setattr(demo, "DEMO_BASE_URL", server.url("/imgs/"))
    published = {}
    for name in DEMO_IMAGE_NAMES:
        server.set(f"/imgs/{name}", data := b"stand-in for " + name.encode())
        monkeypatch.setitem(demo.DEMO_SHA256, name, published.setdefault(name, _sha(data)))
    hub = {config.DEFAULT_TEXT_ENCODER: TINY_TEXT, registry.BIOMEDCLIP_ID: tmp_path / "bc"}
    write_biomedclip_stand_in(tmp_path / "bc")  # its config names BiomedBERT on the hub
    for repo, folder in hub.items():
        for path in folder.iterdir():
            server.set(f"/{repo}/resolve/main/{path.name}", path.read_bytes())
    server.set(f"/{registry.UNIMED_REPO}/resolve/main/{registry.UNIMED_FILE}", unimed_bytes())
    return published


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_kit_is_fetched_checked_and_loads_read_only(kit_sources, tmp_path, capsys):
    kit = tmp_path / "kit"
    assert main(["download", "--all", "--home", str(kit)]) == 0, capsys.readouterr().err
    listed = (kit / "MANIFEST.sha256").read_text().splitlines()
    names = {line.split("  ", 1)[1] for line in listed}
    for name in ("MMKD_B16.pth", "unimed/unimed-clip-vit-b16.pt", "demo_images/xray.png"):
        assert name in names
    for name in ("biomedbert/config.json", "biomedclip/open_clip_pytorch_model.bin"):
        assert name in names
    assert "biomedclip/vocab.txt" in names  # BiomedBERT's tokenizer, as open_clip reads it
    converted = [n for n in names if n.endswith("/open_clip_model.safetensors")]
    assert len(converted) == 2  # MMKD-CLIP and UniMed-CLIP, converted once, here
    assert not any(n.endswith((".lock", ".part")) or "/." in n for n in names)
    assert main(["download", "--check", "--home", str(kit)]) == 0
    assert "every file matches" in capsys.readouterr().out

    # A class copies the kit (new place, new times, as `cp -r`) and shares it read-only;
    # another copy lacks the weights.
    shared, lacking = tmp_path / "shared", tmp_path / "lacking"
    for copy in (shared, lacking):
        shutil.copytree(kit, copy, copy_function=shutil.copy)
    (lacking / "MMKD_B16.pth").unlink()
    before = [_snapshot(shared), _snapshot(lacking)]
    out, out_lacking = _load_read_only([shared, lacking], kit_sources)
    assert [_snapshot(shared), _snapshot(lacking)] == before  # no byte, lock or time changed
    loaded = [line.split() for line in out.splitlines() if line.startswith("loaded")]
    assert [row[1] for row in loaded] == ["mmkd-clip-b16", "unimed-clip-b16", "biomedclip"]
    assert all(str(shared) in row[2] for row in loaded), loaded
    assert "demo 9" in out
    # What is missing in a read-only kit is named, with the command that completes a kit.
    error = out_lacking.split("error ", 1)[1]
    assert str(lacking / "MMKD_B16.pth") in error and "read-only" in error
    assert "mmkd-clip download --all --home DIR" in error


def test_check_finds_corrupt_and_missing_files(kit_sources, tmp_path, capsys):
    kit = tmp_path / "kit"
    assert main(["download", "--all", "--home", str(kit)]) == 0
    assert main(["download", "--check", "--home", str(kit)]) == 0
    for wrong in (["--all", "--check"], ["--check", "--to", "x.pth"]):
        with pytest.raises(SystemExit):
            main(["download", *wrong, "--home", str(kit)])
    capsys.readouterr()
    weights = kit / "biomedclip" / "open_clip_pytorch_model.bin"
    data = weights.read_bytes()
    weights.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])  # one bit
    assert main(["download", "--check", "--home", str(kit)]) == 1
    err = capsys.readouterr().err
    assert "biomedclip/open_clip_pytorch_model.bin: corrupt" in err
    assert f"mmkd-clip download --all --home {kit}" in err
    weights.write_bytes(data)
    (kit / "demo_images" / "oct.jpg").unlink()
    assert main(["download", "--check", "--home", str(kit)]) == 1
    assert "demo_images/oct.jpg: missing" in capsys.readouterr().err
    (kit / "MANIFEST.sha256").unlink()
    assert main(["download", "--check", "--home", str(kit)]) == 1
    assert "MANIFEST.sha256: missing" in capsys.readouterr().err
