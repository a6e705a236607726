"""The spec's per-subcluster instances against qemu-img map and qemu-io, on extended L2
images in every subcluster state (tests/subclusters.py), and its reserved-bit checks.

For every guest subcluster, `reads_as` and `ofs_host` of qcow2.ksy's l2_subcluster
must say what `qemu-img map --output=json` reports: depth, present, zero, data and
the host offset. Subclusters qemu refuses to read must be `invalid`.
"""
from __future__ import annotations

import struct
import subprocess
from io import BytesIO
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from kaitaistruct import KaitaiStream

import imagekit
import subclusters
from qcow2kit.generated.qcow2 import Qcow2

Reads = Qcow2.SubclusterReads
Type = Qcow2.SubclusterType
# What qemu-img map reports for a subcluster: depth, present, zero, data, offset.
Mapped = Tuple[int, bool, bool, bool, Optional[int]]


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    return subclusters.build(tmp_path_factory.mktemp("subclusters"))


def parse(path: Path) -> Qcow2:
    q = Qcow2(KaitaiStream(BytesIO(path.read_bytes())))
    q._read()
    return q


def l2_entries(q: Qcow2) -> List[Any]:
    """The entries of the image's one L2 table."""
    l1 = q.l1_table.pieces[0].entries[0]
    return [e for piece in l1.l2_table.pieces for e in piece.entries]


def qemu_map(path: Path) -> List[Mapped]:
    """qemu-img map's report for each subcluster of the disk."""
    ranges = imagekit.qemu_json("map", path)
    out: List[Mapped] = []
    for r in ranges:
        assert r["start"] % subclusters.SUBCLUSTER == 0 == r["length"] % subclusters.SUBCLUSTER
        for at in range(r["start"], r["start"] + r["length"], subclusters.SUBCLUSTER):
            offset = r["offset"] + at - r["start"] if "offset" in r else None
            out.append((r["depth"], r["present"], r["zero"], r["data"], offset))
    return out


def expected(s: Any, backing: Optional[Mapped]) -> Mapped:
    """What qemu-img map must report for a subcluster the spec describes; for one that
    reads from the backing file, what map reports at that offset of the backing file."""
    if s.reads_as == Reads.backing:
        return (backing[0] + 1, *backing[1:])
    offset = s.ofs_host if s.has_ofs_host else None
    return {Reads.unallocated: (0, False, True, False, offset),
            Reads.zeros: (0, True, True, False, offset),
            Reads.data: (0, True, False, True, offset),
            Reads.compressed: (0, True, False, True, None)}[s.reads_as]


@pytest.mark.parametrize("name", ["states", "backed", "crafted"])
def test_subclusters_read_as_qemu_img_map_reports(name: str, states: Dict[str, Path]) -> None:
    path = states[name]
    q = parse(path)
    base = qemu_map(path.parent / "base.raw") if q.has_backing_file else None
    subs = [s for e in l2_entries(q)[:subclusters.SIZE // subclusters.CLUSTER]
            for s in e.subclusters]
    spec = [expected(s, base[i] if base else None) for i, s in enumerate(subs)]
    mapped = qemu_map(path)
    diff = [(i * subclusters.SUBCLUSTER, a, b) for i, (a, b) in enumerate(zip(spec, mapped))
            if a != b]
    assert len(spec) == len(mapped) == 512 and not diff, diff[:10]


def test_images_hold_every_state(states: Dict[str, Path]) -> None:
    """Between them the images have every subcluster type and every way of reading."""
    subs = [s for name in ("states", "backed", "invalid") for e in l2_entries(parse(states[name]))
            for s in e.subclusters]
    assert {s.subcluster_type for s in subs} == set(Type)
    assert {s.reads_as for s in subs} == set(Reads)


def test_invalid_subclusters_are_refused_by_qemu(states: Dict[str, Path]) -> None:
    """The spec calls every subcluster of the two contradictory entries invalid, and
    qemu refuses to read them; the clusters before them still read."""
    path = states["invalid"]
    entries = l2_entries(parse(path))
    for index, e in enumerate(entries[:subclusters.SIZE // subclusters.CLUSTER]):
        invalid = {s.reads_as == Reads.invalid for s in e.subclusters}
        assert invalid == {index in (subclusters.INVALID_BOTH, subclusters.INVALID_ALLOC)}
    for index, readable in ((0, True), (subclusters.INVALID_BOTH, False),
                            (subclusters.INVALID_ALLOC, False)):
        proc = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c",
                               f"read {index * subclusters.CLUSTER} {subclusters.SUBCLUSTER}",
                               path.name], cwd=path.parent, capture_output=True, text=True,
                              check=False)
        assert proc.returncode == (0 if readable else 1), proc
        assert ("read failed" in proc.stdout + proc.stderr) != readable, proc
    proc = subprocess.run(["qemu-img", "map", "--output=json", path.name], cwd=path.parent,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert f"L2 index: {subclusters.INVALID_BOTH:#x})" in proc.stderr, proc.stderr


def test_reserved_bits_under_extended_l2(states: Dict[str, Path]) -> None:
    """None in what qemu writes; bit 0 of an extended entry, a bitmap on a compressed
    cluster and the copied bit on a compressed cluster are each reserved. Bit 0 does
    not make the cluster read as zeros there."""
    for name in ("states", "backed"):
        assert not any(e.has_reserved_bits for e in l2_entries(parse(states[name])))
    entries = l2_entries(parse(states["crafted"]))
    flagged = [i for i, e in enumerate(entries) if e.has_reserved_bits]
    assert flagged == [subclusters.RESERVED_BIT0, subclusters.COMPRESSED_BITMAP,
                       subclusters.COMPRESSED_COPIED]
    assert not entries[subclusters.RESERVED_BIT0].zero
    assert entries[subclusters.RESERVED_BIT0].cluster_type == Qcow2.ClusterType.normal


def test_compressed_offset_bits_above_55_are_reserved(images: Dict[str, Path],
                                                      tmp_path: Path) -> None:
    """With 4 KiB clusters the compressed offset field has bits 0..57; qcow2 requires
    bits 56 and 57 to be 0. Setting either flags the entry; what qemu wrote does not."""
    src = images["zlib_4k"]
    entries = l2_entries(parse(src))
    index = next(i for i, e in enumerate(entries) if e.compressed)
    assert not any(e.has_reserved_bits for e in entries)
    data = src.read_bytes()
    l1, = struct.unpack_from(">Q", data, 40)
    l2 = struct.unpack_from(">Q", data, l1)[0] & 0x00FF_FFFF_FFFF_FE00
    for bit in (56, 57):
        path = tmp_path / f"bit{bit}.qcow2"
        path.write_bytes(data)
        imagekit.set_u64(path, l2 + 8 * index,
                         struct.unpack_from(">Q", data, l2 + 8 * index)[0] | 1 << bit)
        patched = l2_entries(parse(path))[index]
        assert patched.compressed and patched.has_reserved_bits
