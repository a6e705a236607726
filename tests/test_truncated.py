"""Truncated copies of every image kind, against qemu: the matrix kind x cut x command.

Each kind is cut in each structure it has (the header's cluster, the active L1 table,
an L2 table, a refcount block, the snapshot table, the bitmap directory, a data
cluster, a compressed cluster), at an offset found with struct in the intact image,
independent of qcow2kit. qemu reads zeros past the end of a file; on every cut copy
`check --json` gives qemu-img check's JSON and exit status, `info --qemu` (text and
JSON) qemu-img info's output, `map --json` qemu-img map's, and the other commands
answer (exit 0) wherever qemu-img info opens the image.
"""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import imagekit
from sidebyside import LUKS_OPTS, qcow2kit, qemu_img

COPIED = 1 << 63
COMPRESSED = 1 << 62
OFFSET = 0x00FFFFFFFFFFFE00
EXTERNAL_DATA_FILE = 1 << 2
BITMAPS_MAGIC = 0x23852875

SNAPSHOT_KINDS = {"snapshots", *(f"refcount_{w}" for w in (2, 4, 8, 16, 32, 64))}
BITMAP_KINDS = {"bitmaps", "bitmaps_crafted"}
COMPRESSED_KINDS = {"zlib", "zlib_4k", "zstd"}
EXTERNAL_KINDS = {"data_file", "data_file_raw"}


def cuts_of(kind: str) -> List[str]:
    """The structures a kind has, where its copies are cut."""
    out = ["header_cluster", "l1", "l2", "refcount_block"]
    if kind not in EXTERNAL_KINDS:
        out.append("data")
    if kind in SNAPSHOT_KINDS:
        out.append("snapshot_table")
    if kind in BITMAP_KINDS:
        out.append("bitmap_directory")
    if kind in COMPRESSED_KINDS:
        out.append("compressed")
    return out


CASES = [(kind, cut) for kind in imagekit.KINDS for cut in cuts_of(kind)]


# --- where to cut, found with struct ----------------------------------------------------

def _u64s(data: bytes, offset: int, count: int) -> List[int]:
    return list(struct.unpack_from(f">{count}Q", data, offset))


def cut_offset(path: Path, cut: str) -> int:
    """The offset inside structure cut of the intact image at path where its copy ends."""
    data = path.read_bytes()
    version, = struct.unpack_from(">I", data, 4)
    cluster_bits, = struct.unpack_from(">I", data, 20)
    cs = 1 << cluster_bits
    l1_size, l1_offset, reftable_offset = struct.unpack_from(">IQQ", data, 36)
    nb_snapshots, snapshot_offset = struct.unpack_from(">IQ", data, 60)
    incompatible = struct.unpack_from(">Q", data, 72)[0] if version >= 3 else 0
    extended = bool(incompatible & (1 << 4))
    l1 = _u64s(data, l1_offset, l1_size)
    l2_offset = next(e & OFFSET for e in l1 if e & OFFSET)
    step = 16 if extended else 8
    l2 = [struct.unpack_from(">Q", data, l2_offset + i)[0] for i in range(0, cs, step)]
    if cut == "header_cluster":
        return 200
    if cut == "l1":
        return l1_offset + l1_size * 8 // 16 * 8
    if cut == "l2":
        return l2_offset + cs // 2
    if cut == "refcount_block":
        return (_u64s(data, reftable_offset, 1)[0] & ~(cs - 1)) + cs // 2
    if cut == "data":
        return next(e & OFFSET for e in l2 if e & OFFSET and not e & COMPRESSED) + cs // 2
    if cut == "compressed":
        x = 62 - (cluster_bits - 8)
        return next(e & ((1 << x) - 1) for e in l2 if e & COMPRESSED) + 100
    if cut == "snapshot_table":
        assert nb_snapshots
        return snapshot_offset + 20
    if cut == "bitmap_directory":
        for off, magic, _ in imagekit.extensions(path):
            if magic == BITMAPS_MAGIC:
                _, _, size, offset = struct.unpack_from(">IIQQ", data, off + 8)
                return offset + size // 2
    raise AssertionError(f"no {cut} in {path}")


