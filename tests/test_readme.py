"""The README's Python examples run, as written, on a qemu-made disk.qcow2 (with the
snapshot and the bitmap they name), and what they print agrees with qemu-img."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import imagekit
from ourcmd import QCOW2KIT, REPO

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def examples() -> List[Tuple[int, str]]:
    """(line, code) of each ```python block of README.md."""
    text = (REPO / "README.md").read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """disk.qcow2 with data, a snapshot "before-update" and a persistent bitmap."""
    path = imagekit.create(tmp_path_factory.mktemp("readme") / "disk.qcow2", "4M")
    imagekit.qemu_io(path, "write -P 0x11 0 192k", "write -P 0x22 1M 64k")
    imagekit.run("qemu-img", "snapshot", "-c", "before-update", str(path))
    imagekit.run("qemu-img", "bitmap", "--add", str(path), "b0")
    imagekit.qemu_io(path, "write -P 0x33 1M 4k", "write -P 0x44 2M 64k")
    return path


@pytest.fixture
def inside(disk: Path, tmp_path: Path) -> Iterator[Path]:
    """A folder holding a copy of disk.qcow2, as the current directory."""
    (tmp_path / disk.name).write_bytes(disk.read_bytes())
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


def test_the_readme_has_its_examples() -> None:
    assert len(examples()) >= 6


@pytest.mark.parametrize("line, code", examples(),
                         ids=[f"line-{line}" for line, _ in examples()])
def test_example_runs(inside: Path, line: int, code: str,
                      capsys: pytest.CaptureFixture) -> None:
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert out or "GuestDisk" in code, "the example printed nothing"
    disk = inside / "disk.qcow2"
    if "check_image" in code:  # its first line: corruptions, leaks, exit status
        proc = imagekit.run("qemu-img", "check", "--output=json", str(disk), ok=(0, 2, 3))
        qemu = json.loads(proc)
        assert out.splitlines()[0] == \
            f"{qemu.get('corruptions', 0)} {qemu.get('leaks', 0)} 0"
    if "image_info" in code:  # its first line: virtual size and compat level
        qemu = imagekit.qemu_json("info", disk)
        assert out.splitlines()[0] == \
            f"{qemu['virtual-size']} {qemu['format-specific']['data']['compat']}"
    if "whatis(" in code and "layout" in code:
        assert (inside / "disk.svg").read_text().startswith(("<?xml", "<svg"))
    if "qcow2kit.open(" in code:  # size, snapshots, check's status; the snapshot's bytes
        qemu = imagekit.qemu_json("info", disk)
        check = subprocess.run(["qemu-img", "check", str(disk)], capture_output=True)
        assert out.splitlines()[0] == \
            f"{qemu['virtual-size']} {len(qemu['snapshots'])} {check.returncode}"
        assert out.splitlines()[-1] == "22222222"  # 0x22 at 1M before the snapshot


SESSION = re.compile(r"^```\n\$ qcow2kit (.*?)\n(.*?)^```", re.S | re.M)


def sessions() -> List[Tuple[str, str]]:
    """(arguments, output) of each README block that shows qcow2kit run on the sample."""
    text = (REPO / "README.md").read_text()
    return [(m.group(1), m.group(2)) for m in SESSION.finditer(text)
            if "samples/" in m.group(1)]


def test_the_readme_shows_sessions() -> None:
    assert len(sessions()) >= 2


@pytest.mark.parametrize("args, output", sessions(), ids=[a for a, _ in sessions()])
def test_session_output_is_true(args: str, output: str) -> None:
    """What the README shows a command print on samples/sample.qcow2 is what it prints."""
    proc = subprocess.run([*QCOW2KIT, *args.split()], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == output
