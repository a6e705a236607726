"""`qcow2kit bitmaps`: dirty extents equal to what qemu exports, warnings on crafted images.

qemu's truth is the bitmap as qemu-nbd exports it (`-B NAME`), read back with
`qemu-img map` over NBD: with `x-dirty-bitmap`, ranges with `"data": false` are dirty.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

import imagekit
from qcow2kit import open_image
from qcow2kit.bitmaps import BitmapNotFound, BitmapsReport, bitmap_report
from ourcmd import QCOW2KIT

KIB, MIB = 1 << 10, 1 << 20
SIZE = 600 * MIB + 7680  # a multiple of 512, of no granularity above it
CLUSTERS = (4 * KIB, 64 * KIB)
GRANULARITIES = {"a512": 512, "a4k": 4 * KIB, "a64k": 64 * KIB, "d4k": 4 * KIB,
                 "late64k": 64 * KIB, "empty": 64 * KIB}
# Writes at the start, across the 16 MiB and 256 MiB a data cluster covers at 512 B
# granularity (4k and 64k clusters), scattered, and a zero write and a discard.
EARLY_WRITES = ("write -P 0x11 0 1k", "write -P 0x12 3146240 1536",
                "write -P 0x13 16776192 2k", "write -P 0x14 100M 66560",
                "write -P 0x15 268434944 1k", "write -P 0x16 419442688 300k")
# The last 1 KiB ends the disk inside a 4k and a 64k granule.
LATE_WRITES = (f"write -P 0x21 {SIZE - KIB} 1k", "write -P 0x22 5M 10M",
               "write -P 0x23 16777728 512", "write -z 200M 128k", "discard 300M 64k")

Extent = Tuple[int, int]


# --- images --------------------------------------------------------------------------

def add_bitmap(path: Path, name: str, granularity: int) -> None:
    imagekit.run("qemu-img", "bitmap", "--add", "-g", str(granularity), path.name, name,
                 cwd=path.parent)


def build(directory: Path, cluster: int) -> Path:
    """a* see every write, d4k only the early ones, late64k only the late ones."""
    path = imagekit.create(directory / f"matrix_{cluster}.qcow2", str(SIZE),
                           cluster_size=str(cluster))
    for name in ("a512", "a4k", "a64k", "d4k"):
        add_bitmap(path, name, GRANULARITIES[name])
    imagekit.qemu_io(path, *EARLY_WRITES)
    imagekit.run("qemu-img", "bitmap", "--disable", path.name, "d4k", cwd=directory)
    add_bitmap(path, "late64k", GRANULARITIES["late64k"])
    imagekit.qemu_io(path, *LATE_WRITES)
    add_bitmap(path, "empty", GRANULARITIES["empty"])
    return path


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Dict[int, Path]:
    directory = tmp_path_factory.mktemp("bitmaps")
    return {cluster: build(directory, cluster) for cluster in CLUSTERS}


@pytest.fixture
def crafted(matrix: Dict[int, Path], tmp_path: Path) -> Path:
    """A private copy of the 4k-cluster image, to patch."""
    return Path(shutil.copy(matrix[4 * KIB], tmp_path / "crafted.qcow2"))


def entry(path: Path, name: str) -> dict:
    """The directory entry of bitmap name, with its offset in the file (no extra data)."""
    found = next(e for e in imagekit.bitmap_directory(path) if e["name"] == name)
    return {**found, "offset": found["name_offset"] - 24}


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def table_entry(path: Path, name: str, index: int) -> Tuple[int, int]:
    """(file offset, value) of entry index of the bitmap's table."""
    offset = entry(path, name)["table_offset"] + 8 * index
    with open(path, "rb") as f:
        f.seek(offset)
        return offset, struct.unpack(">Q", f.read(8))[0]


def set_table_entry(path: Path, name: str, index: int, value: int) -> int:
    offset, _ = table_entry(path, name, index)
    imagekit.set_u64(path, offset, value)
    return offset


def past_eof(path: Path) -> int:
    """A cluster-aligned offset 1 MiB past the end of the file."""
    return (path.stat().st_size + MIB) // (64 * KIB) * (64 * KIB)


# --- qemu's and qcow2kit's answers ---------------------------------------------------

def merged(extents: List[Extent]) -> List[Extent]:
    out: List[Extent] = []
    for start, length in extents:
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((start, length))
    return out


