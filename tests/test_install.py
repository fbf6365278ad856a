"""The package installed outside the checkout: a wheel built from host/ carries the C
core, the firmware and the virtual board's script, and `rbnn train`, `rbnn eval --engine
c` and `rbnn deploy --port virtual` work from it in a folder that is not the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def wheel(repo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy (the package data links followed), so the build leaves nothing in
    # the checkout
    src = out / "host"
    shutil.copytree(repo / "host", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    if r.returncode != 0:
        pytest.fail(f"pip wheel host failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    (whl,) = out.glob("rbnn-*.whl")
    return whl


def test_wheel_carries_the_package_data(wheel, repo):
    names = set(zipfile.ZipFile(wheel).namelist())
    for src in sorted((repo / "cmodules" / "rbnn").iterdir()):
        assert f"rbnn/_data/cmodules/{src.name}" in names, src.name
    for src in sorted((repo / "firmware").glob("*.py")):
        assert f"rbnn/_data/firmware/{src.name}" in names, src.name
    assert "rbnn/device/board/vboard.py" in names
    # developer-only code stays out of the installed library
    assert not any(n.startswith(("support/", "rbnn/m0sim", "tests/")) for n in names)


def test_installed_package_trains_evaluates_and_deploys(wheel, tmp_path, mnist):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=600)  # fmt: skip
    work = tmp_path / "work"  # not the checkout
    work.mkdir()
    from rbnn import data

    env = dict(os.environ, PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "cache"),
               RBNN_DATA=str(data.cache_dir()))  # fmt: skip
    env.pop("RBNN_FIRMWARE", None)

    def rbnn(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "rbnn", *args], cwd=work, env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
        assert r.returncode == 0, f"rbnn {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    where = subprocess.run([sys.executable, "-c", "import rbnn, rbnn.resources as r; print(rbnn.__file__); "
                            "print(r.c_sources()); print(r.firmware())"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert all(p.startswith(str(site)) for p in where), where
    out = rbnn("train", "--data", "mnist", "--hidden", "16", "--epochs", "1", "--limit", "2000",
               "--val", "200", "--no-augment", "-o", "m.rbnn")  # fmt: skip
    assert "test accuracy" in out
    out = rbnn("eval", "m.rbnn", "--data", "mnist", "--engine", "c", "--limit", "300")
    assert "accuracy" in out
    assert any((tmp_path / "cache" / "rbnn").glob("librbnn-*.so"))  # built from the wheel's sources
    out = rbnn("deploy", "m.rbnn", "--port", "virtual", "--fs", str(tmp_path / "fs"))
    assert "saved and loaded" in out
    assert (tmp_path / "fs" / "rbnn_server.mpy").exists() or (tmp_path / "fs" / "rbnn_server.py").exists()