@pytest.fixture(scope="module")
def truncated(images: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """A copy of an image kind (with the files beside it) cut in a structure."""
    made: Dict[Tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("truncated")

    def make(kind: str, cut: str) -> Path:
        if (kind, cut) not in made:
            src = images[kind]
            offset = cut_offset(src, cut)
            assert 0 < offset < src.stat().st_size, (kind, cut, offset)
            folder = root / f"{kind}-{cut}"
            shutil.copytree(src.parent, folder)
            copy = folder / src.name
            with open(copy, "r+b") as f:
                f.truncate(offset)
            made[(kind, cut)] = copy
        return made[(kind, cut)]
    return make


def qemu(command: str, path: Path, *args: str):
    """qemu-img COMMAND ARGS on the image, beside it (the LUKS image gets its secret)."""
    if path.name.startswith("luks") and command != "info":
        image = ["--object", imagekit.SECRET, "--image-opts", LUKS_OPTS.format(path.name)]
    else:
        image = ["-f", "qcow2", path.name] if command != "info" else [path.name]
    return qemu_img(command, *args, *image, cwd=path.parent)


def ours(path: Path, command: str, *args: str):
    result = qcow2kit(command, path.name, *args, cwd=path.parent)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result


def qemu_opens(path: Path) -> bool:
    return qemu("info", path).returncode == 0


def _no_filename(data: Optional[dict]) -> Optional[dict]:
    return None if data is None else {k: v for k, v in data.items() if k != "filename"}


# --- the matrix --------------------------------------------------------------------------

@pytest.mark.parametrize("kind,cut", CASES)
def test_check_json_equals_qemu(truncated, kind: str, cut: str) -> None:
    path = truncated(kind, cut)
    theirs = qemu("check", path, "--output=json")
    got = ours(path, "check", "--json")
    assert got.exit_code == theirs.returncode, (got.stderr, theirs.stderr)
    expected = json.loads(theirs.stdout) if theirs.stdout.strip() else None
    answer = json.loads(got.stdout) if got.stdout.strip() else None
    assert _no_filename(answer) == _no_filename(expected)


@pytest.mark.parametrize("kind,cut", CASES)
def test_info_qemu_equals_qemu(truncated, kind: str, cut: str) -> None:
    path = truncated(kind, cut)
    for qemu_args, our_args in (([], ["--qemu"]), (["--output=json"], ["--qemu", "--json"])):
        theirs = qemu("info", path, *qemu_args)
        got = ours(path, "info", *our_args)
        if theirs.returncode:
            assert got.exit_code == 1, got.stdout  # where qemu refuses, refusing is fine
            continue
        assert got.exit_code == 0, got.stderr
        assert got.stdout_bytes == theirs.stdout


@pytest.mark.parametrize("kind,cut", CASES)
def test_map_json_equals_qemu(truncated, kind: str, cut: str) -> None:
    path = truncated(kind, cut)
    theirs = qemu("map", path, "--output=json")
    got = ours(path, "map", "--json")
    if theirs.returncode:  # qemu refuses to open it: map may refuse, or map the data
        assert got.exit_code in (0, 1), got.stderr
        return
    assert got.exit_code == 0, got.stderr
    assert got.stdout_bytes == theirs.stdout


# The cuts in a structure that every command reads (as qemu-img info does on opening).
READ_ON_OPEN = {"l1", "snapshot_table", "bitmap_directory"}

COMMANDS = {
    "info": ["info"],
    "info-json": ["info", "--json"],
    "snapshots": ["snapshots"],
    "bitmaps": ["bitmaps"],
    "whatis": ["whatis", "0", "0x10000", "0x30000"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind,cut", CASES)
def test_commands_answer(truncated, kind: str, cut: str, command: str) -> None:
    """Wherever qemu-img info opens the copy, the command answers, and what lies past
    the end of the file is named on stderr (in the output for info)."""
    path = truncated(kind, cut)
    got = ours(path, *COMMANDS[command])
    if not qemu_opens(path):
        assert got.exit_code in (0, 1), got.stderr
        return
    assert got.exit_code == 0, got.stderr
    if cut not in READ_ON_OPEN:
        return
    if command == "info":
        assert "Findings:\n" in got.stdout
        assert "past the end of the file" in got.stdout.split("Findings:\n")[1]
    elif command == "info-json":
        assert json.loads(got.stdout)["qcow2kit"]["findings"], got.stdout
    elif command != "bitmaps" or kind in BITMAP_KINDS:
        assert "past the end of the file" in got.stderr


LAYOUT_KINDS = ("v3", "snapshots", "zlib", "extended_l2", "backing", "luks", "refcount_1")


@pytest.mark.parametrize("kind,cut", [c for c in CASES if c[0] in LAYOUT_KINDS])
def test_layout_draws(truncated, kind: str, cut: str) -> None:
    """layout draws every cut copy of a sample of kinds (drawing is slow to run on all)."""
    path = truncated(kind, cut)
    picture = path.parent / "layout.svg"
    got = ours(path, "layout", "-o", picture.name)
    assert got.exit_code == 0, got.stderr
    assert picture.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
