"""Tests of the mmkd-clip command line (no network needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import CHECKPOINT_BYTES, LocalServer, dead_url

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
