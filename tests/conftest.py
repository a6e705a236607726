"""Shared fixtures: the qcow2 image set, built once per test session with qemu.

The session's qemu peer: --qemu 7.2 (the system's qemu-utils) or --qemu 10.0 (the
qemu-utils of Debian's bookworm-backports that tools/qemu10.sh unpacks into
build/qemu-10, put first on PATH for the session). Every qemu-img, qemu-io and
qemu-nbd the tests run is that peer's. How qcow2kit learns the release it renders for:
--qemu-choice detect (the qemu-img on PATH, qcow2kit's default) or option (the
--qemu-version option, given through its environment variable, while the cached
detection is made to name the other release, so that only the option can be obeyed).
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Dict

import pytest

import imagekit
from ourcmd import REPO
from qcow2kit import qemu_version

REQUIRED_TOOLS = ("qemu-img", "qemu-io", "qemu-nbd")
PEERS = ("7.2", "10.0")
QEMU10 = REPO / "tools" / "qemu10.sh"

DECOY_STATUS = 97


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--qemu", choices=PEERS, default=PEERS[0],
                     help="the qemu release the tests compare with (10.0: from "
                          "build/qemu-10, which tools/qemu10.sh fills)")
    parser.addoption("--qemu-choice", choices=("detect", "option"), default="detect",
                     help="how qcow2kit is told the release: detection or the option")


def pytest_configure(config: pytest.Config) -> None:
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="qcow2kit-cache-")
    os.environ.pop(qemu_version.ENV, None)
    peer = config.getoption("--qemu")
    if peer != PEERS[0]:
        _put_first_on_path(Path(subprocess.run([str(QEMU10), "--bin"], capture_output=True,
                                               text=True, check=True).stdout.strip()))
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise pytest.UsageError(
            f"missing {', '.join(missing)}: install qemu-utils (make deps does it), and for "
            "--qemu 10.0 run tools/qemu10.sh (make test does both)")
    found = qemu_version.installed()
    if str(found) != peer:
        raise pytest.UsageError(f"qemu-img on PATH is {found}, not the peer {peer}")
    if config.getoption("--qemu-choice") == "option":
        _misdetect(peer)
        os.environ[qemu_version.ENV] = peer
    _put_decoy_first_on_path()


def _put_first_on_path(folder: Path) -> None:
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def _misdetect(peer: str) -> None:
    """Make the cached detection name the other peer's release."""
    other = next(p for p in PEERS if p != peer)
    qemu_version.write_cache({key: other for key in qemu_version.read_cache()})
    assert str(qemu_version.installed()) == other


@pytest.fixture(scope="session")
def peer(pytestconfig: pytest.Config) -> qemu_version.QemuVersion:
    """The qemu release the session compares with."""
    return qemu_version.parse(pytestconfig.getoption("--qemu"))


def _put_decoy_first_on_path() -> None:
    """A `qcow2kit` first on PATH that fails loudly: tests run ourcmd.QCOW2KIT, and one
    that looked the command up on PATH would otherwise test whatever build is there."""
    folder = Path(tempfile.mkdtemp(prefix="qcow2kit-decoy-"))
    decoy = folder / "qcow2kit"
    decoy.write_text("#!/bin/sh\necho 'a test ran qcow2kit from PATH; use ourcmd.QCOW2KIT' >&2\n"
                     f"exit {DECOY_STATUS}\n")
    decoy.chmod(decoy.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    _put_first_on_path(folder)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Every image kind of tests/imagekit.py, by name."""
    return imagekit.build_all(tmp_path_factory.mktemp("images"))


@pytest.fixture
def image_copy(images: Dict[str, Path], tmp_path: Path):
    """Copy an image kind (with the files beside it) into a private folder."""
    def copy(kind: str) -> Path:
        src = images[kind]
        dst = tmp_path / kind
        shutil.copytree(src.parent, dst)
        return dst / src.name
    return copy
