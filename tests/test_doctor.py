"""Tests of ``mmkd_utils.doctor`` and ``mmkd-clip doctor`` (local server, dead ports only)."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import socket
import tempfile
import time
from types import SimpleNamespace

import pytest
import torch
from support import CHECKPOINT_BYTES, HTML_PAGE, SHARED_DEMO, TINY_CHECKPOINT, TINY_TEXT, dead_url

import mmkd_utils
import mmkd_utils.config as paths
from mmkd_utils.cli import build_parser, main
from mmkd_utils.demo import DEMO_IMAGE_NAMES, demo_image_dir
from mmkd_utils.doctor import (
    PACKAGES,
    SECTIONS,
    STATUSES,
    Check,
    DoctorReport,
    check_cache_folder,
    check_converted_copy,
    check_demo_images,
    check_disk_space,
    check_gpu,
    check_host,
    check_hub,
    check_package,
    check_python,
    check_text_encoder,
    check_torchvision,
    check_weights,
    matching_torchvision,
)

doc = importlib.import_module("mmkd_utils.doctor")

NETWORK_NAMES = ("huggingface.co", "drive.google.com", "raw.githubusercontent.com")
OFFLINE_README = "README 'Offline machines'"


def _package(dist: str):
    return next(p for p in PACKAGES if p.dist == dist)


def _only_network(monkeypatch) -> None:
    """Make doctor() run only its network checks (fast, and only what is under test)."""
    monkeypatch.setattr(doc, "_plan", lambda verify_weights: [])


def _online_hub(monkeypatch) -> None:
    """Undo the test suite's HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE for one test."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


def _point_hosts(monkeypatch, hub: str, drive: str, raw: str) -> None:
    monkeypatch.setattr(doc, "HF_HUB_URL", hub)
    monkeypatch.setattr(doc, "WEIGHTS_HOST_URL", drive)
    monkeypatch.setattr(doc, "DEMO_HOST_URL", raw)


# --------------------------------------------------------------------------- the report


def test_offline_report_has_every_section_and_a_fix_for_each_problem():
    report = mmkd_utils.doctor(network=False)
    assert isinstance(report, DoctorReport)
    assert report.sections == list(SECTIONS)
    names = [c.name for c in report]
    for name in (
        "python",
        "torch",
        "gpu",
        "device",
        "torchvision",
        *(p.dist for p in PACKAGES),
        "cache folder",
        "disk space",
        "weights",
        "converted copy",
        "text encoder",
        "demo images",
        "HF_HUB_OFFLINE",
        "network",
    ):
        assert name in names
    assert not set(names) & set(NETWORK_NAMES)
    assert "not checked" in report["network"].detail
    for check in report:
        assert check.status in STATUSES
        assert "the check itself failed" not in check.detail, check
        assert check.status == "OK" or check.fix, check
    # Nothing in an empty cache is an error: the weights and images come on first use.
    assert report["weights"].status == "WARNING"
    assert "784 MB" in report["weights"].detail
    assert str(paths.default_checkpoint_path()) in report["weights"].line()
    assert report["cache folder"].status == "OK"
    assert report.ok == (not report.errors)


def test_str_has_one_line_per_check_starting_with_its_status():
    report = mmkd_utils.doctor(network=False)
    lines = str(report).splitlines()
    assert len(lines) == len(report)
    for line, check in zip(lines, report, strict=True):
        assert line.startswith(check.status)
        assert line.split(maxsplit=1)[0] in STATUSES
        assert check.name in line and check.detail in line
        if check.status != "OK":
            assert f"fix: {check.fix}" in line
    assert repr(report) == str(report)
    assert f"{len(report)} checks" in report.summary()


def test_html_is_a_table_with_escaped_text():
    report = DoctorReport(
        [
            Check("a", "OK", "fine <b>", section="system"),
            Check("b", "ERROR", "broken", "do <this>", section="cache"),
        ]
    )
    page = report._repr_html_()
    assert page.startswith("<table") and page.count("<tr>") >= 2
    assert "fine &lt;b&gt;" in page and "do &lt;this&gt;" in page
    assert "system" in page and "cache" in page
    assert not report.ok and report.summary().startswith("2 checks: 1 OK, 0 WARNING, 1 ERROR")


def test_check_rejects_an_unknown_status():
    with pytest.raises(ValueError, match="INFO"):
        Check("x", "INFO", "detail")


