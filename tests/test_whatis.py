"""qcow2kit whatis against offsets found independently: data clusters from `qemu-img map`
(of the image, and of copies switched to a snapshot with `qemu-img snapshot -a`),
tables and header fields from the header and the tables read with struct, leaked and
corrupt clusters from `qemu-img check`."""
from __future__ import annotations

import json
import re
import shutil
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

import imagekit
from qcow2kit import open_image
from qcow2kit.whatis import Answer, Holder, whatis
from rawimage import COMPRESSED, OFFSET, Header, damage, u64
from sidebyside import qcow2kit, qemu_img, strict_zip

# images whose data is in the file itself, with qemu-img map offsets into it
MAPPED = ["v2", "v3", "cluster_512", "cluster_2m", "refcount_1", "extended_l2", "snapshots",
          "bitmaps", "prealloc_metadata", "backing", "zlib"]
CLEAN = [k for k in imagekit.KINDS if k not in ("bitmaps_crafted", "lazy_dirty")]


def ask(path: Path, offsets: List[int]) -> List[Answer]:
    with open_image(path) as image:
        return whatis(image, offsets)


def holder(answer: Answer, kind: str) -> Holder:
    found = [h for h in answer.holders if h.kind == kind]
    assert len(found) == 1, (answer, kind)
    return found[0]


# --- data clusters, from qemu-img map --------------------------------------------------

