"""info, check and map on several images in one run: each image's part is what qemu-img
says about that image alone, under its header line (text) or on its JSON line; the
exit status is the worst image's. (One image prints what it always printed: the
qemu parity tests of test_check, test_map and test_info.)"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

from ourcmd import QCOW2KIT
from sidebyside import qemu_img, strict_zip
from test_check import DAMAGES, Layout

MISSING = "missing.qcow2"


def _leak(at: Layout) -> None:
    """A cluster appended to the file with refcount 1 and no reference: leaked."""
    cluster = -(-at.path.stat().st_size // at.cs)
    with open(at.path, "r+b") as f:
        f.truncate((cluster + 1) * at.cs)
    at.add_refcount(cluster, 1)


def fleet(images: Dict[str, Path], tmp_path: Path) -> List[str]:
    """A clean image, a leaky and a corrupt copy, a compressed one, by names relative
    to tmp_path (the folder both programs run in)."""
    names = []
    for name, kind, damage in (("clean", "v3", None), ("leak", "v3", _leak),
                               ("corrupt", "v3", DAMAGES["corruption: refcount lowered"][1]),
                               ("zlib", "zlib", None)):
        src = images[kind]
        shutil.copytree(src.parent, tmp_path / name)
        path = tmp_path / name / src.name
        if damage is not None:
            damage(Layout(path))
        names.append(f"{name}/{src.name}")
    return names


def ours(tmp_path: Path, *args: str) -> Tuple[int, str]:
    proc = subprocess.run(QCOW2KIT + list(args), cwd=tmp_path, capture_output=True)
    return proc.returncode, proc.stdout.decode()


def qemu(tmp_path: Path, *args: str) -> Tuple[int, str]:
    proc = qemu_img(*args, cwd=tmp_path)
    return proc.returncode, proc.stdout.decode()


def test_check_several_in_text(images: Dict[str, Path], tmp_path: Path) -> None:
    names = fleet(images, tmp_path)
    code, out = ours(tmp_path, "check", *names)
    expected = []
    for n, name in enumerate(names):
        status, report = qemu(tmp_path, "check", "-f", "qcow2", name)
        assert status == {"clean": 0, "leak": 3, "corrupt": 2, "zlib": 0}[name.split("/")[0]]
        expected.append(("\n" if n else "") + f"==> {name} <==\n" + report)
    assert out == "".join(expected)
    assert code == 2  # corruptions are worse than leaks
    code, _ = ours(tmp_path, "check", names[0], names[1], names[3])
    assert code == 3  # leaks are worse than a clean image
    code, out = ours(tmp_path, "check", names[2], MISSING, names[0])
    assert code == 1  # an image that cannot be read is worse than corruptions
    assert f"==> {MISSING} <==\n\n==> {names[0]} <==\n" in out


def test_check_several_as_json_lines(images: Dict[str, Path], tmp_path: Path) -> None:
    names = fleet(images, tmp_path)
    code, out = ours(tmp_path, "check", "--json", names[0], MISSING, *names[1:])
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["image"] for line in lines] == [names[0], MISSING, *names[1:]]
    assert code == 1
    missing = lines.pop(1)
    assert missing["status"] == 1 and "result" not in missing
    assert missing["error"] == f"{MISSING}: No such file or directory"
    for name, line in zip(names, lines):
        status, document = qemu(tmp_path, "check", "--output=json", "-f", "qcow2", name)
        assert (line["status"], line["result"]) == (status, json.loads(document))
        assert "error" not in line


def test_map_several(images: Dict[str, Path], tmp_path: Path) -> None:
    names = fleet(images, tmp_path)
    code, out = ours(tmp_path, "map", "--json", *names)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    for name, line in strict_zip(names, lines):
        status, document = qemu(tmp_path, "map", "--output=json", "-f", "qcow2", name)
        assert (line["image"], line["status"], line["result"]) == \
            (name, status, json.loads(document))
    clean = names[0]
    code, out = ours(tmp_path, "map", clean, clean)
    assert code == 0
    text = qemu(tmp_path, "map", "-f", "qcow2", clean)[1]
    assert out == f"==> {clean} <==\n{text}\n==> {clean} <==\n{text}"


def test_info_several(images: Dict[str, Path], tmp_path: Path) -> None:
    names = fleet(images, tmp_path)
    code, out = ours(tmp_path, "info", "--qemu", "--json", *names, MISSING)
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1] == {"image": MISSING, "status": 1,
                         "error": f"{MISSING}: No such file or directory"}
    for name, line in zip(names, lines):
        status, document = qemu(tmp_path, "info", "--output=json", "-f", "qcow2", name)
        assert (line["image"], line["status"], line["result"]) == \
            (name, status, json.loads(document))
    code, out = ours(tmp_path, "info", "--qemu", *names)
    assert code == 0
    assert out == "\n".join(f"==> {name} <==\n" + qemu(tmp_path, "info", "-f", "qcow2", name)[1]
                            for name in names)