def test_a_check_that_raises_becomes_an_error_line(monkeypatch):
    def boom():
        raise RuntimeError("boom inside the check")

    monkeypatch.setattr(doc, "check_gpu", boom)
    monkeypatch.setattr(doc, "check_demo_host", lambda timeout: 1 / 0)
    monkeypatch.setattr(doc, "HF_HUB_URL", dead_url())
    monkeypatch.setattr(doc, "WEIGHTS_HOST_URL", dead_url())
    report = mmkd_utils.doctor(network=True, timeout=1.0)
    gpu = report["gpu"]
    assert gpu.status == "ERROR" and gpu.section == "system"
    assert "boom inside the check" in gpu.detail and gpu.fix
    raw = report["raw.githubusercontent.com"]
    assert raw.status == "ERROR" and "ZeroDivisionError" in raw.detail
    assert report["device"].status == "OK"  # the other checks still ran
    assert report.sections == list(SECTIONS)
    assert not report.ok


# --------------------------------------------------------------------------- system


def test_python_version():
    assert check_python((3, 9, 18)).status == "ERROR"
    assert "3.10" in check_python((3, 9, 18)).fix
    assert check_python((3, 10, 0)).status == "OK"
    assert check_python().status == "OK"


def test_no_gpu_is_a_warning_pointing_to_slow_cpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    check = check_gpu()
    assert check.status == "WARNING"
    assert "runs on the CPU: slower; see README 'Slow CPUs'" in check.detail
    assert check.fix
    assert "picks cpu" in doc.check_device().detail


def test_cuda_device_name_and_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda i: SimpleNamespace(name="Fake GPU 24GB", total_memory=24 * 10**9),
    )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (20 * 10**9, 24 * 10**9))
    check = check_gpu()
    assert check.status == "OK"
    assert "Fake GPU 24GB" in check.detail and "24.0 GB" in check.detail
    assert "20.0 GB free" in check.detail and "1 more" in check.detail


@pytest.mark.parametrize(
    ("torch_version", "torchvision"),
    [("2.14.1+cu130", "0.29.1"), ("2.1.2", "0.16.2"), ("2.5.0+cpu", "0.20.0"), ("1.13.1", None)],
)
def test_matching_torchvision(torch_version, torchvision):
    assert matching_torchvision(torch_version) == torchvision


def test_torchvision_that_does_not_import_is_an_error_with_the_pair_to_install(monkeypatch):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    check = check_torchvision()
    assert check.status == "ERROR"
    assert "torchvision::nms" in check.detail
    assert "pip install torch==2.14.1 torchvision==0.29.1" in check.fix
    assert "download.pytorch.org/whl/cu130" in check.fix


def test_installed_torchvision_works():
    assert check_torchvision().status == "OK"


# --------------------------------------------------------------------------- packages


@pytest.mark.parametrize(("dist", "status"), [("ipywidgets", "WARNING"), ("transformers", "ERROR")])
def test_missing_package(monkeypatch, dist, status):
    real = importlib.metadata.version

    def fake(name):
        if name == dist:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", fake)
    package = _package(dist)
    check = check_package(package)
    assert check.status == status
    assert "not installed" in check.detail
    assert f'pip install "{dist}>={package.minimum}"' in check.fix
    report = mmkd_utils.doctor(network=False)
    assert report[dist].status == status and report[dist].section == "packages"
    assert report.ok == (status != "ERROR" and not report.errors)


def test_package_that_fails_to_import(monkeypatch):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "pydicom":
            raise ImportError("numpy.core.multiarray failed to import")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    check = check_package(_package("pydicom"))
    assert check.status == "WARNING"
    assert "failed to import" in check.detail
    assert 'pip install --force-reinstall "pydicom>=' in check.fix


