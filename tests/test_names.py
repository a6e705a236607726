"""Names that are not UTF-8, made by qemu itself in each place a name lives: a snapshot,
a bitmap, the backing file, the external data file. The parse succeeds, JavaScript
gives Python's values (raw bytes), and every command shows them as qemu-img does: the
bytes in text, U+FFFD in JSON. (dump refuses a bitmap name that is not ASCII, which
qcow2.py's format cannot show: qcow2.py itself fails on it.)"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

import imagekit
from sidebyside import ours_ok, qemu_ok
from test_js_parity import assert_same, js_module, js_values, python_values  # noqa: F401

ODD = b"\xff\xfe"  # not UTF-8


def _name(text: str) -> str:
    """A command-line argument holding ODD, as the OS passes bytes through."""
    return text.replace("@", ODD.decode("utf-8", "surrogateescape"))


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("names")
    over = root / "over.qcow2"
    imagekit.run("qemu-img", "create", "-q", "-f", "qcow2", _name("base@.qcow2"), "4M",
                  cwd=root)
    imagekit.run("qemu-img", "create", "-q", "-f", "qcow2", "-b", _name("base@.qcow2"),
                 "-F", "qcow2", over.name, "4M", cwd=root)
    imagekit.qemu_io(over, "write -P 0x22 0 64k")
    imagekit.run("qemu-img", "snapshot", "-c", _name("snap@"), over.name, cwd=root)
    imagekit.run("qemu-img", "bitmap", "--add", over.name, _name("bm@"), cwd=root)
    data = root / "data.qcow2"
    imagekit.run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
                 _name("data_file=data@.raw"), data.name, "4M", cwd=root)
    return {"backing, snapshot and bitmap": over, "data file": data}


@pytest.mark.parametrize("case", ["backing, snapshot and bitmap", "data file"])
def test_names_not_utf8(named: Dict[str, Path], js_module: Path,  # noqa: F811
                        case: str) -> None:
    path = named[case]
    py = python_values(path)
    assert_same(py, js_values(js_module, [path])[str(path)])
    assert ODD.hex() in repr(py)  # the raw bytes are in the tree
    for qemu_args, ours in (([], ["--qemu"]), (["--output=json"], ["--qemu", "--json"])):
        theirs = qemu_ok("info", *qemu_args, path.name, cwd=path.parent)
        assert ODD in theirs or b"\\uFFFD\\uFFFD" in theirs
        assert ours_ok("info", *ours, path.name, cwd=path.parent) == theirs
    for command in (["snapshots"], ["bitmaps"], ["info"], ["check"], ["map"]):
        ours_ok(*command, path.name, cwd=path.parent)
