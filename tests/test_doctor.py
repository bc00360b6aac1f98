"""Tests of ``mmkd_utils.doctor`` and ``mmkd-clip doctor`` (local server, dead ports only)."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import socket
import time
from types import SimpleNamespace

import huggingface_hub.constants
import pytest
import torch
from support import CHECKPOINT_BYTES, HTML_PAGE, SHARED_DEMO, TINY_CHECKPOINT, TINY_TEXT, dead_url

import mmkd_utils
import mmkd_utils.cli as cli
import mmkd_utils.config as paths
from mmkd_utils.cli import main
from mmkd_utils.demo import DEMO_IMAGE_NAMES, demo_image_dir
from mmkd_utils.doctor import Check, DoctorReport, doctor
from mmkd_utils.model.loading import converted_folder

STATUSES = ("OK", "WARNING", "ERROR")
LOCAL = ("python", "packages", "torch", "device", "cache folder", "weights")
LOCAL += ("text encoder", "demo images")
OFFLINE_README = "README 'Offline machines'"
# The module (``mmkd_utils.doctor`` is the function, re-exported by the package).
doc = importlib.import_module("mmkd_utils.doctor")


def _checks(**kwargs) -> dict[str, Check]:
    """The offline report as {name: check}."""
    return {check.name: check for check in doctor(network=False, **kwargs)}


def _online_hub(monkeypatch) -> None:
    """Undo the test suite's HF_HUB_OFFLINE for one test."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


# --------------------------------------------------------------------------- the report


def test_offline_report_lists_every_check_with_a_fix_for_each_problem():
    report = doctor(network=False)
    assert isinstance(report, DoctorReport)
    assert [c.name for c in report] == [*LOCAL, "network"]
    assert report[-1].detail == "not checked (offline)"
    for check in report:
        assert check.status in STATUSES
        assert "the check failed" not in check.detail, check
        assert check.status == "OK" or check.fix, check
    checks = {c.name: c for c in report}
    # Nothing in an empty cache is an error: the weights and images come on first use.
    assert checks["weights"].status == "WARNING"
    assert "784 MB" in checks["weights"].detail
    assert str(paths.default_checkpoint_path()) in str(checks["weights"])
    assert checks["cache folder"].status == "OK"
    assert checks["python"].status == "OK"
    assert checks["packages"].status == "OK"
    assert checks["torch"].status == "OK"
    assert report.ok == all(c.status != "ERROR" for c in report)


def test_str_has_one_line_per_check_and_a_count():
    report = doctor(network=False)
    lines = str(report).splitlines()
    assert len(lines) == len(report) + 1
    for line, check in zip(lines, report, strict=False):
        assert line.split(maxsplit=1)[0] == check.status
        assert check.name in line and check.detail in line
        assert (f"fix: {check.fix}" in line) == (check.status != "OK")
    assert repr(report) == str(report)
    assert lines[-1].startswith(f"{len(report)} checks: ")


def test_ok_is_false_only_with_an_error():
    warn = Check("a", "WARNING", "meh", "do x")
    assert DoctorReport([warn]).ok
    assert not DoctorReport([warn, Check("b", "ERROR", "broken", "do y")]).ok
    assert str(warn) == "WARNING a: meh -- fix: do x"
    assert str(Check("a", "OK", "fine", "unused")) == "OK      a: fine"


def test_a_check_that_raises_becomes_an_error_line(monkeypatch):
    def boom():
        raise RuntimeError("boom inside the check")

    monkeypatch.setattr(doc, "_device", boom)
    report = doctor(network=False)
    checks = {c.name: c for c in report}
    assert checks["device"].status == "ERROR" and checks["device"].fix
    assert "boom inside the check" in checks["device"].detail
    assert [c.name for c in report] == [*LOCAL, "network"]  # the other checks still ran
    assert checks["torch"].status == "OK"
    assert not report.ok


# --------------------------------------------------------------------------- system


def test_no_gpu_is_a_warning_pointing_to_slow_cpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    check = _checks()["device"]
    assert check.status == "WARNING" and "cpu" in check.detail
    assert "Slow CPUs" in check.fix


def test_cuda_device_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU 24GB")
    check = _checks()["device"]
    assert check.status == "OK" and "Fake GPU 24GB" in check.detail