def mapped(path: Path) -> Iterator[Tuple[int, int, dict]]:
    """(host offset, guest offset, extent) of the first, a middle and the last byte of
    each cluster-sized piece of every extent that qemu-img map gives an offset in the
    image itself."""
    cs = Header(path).cs
    for extent in imagekit.qemu_json("map", path):
        if "offset" not in extent or extent["depth"]:
            continue
        for piece in range(0, extent["length"], cs):
            length = min(cs, extent["length"] - piece)
            for at in {0, length // 2, length - 1}:
                yield extent["offset"] + piece + at, extent["start"] + piece + at, extent


def expected_reads(extent: dict) -> str:
    """How qemu-img map's status reads in whatis: data (also in a hole, which qemu
    reports as zero data), zeros, or an unallocated subcluster."""
    if extent["data"]:
        return "data"
    return "zeros" if extent["present"] else "unallocated"


@pytest.mark.parametrize("kind", MAPPED)
def test_data_clusters_from_qemu_map(images: Dict[str, Path], kind: str) -> None:
    path = images[kind]
    cs = Header(path).cs
    pieces = list(mapped(path))
    assert pieces, "qemu-img map gave no offsets"
    for answer, (host, guest, extent) in strict_zip(ask(path, [p[0] for p in pieces]), pieces):
        data = holder(answer, "data")
        state = next(s for s in data.facts["states"] if s["snapshot"] is None)
        assert data.facts["guest-byte"] == guest
        assert data.facts["guest-offset"] == guest // cs * cs
        assert state["reads"] == expected_reads(extent), (answer, extent)
        assert data.start <= host < data.start + data.length
        assert answer.status == "in-use" and answer.refcount == answer.references


def test_snapshot_data_from_qemu_map(images: Dict[str, Path], tmp_path: Path) -> None:
    """Copies switched to each snapshot (qemu-img snapshot -a leaves the data clusters
    where they are) map the snapshot's guest offsets to the original's host offsets:
    each data byte is named with exactly the states that map it there."""
    path = images["snapshots"]
    names = {"1": "first", "2": "second snapshot"}
    states: Dict[Tuple[int, int], List[object]] = {}  # (host, guest) -> states
    for snapshot in [None] + [s[3] for s in Header(path).snapshots()]:
        copy = path
        if snapshot is not None:
            copy = tmp_path / f"at-{snapshot}.qcow2"
            shutil.copyfile(path, copy)
            imagekit.run("qemu-img", "snapshot", "-a", snapshot, str(copy))
        for host, guest, _ in mapped(copy):
            state = None if snapshot is None else {"id": snapshot, "name": names[snapshot]}
            states.setdefault((host, guest), []).append(state)
    assert any(len(found) > 1 for found in states.values())
    keys = sorted(states)
    for (host, guest), answer in strict_zip(keys, ask(path, [host for host, _ in keys])):
        data = holder(answer, "data")
        assert data.facts["guest-byte"] == guest
        assert [s["snapshot"] for s in data.facts["states"]] == states[host, guest]
        assert answer.refcount == answer.references == len(states[host, guest])


# --- compressed data, from the L2 entries ------------------------------------------------

def _deflate_length(data: bytes) -> int:
    """The length of the raw deflate stream data starts with (qemu's zlib clusters)."""
    stream = zlib.decompressobj(-12)
    stream.decompress(data)
    assert stream.eof, "the deflate stream does not end"
    return len(data) - len(stream.unused_data)


def _zstd_length(data: bytes) -> int:
    """The length of the zstd frame data starts with, walked through its block headers
    (RFC 8878, section 3.1.1)."""
    assert data[:4] == b"\x28\xb5\x2f\xfd", "not a zstd frame"
    descriptor = data[4]
    single_segment = descriptor >> 5 & 1
    pos = 5 + (not single_segment) + (0, 1, 2, 4)[descriptor & 3]
    pos += (single_segment, 2, 4, 8)[descriptor >> 6]
    while True:
        block = int.from_bytes(data[pos:pos + 3], "little")
        pos += 3 + (1 if block >> 1 & 3 == 1 else block >> 3)  # an RLE block holds 1 byte
        if block & 1:
            return pos + 4 * (descriptor >> 2 & 1)  # the checksum


def compressed_entries(path: Path) -> Iterator[Tuple[int, int, int]]:
    """(guest offset, host offset, length to the end of the last sector) of every
    compressed entry of the active L2 tables. The length is not decoded from the
    descriptor's sector count: the compressed stream at the host offset is measured,
    and qemu gives it every 512-byte sector it touches."""
    h = Header(path)
    measure = _zstd_length if imagekit.qemu_json("info", path)["format-specific"]["data"][
        "compression-type"] == "zstd" else _deflate_length
    data = path.read_bytes()
    offset_bits = 70 - h.bits  # the descriptor's bits 0..offset_bits-1 hold the offset
    for i in range(h.l1_size):
        table = h.l2_table(h.l1_offset, i)
        for j in range(h.l2_entries if table else 0):
            entry = u64(path, table + 8 * j)
            if entry & COMPRESSED:
                offset = entry % (1 << offset_bits)
                end = offset + measure(data[offset:offset + 2 * h.cs])
                yield (i * h.l2_entries + j) * h.cs, offset, -(-end // 512) * 512 - offset


@pytest.mark.parametrize("kind", ["zlib", "zlib_4k", "zstd"])
def test_compressed_data(images: Dict[str, Path], kind: str) -> None:
    """Each byte belongs to the compressed range that starts last at or before it; the
    ranges that reach it from earlier, and the rest of its cluster, are named."""
    path = images[kind]
    cs = Header(path).cs
    entries = sorted(compressed_entries(path), key=lambda e: e[1])
    assert len(entries) > 10
    probes = [(offset + k, guest) for guest, offset, length in entries
              for k in (0, length - 1)]
    for answer, (byte, _) in strict_zip(ask(path, [p for p, _ in probes]), probes):
        owner = max((e for e in entries if e[1] <= byte < e[1] + e[2]), key=lambda e: e[1])
        found = holder(answer, "compressed")
        assert (found.facts["guest-offset"], found.start, found.length) == owner
        earlier = {e[0] for e in entries if e[1] < owner[1] and byte < e[1] + e[2]}
        assert {r["guest-offset"] for r in found.facts["earlier"]} == earlier
        cluster = byte // cs * cs
        sharing = {e[0] for e in entries if e[1] < cluster + cs and e[1] + e[2] > cluster}
        assert {r["guest-offset"] for r in found.facts["neighbours"]} == \
            sharing - earlier - {owner[0]}
        assert answer.refcount == answer.references == len(sharing)


# --- tables, from the header ---------------------------------------------------------------

def test_tables_from_the_header(images: Dict[str, Path]) -> None:
    path = images["snapshots"]
    h = Header(path)
    l2 = h.l2_table(h.l1_offset, 0)
    block = u64(path, h.reftable) & ~0x1FF
    probes = {
        h.l1_offset: ("l1-table", {"snapshot": None, "entry": 0, "l2-table-offset": l2}),
        l2 + 8 * 3: ("l2-table", {"l1-index": 0, "entry": 3, "guest-offset": 3 * h.cs}),
        h.reftable + 7: ("refcount-table", {"entry": 0, "refcount-block-offset": block}),
        block + 2 * 5: ("refcount-block", {"index": 0, "refcount-of": [5, 5]}),
    }
    for pos, l1_offset, _, snapshot_id in h.snapshots():
        probes[pos] = ("snapshot-table", {"snapshot-id": snapshot_id, "field": "ofs_l1_table"})
        probes[pos + 12] = ("snapshot-table", {"snapshot-id": snapshot_id, "field": "len_id"})
        snapshot_l2 = h.l2_table(l1_offset, 0)
        probes[l1_offset + 4] = ("l1-table", {"entry": 0, "l2-table-offset": snapshot_l2})
        probes[snapshot_l2 + 8] = ("l2-table", {"l1-index": 0, "entry": 1})
    offsets = sorted(probes)
    for offset, answer in strict_zip(offsets, ask(path, offsets)):
        kind, facts = probes[offset]
        found = holder(answer, kind)
        assert {k: found.facts[k] for k in facts} == facts, (hex(offset), found)
        assert answer.refcount == answer.references >= 1


def test_snapshot_l1_tables_name_their_snapshot(images: Dict[str, Path]) -> None:
    path = images["snapshots"]
    snapshots = list(Header(path).snapshots())
    answers = ask(path, [l1_offset for _, l1_offset, _, _ in snapshots])
    assert [holder(a, "l1-table").facts["snapshot"] for a in answers] == [
        {"id": "1", "name": "first"}, {"id": "2", "name": "second snapshot"}]


def test_header_fields_extensions_and_backing_name(images: Dict[str, Path]) -> None:
    path = images["backing"]
    h = Header(path)
    exts = imagekit.extensions(path)
    end_marker = exts[-1][0] + 8 + -(-exts[-1][2] // 8) * 8
    probes = {0: ("header", "field", "magic"), 20: ("header", "field", "cluster_bits"),
              31: ("header", "field", "size"), 100: ("header", "field", "len_header"),
              end_marker: ("header-extension", "end-marker", True),
              h.backing_offset + h.backing_size - 1:
                  ("backing-file-name", "backing-file", "backing_base.qcow2"),
              h.cs - 1: ("header-unused", None, None)}
    for i, (offset, magic, length) in enumerate(exts):
        probes[offset] = ("header-extension", "field", "magic")
        probes[offset + 4] = ("header-extension", "field", "len_data")
        probes[offset + 8 + length - 1] = ("header-extension", "magic", magic)
    offsets = sorted(probes)
    for offset, answer in strict_zip(offsets, ask(path, offsets)):
        kind, key, value = probes[offset]
        found = holder(answer, kind)
        assert key is None or found.facts[key] == value, (hex(offset), found)
        assert answer.cluster == 0 and answer.refcount == 1


def test_unknown_extension(images: Dict[str, Path]) -> None:
    path = images["unknown_ext"]
    offset, magic, length = next(e for e in imagekit.extensions(path)
                                 if e[1] == imagekit.UNKNOWN_EXT_MAGIC)
    found = holder(ask(path, [offset + 8 + length // 2])[0], "header-extension")
    assert (found.facts["magic"], found.facts["extension-kind"], found.facts["field"]) == \
        (magic, "unknown", "data")


# --- bitmaps, from their directory ---------------------------------------------------------

def test_bitmaps(images: Dict[str, Path]) -> None:
    path = images["bitmaps"]
    cs = Header(path).cs
    probes = {}
    for entry in imagekit.bitmap_directory(path):
        name = entry["name"]
        probes[entry["name_offset"]] = ("bitmap-directory", {"bitmap": name})
        for j in range(entry["table_size"]):
            probes[entry["table_offset"] + 8 * j] = ("bitmap-table", {"bitmap": name,
                                                                      "entry": j})
            data = u64(path, entry["table_offset"] + 8 * j) & OFFSET
            if data:
                # the byte at 5 holds bits 40..47 of the entry's cluster of bits
                first = (j * cs * 8 + 40) << entry["granularity_bits"]
                probes[data + 5] = ("bitmap-data", {"bitmap": name, "entry": j,
                                                    "guest-first": first})
    assert any(kind == "bitmap-data" for kind, _ in probes.values())
    offsets = sorted(probes)
    for offset, answer in strict_zip(offsets, ask(path, offsets)):
        kind, facts = probes[offset]
        found = holder(answer, kind)
        assert {k: found.facts[k] for k in facts} == facts, (hex(offset), found)


# --- extended L2 entries -------------------------------------------------------------------

def test_extended_l2_entries(images: Dict[str, Path]) -> None:
    path = images["extended_l2"]
    h = Header(path)
    l2 = h.l2_table(h.l1_offset, 0)
    entry, bitmap = ask(path, [l2 + 16 * 2, l2 + 16 * 2 + 8])
    assert holder(entry, "l2-table").facts["subcluster-bitmap"] is False
    assert holder(bitmap, "l2-table").facts["subcluster-bitmap"] is True
    assert holder(bitmap, "l2-table").facts["entry"] == 2


# --- refcounts: clean images, leaks and corruption, free, past the end --------------------

@pytest.mark.parametrize("kind", CLEAN)
def test_references_equal_refcounts_on_clean_images(images: Dict[str, Path],
                                                    kind: str) -> None:
    """qemu-img check finds these clean: every cluster's references, as the owner table
    counts them, equal its stored refcount."""
    path = images[kind]
    h = Header(path)
    answers = ask(path, [c * h.cs for c in range(h.clusters)])
    assert [(a.refcount, a.references) for a in answers] == \
        [(h.refcount(c), h.refcount(c)) for c in range(h.clusters)]


def qemu_findings(path: Path) -> Dict[str, List[int]]:
    """The clusters qemu-img check reports as leaked and as corrupt (refcount too low)."""
    err = qemu_img("check", "-f", "qcow2", path.name, cwd=path.parent).stderr.decode()
    return {"leaked": [int(c) for c in re.findall(r"Leaked cluster (\d+)", err)],
            "corrupt": [int(c) for c in re.findall(r"ERROR cluster (\d+) refcount", err)]}


@pytest.fixture
def damaged(image_copy: Callable[[str], Path]) -> Path:
    path = image_copy("snapshots")
    damage(path)
    return path


def test_leaked_and_corrupt_clusters_as_qemu_check(damaged: Path) -> None:
    findings = qemu_findings(damaged)
    assert len(findings["leaked"]) == 1 and len(findings["corrupt"]) == 1
    cs = Header(damaged).cs
    leaked, corrupt = ask(damaged, [findings["leaked"][0] * cs + 7,
                                    findings["corrupt"][0] * cs])
    assert (leaked.status, leaked.refcount, leaked.references, leaked.holders) == \
        ("leaked", 1, 0, [])
    assert corrupt.status == "corrupt" and corrupt.refcount == corrupt.references - 1
    assert holder(corrupt, "data").facts["guest-offset"] == 0


def test_free_clusters(images: Dict[str, Path]) -> None:
    """qemu leaves free clusters (refcount 0) where old bitmap tables were."""
    path = images["bitmaps"]
    h = Header(path)
    free = [c for c in range(h.clusters) if not h.refcount(c)]
    assert free
    for answer in ask(path, [c * h.cs + h.cs // 2 for c in free]):
        assert (answer.status, answer.refcount, answer.references, answer.holders) == \
            ("free", 0, 0, [])


def test_beyond_the_end_of_the_file(images: Dict[str, Path]) -> None:
    path = images["v3"]
    size = path.stat().st_size
    for answer in ask(path, [size, size + (10 << 30), 2**64 - 1]):
        assert answer.status == "beyond-end-of-file" and answer.holders == []


def test_unused_rest_of_a_cluster(images: Dict[str, Path]) -> None:
    path = images["v3"]
    h = Header(path)
    answer, = ask(path, [h.l1_offset + 8 * h.l1_size])
    assert holder(answer, "unused").facts["cluster-holds"] == ["L1 table"]
    assert answer.status == "in-use"


# --- the command -----------------------------------------------------------------------------

def test_json_output(images: Dict[str, Path]) -> None:
    path = images["snapshots"]
    h = Header(path)
    result = qcow2kit("whatis", "--json", path.name, "0", hex(h.l1_offset), str(1 << 40),
                      cwd=path.parent)
    assert result.exit_code == 0, result.stderr
    header, l1, beyond = json.loads(result.stdout)
    assert set(header) == {"offset", "cluster", "refcount", "references", "status", "holders"}
    assert (header["offset"], header["cluster"], header["refcount"], header["status"]) == \
        (0, 0, 1, "in-use")
    assert header["holders"] == [{"kind": "header", "description": "header field magic "
                                  "(bytes 0x0..0x3)", "start": 0, "length": h.cs,
                                  "counted": True, "field": "magic"}]
    assert l1["holders"][0]["kind"] == "l1-table" and l1["offset"] == h.l1_offset
    assert (beyond["status"], beyond["holders"]) == ("beyond-end-of-file", [])


def test_text_output(images: Dict[str, Path]) -> None:
    path = images["snapshots"]
    h = Header(path)
    result = qcow2kit("whatis", path.name, hex(h.l1_offset), cwd=path.parent)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"{h.l1_offset:#x}: cluster {h.l1_offset // h.cs}, refcount 1",
        f"    L1 table of the active state, entry 0 (guest 0x0..0x1fffffff): L2 table at "
        f"{h.l2_table(h.l1_offset, 0):#x}"]


@pytest.mark.parametrize("offset, problem", [
    ("abc", "'abc' is not a number"), ("-5", "-5 is negative"),
    ("0x", "'0x' is not a number"), ("1e3", "'1e3' is not a number"),
    (str(2**64), f"{2**64} is beyond 0xffffffffffffffff")])
def test_bad_offsets(images: Dict[str, Path], offset: str, problem: str) -> None:
    """An offset that is not one is a usage error: exit 2, click's usage message."""
    path = images["v3"]
    result = qcow2kit("whatis", path.name, "0", offset, cwd=path.parent)
    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: ") and " whatis [OPTIONS] " in result.stderr
    assert f"Error: Invalid value for 'OFFSET...': {problem}" in result.stderr