def test_package_older_than_supported(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.1.0")
    check = check_package(_package("pandas"))
    assert check.status == "WARNING"
    assert 'pip install --upgrade "pandas>=2"' in check.fix


# --------------------------------------------------------------------------- cache


@pytest.mark.parametrize("where", ["below a file", "is a file"])
def test_unusable_cache_folder_names_mmkd_home(tmp_path, monkeypatch, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    home = blocker / "cache" if where == "below a file" else blocker
    monkeypatch.setenv("MMKD_HOME", str(home))
    check = check_cache_folder()
    assert check.status == "ERROR"
    assert str(home) in check.detail and "MMKD_HOME" in check.fix
    assert check_disk_space().status in ("OK", "WARNING")  # does not crash
    report = mmkd_utils.doctor(network=False)
    assert report["cache folder"].status == "ERROR" and not report.ok


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere"
)
def test_read_only_cache_folder(tmp_path, monkeypatch):
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    monkeypatch.setenv("MMKD_HOME", str(home))
    try:
        check = check_cache_folder()
    finally:
        home.chmod(0o700)
    assert check.status == "ERROR" and "MMKD_HOME" in check.fix


def test_cache_folder_where_no_file_can_be_written(monkeypatch):
    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    check = check_cache_folder()
    assert check.status == "ERROR"
    assert "Permission denied" in check.detail and "MMKD_HOME" in check.fix


def test_cache_folder_not_created_yet_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_HOME", str(tmp_path / "new" / "cache"))
    check = check_cache_folder()
    assert check.status == "OK" and "not created yet" in check.detail
    assert not (tmp_path / "new").exists()
    assert list(tmp_path.iterdir()) == []  # the write test left nothing behind


def test_low_disk_space_warns(monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(free=500 * 10**6))
    check = check_disk_space()
    assert check.status == "WARNING"
    assert "500 MB" in check.detail and "784 MB" in check.detail
    assert "MMKD_HOME" in check.fix


# --------------------------------------------------------------------------- weights


def test_tiny_checkpoint_verifies(monkeypatch):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(TINY_CHECKPOINT))
    quick = check_weights()
    assert quick.status == "OK" and "not verified" in quick.detail
    check = check_weights(verify=True)
    assert check.status == "OK"
    assert "verified" in check.detail and "MMKD_CHECKPOINT" in check.detail
    report = mmkd_utils.doctor(network=False, verify_weights=True)
    assert report["weights"].status == "OK"