@contextmanager
def nbd_export(path: Path, name: str) -> Iterator[str]:
    """qemu-nbd serving path read-only with bitmap name; yields the socket path."""
    with tempfile.TemporaryDirectory() as sockdir:
        sock = f"{sockdir}/nbd.sock"
        proc = subprocess.Popen(["qemu-nbd", "-r", "-f", "qcow2", "-B", name, "-k", sock,
                                 path.name], cwd=path.parent, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while not Path(sock).exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"qemu-nbd exited: {proc.stderr.read().strip()}")
                if time.monotonic() > deadline:
                    raise RuntimeError("qemu-nbd did not create its socket")
                time.sleep(0.02)
            yield sock
        finally:
            proc.terminate()
            proc.communicate(timeout=20)


def qemu_extents(path: Path, name: str) -> List[Extent]:
    """The bitmap's dirty ranges as qemu exports them, merged."""
    with nbd_export(path, name) as sock:
        out = imagekit.run(
            "qemu-img", "map", "--output=json", "--image-opts",
            f"driver=nbd,server.type=unix,server.path={sock},"
            f"x-dirty-bitmap=qemu:dirty-bitmap:{name}")
    return merged([(m["start"], m["length"]) for m in json.loads(out) if not m["data"]])


def report(path: Path) -> BitmapsReport:
    with open_image(path) as image:
        return bitmap_report(image)


def ours(path: Path) -> Dict[str, List[Extent]]:
    """Every bitmap's extents by name (the first of a name)."""
    out: Dict[str, List[Extent]] = {}
    for b in report(path).bitmaps:
        out.setdefault(b.name, list(b.extents))
    return out


def warnings_of(path: Path) -> List[str]:
    return report(path).all_warnings


def without(extents: List[Extent], lo: int, hi: int) -> List[Extent]:
    """extents with the guest bytes lo..hi taken out."""
    out = []
    for start, length in extents:
        end = start + length
        out += [(s, e - s) for s, e in ((start, min(end, lo)), (max(start, hi), end)) if e > s]
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QCOW2KIT, "bitmaps", *args], capture_output=True, text=True)


def qemu_info_bitmaps(path: Path) -> list:
    return imagekit.qemu_json("info", path)["format-specific"]["data"].get("bitmaps", [])


# --- the extents equal qemu's --------------------------------------------------------

