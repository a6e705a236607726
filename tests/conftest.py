"""Shared fixtures: the qcow2 image set, built once per test session with qemu."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Dict

import pytest

import imagekit

REQUIRED_TOOLS = ("qemu-img", "qemu-io", "qemu-nbd")


DECOY_STATUS = 97


def pytest_configure(config: pytest.Config) -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise pytest.UsageError(
            f"missing {', '.join(missing)}: install qemu-utils (make deps does it)")
    _put_decoy_first_on_path()


def _put_decoy_first_on_path() -> None:
    """A `qcow2kit` first on PATH that fails loudly: tests run ourcmd.QCOW2KIT, and one
    that looked the command up on PATH would otherwise test whatever build is there."""
    folder = Path(tempfile.mkdtemp(prefix="qcow2kit-decoy-"))
    decoy = folder / "qcow2kit"
    decoy.write_text("#!/bin/sh\necho 'a test ran qcow2kit from PATH; use ourcmd.QCOW2KIT' >&2\n"
                     f"exit {DECOY_STATUS}\n")
    decoy.chmod(decoy.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


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
