"""qcow2kit check against read-only qemu-img check: the same report on stdout, the same
JSON, the same stderr lines and the same exit status, on every image kind and on
copies damaged by hand (with struct, independent of qcow2kit)."""
from __future__ import annotations

import json
import shutil
import struct
import tracemalloc
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

import imagekit
from qcow2kit import check, open_image, tables
from sidebyside import LUKS_OPTS, qcow2kit, qemu_img

CRAFTED = "bitmaps_crafted"  # qemu refuses to open it
KINDS = [k for k in imagekit.KINDS if k != CRAFTED]

COPIED = 1 << 63
COMPRESSED = 1 << 62
OFFSET = 0x00FFFFFFFFFFFE00


# --- running both ----------------------------------------------------------------------

def run_qemu(path: Path, *args: str) -> Tuple[int, str, List[str]]:
    """qemu-img check ARGS on the image (read-only), in its folder; stderr lines with
    qemu-img's program name as qcow2kit's."""
    if path.name.startswith("luks"):
        image = ["--object", imagekit.SECRET, "--image-opts", LUKS_OPTS.format(path.name)]
    else:
        image = ["-f", "qcow2", path.name]
    proc = qemu_img("check", *args, *image, cwd=path.parent)
    lines = [f"qcow2kit: {line[10:]}" if line.startswith("qemu-img: ") else line
             for line in proc.stderr.decode().splitlines()]
    return proc.returncode, proc.stdout.decode(), lines


def run_ours(path: Path, *args: str) -> Tuple[int, str, List[str]]:
    result = qcow2kit("check", *args, path.name, cwd=path.parent)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.stdout, result.stderr.splitlines()


def assert_like_qemu(path: Path) -> Tuple[int, str, List[str]]:
    """Both reports and both JSON outputs are equal (JSON up to the file name qemu
    was given); returns our exit status, report and stderr lines."""
    qemu, ours = run_qemu(path), run_ours(path)
    assert ours == qemu
    qemu_json, ours_json = run_qemu(path, "--output=json"), run_ours(path, "--json")
    if path.name.startswith("luks"):  # qemu was given an option string, not the name
        qemu_json = (qemu_json[0], qemu_json[1].replace(LUKS_OPTS.format(path.name),
                                                        path.name), qemu_json[2])
    assert ours_json == qemu_json
    return ours


@pytest.mark.parametrize("kind", KINDS)
def test_image_set_like_qemu(images: Dict[str, Path], kind: str) -> None:
    assert_like_qemu(images[kind])


def test_crafted_bitmap_entries_are_reported(images: Dict[str, Path]) -> None:
    """qemu cannot open the image; our check names the invalid entry of bitmap 'fine'
    and the data cluster it no longer references."""
    assert run_qemu(images[CRAFTED])[0] == 1
    code, out, err = run_ours(images[CRAFTED])
    assert code == 2
    assert err[0].startswith("ERROR bitmap 'fine' table entry 2 is invalid: the all-ones "
                             "flag is set on allocated data")
    assert err[1].startswith("Leaked cluster ") and len(err) == 2
    assert "1 errors were found" in out and "1 leaked clusters were found" in out


# --- damaging copies ---------------------------------------------------------------------

