"""Odd images qemu still handles: a feature name table shorter than an entry (as
qcow2.py writes it), unknown incompatible feature bits; and the compat shim, which
prints no more than qcow2.py does. Images are patched with struct, independent of
qcow2kit, and compared with qemu-img."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

import imagekit
from ourcmd import COMPAT, QCOW2KIT
from sidebyside import qemu_img

GOLDEN = json.loads((Path(__file__).parent / "golden" / "qcow2py.json").read_text())
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
    """The command run as a user runs it (cat and convert write to a real stdout)."""
    proc = subprocess.run([*QCOW2KIT, args[0], path.name, *args[1:]], capture_output=True,
                          cwd=path.parent, env={**os.environ, "TZ": "UTC"})
    return proc.returncode, proc.stdout, proc.stderr.decode().splitlines()


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
        assert code == 0 and len(err) == 1 and err[0].startswith("qcow2kit: warning: "), err
    imagekit.run("qemu-img", "convert", "-O", "raw", str(intact), str(path.parent / "q.raw"))
    assert (path.parent / "out.raw").read_bytes() == (path.parent / "q.raw").read_bytes()
    _, theirs, _ = qemu_says("map", intact, "--output=json")
    assert ours_says(path, "map", "--json", "--force")[1] == theirs
    for args in (["dump"], ["info"], ["whatis", "0"], ["snapshots"], ["bitmaps"]):
        code, _, err = ours_says(path, *args)
        assert code == 0, (args, err)


# --- known extensions with malformed contents (tests/imagekit.py MALFORMED_EXTENSIONS) ---

MALFORMED = sorted(imagekit.MALFORMED_EXTENSIONS)
DUMP_MODES = {  # qcow2.py arguments (golden mode names) -> qcow2kit dump options
    "dump-header": [], "dump-header-exts": ["--exts-only"],
    "dump-header -j": ["--json"], "dump-header-exts -j": ["--exts-only", "--json"]}


@pytest.fixture(scope="module")
def malformed(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("malformed")
    return {name: imagekit.malformed(name, root) for name in MALFORMED}


def test_malformed_cases_cover_the_golden() -> None:
    assert sorted(GOLDEN["malformed"]) == MALFORMED


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_dump_equals_qcow2py(malformed: Dict[str, Path], name: str) -> None:
    """qcow2.py's recorded output, from the compat shim (nothing on stderr) and dump."""
    path = malformed[name]
    for mode, options in DUMP_MODES.items():
        expected = GOLDEN["malformed"][name][mode].encode()
        proc = compat(str(path), *mode.split())
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected, b""), mode
        code, out, err = ours_says(path, "dump", *options)
        assert (code, out, err) == (0, expected, []), mode


@pytest.mark.parametrize("name", [n for n in MALFORMED if "edit" in GOLDEN["malformed"][n]])
def test_malformed_edit_equals_qcow2py(malformed: Dict[str, Path], tmp_path: Path,
                                       name: str) -> None:
    copy = tmp_path / malformed[name].name
    shutil.copyfile(malformed[name], copy)
    proc = compat(str(copy), "add-header-ext", "0x71c0d3e5", "qcow2kit test data")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    cluster_bits = struct.unpack(">I", copy.read_bytes()[20:24])[0]
    digest = hashlib.sha256(copy.read_bytes()[:1 << cluster_bits]).hexdigest()
    assert digest == GOLDEN["malformed"][name]["edit"]


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_info_and_check_as_qemu(malformed: Dict[str, Path], name: str) -> None:
    """info --qemu and check say what qemu-img says (last duplicate wins, a short
    feature table zero-padded), or refuse with its message where it refuses."""
    path = malformed[name]
    for qemu_args, our_args in ((["info"], ["info", "--qemu"]),
                                (["info", "--output=json"], ["info", "--qemu", "--json"]),
                                (["check"], ["check"]),
                                (["check", "--output=json"], ["check", "--json"])):
        assert ours_says(path, *our_args) == qemu_says(qemu_args[0], path, *qemu_args[1:])
    code, _, err = ours_says(path, "info")
    assert code == 0, err


def test_last_duplicate_wins(malformed: Dict[str, Path], tmp_path: Path) -> None:
    """Of two feature name tables qemu keeps the last: bit 40 is "second"."""
    path = tmp_path / "duplicates.qcow2"
    shutil.copyfile(malformed["duplicates"], path)
    set_incompatible(path, 40)
    theirs = qemu_says("info", path)
    assert theirs[2] == [f"qcow2kit: Could not open '{path.name}': Unsupported qcow2 "
                         "feature(s): second"]
    assert ours_says(path, "info", "--qemu") == theirs
    code, out, _ = ours_says(path, "info")
    assert code == 0 and b"incompatible: second (bit 40, unknown)" in out


@pytest.mark.parametrize("magic,data,refusal", [
    (imagekit.BITMAPS_MAGIC, bytes(16), "bitmaps_ext: Invalid extension length"),
    (imagekit.CRYPTO_MAGIC, bytes(16),
     "CRYPTO header extension only expected with LUKS encryption method")])
def test_edit_warns_where_qemu_refuses(image_copy, tmp_path: Path, magic: int, data: bytes,
                                       refusal: str) -> None:
    """The qcow2kit command makes the image, warning that qemu will refuse it; the compat
    shim makes the same bytes silently, as qcow2.py would."""
    path = image_copy("v3")
    copy = tmp_path / "copy.qcow2"
    shutil.copyfile(path, copy)
    blob = tmp_path / "data.bin"
    blob.write_bytes(data)
    code, _, err = ours_says(path, "add-header-ext", hex(magic), "--data-file", str(blob))
    assert code == 0 and len(err) == 1, err
    assert err[0].startswith("qcow2kit: warning: qemu will refuse to open the image: ")
    assert refusal in qemu_says("info", path)[2][0]
    proc = compat(str(copy), "add-header-ext-stdio", hex(magic), stdin=data)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert copy.read_bytes() == path.read_bytes()
