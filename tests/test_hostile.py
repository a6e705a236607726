"""Hostile images: each defect the fuzzer found, as a crafted image and what it must give.

Images start from qemu-made ones and are damaged with plain struct arithmetic at the
offsets of qemu's docs/interop/qcow2.txt, independent of the code under test. Each
command runs as a child process under an address-space limit and a timeout, so that a
blow-up or a hang fails the test instead of the machine.
"""
from __future__ import annotations

import hashlib
import os
import resource
import struct
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

import imagekit
from ourcmd import QCOW2KIT

MEMORY = 512 << 20  # address space of a command: a fresh Python with numpy takes ~150 MiB
TIMEOUT = 60
# header field offsets (qcow2.txt)
BACKING_OFFSET, BACKING_SIZE, CLUSTER_BITS, SIZE = 8, 16, 20, 24
L1_SIZE, L1_OFFSET, HEADER_LENGTH = 36, 40, 100
SNAPSHOTS_OFFSET = 64
BITMAPS_MAGIC = 0x23852875


def qcow2kit(*args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """The qcow2kit command with a memory limit and a timeout."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run([*QCOW2KIT, *args], capture_output=True,
                          text=True, timeout=TIMEOUT, preexec_fn=limit, cwd=cwd, env=env)


def one_line_error(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """The single error line of a failed command, checked."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines()
             if not line.startswith("qcow2kit: warning: ")]
    assert len(lines) == 1 and lines[0].startswith("qcow2kit: "), proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_u(path: Path, offset: int, fmt: str) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bitmaps_extension(path: Path) -> int:
    """Offset of the bitmaps extension's data."""
    return next(off for off, magic, _ in imagekit.extensions(path) if magic == BITMAPS_MAGIC) + 8


# --- the header is checked before it sizes anything ------------------------------------

def test_no_room_for_extensions(image_copy) -> None:
    """header_length equal to the cluster size leaves no extension area: shown as none
    (was an AttributeError), and an edit that needs the area is refused cleanly."""
    path = image_copy("cluster_4k")
    patch(path, HEADER_LENGTH, struct.pack(">I", 4096))
    proc = qcow2kit("dump", "--exts-only", str(path))
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    assert qcow2kit("info", str(path)).returncode == 0
    before = digest(path)
    one_line_error(qcow2kit("set-feature-bit", str(path), "compatible", "0"),
                   "more than the first cluster (4096)")
    assert digest(path) == before


def test_cluster_bits_checked_before_parsing(image_copy) -> None:
    """cluster_bits 2^32-1 used to build a 512 MiB integer (1 << cluster_bits) before
    the check; now the check comes first, for opening and for an edit's re-parse."""
    path = image_copy("v3")
    before = digest(path)
    one_line_error(qcow2kit("set-header", str(path), "cluster_bits", "0xffffffff"),
                   "the new header would not parse: header.cluster_bits at offset 0x14: "
                   "4294967295 is above the maximum 21")
    assert digest(path) == before
    patch(path, CLUSTER_BITS, struct.pack(">I", 0xFFFFFFFF))
    for command in ("dump", "map", "info"):
        one_line_error(qcow2kit(command, str(path)),
                       "header.cluster_bits at offset 0x14: 4294967295 is above the maximum 21")


def test_header_length_edit_refused_before_allocating(image_copy) -> None:
    """set-header header_length 2^32-1 used to allocate 4 GiB of header first."""
    path = image_copy("v3")
    before = digest(path)
    one_line_error(qcow2kit("set-header", str(path), "header_length", "0xffffffff"),
                   "header_length 4294967295 is larger than the cluster (65536)")
    assert digest(path) == before


# --- offsets and sizes the header points with -----------------------------------------

def test_backing_name_longer_than_qemu_allows(image_copy) -> None:
    """A backing file name is at most 1023 bytes (QEMU); dump still shows the header."""
    path = image_copy("backing")
    patch(path, BACKING_SIZE, struct.pack(">I", 1024))
    offset = read_u(path, BACKING_OFFSET, ">Q")
    for command in ("info", "map", "convert"):
        args = [command, path.name] + (["out.raw"] if command == "convert" else [])
        one_line_error(qcow2kit(*args, cwd=path.parent),
                       f"header.backing_file_size at offset 0x10: a backing file name of "
                       f"1024 bytes at {offset:#x} is longer than QEMU's limit of 1023")
    proc = qcow2kit("dump", str(path))
    assert proc.returncode == 0 and f"{'backing_file_size':<25} 0x400\n" in proc.stdout