def test_torchvision_that_does_not_import_is_an_error_with_the_pair_to_install(monkeypatch):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    check = _checks()["torch"]
    assert check.status == "ERROR"
    assert "torchvision::nms" in check.detail
    assert "pip install torch==2.14.1 torchvision==0.29.1" in check.fix


@pytest.mark.parametrize(
    ("torch_version", "wanted"), [("2.5.0+cpu", "0.20.0"), ("2.1.2", "0.16.2")]
)
def test_torchvision_not_made_for_this_torch_warns(monkeypatch, torch_version, wanted):
    monkeypatch.setattr(torch, "__version__", torch_version)
    check = _checks()["torch"]
    assert check.status == "WARNING" and wanted in check.detail
    assert f"torchvision=={wanted}" in check.fix


# --------------------------------------------------------------------------- packages


def _fake_distributions(monkeypatch, name: str, version: str | None) -> None:
    real = importlib.metadata.distributions

    def fake(**kwargs):
        if kwargs.get("name") == name:
            return [] if version is None else [SimpleNamespace(version=version)]
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "distributions", fake)


@pytest.mark.parametrize(("dist", "version"), [("transformers", None), ("pandas", "0.1.0")])
def test_missing_or_old_package_is_an_error_with_the_pip_command(monkeypatch, dist, version):
    _fake_distributions(monkeypatch, dist, version)
    report = doctor(network=False)
    check = {c.name: c for c in report}["packages"]
    assert check.status == "ERROR" and dist in check.detail
    minimum = {"transformers": "4.40", "pandas": "2"}[dist]
    assert f'pip install "{dist}>={minimum}"' in check.fix
    assert not report.ok


# --------------------------------------------------------------------------- cache


@pytest.mark.parametrize("where", ["below a file", "is a file"])
def test_unusable_cache_folder_names_mmkd_home(tmp_path, monkeypatch, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    home = blocker / "cache" if where == "below a file" else blocker
    monkeypatch.setenv("MMKD_HOME", str(home))
    report = doctor(network=False)
    check = {c.name: c for c in report}["cache folder"]
    assert check.status == "ERROR" and not report.ok
    assert str(home) in check.detail and "MMKD_HOME" in check.fix


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere"
)
def test_read_only_cache_folder(tmp_path, monkeypatch):
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    monkeypatch.setenv("MMKD_HOME", str(home))
    try:
        check = _checks()["cache folder"]
    finally:
        home.chmod(0o700)
    assert check.status == "ERROR" and "MMKD_HOME" in check.fix


@pytest.mark.parametrize("kit", [False, True])
def test_a_read_only_home_is_fine_only_as_a_classroom_kit(tmp_path, monkeypatch, kit):
    monkeypatch.setenv("MMKD_HOME", str(tmp_path))
    monkeypatch.setattr(doc.os, "access", lambda path, mode: False)  # read-only, even for root
    if kit:
        (tmp_path / "MANIFEST.sha256").write_text("")
    check = _checks()["cache folder"]
    assert check.status == ("OK" if kit else "ERROR")
    assert ("download --check" in check.detail) == kit


def test_cache_folder_not_created_yet_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_HOME", str(tmp_path / "new" / "cache"))
    check = _checks()["cache folder"]
    assert check.status == "OK" and "writable" in check.detail
    assert list(tmp_path.iterdir()) == []  # the doctor created nothing


def test_low_disk_space_warns(monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(free=500 * 10**6))
    check = _checks()["cache folder"]
    assert check.status == "WARNING"
    assert "0.5 GB free" in check.detail and "MMKD_HOME" in check.fix


# --------------------------------------------------------------------------- weights


def test_tiny_checkpoint_verifies(monkeypatch):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(TINY_CHECKPOINT))
    quick = _checks()["weights"]
    assert quick.status == "OK" and "--verify" in quick.detail
    check = _checks(verify_weights=True)["weights"]
    assert check.status == "OK" and "tensors" in check.detail