def u64(path: Path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack(">Q", f.read(8))[0]


def put(path: Path, offset: int, fmt: str, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


class Layout:
    """Where things are in an image, from its header."""

    def __init__(self, path: Path) -> None:
        self.path = path
        head = path.read_bytes()[:104]
        version, self.bits = struct.unpack_from(">I", head, 4)[0], \
            struct.unpack_from(">I", head, 20)[0]
        self.cs = 1 << self.bits
        self.l1_offset, self.reftable = struct.unpack_from(">QQ", head, 40)
        self.snapshots = struct.unpack_from(">Q", head, 64)[0]
        incompatible = struct.unpack_from(">Q", head, 72)[0] if version >= 3 else 0
        order = struct.unpack_from(">I", head, 96)[0] if version >= 3 else 4
        self.refcount_bits = 1 << order
        self.entry_size = 16 if incompatible & 16 else 8

    def l1(self, index: int) -> int:
        return self.l1_offset + 8 * index

    def l2(self, l1_index: int, index: int) -> int:
        return (u64(self.path, self.l1(l1_index)) & OFFSET) + self.entry_size * index

    def refcount(self, cluster: int) -> int:
        """Where a cluster's 16-bit refcount is."""
        assert self.refcount_bits == 16
        per_block = self.cs * 8 // 16
        block = u64(self.path, self.reftable + 8 * (cluster // per_block)) & ~0x1FF
        return block + 2 * (cluster % per_block)

    def add_refcount(self, cluster: int, delta: int) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.refcount(cluster))
            value = struct.unpack(">H", f.read(2))[0]
        put(self.path, self.refcount(cluster), ">H", value + delta)

    def compressed(self, which: Callable[[int, int], bool]) -> Tuple[int, int, int]:
        """(entry address, first host cluster, last host cluster) of the first
        compressed entry of L2 table 0 for which which(first, last) holds."""
        x = 62 - (self.bits - 8)
        for j in range(self.cs // 8):
            entry = u64(self.path, self.l2(0, j))
            if entry & COMPRESSED:
                offset = entry & ((1 << x) - 1)
                sectors = (entry >> x & (1 << (self.bits - 8)) - 1) + 1
                last = offset + sectors * 512 - (offset & 511) - 1
                if which(offset >> self.bits, last >> self.bits):
                    return self.l2(0, j), offset >> self.bits, last >> self.bits
        raise AssertionError("no such compressed entry")


def _data_cluster(at: Layout, l1_index: int = 0, index: int = 0) -> int:
    return (u64(at.path, at.l2(l1_index, index)) & OFFSET) >> at.bits


def _l2_table_cluster(at: Layout) -> int:
    return (u64(at.path, at.l1(0)) & OFFSET) >> at.bits


def _set_entry(at: Layout, address: int, value: int) -> None:
    put(at.path, address, ">Q", value)


def _flip(at: Layout, address: int, bits: int) -> None:
    _set_entry(at, address, u64(at.path, address) ^ bits)


def _free_cluster(at: Layout) -> None:
    """An unallocated L2 entry pointed at a cluster added at the end of the file."""
    size = at.path.stat().st_size
    with open(at.path, "r+b") as f:
        f.truncate(size + at.cs)
    _set_entry(at, at.l2(0, 3), COPIED | size)


def _just_past_the_end(at: Layout) -> None:
    """A reference that ends exactly one cluster past the end of the file: qemu
    reports it as exceeding the end by one cluster or more."""
    end = -(-at.path.stat().st_size // at.cs) * at.cs
    with open(at.path, "r+b") as f:
        f.truncate(end)
    _set_entry(at, at.l2(0, 3), COPIED | end)


def _snapshot_l1(at: Layout, value: Callable[[int], int]) -> None:
    _set_entry(at, at.snapshots, value(u64(at.path, at.snapshots)))


def _shared_lowered(at: Layout) -> None:
    """A data cluster the snapshots share (no copied flag) loses a reference."""
    j = next(j for j in range(64) if u64(at.path, at.l2(0, j)) & OFFSET and
             not u64(at.path, at.l2(0, j)) & COPIED)
    at.add_refcount(_data_cluster(at, 0, j), -1)


def _unreadable_block_for_copied_check(at: Layout, fault: int = 0x200) -> None:
    """Refcount block 1 misaligned (or past qemu's largest offset); only the copied
    flag check looks into it, for a data cluster far beyond the end of the file."""
    _set_entry(at, at.reftable + 8, u64(at.path, at.reftable) + at.cs | fault)
    _set_entry(at, at.l2(0, 3), COPIED | (at.cs * 8 // 16 + 100) << at.bits)


def _past_partial_last_cluster(at: Layout) -> None:
    """The file ends 1000 bytes into a cluster; a compressed entry's last sector ends
    512 bytes into the next one, less than a cluster past the end: qemu counts it."""
    end = at.path.stat().st_size // at.cs * at.cs + at.cs
    with open(at.path, "r+b") as f:
        f.truncate(end - at.cs + 1000)
    x = 62 - (at.bits - 8)
    j = next(j for j in range(at.cs // 8) if not u64(at.path, at.l2(0, j)))
    _set_entry(at, at.l2(0, j), COMPRESSED | 1 << x | end - 412)  # 2 sectors from 412 before


def _same_cluster(at: Layout, count: int, reserved: int = 0) -> None:
    """L2 entries 1..count-1 of table 0 made copies of entry 0 (the last one with
    reserved bits, so that the table is counted entry by entry)."""
    entry = u64(at.path, at.l2(0, 0))
    for j in range(1, count):
        _set_entry(at, at.l2(0, j), entry | (reserved if j == count - 1 else 0))


def _cut_before_the_l1(at: Layout) -> None:
    """Found by differential fuzzing: the file ends 2 bytes into the cluster before the
    L1 table's; qemu sees a file of whole sectors, so the L1 table is less than a
    cluster past its end and counted."""
    with open(at.path, "r+b") as f:
        f.truncate(at.l1_offset - at.cs + 2)


DAMAGES: Dict[str, Tuple[str, Callable[[Layout], None]]] = {
    "leak: refcount raised": ("v3", lambda at: at.add_refcount(_data_cluster(at), 1)),
    "corruption: refcount lowered": ("v3", lambda at: at.add_refcount(_data_cluster(at), -1)),
    "L2 entry at a free cluster": ("v3", _free_cluster),
    "L2 copied flag cleared": ("v3", lambda at: _flip(at, at.l2(0, 0), COPIED)),
    "L1 copied flag cleared": ("v3", lambda at: _flip(at, at.l1(0), COPIED)),
    "reference beyond the end of the file": (
        "v3", lambda at: _set_entry(at, at.l2(0, 3), COPIED | 100 << at.bits)),
    "data cluster at the cluster after the end of the file": ("v3", _just_past_the_end),
    "data cluster offset with bit 55": (
        "v3", lambda at: _set_entry(at, at.l2(0, 3), COPIED | 1 << 55)),
    "L2 table offset with bit 55": ("v3", lambda at: _flip(at, at.l1(0), 1 << 55)),
    "misaligned L2 table offset": ("v3", lambda at: _flip(at, at.l1(0), 0x200)),
    "misaligned data cluster": ("v3", lambda at: _flip(at, at.l2(0, 0), 0x200)),
    "L1 entry reserved bits": ("v3", lambda at: _flip(at, at.l1(0), 1 << 60)),
    "L2 entry reserved bits": ("v3", lambda at: _flip(at, at.l2(0, 0), 0x100)),
    "data cluster on the L1 table": (
        "v3", lambda at: _set_entry(at, at.l2(0, 3), COPIED | at.l1_offset)),
    "compressed 64k: refcount lowered": (
        "zlib", lambda at: at.add_refcount(at.compressed(lambda a, b: True)[1], -1)),
    "compressed 64k: refcount raised": (
        "zlib", lambda at: at.add_refcount(at.compressed(lambda a, b: True)[2], 1)),
    "compressed 4k: second cluster lowered": (
        "zlib_4k", lambda at: at.add_refcount(at.compressed(lambda a, b: a != b)[2], -1)),
    "compressed 4k: copied flag set": (
        "zlib_4k", lambda at: _flip(at, at.compressed(lambda a, b: True)[0], COPIED)),
    "snapshots: shared data cluster lowered": ("snapshots", _shared_lowered),
    "snapshots: active L2 table raised": (
        "snapshots", lambda at: at.add_refcount(_l2_table_cluster(at), 1)),
    "snapshot L1 table misaligned": (
        "snapshots", lambda at: _snapshot_l1(at, lambda v: v + 512)),
    "snapshot L1 table beyond the end of the file": (
        "snapshots", lambda at: _snapshot_l1(at, lambda v: 1 << 40)),
    "refcount overflow (1-bit refcounts)": (
        "refcount_1", lambda at: _set_entry(at, at.l2(0, 100), u64(at.path, at.l2(0, 0)))),
    "refcount overflow (8-bit refcounts)": ("refcount_8", lambda at: _same_cluster(at, 300)),
    "refcount overflow (8-bit refcounts), entry by entry": (
        "refcount_8", lambda at: _same_cluster(at, 300, 0x100)),
    "a data cluster referenced 300 times": ("v3", lambda at: _same_cluster(at, 300)),
    "a data cluster referenced 300 times, entry by entry": (
        "v3", lambda at: _same_cluster(at, 300, 0x100)),
    "refcount table entry reserved bits": ("v3", lambda at: _flip(at, at.reftable, 1)),
    "refcount block misaligned": ("v3", lambda at: _flip(at, at.reftable, 0x200)),
    "refcount block beyond the end of the file": (
        "v3", lambda at: _set_entry(at, at.reftable + 8, 100 << at.bits)),
    "refcount block misaligned, met by the copied flag check": (
        "v3", _unreadable_block_for_copied_check),
    "refcount block past qemu's largest offset": (
        "v3", lambda at: _set_entry(at, at.reftable, u64(at.path, at.reftable) | 1 << 63)),
    "refcount block past qemu's largest offset, met by the copied flag check": (
        "v3", lambda at: _unreadable_block_for_copied_check(at, 1 << 63)),
    "compressed data past a partial last cluster": ("zlib", _past_partial_last_cluster),
    "file ending 2 bytes into a cluster, before the L1 table": ("v2", _cut_before_the_l1),
    "bitmaps left behind by a program without bitmap support": (
        "bitmaps", lambda at: put(at.path, 88, ">Q", 0)),
    "refcount block referenced twice": (
        "v3", lambda at: _set_entry(at, at.reftable + 8, u64(at.path, at.reftable))),
    "extended L2: allocated and zero subcluster": (
        "extended_l2", lambda at: _set_entry(at, at.l2(0, 0) + 8, 1 << 32 | 1)),
    "extended L2: unallocated with allocated subclusters": (
        "extended_l2", lambda at: _set_entry(at, at.l2(0, 40) + 8, 1)),
}


@pytest.fixture
def damaged(image_copy: Callable[[str], Path]) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        kind, damage = DAMAGES[name]
        path = image_copy(kind)
        damage(Layout(path))
        return path
    return make


@pytest.mark.parametrize("name", DAMAGES)
def test_damaged_like_qemu(damaged: Callable[[str], Path], name: str) -> None:
    code, _, err = assert_like_qemu(damaged(name))
    assert code != 0 and err, "the damage went unnoticed"


# --- every reserved bit, each compared with qemu-img check ------------------------------
# The bits qcow2.txt (docs/interop) reserves, read from its tables of entry layouts:
# L1 entries 0-8 and 56-62 (9-55 offset, 63 copied); standard L2 entries, also in
# extended L2 tables, 1-8 and 56-61 (0 zero flag, 62 compressed, 63 copied); refcount
# table entries 0-8; bitmap table entries 1-8 and 56-63 (0 all ones). A compressed
# descriptor has none of its own, but its copied flag must be 0 and, in an extended L2
# table, its subcluster bitmap all zeros.
L1_RESERVED_BITS = [*range(0, 9), *range(56, 63)]
L2_RESERVED_BITS = [*range(1, 9), *range(56, 62)]
REFTABLE_RESERVED_BITS = list(range(0, 9))
BITMAP_RESERVED_BITS = [*range(1, 9), *range(56, 64)]


def reserved_bit_like_qemu(path: Path, address: int, bit: int) -> List[str]:
    """Set one bit of the 64-bit entry at address; both checks must agree and find it."""
    _flip(Layout(path), address, 1 << bit)
    code, _, err = assert_like_qemu(path)
    assert code == 2 and err, "the reserved bit went unnoticed"
    return err


@pytest.mark.parametrize("bit", L1_RESERVED_BITS)
def test_l1_entry_reserved_bit(image_copy: Callable[[str], Path], bit: int) -> None:
    path = image_copy("snapshots")
    err = reserved_bit_like_qemu(path, Layout(path).l1(0), bit)
    assert err[0].startswith("ERROR found L1 entry with reserved bits set")


@pytest.mark.parametrize("kind", ["v3", "extended_l2"])
@pytest.mark.parametrize("bit", L2_RESERVED_BITS)
def test_l2_entry_reserved_bit(image_copy: Callable[[str], Path], kind: str, bit: int) -> None:
    path = image_copy(kind)
    err = reserved_bit_like_qemu(path, Layout(path).l2(0, 0), bit)
    assert err[0].startswith("ERROR found l2 entry with reserved bits set")


@pytest.mark.parametrize("kind", ["zlib", "zlib_4k"])
def test_compressed_descriptor_copied_flag(image_copy: Callable[[str], Path],
                                           kind: str) -> None:
    path = image_copy(kind)
    at = Layout(path)
    err = reserved_bit_like_qemu(path, at.compressed(lambda a, b: True)[0], 63)
    assert "copied flag must never be set for compressed clusters" in err[0]


@pytest.fixture(scope="module")
def compressed_extended_l2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extended L2 image with a compressed cluster (qemu-io write -c)."""
    path = tmp_path_factory.mktemp("compressed_extended_l2") / "cx.qcow2"
    imagekit.create(path, "4M", extended_l2="on", cluster_size="65536")
    imagekit.qemu_io(path, "write -c -P 0x11 0 64k", "write -P 0x22 64k 64k")
    return path


@pytest.mark.parametrize("bit", range(64))
def test_compressed_descriptor_subcluster_bitmap_bit(
        compressed_extended_l2: Path, tmp_path: Path, bit: int) -> None:
    path = tmp_path / compressed_extended_l2.name
    shutil.copyfile(compressed_extended_l2, path)
    at = Layout(path)
    assert u64(path, at.l2(0, 0)) & COMPRESSED and not u64(path, at.l2(0, 0) + 8)
    err = reserved_bit_like_qemu(path, at.l2(0, 0) + 8, bit)
    assert "with non-zero subcluster allocation bitmap" in err[0]


@pytest.mark.parametrize("bit", REFTABLE_RESERVED_BITS)
def test_refcount_table_entry_reserved_bit(image_copy: Callable[[str], Path],
                                           bit: int) -> None:
    path = image_copy("v3")
    err = reserved_bit_like_qemu(path, Layout(path).reftable, bit)
    assert err[0] == "ERROR refcount table entry 0 has reserved bits set"


@pytest.mark.parametrize("bit", BITMAP_RESERVED_BITS)
@pytest.mark.parametrize("name", ["b0", "disabled"])
def test_bitmap_table_entry_reserved_bit(image_copy: Callable[[str], Path], name: str,
                                         bit: int) -> None:
    """qemu refuses to open the image (it reads every bitmap table when it opens one
    read-only); our check reports the entry as a corruption instead, and the data
    cluster it no longer references as leaked."""
    path = image_copy("bitmaps")
    entry = next(e for e in imagekit.bitmap_directory(path) if e["name"] == name)
    _flip(Layout(path), entry["table_offset"], 1 << bit)
    qemu = run_qemu(path, "--output=json")
    assert (qemu[0], qemu[1]) == (1, "")
    assert qemu[2] == [f"qcow2kit: Could not open '{path.name}': Could not read "
                       f"bitmap_table table from image for bitmap '{name}': Invalid argument"]
    code, out, err = run_ours(path, "--json")
    assert code == 2
    assert err[0] == (f"ERROR bitmap '{name}' table entry 0 is invalid: reserved bits "
                      f"{1 << bit:#x} are set")
    assert all(line.startswith("Leaked cluster ") for line in err[1:])
    assert json.loads(out)["corruptions"] == 1


def test_snapshot_table_ending_the_file_like_qemu(image_copy: Callable[[str], Path]) -> None:
    """qemu writes no padding after the last snapshot entry; the table counts without it."""
    path = image_copy("v3")
    imagekit.run("qemu-img", "snapshot", "-c", "s1", str(path))
    assert path.stat().st_size % 8, "the snapshot table should end the file unpadded"
    assert_like_qemu(path)


# --- beyond qemu's lines ---------------------------------------------------------------

def test_explain_names_structure_and_offset(damaged: Callable[[str], Path]) -> None:
    path = damaged("misaligned data cluster")
    at = Layout(path)
    data = u64(path, at.l2(0, 0)) & OFFSET
    _, _, err = run_ours(path, "--explain")
    assert err[0].startswith("ERROR offset=")
    assert err[1] == (f"    L2 table (L1 entry 0) at offset {at.l2(0, 0):#x}: entry 0: data "
                      f"cluster offset {data:#x} is not cluster aligned")
    second = (data >> at.bits) + 1
    assert err[3].startswith(f"    cluster {second} at offset {second << at.bits:#x}: "
                             "stored refcount 1")
    assert "data cluster (L2 table (L1 entry 0) entry 0)" in err[3]


def test_explain_names_overlapping_structures(damaged: Callable[[str], Path]) -> None:
    path = damaged("data cluster on the L1 table")
    at = Layout(path)
    _, _, err = run_ours(path, "--explain")
    cluster = at.l1_offset >> at.bits
    assert err[0] == f"ERROR cluster {cluster} refcount=1 reference=2"
    assert err[1].endswith("overlapping structures: L1 table, data cluster "
                           "(L2 table (L1 entry 0) entry 3)")


@pytest.mark.parametrize("kind", ["v3", "zlib_4k", "snapshots", "extended_l2", "data_file",
                                  "refcount_1", "lazy_dirty", "bitmaps"])
def test_bulk_path_equals_entry_by_entry(images: Dict[str, Path], kind: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy path counts exactly what the entry-by-entry path counts."""
    def report(path: Path) -> Tuple[object, ...]:
        with open_image(path) as image:
            result = check.check_image(image)
        return (check.render_text(result), list(check.stderr_lines(result)))
    bulk = report(images[kind])
    monkeypatch.setattr(check._L2, "quiet", lambda self: False)
    assert report(images[kind]) == bulk


@pytest.mark.parametrize("refcount_bits", ["16", "32"])
def test_one_cluster_referenced_73728_times(tmp_path: Path, refcount_bits: str) -> None:
    """Nine L1 entries share one L2 table whose 8192 entries share one data cluster:
    past 16-bit refcounts' maximum qemu reports each reference as an overflow, with
    32-bit ones it counts them all."""
    path = imagekit.create(tmp_path / "shared.qcow2", "5G", refcount_bits=refcount_bits)
    imagekit.qemu_io(path, "write -P 0x55 0 64k")
    at = Layout(path)
    for i in range(1, 9):
        _set_entry(at, at.l1(i), u64(path, at.l1(0)))
    _same_cluster(at, at.cs // 8)
    code, _, err = assert_like_qemu(path)
    overflows = 9 * 8192 - 65535 if refcount_bits == "16" else 0
    assert code == 2 and len(err) == 2 * overflows + 2  # and the two refcount lines


def test_memory_a_byte_per_cluster(tmp_path: Path) -> None:
    """On 128 GiB of preallocated metadata (2 million clusters) the check holds about a
    byte per cluster of the file, and a few MiB besides, while it works (numpy's
    arrays are traced by tracemalloc)."""
    path = imagekit.create(tmp_path / "prealloc.qcow2", "128G", preallocation="metadata")
    assert_like_qemu(path)
    with open_image(path) as image:
        clusters = image.geometry.file_clusters
        tracemalloc.start()
        try:
            check.check_image(image)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert clusters > 2 << 20 and peak < clusters + (3 << 20)


@pytest.mark.parametrize("name", ["refcount block misaligned",
                                  "refcount block past qemu's largest offset, met by the "
                                  "copied flag check", "a data cluster referenced 300 times"])
def test_compared_in_chunks_like_at_once(damaged: Callable[[str], Path],
                                         image_copy: Callable[[str], Path], name: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored and rebuilt refcounts compared a refcount block at a time, with one
    block kept, give what one comparison of them all gives; on 512-byte clusters
    (many blocks), one of them past qemu's largest offset, too."""
    def report(path: Path) -> Tuple[object, ...]:
        with open_image(path) as image:
            result = check.check_image(image)
        return (check.render_text(result), list(check.stderr_lines(result)))
    small = image_copy("cluster_512")
    at = Layout(small)
    _set_entry(at, at.reftable + 8, u64(small, at.reftable + 8) | 1 << 63)
    paths = [damaged(name), small]
    whole = [report(path) for path in paths]
    assert whole[1][1][:2] == ["ERROR refcount block 1 is outside image",
                               "Can't get refcount for cluster 256: Input/output error"]
    monkeypatch.setattr(check, "COMPARED_CLUSTERS", 1)
    monkeypatch.setattr(tables, "BLOCK_CACHE_BYTES", 1)
    assert [report(path) for path in paths] == whole


def test_scattered_lookups_read_only_the_blocks_they_touch(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """An L2 table whose data lies at both ends of a file much larger than the block
    cache (64-bit refcounts on 512-byte clusters: 64 per block) has the refcount blocks
    of those two clusters read, not every block between them, again for each table."""
    tables_count = 32
    path = imagekit.create(tmp_path / "spread.qcow2", "4M", cluster_size="512",
                           refcount_bits="64")
    first = [f"write -P 1 {t * 32768} 512" for t in range(tables_count)]
    filler = [f"write -P 2 {2 << 20} 640k"]  # 1280 clusters between the two passes
    second = [f"write -P 3 {t * 32768 + 512} 512" for t in range(tables_count)]
    imagekit.qemu_io(path, *first, *filler, *second)
    reads = []
    decode = tables.decode_refcount_block

    def counted(data: bytes, order: int):
        reads.append(1)
        return decode(data, order)
    with open_image(path) as image:
        expected = check.render_text(check.check_image(image))
        blocks = -(-image.geometry.file_clusters // image.geometry.refcount_block_entries)
    monkeypatch.setattr(tables, "decode_refcount_block", counted)
    monkeypatch.setattr(tables, "BLOCK_CACHE_BYTES", 16 * 512)  # 16 blocks of 64 refcounts
    with open_image(path) as image:
        assert check.render_text(check.check_image(image)) == expected
    assert blocks > 20 and len(reads) <= 3 * blocks, (len(reads), blocks)


def test_json_key_order_and_omitted_zeros() -> None:
    result = check.CheckResult(0, 3, 0, 64, 5, 0, 2, 655360)
    assert check.render_json(result, "a.qcow2") == (
        '{\n    "image-end-offset": 655360,\n    "compressed-clusters": 2,\n'
        '    "total-clusters": 64,\n    "corruptions": 3,\n    "check-errors": 0,\n'
        '    "allocated-clusters": 5,\n    "filename": "a.qcow2",\n    "format": "qcow2"\n}\n')