@pytest.mark.parametrize(
    "content", [CHECKPOINT_BYTES[: len(CHECKPOINT_BYTES) // 2], b"PK\x03\x04 not a zip"]
)
def test_corrupt_checkpoint_is_an_error_naming_the_file(tmp_path, monkeypatch, content):
    bad = tmp_path / "broken_weights.pth"
    bad.write_bytes(content)
    monkeypatch.setenv("MMKD_CHECKPOINT", str(bad))
    check = check_weights(verify=True)
    assert check.status == "ERROR"
    assert "broken_weights.pth" in check.detail
    assert "MMKD_CHECKPOINT" in check.fix


def test_html_page_instead_of_weights_is_an_error_without_verify(monkeypatch):
    default = paths.default_checkpoint_path()
    default.parent.mkdir(parents=True, exist_ok=True)
    default.write_bytes(HTML_PAGE)
    check = check_weights()
    assert check.status == "ERROR"
    assert str(default) in check.detail and "web page" in check.detail


def test_missing_mmkd_checkpoint_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(tmp_path / "nowhere.pth"))
    check = check_weights()
    assert check.status == "ERROR"
    assert "nowhere.pth" in check.detail and "MMKD_CHECKPOINT" in check.fix


def test_partial_download_is_mentioned():
    default = paths.default_checkpoint_path()
    default.parent.mkdir(parents=True, exist_ok=True)
    (default.parent / (default.name + ".part")).write_bytes(b"\0" * 2_000_000)
    check = check_weights()
    assert check.status == "WARNING" and "partial download (2 MB)" in check.detail


def test_converted_copy_detected_after_load_model(monkeypatch):
    monkeypatch.setenv("MMKD_CHECKPOINT", str(TINY_CHECKPOINT))
    monkeypatch.setenv("MMKD_TEXT_ENCODER", str(TINY_TEXT))
    before = check_converted_copy()
    assert before.status == "OK" and "none yet" in before.detail

    mmkd_utils.load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    from mmkd_utils.model.loading import WEIGHTS_NAME, converted_folder

    folder = converted_folder(TINY_CHECKPOINT, str(TINY_TEXT))
    after = check_converted_copy()
    assert after.status == "OK" and str(folder) in after.detail
    verified = check_converted_copy(verify=True)
    assert verified.status == "OK" and "tensors" in verified.detail
    assert check_text_encoder().status == "OK"

    # The converted folder itself as MMKD_CHECKPOINT.
    monkeypatch.setenv("MMKD_CHECKPOINT", str(folder))
    assert check_weights(verify=True).status == "OK"
    assert "itself a converted folder" in check_converted_copy().detail

    # A damaged copy is replaced by the next load: a warning, not an error.
    monkeypatch.setenv("MMKD_CHECKPOINT", str(TINY_CHECKPOINT))
    (folder / WEIGHTS_NAME).write_bytes(b"garbage")
    damaged = check_converted_copy(verify=True)
    assert damaged.status == "WARNING"
    assert WEIGHTS_NAME in damaged.detail and str(folder) in damaged.fix


# --------------------------------------------------------------------------- text encoder


def test_text_encoder_folder_must_hold_config_and_tokenizer(tmp_path, monkeypatch):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("MMKD_TEXT_ENCODER", str(folder))
    check = check_text_encoder()
    assert check.status == "ERROR" and "vocab.txt" in check.detail
    (folder / "vocab.txt").write_text("[PAD]\n")
    assert check_text_encoder().status == "OK"


def test_text_encoder_path_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_TEXT_ENCODER", str(tmp_path / "missing" / "bert"))
    check = check_text_encoder()
    assert check.status == "ERROR" and "MMKD_TEXT_ENCODER" in check.fix


def test_text_encoder_that_is_neither_folder_nor_hub_id(monkeypatch):
    monkeypatch.setenv("MMKD_TEXT_ENCODER", "not a repo id!")
    check = check_text_encoder()
    assert check.status == "ERROR" and "not a repo id!" in check.detail
    assert "MMKD_TEXT_ENCODER" in check.fix


@pytest.mark.parametrize(
    ("cached", "offline", "status"),
    [(True, True, "OK"), (False, True, "ERROR"), (False, False, "WARNING")],
)
def test_text_encoder_hub_id_in_the_local_cache(monkeypatch, cached, offline, status):
    import huggingface_hub

    monkeypatch.setattr(
        huggingface_hub,
        "try_to_load_from_cache",
        lambda repo, name: f"hf-cache/{repo}/{name}" if cached else None,
    )
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        _online_hub(monkeypatch)
    check = check_text_encoder()
    assert check.status == status
    assert paths.DEFAULT_TEXT_ENCODER in check.detail
    if status != "OK":
        assert "MMKD_TEXT_ENCODER" in check.fix and OFFLINE_README in check.fix


# --------------------------------------------------------------------------- demo images


def test_demo_images_not_cached_are_downloaded_on_first_use():
    check = check_demo_images()
    assert check.status == "WARNING"
    assert "0 of 9" in check.detail and "downloaded on first use" in check.detail
    assert "MMKD_DEMO_IMAGES" in check.fix


def test_demo_images_folder_from_env(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(folder))
    for name in DEMO_IMAGE_NAMES[:5]:
        (folder / name).write_bytes(b"stand-in")
    missing = check_demo_images()
    assert missing.status == "ERROR" and "5 of 9" in missing.detail
    assert DEMO_IMAGE_NAMES[-1] in missing.detail
    for name in DEMO_IMAGE_NAMES:
        (folder / name).write_bytes(b"stand-in")
    differ = check_demo_images()
    assert differ.status == "WARNING" and "differ" in differ.detail
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(tmp_path / "nope"))
    assert check_demo_images().status == "ERROR"


@pytest.mark.skipif(not SHARED_DEMO.is_dir(), reason="published demo images not available")
def test_published_demo_images_are_ok(monkeypatch):
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(SHARED_DEMO))
    assert check_demo_images().status == "OK"
    monkeypatch.delenv("MMKD_DEMO_IMAGES")
    shutil.copytree(SHARED_DEMO, demo_image_dir())
    check = check_demo_images()
    assert check.status == "OK" and "9 of 9" in check.detail


# --------------------------------------------------------------------------- network


def test_reachable_hosts_are_ok(server, monkeypatch):
    for path in ("/hub", "/drive", "/raw"):
        server.set(path, b"ok")
    _point_hosts(monkeypatch, server.url("/hub"), server.url("/drive"), server.url("/raw"))
    _online_hub(monkeypatch)
    _only_network(monkeypatch)
    report = mmkd_utils.doctor(network=True, timeout=2.0)
    assert [c.name for c in report] == list(NETWORK_NAMES)
    for check, path in zip(report, ("/hub", "/drive", "/raw"), strict=True):
        assert check.status == "OK", check
        assert check.section == "network" and server.url(path) in check.detail
        assert len(server.hits(path)) == 1