@pytest.mark.parametrize(
    "content", [CHECKPOINT_BYTES[: len(CHECKPOINT_BYTES) // 2], b"PK\x03\x04 not a zip", HTML_PAGE]
)
def test_corrupt_checkpoint_is_an_error_naming_the_file(tmp_path, monkeypatch, content):
    bad = tmp_path / "broken_weights.pth"
    bad.write_bytes(content)
    monkeypatch.setenv("MMKD_CHECKPOINT", str(bad))
    report = doctor(network=False, verify_weights=True)
    check = {c.name: c for c in report}["weights"]
    assert check.status == "ERROR" and not report.ok
    assert "broken_weights.pth" in check.detail
    assert "MMKD_CHECKPOINT" in check.fix and "download" in check.fix
    if content == HTML_PAGE:
        assert "web page" in check.detail


def test_missing_mmkd_checkpoint_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(tmp_path / "nowhere.pth"))
    check = _checks()["weights"]
    assert check.status == "ERROR"
    assert "nowhere.pth" in check.detail and "MMKD_CHECKPOINT" in check.fix


def test_converted_copy_detected_after_load_model(monkeypatch):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(TINY_CHECKPOINT))
    monkeypatch.setenv("MMKD_TEXT_ENCODER", str(TINY_TEXT))
    folder = converted_folder(TINY_CHECKPOINT, str(TINY_TEXT))
    before = _checks()["weights"]
    assert before.status == "OK" and f"the first load writes {folder}" in before.detail

    mmkd_utils.load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    checks = _checks()
    assert checks["weights"].status == "OK" and str(folder) in checks["weights"].detail
    assert "the first load writes" not in checks["weights"].detail
    assert checks["text encoder"].status == "OK"

    # The converted folder itself as MMKD_CHECKPOINT.
    monkeypatch.setenv("MMKD_CHECKPOINT", str(folder))
    check = _checks(verify_weights=True)["weights"]
    assert check.status == "OK" and "converted" in check.detail


# --------------------------------------------------------------------------- text encoder


def test_text_encoder_folder_must_hold_config_and_tokenizer(tmp_path, monkeypatch):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("MMKD_TEXT_ENCODER", str(folder))
    check = _checks()["text encoder"]
    assert check.status == "ERROR" and "vocab.txt" in check.detail
    assert "MMKD_TEXT_ENCODER" in check.fix
    (folder / "vocab.txt").write_text("[PAD]\n")
    assert _checks()["text encoder"].status == "OK"


@pytest.mark.parametrize("value", ["missing/folder/bert", "not a repo id!"])
def test_text_encoder_that_is_neither_a_folder_nor_a_hub_id(tmp_path, monkeypatch, value):
    value = str(tmp_path / value) if "/" in value else value
    monkeypatch.setenv("MMKD_TEXT_ENCODER", value)
    check = _checks()["text encoder"]
    assert check.status == "ERROR" and value in check.detail
    assert "MMKD_TEXT_ENCODER" in check.fix


@pytest.mark.parametrize(
    ("cached", "offline", "status"),
    [(True, True, "OK"), (False, True, "ERROR"), (False, False, "WARNING")],
)
def test_text_encoder_hub_id_in_the_local_cache(monkeypatch, cached, offline, status):
    monkeypatch.setattr(
        doc, "try_to_load_from_cache", lambda repo, name: f"hf/{repo}/{name}" if cached else None
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    check = _checks()["text encoder"]
    assert check.status == status
    assert paths.DEFAULT_TEXT_ENCODER in check.detail
    if status != "OK":
        assert "MMKD_TEXT_ENCODER" in check.fix and OFFLINE_README in check.fix


# --------------------------------------------------------------------------- demo images


def test_demo_images_not_cached_are_downloaded_on_first_use():
    check = _checks()["demo images"]
    assert check.status == "WARNING" and "0 of 9" in check.detail
    assert "MMKD_DEMO_IMAGES" in check.fix


def test_demo_images_folder_from_env(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(folder))
    for name in DEMO_IMAGE_NAMES[:5]:
        (folder / name).write_bytes(b"stand-in")
    missing = _checks()["demo images"]
    assert missing.status == "ERROR" and "5 of 9" in missing.detail
    for name in DEMO_IMAGE_NAMES:
        (folder / name).write_bytes(b"stand-in")
    differ = _checks()["demo images"]
    assert differ.status == "WARNING" and "0 as published" in differ.detail
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(tmp_path / "nope"))
    assert _checks()["demo images"].status == "ERROR"


@pytest.mark.skipif(not SHARED_DEMO.is_dir(), reason="published demo images not available")
def test_published_demo_images_are_ok(monkeypatch):
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(SHARED_DEMO))
    assert _checks()["demo images"].status == "OK"
    monkeypatch.delenv("MMKD_DEMO_IMAGES")
    shutil.copytree(SHARED_DEMO, demo_image_dir())
    check = _checks()["demo images"]
    assert check.status == "OK" and "9 of 9" in check.detail


