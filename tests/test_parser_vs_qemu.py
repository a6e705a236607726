"""The generated parser against qemu itself: qemu-img check, map, info and snapshot.

Every image kind of imagekit is compared where the comparison applies. qemu-img runs
in the image's folder: qemu 7.2 resolves a relative external data file name against
its working directory, and imagekit keeps the data files beside their images.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from datetime import datetime, timezone
from math import frexp
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from kaitaistruct import KaitaiStream

import imagekit
from qcow2kit.generated.qcow2 import Qcow2
from qcow2kit.qemu_version import QemuVersion
from sidebyside import strict_zip

ClusterType = Qcow2.ClusterType
ExtType = Qcow2.HeaderExtensionType
Kind = Qcow2.BitmapTableEntryKind
Reads = Qcow2.SubclusterReads

CRAFTED = "bitmaps_crafted"  # invalid bitmap table entries: qemu refuses to open it
DIRTY = "lazy_dirty"  # dirty bit set, data cluster refcounts never written
QEMU_KINDS = [k for k in imagekit.KINDS if k != CRAFTED]
CLEAN_KINDS = [k for k in QEMU_KINDS if k != DIRTY]
NINE = QemuVersion(9, 0)  # snapshot list columns and LUKS detached-header change here

Unit = Tuple[str, Optional[int]]  # how a guest (sub)cluster reads, and its host offset


# --- running qemu-img ----------------------------------------------------------

def image_args(kind: str, path: Path) -> List[str]:
    """qemu-img arguments naming the image (`snapshot` has no -f); the LUKS image
    gets its secret."""
    opts = f"driver=qcow2,file.filename={str(path).replace(',', ',,')}"
    if kind == "luks":
        return ["--object", imagekit.SECRET, "--image-opts", f"{opts},encrypt.key-secret=sec0"]
    return ["--image-opts", opts]


def qemu_img(kind: str, path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `qemu-img <args> <image>` in the image's folder, in UTC (snapshot dates
    are local time)."""
    return subprocess.run(["qemu-img", *args, *image_args(kind, path)], capture_output=True,
                          text=True, check=False, cwd=path.parent,
                          env={**os.environ, "TZ": "UTC"})


