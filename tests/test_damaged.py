"""Odd images qemu still handles: a feature name table shorter than an entry (as
qcow2.py writes it), unknown incompatible feature bits; and the compat shim, which
prints no more than qcow2.py does. Images are patched with struct, independent of
qcow2kit, and compared with qemu-img."""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

import imagekit
from ourcmd import COMPAT
from sidebyside import qcow2kit, qemu_img

FEATURE_TABLE = 0x6803F857
SHORT_TABLE = b"\x00\x3fTest feature"  # 14 bytes: type 0 (incompatible), bit 63
INCOMPATIBLE_OFFSET = 72


def compat(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([*COMPAT, *args], input=stdin, capture_output=True, check=False)


def set_incompatible(path: Path, *bits: int) -> None:
    with open(path, "r+b") as f:
        f.seek(INCOMPATIBLE_OFFSET)
        value = struct.unpack(">Q", f.read(8))[0]
        for bit in bits:
            value |= 1 << bit
        f.seek(INCOMPATIBLE_OFFSET)
        f.write(struct.pack(">Q", value))


def qemu_says(command: str, path: Path, *args: str) -> Tuple[int, bytes, List[str]]:
    """qemu-img's exit status, stdout and stderr lines, its program name as ours."""
    proc = qemu_img(command, *args, path.name, cwd=path.parent)
    return proc.returncode, proc.stdout, [line.replace("qemu-img: ", "qcow2kit: ", 1)
                                          for line in proc.stderr.decode().splitlines()]


def ours_says(path: Path, *args: str) -> Tuple[int, bytes, List[str]]:
    result = qcow2kit(args[0], path.name, *args[1:], cwd=path.parent)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result.exit_code, result.stdout_bytes, result.stderr.splitlines()


# --- the compat shim writes what qcow2.py writes, and prints what it prints ------------

def test_short_feature_table_written_as_qcow2py_writes_it(image_copy) -> None:
    path = image_copy("v3")
    expected = path.parent / "expected.qcow2"
    shutil.copyfile(path, expected)
    imagekit.insert_extension(expected, FEATURE_TABLE, SHORT_TABLE)
    proc = compat(str(path), "add-header-ext-stdio", hex(FEATURE_TABLE), stdin=SHORT_TABLE)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert path.read_bytes() == expected.read_bytes()
    dump = compat(str(path), "dump-header-exts")
    assert dump.returncode == 0 and dump.stderr == b""
    assert dump.stdout.endswith(b"magic                     0x6803f857 (Feature table)\n"
                                b"length                    14\n"
                                b"data                      <binary>\n\n")


def test_short_feature_table_zero_padded_as_qemu_reads_it(image_copy) -> None:
    """qemu keeps the last feature table, zero-padded, and names bit 63 from it."""
    path = image_copy("v3")
    imagekit.insert_extension(path, FEATURE_TABLE, SHORT_TABLE)
    set_incompatible(path, 63)
    for qemu_args, our_args in ((["check"], ["check"]),
                                (["check", "--output=json"], ["check", "--json"]),
                                (["info"], ["info", "--qemu"])):
        theirs = qemu_says(qemu_args[0], path, *qemu_args[1:])
        assert theirs[0] == 1 and "Unsupported qcow2 feature(s): Test feature" in theirs[2][0]
        assert ours_says(path, *our_args) == theirs
    code, out, _ = ours_says(path, "info")
    assert code == 0 and b"incompatible: Test feature (bit 63, unknown)" in out


@pytest.mark.parametrize("args", [["set-feature-bit", "incompatible", "63"],
                                  ["add-header-ext", hex(FEATURE_TABLE), "twice"]])
def test_compat_prints_no_warnings(image_copy, tmp_path: Path, args: List[str]) -> None:
    """qcow2.py prints nothing on these edits; the qemu-will-refuse warnings come with
    --warnings only."""
    path = image_copy("v3")
    copy = tmp_path / "again.qcow2"
    shutil.copyfile(path, copy)
    proc = compat(str(path), *args)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    proc = compat(str(copy), *args, "--warnings")
    assert proc.returncode == 0 and proc.stdout == b""
    assert proc.stderr.startswith(b"qcow2kit.compat: warning: ")
    assert copy.read_bytes() == path.read_bytes()


# --- unknown incompatible feature bits ----------------------------------------------------

@pytest.mark.parametrize("bits", [(63,), (40, 62)])
def test_unknown_incompatible_bits_as_qemu(image_copy: Callable[[str], Path],
                                           bits: Tuple[int, ...]) -> None:
    path = image_copy("v3")
    intact = path.parent / "intact.qcow2"
    shutil.copyfile(path, intact)
    set_incompatible(path, *bits)
    for qemu_args, our_args in ((["check"], ["check"]),
                                (["check", "--output=json"], ["check", "--json"]),
                                (["info"], ["info", "--qemu"]),
                                (["info", "--output=json"], ["info", "--qemu", "--json"])):
        theirs = qemu_says(qemu_args[0], path, *qemu_args[1:])
        assert theirs[0] == 1 and "Unsupported qcow2 feature(s)" in theirs[2][0]
        assert ours_says(path, *our_args) == theirs
    mask = sum(1 << b for b in bits)
    for args in (["map"], ["cat", "--length", "512"], ["convert", "out.raw"]):
        code, out, err = ours_says(path, *args)
        assert code == 1 and out == b"" and len(err) == 1, err
        assert f"Unknown incompatible feature: {mask:x}" in err[0] and "--force" in err[0]
        code, out, err = ours_says(path, *args, "--force")
        assert code == 0 and len(err) == 1 and "warning" in err[0], err
    imagekit.run("qemu-img", "convert", "-O", "raw", str(intact), str(path.parent / "q.raw"))
    assert (path.parent / "out.raw").read_bytes() == (path.parent / "q.raw").read_bytes()
    _, theirs, _ = qemu_says("map", intact, "--output=json")
    assert ours_says(path, "map", "--json", "--force")[1] == theirs
    for args in (["dump"], ["info"], ["whatis", "0"], ["snapshots"], ["bitmaps"]):
        code, _, err = ours_says(path, *args)
        assert code == 0, (args, err)