def test_backing_offset_past_first_cluster(image_copy) -> None:
    """An offset of 2^63 made the seek fail with a bare ValueError (a traceback in the
    edits); QEMU refuses a backing file name that is not in the first cluster."""
    path = image_copy("backing")
    patch(path, BACKING_OFFSET, struct.pack(">Q", 1 << 63))
    for command in ("info", "map"):
        one_line_error(qcow2kit(command, str(path)),
                       "header.backing_file_offset at offset 0x8: 0x8000000000000000 is "
                       "past the first cluster (65536 bytes)")
    before = digest(path)
    one_line_error(qcow2kit("set-feature-bit", str(path), "compatible", "0"), "edit refused")
    assert digest(path) == before


def test_l1_table_too_small(image_copy) -> None:
    """A virtual size the L1 table cannot map (QEMU: "L1 table is too small") made map
    and convert walk 2^31 empty L1 entries."""
    path = image_copy("v3")
    patch(path, SIZE, struct.pack(">Q", 1 << 62))
    l1 = read_u(path, L1_OFFSET, ">Q")
    expected = (f"L1 table at offset {l1:#x}: 1 entries map 536870912 bytes, less than the "
                f"virtual disk size 4611686018427387904")
    for args in (["map", path], ["convert", path, "-"], ["cat", "--length", "512", path]):
        one_line_error(qcow2kit(*map(str, args)), expected)


def test_snapshot_l1_table_too_small(image_copy) -> None:
    """The same for a snapshot whose extra data claims a disk of 2^62 bytes."""
    path = image_copy("snapshots")
    entry = read_u(path, SNAPSHOTS_OFFSET, ">Q")
    patch(path, entry + 48, struct.pack(">Q", 1 << 62))  # extra data: disk_size
    l1 = read_u(path, entry, ">Q")
    one_line_error(qcow2kit("convert", "--snapshot", "1", str(path), "-"),
                   f"L1 table of snapshot 1 at offset {l1:#x}: 1 entries map 536870912 "
                   f"bytes, less than the virtual disk size 4611686018427387904")