def test_an_http_error_still_means_reachable(server):
    check = check_host("example", server.url("/missing"), 2.0, "work offline")
    assert check.status == "OK" and "404" in check.detail


def test_hf_hub_offline_is_respected_and_reported(server, monkeypatch):
    server.set("/hub", b"ok")
    monkeypatch.setattr(doc, "HF_HUB_URL", server.url("/hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check = check_hub(timeout=2.0)
    assert check.status == "OK" and "HF_HUB_OFFLINE=1" in check.detail
    assert server.hits("/hub") == []
    assert "HF_HUB_OFFLINE=1" in doc.check_hf_offline().detail
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert "TRANSFORMERS_OFFLINE=1" in check_hub(timeout=2.0).detail
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    assert "not set" in doc.check_hf_offline().detail
    assert check_hub(timeout=2.0).status == "OK" and len(server.hits("/hub")) == 1


def test_unreachable_hosts_warn_with_the_offline_fix_within_the_timeout(monkeypatch):
    _point_hosts(monkeypatch, dead_url("/hub"), dead_url("/drive"), dead_url("/raw"))
    _online_hub(monkeypatch)
    _only_network(monkeypatch)
    start = time.monotonic()
    report = mmkd_utils.doctor(network=True, timeout=1.5)
    assert time.monotonic() - start < 1.5 + 1.0
    assert [c.name for c in report] == list(NETWORK_NAMES)
    for check in report:
        assert check.status == "WARNING", check
        assert "not reachable" in check.detail
        assert check.fix.startswith("work offline:") and OFFLINE_README in check.fix
    assert "MMKD_TEXT_ENCODER" in report["huggingface.co"].fix
    assert str(paths.default_checkpoint_path()) in report["drive.google.com"].fix
    assert "MMKD_DEMO_IMAGES" in report["raw.githubusercontent.com"].fix
    assert report.ok  # no network is a warning, never an error


def test_a_silent_host_times_out():
    with socket.socket() as sock:  # accepts connections but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        start = time.monotonic()
        check = check_host("silent", url, 0.5, "work offline: ...")
        elapsed = time.monotonic() - start
    assert check.status == "WARNING" and check.fix == "work offline: ..."
    assert elapsed < 0.5 + 1.0


# --------------------------------------------------------------------------- command line


def test_cli_doctor_offline_prints_the_lines(capsys):
    code = main(["doctor", "--offline"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.split(" ", 1)[0] in STATUSES]
    assert len(lines) >= 20
    assert any(line.startswith("OK") and "python:" in line for line in lines)
    assert "not checked" in out and "checks:" in out
    assert code == (1 if any(line.startswith("ERROR") for line in lines) else 0)


def test_cli_exit_code_follows_the_statuses(capsys, monkeypatch):
    real_plan = doc._plan
    monkeypatch.setattr(
        doc,
        "_plan",
        lambda verify_weights: [("system", "python", lambda: Check("python", "OK", "fine"))],
    )
    assert main(["doctor", "--offline"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "OK      python: fine"
    assert "0 ERROR" in out

    monkeypatch.setattr(doc, "_plan", real_plan)  # all checks again, one of them an ERROR
    monkeypatch.setattr(doc, "check_python", lambda: Check("python", "ERROR", "too old", "upgrade"))
    assert main(["doctor", "--offline"]) == 1
    out = capsys.readouterr().out
    assert "ERROR   python: too old -- fix: upgrade" in out
    assert "Fix the ERROR lines first" in out


def test_cli_passes_its_options(monkeypatch, capsys):
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return DoctorReport([Check("x", "WARNING", "meh", "do y", section="system")])

    monkeypatch.setattr(doc, "doctor", fake)
    assert main(["doctor", "--verify", "--timeout", "1.5"]) == 0
    assert seen == {"network": True, "timeout": 1.5, "verify_weights": True}
    assert "WARNING x: meh -- fix: do y" in capsys.readouterr().out
    assert build_parser().parse_args(["doctor"]).timeout == 3.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["doctor", "--timeout", "0"])