# --------------------------------------------------------------------------- network


def _network_checks(report: DoctorReport) -> list[Check]:
    return [c for c in report if c.name not in LOCAL]


def test_reachable_hosts_are_ok_and_asked_once(server, monkeypatch):
    paths_ = ("/hub", "/drive", "/raw")
    for path in paths_:
        server.set(path, b"ok")
    monkeypatch.setattr(doc, "HOSTS", tuple(server.url(p) for p in paths_))
    report = doctor(timeout=2.0)
    hosts = _network_checks(report)
    assert [c.name for c in hosts] == [server.url(p) for p in paths_]
    for check, path in zip(hosts, paths_, strict=True):
        assert check.status == "OK", check
        assert len(server.hits(path)) == 1
    assert "network" not in [c.name for c in report]


def test_an_http_error_still_means_reachable(server, monkeypatch):
    monkeypatch.setattr(doc, "HOSTS", (server.url("/missing"),))
    (check,) = _network_checks(doctor(timeout=2.0))
    assert check.status == "OK"


def test_hf_hub_offline_is_respected(server, monkeypatch):
    server.set("/huggingface.co", b"ok")
    monkeypatch.setattr(doc, "HOSTS", (server.url("/huggingface.co"),))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (check,) = _network_checks(doctor(timeout=2.0))
    assert check.status == "OK" and "HF_HUB_OFFLINE" in check.detail
    assert server.hits("/huggingface.co") == []
    _online_hub(monkeypatch)
    (check,) = _network_checks(doctor(timeout=2.0))
    assert check.status == "OK" and len(server.hits("/huggingface.co")) == 1


def test_unreachable_hosts_warn_with_the_offline_fix(monkeypatch):
    monkeypatch.setattr(doc, "HOSTS", (dead_url("/hub"), dead_url("/drive"), dead_url("/raw")))
    _online_hub(monkeypatch)
    report = doctor(timeout=1.5)
    hosts = _network_checks(report)
    assert len(hosts) == 3
    for check in hosts:
        assert check.status == "WARNING", check
        assert "not reachable" in check.detail and OFFLINE_README in check.fix
    assert all(c.status != "ERROR" for c in hosts)  # no network is a warning, never an error


def test_a_silent_host_times_out(monkeypatch):
    with socket.socket() as sock:  # accepts connections but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        monkeypatch.setattr(doc, "HOSTS", (url,))
        for slow in ("_packages", "_torch"):  # the time measured is the host's
            monkeypatch.setattr(doc, slow, lambda: ("OK", "skipped here"))
        start = time.monotonic()
        (check,) = _network_checks(doctor(timeout=0.5))
        elapsed = time.monotonic() - start
    assert check.status == "WARNING" and OFFLINE_README in check.fix
    assert elapsed < 0.5 + 3.0  # the local checks run side by side with the host


# --------------------------------------------------------------------------- command line


def test_cli_doctor_offline_prints_the_lines(capsys):
    code = main(["doctor", "--offline"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.split(" ", 1)[0] in STATUSES]
    assert len(lines) == len(LOCAL) + 1
    assert any(line.startswith("OK") and "python:" in line for line in lines)
    assert "not checked" in out and " checks: " in out
    assert code == (1 if any(line.startswith("ERROR") for line in lines) else 0)


@pytest.mark.parametrize(("status", "code"), [("WARNING", 0), ("ERROR", 1)])
def test_cli_exit_code_follows_the_statuses_and_options_are_passed(
    monkeypatch, capsys, status, code
):
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return DoctorReport([Check("x", status, "meh", "do y")])

    monkeypatch.setattr(cli, "doctor", fake)
    assert main(["doctor", "--verify", "--timeout", "1.5"]) == code
    assert seen == {"network": True, "timeout": 1.5, "verify_weights": True}
    assert f"{status:<7} x: meh -- fix: do y" in capsys.readouterr().out
    main(["doctor", "--offline"])
    assert seen["network"] is False and seen["timeout"] == 3.0


def test_cli_rejects_a_timeout_that_is_not_positive(capsys):
    with pytest.raises(SystemExit) as info:
        main(["doctor", "--timeout", "0"])
    assert info.value.code == 2 and "--timeout" in capsys.readouterr().err