@pytest.mark.parametrize("cluster", CLUSTERS)
@pytest.mark.parametrize("name", sorted(GRANULARITIES))
def test_extents_equal_qemu(matrix: Dict[int, Path], cluster: int, name: str) -> None:
    path = matrix[cluster]
    with open_image(path) as image:
        result = bitmap_report(image, name)
    assert result.all_warnings == []
    (bitmap,) = result.bitmaps
    assert bitmap.granularity == GRANULARITIES[name]
    assert list(bitmap.extents) == qemu_extents(path, name)
    assert bitmap.dirty_bytes == sum(length for _, length in bitmap.extents)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_matrix_covers_the_cases(matrix: Dict[int, Path], cluster: int) -> None:
    """Start and end of the disk, several data clusters, some of them unallocated, and
    runs that cross from one data cluster to the next (16 MiB, 256 MiB at 512 B)."""
    bitmaps = {b.name: b for b in report(matrix[cluster]).bitmaps}
    assert bitmaps["a512"].extents[0] == (0, KIB)
    assert (16 * MIB - KIB, 2 * KIB) in bitmaps["a512"].extents
    assert (256 * MIB - 512, KIB) in bitmaps["a512"].extents
    assert bitmaps["a64k"].extents[0] == (0, 64 * KIB)
    assert bitmaps["a64k"].extents[-1] == (SIZE // (64 * KIB) * 64 * KIB, SIZE % (64 * KIB))
    assert bitmaps["a4k"].extents[-1][0] + bitmaps["a4k"].extents[-1][1] == SIZE
    kinds = {"all-zeroes", "serialized"} if cluster == 4 * KIB else {"serialized"}
    assert {t.kind for t in bitmaps["a512"].table} == kinds
    assert len(bitmaps["a512"].table) == -(-SIZE // 512 // (8 * cluster))  # 38, 3
    assert bitmaps["d4k"].extents != bitmaps["a4k"].extents
    assert bitmaps["late64k"].extents[0] == (5 * MIB, 10 * MIB)
    assert list(bitmaps["empty"].extents) == [] and bitmaps["empty"].dirty_bytes == 0
    assert [b.flag_names for b in bitmaps.values()] == [["auto"]] * 3 + [[]] + [["auto"]] * 2


def test_all_ones_entries_equal_qemu(crafted: Path) -> None:
    """qemu accepts all-ones entries: each is a whole cluster of set bits, the last one
    cut at the end of the disk."""
    for index in (9, 10, 11):  # guest 144 MiB..192 MiB, all-zeroes before
        set_table_entry(crafted, "a512", index, 1)
    set_table_entry(crafted, "a512", 37, 1)  # 592 MiB..the end
    extents = ours(crafted)["a512"]
    assert (144 * MIB, 48 * MIB) in extents
    assert extents[-1] == (592 * MIB, SIZE - 592 * MIB)
    assert extents == qemu_extents(crafted, "a512")
    assert warnings_of(crafted) == []


def test_random_bits_equal_qemu(crafted: Path) -> None:
    """Dense data: four serialized clusters of a512 (not the last, which has a tail)
    overwritten with random bytes, so runs start and end at every bit position."""
    with open_image(crafted) as image:
        (a512,) = bitmap_report(image, "a512").bitmaps
    clusters = [t.offset for t in a512.table[:-1] if t.kind == "serialized"][:4]
    assert len(clusters) == 4
    for offset in clusters:
        patch(crafted, offset, os.urandom(4 * KIB))
    extents = ours(crafted)["a512"]
    assert len(extents) > 4 * 32768 // 5  # about a quarter of the bits start a run
    assert extents == qemu_extents(crafted, "a512")
    assert warnings_of(crafted) == []


# --- warnings on crafted images ------------------------------------------------------

def test_invalid_entry_warned_rest_shown(crafted: Path) -> None:
    before = ours(crafted)
    offset, value = table_entry(crafted, "a512", 1)
    set_table_entry(crafted, "a512", 1, value | 1)
    proc = subprocess.run(["qemu-img", "info", crafted.name], cwd=crafted.parent,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "a512" in proc.stderr
    assert warnings_of(crafted) == [
        f"bitmap 'a512' table entry 1 at offset {offset:#x}: invalid: data offset "
        f"{value:#x} with bit 0 set; guest bytes 0x1000000..0x2000000 not decoded"]
    after = ours(crafted)
    assert after["a512"] == without(before["a512"], 16 * MIB, 32 * MIB)
    assert {k: v for k, v in after.items() if k != "a512"} == \
           {k: v for k, v in before.items() if k != "a512"}
    proc = cli(str(crafted))
    assert proc.returncode == 0
    assert proc.stderr.startswith("qcow2kit: warning: bitmap 'a512' table entry 1")
    assert proc.stdout.count("bitmap '") == len(GRANULARITIES)


def test_reserved_entry_bits(crafted: Path) -> None:
    before = ours(crafted)
    offset, value = table_entry(crafted, "a512", 0)
    set_table_entry(crafted, "a512", 0, value | 1 << 60 | 1 << 3)
    assert warnings_of(crafted) == [
        f"bitmap 'a512' table entry 0 at offset {offset:#x}: reserved bits set "
        f"(0x1000000000000008)"]
    assert ours(crafted) == before


def test_in_use_and_reserved_flags(crafted: Path) -> None:
    e = entry(crafted, "a4k")
    patch(crafted, e["offset"] + 12, struct.pack(">I", e["flags"] | 1))
    label = f"bitmap 'a4k' (directory entry at offset {e['offset']:#x})"
    assert warnings_of(crafted) == [
        f"{label}: flag in-use is set: the bitmap was not saved correctly and may be "
        f"inconsistent"]
    (qemu_view,) = [b for b in qemu_info_bitmaps(crafted) if b["name"] == "a4k"]
    (mine,) = json.loads(cli("--json", "--name", "a4k", str(crafted)).stdout)["bitmaps"]
    assert {k: mine[k] for k in ("name", "granularity", "flags")} == qemu_view
    assert mine["flags"] == ["in-use", "auto"]
    patch(crafted, e["offset"] + 12, struct.pack(">I", e["flags"] | 0x84))
    assert warnings_of(crafted) == [f"{label}: reserved flag bits set (0x80)"]
    (mine,) = json.loads(cli("--json", "--name", "a4k", str(crafted)).stdout)["bitmaps"]
    assert mine["flags"] == ["auto", "extra-data-compatible"]
    assert mine["reserved-flags"] == 0x80


def test_autoclear_bit_clear(crafted: Path) -> None:
    before = ours(crafted)
    with open(crafted, "r+b") as f:
        f.seek(95)
        byte = f.read(1)[0]
        f.seek(95)
        f.write(bytes([byte & ~1]))
    assert qemu_info_bitmaps(crafted) == []  # qemu ignores inconsistent bitmaps
    expected = ("header.autoclear_features at offset 0x58: bit 0 (bitmaps) is clear while "
                "the bitmaps extension is present: the bitmap data must be considered "
                "inconsistent")
    assert warnings_of(crafted) == [expected]
    assert ours(crafted) == before
    proc = cli("--json", str(crafted))
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout)["warnings"] == [expected]


def test_data_cluster_beyond_eof(crafted: Path) -> None:
    before = ours(crafted)
    beyond = past_eof(crafted)
    offset = set_table_entry(crafted, "a512", 0, beyond)
    size = crafted.stat().st_size
    assert warnings_of(crafted) == [
        f"bitmap 'a512' table entry 0 at offset {offset:#x}: data cluster at {beyond:#x} "
        f"runs past the end of the file ({size} bytes); read as zeros there, as QEMU "
        f"reads it"]
    assert ours(crafted)["a512"] == without(before["a512"], 0, 16 * MIB)
    assert cli(str(crafted)).returncode == 0


def test_shared_data_cluster(crafted: Path) -> None:
    """A cluster that two entries point at is decoded once: a crafted table cannot
    make the work grow beyond the file."""
    before = ours(crafted)
    first, value = table_entry(crafted, "a512", 0)
    second = set_table_entry(crafted, "a512", 1, value)
    assert warnings_of(crafted) == [
        f"bitmap 'a512' table entry 1 at offset {second:#x}: data cluster at {value:#x} is "
        f"also used by bitmap 'a512' table entry 0 at offset {first:#x}; guest bytes "
        f"0x1000000..0x2000000 not decoded"]
    assert ours(crafted)["a512"] == without(before["a512"], 16 * MIB, 32 * MIB)


def test_table_beyond_eof(crafted: Path) -> None:
    e = entry(crafted, "a64k")
    beyond = past_eof(crafted)
    imagekit.set_u64(crafted, e["offset"], beyond)
    index = [x["name"] for x in imagekit.bitmap_directory(crafted)].index("a64k")
    assert index == 2
    assert warnings_of(crafted) == [
        f"bitmap 'a64k' table at offset {beyond:#x}: lies past the end of the file; "
        f"read as zeros, as QEMU reads it"]
    assert ours(crafted)["a64k"] == []
    assert cli(str(crafted)).returncode == 0


def test_huge_table_size(crafted: Path) -> None:
    """2^32-1 entries in a small file: refused before the parser reads any."""
    e = entry(crafted, "a4k")
    patch(crafted, e["offset"] + 8, struct.pack(">I", 0xFFFFFFFF))
    start = time.monotonic()
    warnings = warnings_of(crafted)
    assert time.monotonic() - start < 2
    assert warnings[0] == (
        f"bitmap 'a4k' (directory entry at offset {e['offset']:#x}): bitmap_table_size is "
        f"4294967295, but a disk of {SIZE} bytes at granularity 4096 needs 5")
    assert warnings[1] == (
        f"bitmap 'a4k': bitmap_directory.entries[1].bitmap_table_size at offset "
        f"{e['offset'] + 8:#x}: 4294967295 entries exceed QEMU's limits (134217728 "
        f"entries, 512 MiB of bitmap data); no extents decoded")
    assert len(warnings) == 2
    proc = cli(str(crafted))
    assert proc.returncode == 0 and proc.stderr.count("qcow2kit: warning: ") == 2


def test_short_table(crafted: Path) -> None:
    before = ours(crafted)
    e = entry(crafted, "a512")
    patch(crafted, e["offset"] + 8, struct.pack(">I", 37))
    assert warnings_of(crafted) == [
        f"bitmap 'a512' (directory entry at offset {e['offset']:#x}): bitmap_table_size is "
        f"37, but a disk of {SIZE} bytes at granularity 512 needs 38"]
    assert ours(crafted)["a512"] == without(before["a512"], 592 * MIB, SIZE)


def test_duplicate_names(crafted: Path) -> None:
    first, second = entry(crafted, "a4k"), entry(crafted, "d4k")
    patch(crafted, second["name_offset"], b"a4k")
    assert warnings_of(crafted) == [
        f"bitmap 'a4k' (directory entry at offset {first['offset']:#x}): the name is also "
        f"used by the directory entry at offset {second['offset']:#x}",
        f"bitmap 'a4k' (directory entry at offset {second['offset']:#x}): the name is also "
        f"used by the directory entry at offset {first['offset']:#x}"]
    both = json.loads(cli("--json", "--name", "a4k", str(crafted)).stdout)["bitmaps"]
    assert [b["flags"] for b in both] == [["auto"], []]


def test_non_ascii_name(crafted: Path) -> None:
    e = entry(crafted, "a4k")
    patch(crafted, e["name_offset"], "\u00e44".encode())
    assert warnings_of(crafted) == [
        f"bitmap '\u00e44' (directory entry at offset {e['offset']:#x}): the name is not "
        f"ASCII"]
    proc = cli("--json", str(crafted))
    assert proc.returncode == 0
    assert "\u00e44" in [b["name"] for b in json.loads(proc.stdout)["bitmaps"]]


def bitmaps_extension(path: Path) -> int:
    (offset,) = [off for off, magic, _ in imagekit.extensions(path) if magic == 0x23852875]
    return offset


def _reserved_type(path: Path) -> str:
    patch(path, entry(path, "empty")["offset"] + 16, b"\x02")
    return "type 2 is reserved (1, dirty tracking, is the only one)"


def _granularity_32(path: Path) -> str:
    patch(path, entry(path, "empty")["offset"] + 17, b"\x20")  # still one table entry
    return "granularity_bits 32 is outside the 9..31 that qemu supports"


def _extra_data(path: Path) -> str:
    """8 bytes of extra data put before the name of the last entry, 'empty'."""
    e, ext = entry(path, "empty"), bitmaps_extension(path)
    patch(path, e["offset"] + 20, struct.pack(">I", 8))
    patch(path, e["offset"] + 24, bytes(8) + b"empty" + bytes(3))
    with open(path, "rb") as f:
        f.seek(ext + 16)
        size = struct.unpack(">Q", f.read(8))[0]
    imagekit.set_u64(path, ext + 16, size + 8)  # bitmap_directory_size
    return ("8 bytes of extra data without the extra-data-compatible flag: the bitmap must "
            "not be used")


def _unaligned_table(path: Path) -> str:
    e = entry(path, "empty")
    imagekit.set_u64(path, e["offset"], e["table_offset"] + 512)  # zeros there too
    return f"bitmap_table_offset {e['table_offset'] + 512:#x} is not aligned to a cluster"


@pytest.mark.parametrize("damage", [_reserved_type, _granularity_32, _extra_data,
                                    _unaligned_table])
def test_directory_entry_warnings(crafted: Path, damage) -> None:
    before = ours(crafted)
    label = f"bitmap 'empty' (directory entry at offset {entry(crafted, 'empty')['offset']:#x})"
    problem = damage(crafted)
    assert warnings_of(crafted) == [f"{label}: {problem}"]
    assert ours(crafted) == before


def test_unaligned_data_offset(crafted: Path) -> None:
    offset, value = table_entry(crafted, "a512", 0)
    set_table_entry(crafted, "a512", 0, value + 512)
    assert warnings_of(crafted) == [
        f"bitmap 'a512' table entry 0 at offset {offset:#x}: data offset {value + 512:#x} "
        f"is not aligned to a cluster"]


def test_autoclear_bit_without_extension(tmp_path: Path) -> None:
    plain = imagekit.create(tmp_path / "plain.qcow2", "1M")
    patch(plain, 95, b"\x01")
    assert warnings_of(plain) == ["header.autoclear_features at offset 0x58: bit 0 "
                                  "(bitmaps) is set without a bitmaps extension"]
    assert report(plain).bitmaps == []


@pytest.mark.parametrize("byte, bit", [(1200, 2), (4095, 7)], ids=["last-byte", "cluster-end"])
def test_tail_bits(crafted: Path, byte: int, bit: int) -> None:
    """a64k has 9601 bits: bits 1..7 of byte 1200 and the rest of the cluster are tail."""
    before = ours(crafted)
    offset, value = table_entry(crafted, "a64k", 0)
    with open(crafted, "r+b") as f:
        f.seek(value + byte)
        old = f.read(1)[0]
        f.seek(value + byte)
        f.write(bytes([old | 1 << bit]))
    assert warnings_of(crafted) == [
        f"bitmap 'a64k' table entry 0 at offset {offset:#x}: data cluster at {value:#x} "
        f"has non-zero bits past the end of the disk"]
    assert ours(crafted) == before


# --- the command line ----------------------------------------------------------------

def test_json_fields(matrix: Dict[int, Path]) -> None:
    path = matrix[64 * KIB]
    proc = cli("--json", str(path))
    assert proc.returncode == 0 and proc.stderr == ""
    data = json.loads(proc.stdout)
    assert data["warnings"] == []
    assert [{k: b[k] for k in ("name", "granularity", "flags")} for b in data["bitmaps"]] \
        == qemu_info_bitmaps(path)
    api = {b.name: b for b in report(path).bitmaps}
    for b in data["bitmaps"]:
        assert set(b) == {"name", "granularity", "flags", "reserved-flags", "type",
                          "granularity-bits", "bitmap-table-offset", "bitmap-table-size",
                          "bitmap-table", "dirty-extents", "dirty-bytes", "warnings"}
        mine = api[b["name"]]
        assert b["dirty-extents"] == [list(e) for e in mine.extents]
        assert b["dirty-bytes"] == mine.dirty_bytes
        assert b["bitmap-table"] == [{"kind": t.kind, "offset": t.offset, "reserved": 0}
                                     for t in mine.table]
        assert (b["type"], b["granularity-bits"]) == (1, mine.granularity_bits)
        assert len(b["bitmap-table"]) == b["bitmap-table-size"]


def test_name_option(matrix: Dict[int, Path]) -> None:
    path = matrix[4 * KIB]
    (only,) = json.loads(cli("--json", "--name", "d4k", str(path)).stdout)["bitmaps"]
    assert only["name"] == "d4k" and only["flags"] == []
    text = cli("--name", "a64k", str(path))
    assert text.returncode == 0 and text.stderr == ""
    assert text.stdout.startswith("bitmap 'a64k'\n  flags:       auto\n")
    assert "  granularity: 65536 bytes\n" in text.stdout
    assert "    0x0                0x10000\n" in text.stdout
    missing = cli("--name", "nope", str(path))
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == (
        f"qcow2kit: {path}: bitmap directory: no bitmap named 'nope' (the image has: "
        f"'a512', 'a4k', 'a64k', 'd4k', 'late64k', 'empty')\n")
    with open_image(path) as image, pytest.raises(BitmapNotFound):
        bitmap_report(image, "nope")


def test_text_layout(matrix: Dict[int, Path]) -> None:
    proc = cli("--name", "late64k", str(matrix[4 * KIB]))
    lines = proc.stdout.splitlines()
    assert lines[:5] == ["bitmap 'late64k'", "  flags:       auto",
                         "  type:        1 (dirty tracking)", "  granularity: 65536 bytes",
                         lines[4]]
    assert lines[4].startswith("  table:       1 entries at 0x") and "(1 serialized)" in lines[4]
    dirty = next(line for line in lines if line.startswith("  dirty:"))
    assert dirty.endswith("extents") and lines[lines.index(dirty) + 1].split() == \
        ["start", "length"]


def test_no_bitmaps_and_unreadable(tmp_path: Path) -> None:
    plain = imagekit.create(tmp_path / "plain.qcow2", "1M")
    assert cli(str(plain)).stdout == "no bitmaps\n"
    assert json.loads(cli("--json", str(plain)).stdout) == {"bitmaps": [], "warnings": []}
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"\0" * 4096)
    proc = cli(str(junk))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"qcow2kit: {junk}: header.magic at offset 0x0: not a qcow2 image " \
                          f"(no QFI\\xfb magic)\n"


def test_unreadable_directory(crafted: Path) -> None:
    """No bitmap can be shown when the directory cannot be read (past the end of the
    file, its zeros are no valid entry): exit 1, one line."""
    imagekit.set_u64(crafted, bitmaps_extension(crafted) + 24, 1 << 40)  # directory offset
    proc = cli(str(crafted))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"qcow2kit: {crafted}: bitmaps_extension.bitmap_directory."
                           f"entries[0].len_name at offset 0x10000000012: 0 is below the "
                           f"minimum 1 (read as zeros: the bitmap directory runs past the "
                           f"end of the file)\n")
