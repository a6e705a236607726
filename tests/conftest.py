"""Shared fixtures: the qcow2 image set, built once per test session with qemu."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import pytest

import imagekit

REQUIRED_TOOLS = ("qemu-img", "qemu-io", "qemu-nbd")


def pytest_configure(config: pytest.Config) -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise pytest.UsageError(
            f"missing {', '.join(missing)}: install qemu-utils (make deps does it)")


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