def test_sparse_l1_table_maps_at_once(tmp_path: Path) -> None:
    """A 64 TiB disk with one cluster written: the 131072 L1 entries without an L2 table
    are one unallocated run, not one array per entry (14 s before)."""
    path = imagekit.create(tmp_path / "big.qcow2", "64T")
    imagekit.qemu_io(path, "write -P 0x11 1T 64k")
    start = time.monotonic()
    proc = qcow2kit("map", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 5
    assert proc.stdout == imagekit.run("qemu-img", "map", "--output=json", path.name,
                                       cwd=tmp_path)


# --- persistent bitmaps ------------------------------------------------------------------

@pytest.mark.parametrize("field, value, expected", [
    (0, struct.pack(">I", 65536),
     "bitmaps_extension.nb_bitmaps at offset {ext:#x}: 65536 bitmaps exceed QEMU's limit "
     "of 65535"),
    (8, struct.pack(">Q", 1024 * 65535 + 1),
     "bitmaps_extension.bitmap_directory_size at offset {size:#x}: 67107841 bytes exceed "
     "QEMU's limit of 67107840"),
    (16, struct.pack(">Q", 1 << 63),  # was a bare ValueError from the seek
     "bitmaps_extension.bitmap_directory at offset 0x8000000000000000: an offset or size "
     "larger than any file"),
])
def test_bitmaps_extension_checked_before_the_directory(image_copy, field: int, value: bytes,
                                                        expected: str) -> None:
    path = image_copy("bitmaps")
    ext = bitmaps_extension(path)
    patch(path, ext + field, value)
    for command in ("dump", "bitmaps"):
        one_line_error(qcow2kit(command, str(path)), expected.format(ext=ext, size=ext + 8))


def test_bitmap_table_beyond_qemu_limit(image_copy) -> None:
    """131073 entries of 4 KiB clusters: more than QEMU's 512 MiB of bitmap data. The
    bitmap is reported with a warning, the others are still shown; dump refuses."""
    path = image_copy("bitmaps")
    entry = imagekit.bitmap_directory(path)[0]["name_offset"] - 24
    patch(path, entry, struct.pack(">QI", 4096, 131073))
    proc = qcow2kit("bitmaps", str(path))
    assert proc.returncode == 0, proc.stderr
    assert (f"bitmap_table_size at offset {entry + 8:#x}: 131073 entries exceed QEMU's "
            f"limits (134217728 entries, 512 MiB of bitmap data); no extents decoded"
            in proc.stderr)
    assert "bitmap 'fine'" in proc.stdout and "bitmap 'disabled'" in proc.stdout
    one_line_error(qcow2kit("dump", str(path)), "131073 entries exceed QEMU's limits")


def test_million_entry_bitmap_table(tmp_path: Path) -> None:
    """A table of 2^20 entries (512-byte clusters: QEMU's limit) in a 9 MiB file: decoded
    in bulk and kept in arrays, where the generated parser took 850 MiB and 18 s."""
    path = imagekit.create(tmp_path / "c512.qcow2", "8M", cluster_size="512")
    imagekit.run("qemu-img", "bitmap", "--add", path.name, "b", cwd=tmp_path)
    os.truncate(path, 9 << 20)
    entry = imagekit.bitmap_directory(path)[0]["name_offset"] - 24
    patch(path, entry, struct.pack(">QI", 1 << 20, 1 << 20))
    start = time.monotonic()
    proc = qcow2kit("bitmaps", str(path))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 20
    assert "bitmap_table_size is 1048576, but a disk of 8388608 bytes" in proc.stderr
    assert "table:       1048576 entries at 0x100000 (1048576 all-zeroes)" in proc.stdout


def test_bitmap_name_longer_than_qemu_allows(image_copy) -> None:
    """A 1100-byte name (QEMU allows 1023) is a warning; the bitmap is still shown."""
    path = image_copy("bitmaps")
    ext = bitmaps_extension(path)
    first = imagekit.bitmap_directory(path)[0]
    name = b"n" * 1100
    entry = struct.pack(">QIIBBHI", first["table_offset"], first["table_size"],
                        first["flags"], 1, first["granularity_bits"], len(name), 0) + name
    entry += bytes(-len(entry) % 8)
    offset = -(-path.stat().st_size // 4096) * 4096
    patch(path, offset, entry)
    patch(path, ext, struct.pack(">IIQQ", 1, 0, len(entry), offset))
    proc = qcow2kit("bitmaps", str(path))
    assert proc.returncode == 0, proc.stderr
    assert (f"qcow2kit: warning: bitmap '{'n' * 1100}' (directory entry at offset "
            f"{offset:#x}): the name is 1100 bytes long, more than QEMU's limit of 1023: "
            f"qemu refuses such a bitmap\n") in proc.stderr


def test_invalid_subcluster_bitmap_is_located(image_copy) -> None:
    """An extended L2 entry whose subcluster 0 is both allocated and zero: the error now
    names the L2 entry and its offset (it had no offset)."""
    path = image_copy("extended_l2")
    l2 = read_u(path, read_u(path, L1_OFFSET, ">Q"), ">Q") & 0x00FFFFFFFFFFFE00
    patch(path, l2 + 8, struct.pack(">Q", 1 << 32 | 1))
    one_line_error(qcow2kit("map", str(path)),
                   f"L2 table (L1 entry 0) entry 0 at offset {l2:#x}: invalid subcluster bitmap")


def test_offset_past_any_file_is_described(image_copy) -> None:
    """An encryption header at 2^63: the seek fails in Python with a ValueError, which the
    error line used to show as "ValueError: cannot fit 'int' into an offset-sized integer"."""
    path = image_copy("luks")
    ext = next(off for off, magic, _ in imagekit.extensions(path) if magic == 0x0537BE77)
    patch(path, ext + 8, struct.pack(">Q", 1 << 63))
    line = one_line_error(qcow2kit("info", str(path)),
                          "full_disk_encryption_extension.encryption_header at offset "
                          "0x8000000000000000: an offset or size larger than any file")
    assert "Error" not in line


# --- file names from the image --------------------------------------------------------------

def test_nul_in_backing_name(image_copy) -> None:
    """Opening a backing file named with NULs raised "ValueError: embedded null byte";
    QEMU reads the name as a C string, so an all-NUL name is no backing file at all."""
    path = image_copy("backing")
    offset, size = read_u(path, BACKING_OFFSET, ">Q"), read_u(path, BACKING_SIZE, ">I")
    patch(path, offset, bytes(size))
    proc = qcow2kit("map", "--json", path.name, cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == imagekit.run("qemu-img", "map", "--output=json", path.name,
                                       cwd=path.parent)


def test_nul_in_data_file_name(image_copy) -> None:
    """The external data file name is cut at its first NUL too (it was a ValueError);
    with nothing before it, the image names no data file."""
    path = image_copy("data_file")
    ext = next(off for off, magic, _ in imagekit.extensions(path) if magic == 0x44415441)
    name_end = ext + 8 + read_u(path, ext + 4, ">I")
    patch(path, name_end - 1, b"\0")
    one_line_error(qcow2kit("convert", path.name, "-", cwd=path.parent),
                   "external data file: data_file.dat: No such file or directory")
    patch(path, ext + 8, b"\0")
    one_line_error(qcow2kit("convert", path.name, "-", cwd=path.parent),
                   "external data file: the image keeps its data in an external data file "
                   "and does not name it")


def test_newline_in_backing_name_keeps_the_error_on_one_line(image_copy) -> None:
    """Found by the long fuzzing run: a backing file name with a newline (a missing
    file) printed a two-line error."""
    path = image_copy("backing")
    with open(path, "r+b") as f:
        offset = int.from_bytes(f.read(16)[8:16], "big")
        f.seek(offset + len("backing_b"))
        f.write(b"\n")
    proc = subprocess.run([*QCOW2KIT, "map", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "backing_b\\nse.qcow2" in proc.stderr
