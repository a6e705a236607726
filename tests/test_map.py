"""`qcow2kit map` prints what `qemu-img map` prints, on every image kind."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

import imagekit
from ourcmd import QCOW2KIT

KINDS = sorted(k for k in imagekit.KINDS if k != "bitmaps_crafted")


def qemu_map(kind: str, path: Path, *args: str) -> subprocess.CompletedProcess:
    """qemu-img map run beside the image (qemu opens relative data file names from there)."""
    image: List[str] = [path.name]
    if kind == "luks":
        image = ["--object", imagekit.SECRET, "--image-opts",
                 f"driver=qcow2,file.filename={path.name},encrypt.key-secret=sec0"]
    return subprocess.run(["qemu-img", "map", *args, *image], capture_output=True, text=True,
                          cwd=path.parent)


def ours(path: Path, *args: str, name: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*QCOW2KIT, "map", *args, name or path.name], capture_output=True,
                          text=True, cwd=path.parent)


@pytest.mark.parametrize("kind", KINDS)
def test_json_equals_qemu(images: Dict[str, Path], kind: str) -> None:
    expected = qemu_map(kind, images[kind], "--output=json")
    assert expected.returncode == 0, expected.stderr
    got = ours(images[kind], "--json")
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_human_output_equals_qemu(images: Dict[str, Path], kind: str) -> None:
    expected = qemu_map(kind, images[kind])
    got = ours(images[kind])
    assert got.stdout == expected.stdout
    assert got.returncode == expected.returncode
    if expected.returncode:
        assert "File contains external, encrypted or compressed clusters." in got.stderr


def test_maps_what_qemu_refuses(images: Dict[str, Path]) -> None:
    """qemu will not open an image with an invalid bitmap table entry; its guest data
    is mapped all the same (the same as the image it was crafted from)."""
    crafted, source = images["bitmaps_crafted"], images["bitmaps"]
    assert qemu_map("bitmaps_crafted", crafted, "--output=json").returncode != 0
    assert ours(crafted, "--json").stdout == qemu_map("bitmaps", source, "--output=json").stdout
    expected = qemu_map("bitmaps", source).stdout.replace(source.name, crafted.name)
    assert ours(crafted).stdout == expected


@pytest.mark.parametrize("kind", ["backing", "backing_chain", "data_file"])
def test_file_names_follow_the_name_given(images: Dict[str, Path], kind: str) -> None:
    """Backing file names resolve against the directory of the name given, as in qemu."""
    path = images[kind]
    expected = subprocess.run(["qemu-img", "map", str(path)], capture_output=True, text=True,
                              cwd=path.parent)
    assert ours(path, name=str(path)).stdout == expected.stdout


def test_missing_backing_file(image_copy) -> None:
    path = image_copy("backing")
    (path.parent / "backing_base.qcow2").unlink()
    got = ours(path, "--json")
    assert got.returncode == 1
    assert got.stderr.count("\n") == 1 and "backing_base.qcow2" in got.stderr
    assert "No such file or directory" in got.stderr


def test_backing_loop_terminates(image_copy) -> None:
    path = image_copy("v3")
    assert subprocess.run([*QCOW2KIT, "add-header-ext", str(path), "0xe2792aca", "qcow2"],
                          capture_output=True).returncode == 0
    with open(path, "r+b") as f:  # backing file name: the image itself, after the header
        name = path.name.encode()
        f.seek(0x1000)
        f.write(name)
        f.seek(8)
        f.write((0x1000).to_bytes(8, "big") + len(name).to_bytes(4, "big"))
    got = ours(path, "--json")
    assert got.returncode == 1
    assert "backing chain" in got.stderr and "too deep" in got.stderr