def qemu_json(kind: str, path: Path, *args: str) -> Any:
    """The JSON output of a qemu-img command that must succeed."""
    proc = qemu_img(kind, path, *args, "--output=json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# --- the parsed images ---------------------------------------------------------

def parse(path: Path) -> Tuple[Qcow2, Any]:
    """The parsed root of an image and its open file (lazy instances read from it)."""
    f = open(path, "rb")
    q = Qcow2(KaitaiStream(f))
    q._read()
    return q, f


@pytest.fixture(scope="module")
def parsed(images: Dict[str, Path]) -> Iterator[Callable[[str], Qcow2]]:
    """Parse each image kind once per module: lazy tables stay read (2 MiB clusters)."""
    cache: Dict[str, Tuple[Qcow2, Any]] = {}

    def get(kind: str) -> Qcow2:
        if kind not in cache:
            cache[kind] = parse(images[kind])
        return cache[kind][0]
    yield get
    for _, f in cache.values():
        f.close()


def extension(q: Qcow2, magic: ExtType) -> Any:
    """The parsed data of the header extension of that type, or None."""
    area = q.header_extensions
    return next((e.data for e in area.extensions if e.magic == magic), None) if area else None


def entries(table: Any) -> List[Any]:
    """The entries of a table the spec reads in pieces."""
    return [e for piece in table.pieces for e in piece.entries]


def raw64(entry: Any) -> int:
    """The 64-bit value of a table entry the spec reads as hi/lo halves."""
    return entry.hi << 32 | entry.lo


# --- refcounts -----------------------------------------------------------------

def stored_refcounts(q: Qcow2) -> Dict[int, int]:
    """Non-zero refcount of each host cluster, from the refcount table and blocks."""
    per_block = q.num_refcount_block_entries
    out = {}
    for i, entry in enumerate(entries(q.refcount_table)):
        if entry.ofs_refcount_block:
            block = [rc for piece in entry.refcount_block.pieces
                     for rc in getattr(piece, f"refcounts_{q.header.refcount_bits}")]
            out.update((i * per_block + j, int(rc)) for j, rc in enumerate(block) if rc)
    return out


def referenced_clusters(q: Qcow2) -> Counter:
    """References to each host cluster, rebuilt from the metadata as qemu-img check does."""
    cs = q.cluster_size
    h = q.header
    refs: Counter = Counter()

    def add(offset: int, length: int) -> None:
        if length > 0:
            refs.update(range(offset // cs, (offset + length - 1) // cs + 1))

    add(0, cs)
    add(h.ofs_refcount_table, h.num_refcount_table_clusters * cs)
    for entry in entries(q.refcount_table):
        if entry.ofs_refcount_block:
            add(entry.ofs_refcount_block, cs)
    snapshots = q.snapshots or []
    if snapshots:
        table = q._debug["_m_snapshots"]
        add(h.ofs_snapshot_table, table["end"] - table["start"])
    for ofs_l1, l1_table in [(h.ofs_l1_table, entries(q.l1_table))] + [
            (s.ofs_l1_table, entries(s.l1_table)) for s in snapshots]:
        add(ofs_l1, len(l1_table) * 8)
        for l1 in l1_table:
            if not l1.ofs_l2_table:
                continue
            add(l1.ofs_l2_table, cs)
            for e in entries(l1.l2_table):
                if e.cluster_type == ClusterType.compressed:
                    add(e.ofs_compressed_data, e.len_compressed_data)
                elif e.cluster_type in (ClusterType.normal, ClusterType.zero_alloc) \
                        and not q.has_external_data_file:
                    add(e.ofs_host_cluster, cs)
    bitmaps = extension(q, ExtType.bitmaps)
    if bitmaps:
        add(bitmaps.ofs_bitmap_directory, bitmaps.len_bitmap_directory)
        for bm in bitmaps.bitmap_directory.entries:
            add(bm.ofs_bitmap_table, bm.num_bitmap_table * 8)
            for t in entries(bm.bitmap_table):
                if t.kind == Kind.serialized:
                    add(t.ofs_data, cs)
    crypto = extension(q, ExtType.full_disk_encryption)
    if crypto:
        add(crypto.ofs_encryption_header, crypto.len_encryption_header)
    return refs


def image_end(q: Qcow2, *refcounts: Dict[int, int]) -> int:
    """End of the last cluster that has a refcount or a reference in any of them."""
    return (max(c for rc in refcounts for c in rc) + 1) * q.cluster_size


def check_messages(q: Qcow2, stored: Dict[int, int], refs: Counter) -> List[str]:
    """What read-only `qemu-img check` prints to stderr for refcount mismatches and
    wrong copied flags (active L1 and L2 tables), worded and ordered as qemu 7.2 does."""
    lines = [f"{'ERROR' if stored.get(c, 0) < refs[c] else 'Leaked'} cluster {c} "
             f"refcount={stored.get(c, 0)} reference={refs[c]}"
             for c in sorted(set(stored) | set(refs)) if stored.get(c, 0) != refs[c]]
    cs = q.cluster_size
    for i, l1 in enumerate(entries(q.l1_table)):
        if not l1.ofs_l2_table:
            continue
        rc = stored.get(l1.ofs_l2_table // cs, 0)
        if (rc == 1) != l1.copied:
            lines.append(f"ERROR OFLAG_COPIED L2 cluster: l1_index={i} "
                         f"l1_entry={raw64(l1):x} refcount={rc}")
        for e in entries(l1.l2_table):
            if e.cluster_type in (ClusterType.normal, ClusterType.zero_alloc):
                rc = 1 if q.has_external_data_file else stored.get(e.ofs_host_cluster // cs, 0)
                if (rc == 1) != e.copied:
                    lines.append(f"ERROR OFLAG_COPIED data cluster: l2_entry={raw64(e):x} "
                                 f"refcount={rc}")
    return lines


def assert_clean_check(report: Dict[str, Any]) -> None:
    """qemu-img check found nothing wrong."""
    assert report["check-errors"] == 0, report
    for key in ("corruptions", "leaks", "corruptions-fixed", "leaks-fixed"):
        assert report.get(key, 0) == 0, report


@pytest.mark.parametrize("kind", CLEAN_KINDS)
def test_highest_refcounted_cluster_is_qemu_image_end(kind: str, images: Dict[str, Path],
                                                      parsed: Callable[[str], Qcow2]) -> None:
    """The last cluster with a non-zero stored refcount ends at qemu's image-end-offset."""
    report = qemu_json(kind, images[kind], "check")
    assert_clean_check(report)
    q = parsed(kind)
    assert image_end(q, stored_refcounts(q)) == report["image-end-offset"]


@pytest.mark.parametrize("kind", CLEAN_KINDS)
def test_stored_refcounts_equal_rebuilt_references(kind: str, images: Dict[str, Path],
                                                   parsed: Callable[[str], Qcow2]) -> None:
    """On images qemu-img check finds clean, every cluster's stored refcount is the
    number of references the parsed metadata makes to it."""
    assert_clean_check(qemu_json(kind, images[kind], "check"))
    q = parsed(kind)
    assert stored_refcounts(q) == dict(referenced_clusters(q))


def test_dirty_image_check_reports_what_the_parser_sees(
        images: Dict[str, Path], parsed: Callable[[str], Qcow2]) -> None:
    """lazy_dirty: read-only qemu-img check reports exactly the refcounts and copied
    flags that differ between the parsed refcount blocks and the rebuilt references
    (data clusters whose refcounts lazy refcounts never wrote)."""
    q = parsed(DIRTY)
    assert q.header.incompatible_features.dirty and q.header.compatible_features.lazy_refcounts
    stored, refs = stored_refcounts(q), referenced_clusters(q)
    expected = check_messages(q, stored, refs)
    assert expected, "the dirty image should have stale refcounts"
    proc = qemu_img(DIRTY, images[DIRTY], "check", "--output=json")
    assert proc.returncode == 2, proc.stderr  # 2: corruptions found
    assert proc.stderr.splitlines() == expected
    report = json.loads(proc.stdout)
    assert report["check-errors"] == 0
    assert report["corruptions"] == sum(m.startswith("ERROR") for m in expected)
    assert report.get("leaks", 0) == sum(m.startswith("Leaked") for m in expected)
    assert report["image-end-offset"] == image_end(q, stored, refs)


def test_dirty_image_repaired_by_qemu_is_consistent(
        image_copy: Callable[[str], Path]) -> None:
    """After `qemu-img check -r all` the dirty bit is clear and the parsed refcounts
    equal the rebuilt references."""
    path = image_copy(DIRTY)
    proc = qemu_img(DIRTY, path, "check", "-r", "all")
    assert proc.returncode == 0, proc.stderr
    report = qemu_json(DIRTY, path, "check")
    assert_clean_check(report)
    q, f = parse(path)
    with f:
        assert not q.header.incompatible_features.dirty
        stored = stored_refcounts(q)
        assert stored == dict(referenced_clusters(q))
        assert image_end(q, stored) == report["image-end-offset"]


# --- guest cluster mapping -------------------------------------------------------

def parser_units(q: Qcow2) -> List[Unit]:
    """How each guest subcluster (cluster without extended L2) reads, from the spec's
    per-subcluster instances: what a read returns and the host offset qemu-img map
    reports."""
    reads = {Reads.unallocated: "unallocated", Reads.backing: "unallocated",
             Reads.zeros: "zero", Reads.data: "data", Reads.compressed: "compressed"}
    l1_table = entries(q.l1_table)
    l2_tables: Dict[int, List[Any]] = {}
    out: List[Unit] = []
    for guest_cluster in range(-(-q.header.size // q.cluster_size)):
        l1_index, l2_index = divmod(guest_cluster, q.num_l2_entries)
        l1 = l1_table[l1_index] if l1_index < len(l1_table) else None
        if l1 is None or not l1.ofs_l2_table:
            out += [("unallocated", None)] * q.num_subclusters
            continue
        if l1_index not in l2_tables:
            l2_tables[l1_index] = entries(l1.l2_table)
        out += [(reads[s.reads_as], s.ofs_host if s.has_ofs_host else None)
                for s in l2_tables[l1_index][l2_index].subclusters]
    return out


def qemu_units(ranges: List[Dict[str, Any]], unit: int, count: int,
               encrypted: bool) -> List[Unit]:
    """How each guest subcluster reads per `qemu-img map`, at depth 0 only (deeper
    ranges come from backing files: unallocated in this image). qemu 7.2 prints no
    "compressed" key: compressed data is data without a host offset, except in
    encrypted images, where qemu shows no host offsets at all."""
    out: List[Unit] = [("unallocated", None)] * count
    for r in ranges:
        if r["depth"] != 0:
            continue
        for i in range(r["start"] // unit, (r["start"] + r["length"]) // unit):
            offset = r["offset"] + i * unit - r["start"] if "offset" in r else None
            if not r["present"]:
                kind = "unallocated"
            elif not r["data"]:
                kind = "zero"
            else:
                kind = "compressed" if offset is None and not encrypted else "data"
            out[i] = (kind, offset)
    return out


@pytest.mark.parametrize("kind", QEMU_KINDS)
def test_l2_mapping_matches_qemu_map(kind: str, images: Dict[str, Path],
                                     parsed: Callable[[str], Qcow2]) -> None:
    """Every guest (sub)cluster: data at the same host offset, zero, unallocated or
    compressed, for the parser and for qemu-img map."""
    q = parsed(kind)
    units = parser_units(q)
    encrypted = q.header.crypt_method != Qcow2.CryptMethod.none
    mapped = qemu_units(qemu_json(kind, images[kind], "map"), q.len_subcluster,
                        len(units), encrypted)
    diff = [(i * q.len_subcluster, p, m) for i, (p, m) in enumerate(strict_zip(units, mapped))
            if p != m]
    assert not diff, diff[:10]


# --- snapshots -------------------------------------------------------------------

def size_to_str(value: int) -> str:
    """qemu's size_to_str (util/cutils.c): 3 significant digits, binary units."""
    exponent = frexp(value / (1000.0 / 1024.0))[1]
    i = (exponent - 1) // 10 if exponent > 0 else 0
    return f"{value / (1 << i * 10):0.3g} {['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'][i]}B"


def snapshot_facts(s: Any) -> Dict[str, Any]:
    """A parsed snapshot as qemu reads it: the 64-bit VM state size and the icount
    when the extra data has them (icount -1 otherwise)."""
    extra = s.extra_data
    return dict(
        id=s.id.decode(), name=s.name.decode(), date_sec=s.date_sec, date_nsec=s.date_nsec,
        vm_clock_nsec=s.vm_clock_nsec, disk_size=extra.disk_size,
        vm_state_size=s.vm_state_size if extra.vm_state_size_large is None
        else extra.vm_state_size_large,
        icount=-1 if extra.icount is None else extra.icount)


def snapshot_info(sn: Dict[str, Any]) -> Dict[str, Any]:
    """The entry `qemu-img info --output=json` gives for a snapshot."""
    info = {"id": sn["id"], "name": sn["name"], "vm-state-size": sn["vm_state_size"],
            "date-sec": sn["date_sec"], "date-nsec": sn["date_nsec"],
            "vm-clock-sec": sn["vm_clock_nsec"] // 10**9,
            "vm-clock-nsec": sn["vm_clock_nsec"] % 10**9}
    if sn["icount"] != -1:
        info["icount"] = sn["icount"]
    return info


def snapshot_line(sn: Dict[str, Any], peer: QemuVersion) -> str:
    """The line `qemu-img snapshot -l` prints for a snapshot (bdrv_snapshot_dump): from
    qemu 9.0 (commit 52df1a5b61) with wider columns, a space between each two, the
    hours on 4 digits and "--" for no icount."""
    date = datetime.fromtimestamp(sn["date_sec"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    secs = sn["vm_clock_nsec"] // 10**9
    hours = f"{secs // 3600:04d}" if peer >= NINE else f"{secs // 3600:02d}"
    clock = (f"{hours}:{secs // 60 % 60:02d}:{secs % 60:02d}."
             f"{sn['vm_clock_nsec'] // 10**6 % 1000:03d}")
    size = size_to_str(sn["vm_state_size"])
    if peer >= NINE:
        icount = "--" if sn["icount"] == -1 else str(sn["icount"])
        return f"{sn['id']:<7} {sn['name']:<16} {size:>8} {date:>19} {clock:>15} {icount:>10}"
    icount = "" if sn["icount"] == -1 else str(sn["icount"])
    return f"{sn['id']:<9} {sn['name']:<16} {size:>8}{date:>20}{clock:>13}{icount:>11}"


@pytest.mark.parametrize("kind", QEMU_KINDS)
def test_snapshots_match_qemu(kind: str, images: Dict[str, Path],
                              parsed: Callable[[str], Qcow2], peer: QemuVersion) -> None:
    """The snapshot table (none on most kinds) against qemu-img info and snapshot -l;
    the extra data's disk size is the virtual size (no image is ever resized)."""
    info = qemu_json(kind, images[kind], "info")
    listing = qemu_img(kind, images[kind], "snapshot", "-l")
    assert listing.returncode == 0, listing.stderr
    snaps = [snapshot_facts(s) for s in parsed(kind).snapshots or []]
    assert info.get("snapshots", []) == [snapshot_info(s) for s in snaps]
    lines = listing.stdout.splitlines()
    assert lines[2:] == [snapshot_line(s, peer) for s in snaps]
    assert all(s["disk_size"] == info["virtual-size"] for s in snaps)


# --- bitmaps ---------------------------------------------------------------------

def bitmap_entries(q: Qcow2) -> List[Any]:
    """The parsed bitmap directory entries (none without the bitmaps extension)."""
    bitmaps = extension(q, ExtType.bitmaps)
    return bitmaps.bitmap_directory.entries if bitmaps else []


@pytest.mark.parametrize("kind", QEMU_KINDS)
def test_bitmaps_match_qemu_info(kind: str, images: Dict[str, Path],
                                 parsed: Callable[[str], Qcow2]) -> None:
    """Name, granularity and flags of every bitmap (none on most kinds)."""
    data = qemu_json(kind, images[kind], "info")["format-specific"]["data"]
    expected = [{"name": bm.name.decode(), "granularity": bm.granularity,
                 "flags": ["in-use"] * bm.in_use + ["auto"] * bm.is_auto}
                for bm in bitmap_entries(parsed(kind))]
    assert data.get("bitmaps", []) == expected


def test_crafted_bitmap_entries(images: Dict[str, Path],
                                parsed: Callable[[str], Qcow2]) -> None:
    """qemu refuses the crafted image; the parser reads its two patched entries of
    bitmap 'fine' as all-ones and invalid, every other entry as in the original."""
    proc = qemu_img(CRAFTED, images[CRAFTED], "info")
    assert proc.returncode != 0
    assert "bitmap 'fine'" in proc.stderr
    crafted, original = bitmap_entries(parsed(CRAFTED)), bitmap_entries(parsed("bitmaps"))
    assert [bm.name for bm in crafted] == [bm.name for bm in original]
    for bm, orig in strict_zip(crafted, original):
        kinds = [(t.kind, t.ofs_data) for t in entries(bm.bitmap_table)]
        expected = [(t.kind, t.ofs_data) for t in entries(orig.bitmap_table)]
        if bm.name == b"fine":
            expected[1:3] = [(Kind.all_ones, 0), (Kind.invalid, bm.ofs_bitmap_table)]
        assert kinds == expected


# --- header ----------------------------------------------------------------------

def expected_format_data(q: Qcow2) -> Dict[str, Any]:
    """qemu-img info's qcow2 format-specific data, bitmaps and encryption aside."""
    h = q.header
    data: Dict[str, Any] = {"compat": "1.1" if h.version >= 3 else "0.10",
                            "compression-type": h.compression_type_effective.name,
                            "refcount-bits": h.refcount_bits}
    if h.version >= 3:
        data.update({"lazy-refcounts": h.compatible_features.lazy_refcounts,
                     "corrupt": h.incompatible_features.corrupt,
                     "extended-l2": q.is_extended_l2})
    if q.has_external_data_file:
        data["data-file"] = extension(q, ExtType.external_data_file).value.decode()
        data["data-file-raw"] = h.autoclear_features.data_file_raw
    return data


@pytest.mark.parametrize("kind", QEMU_KINDS)
def test_header_matches_qemu_info(kind: str, images: Dict[str, Path],
                                  parsed: Callable[[str], Qcow2]) -> None:
    """Sizes, compat level, features, data file, encryption, backing file and dirty bit."""
    q = parsed(kind)
    h = q.header
    info = qemu_json(kind, images[kind], "info")
    data = dict(info["format-specific"]["data"])
    data.pop("bitmaps", None)
    encrypt = data.pop("encrypt", None)
    backing_format = extension(q, ExtType.backing_file_format)
    assert info["virtual-size"] == h.size
    assert info["cluster-size"] == q.cluster_size
    assert data == expected_format_data(q)
    assert info.get("encrypted", False) == (h.crypt_method != Qcow2.CryptMethod.none)
    assert (encrypt or {}).get("format") == (
        None if h.crypt_method == Qcow2.CryptMethod.none else h.crypt_method.name)
    name = q.backing_file_name
    assert info.get("backing-filename") == (name.decode() if name is not None else None)
    assert info.get("backing-filename-format") == (
        backing_format.value.decode() if backing_format else None)
    assert info["dirty-flag"] == (h.version >= 3 and h.incompatible_features.dirty)


def test_luks_header_matches_qemu_info(images: Dict[str, Path],
                                       parsed: Callable[[str], Qcow2],
                                       peer: QemuVersion) -> None:
    """The LUKS header behind the full disk encryption extension, as qemu decodes it
    (from qemu 9.0, commit 0bd779e27e, saying the header is not detached)."""
    luks = extension(parsed("luks"), ExtType.full_disk_encryption).encryption_header
    encrypt = qemu_json("luks", images["luks"], "info")["format-specific"]["data"]["encrypt"]
    mode, _, ivgen = luks.cipher_mode.partition("-")
    key_bits = luks.key_bytes * 8 // (2 if mode == "xts" else 1)
    slots = []
    for slot in luks.key_slots:
        active = slot.active == Qcow2.LuksKeySlotState.enabled
        entry: Dict[str, Any] = {"active": active}
        if active:
            entry.update({"iters": slot.iterations, "stripes": slot.stripes})
        entry["key-offset"] = slot.key_material_offset * 512
        slots.append(entry)
    assert encrypt == {
        "format": "luks", "cipher-alg": f"{luks.cipher_name}-{key_bits}",
        "cipher-mode": mode, "ivgen-alg": ivgen, "hash-alg": luks.hash_spec,
        "uuid": luks.uuid, "payload-offset": luks.payload_offset * 512,
        "master-key-iters": luks.mk_digest_iterations, "slots": slots,
        **({"detached-header": False} if peer >= NINE else {})}
