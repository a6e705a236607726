"""A qcow2 image read and damaged with struct, independent of qcow2kit: the header
fields, tables and refcounts the whatis and layout tests check against."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator, Tuple

import imagekit

OFFSET = 0x00FFFFFFFFFFFE00
COMPRESSED = 1 << 62


def u64(path: Path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack(">Q", f.read(8))[0]


class Header:
    """The header fields and tables the tests need, read with struct."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            data = f.read(112)
        self.path = path
        self.version, = struct.unpack_from(">I", data, 4)
        self.backing_offset, self.backing_size, self.bits = struct.unpack_from(">QII", data, 8)
        self.cs = 1 << self.bits
        self.l1_size, self.l1_offset, self.reftable = struct.unpack_from(">IQQ", data, 36)
        self.reftable_clusters, self.nb_snapshots, self.snapshot_offset = \
            struct.unpack_from(">IIQ", data, 56)
        v3 = self.version >= 3
        incompatible = struct.unpack_from(">Q", data, 72)[0] if v3 else 0
        self.refcount_bits = 1 << (struct.unpack_from(">I", data, 96)[0] if v3 else 4)
        self.entry_size = 16 if incompatible & 16 else 8
        self.l2_entries = self.cs // self.entry_size
        self.clusters = -(-path.stat().st_size // self.cs)

    def l2_table(self, l1_offset: int, index: int) -> int:
        return u64(self.path, l1_offset + 8 * index) & OFFSET

    def refcount(self, cluster: int) -> int:
        per_block = self.cs * 8 // self.refcount_bits
        block = u64(self.path, self.reftable + 8 * (cluster // per_block)) & ~0x1FF
        if not block:
            return 0
        bit = (cluster % per_block) * self.refcount_bits
        with open(self.path, "rb") as f:
            f.seek(block + bit // 8)
            raw = int.from_bytes(f.read(max(1, self.refcount_bits // 8)), "big")
        return raw >> (bit % 8) & ((1 << self.refcount_bits) - 1) if \
            self.refcount_bits < 8 else raw

    def snapshots(self) -> Iterator[Tuple[int, int, int, str]]:
        """(entry offset, L1 offset, L1 size, id) of each snapshot table entry."""
        data = self.path.read_bytes()
        pos = self.snapshot_offset
        for _ in range(self.nb_snapshots):
            l1_offset, l1_size, id_size, name_size = struct.unpack_from(">QIHH", data, pos)
            extra, = struct.unpack_from(">I", data, pos + 36)
            id_at = pos + 40 + extra
            yield pos, l1_offset, l1_size, data[id_at:id_at + id_size].decode()
            pos += -(-(40 + extra + id_size + name_size) // 8) * 8


def add_refcount(h: Header, cluster: int, delta: int) -> None:
    """Change a cluster's 16-bit refcount."""
    assert h.refcount_bits == 16
    per_block = h.cs * 8 // 16
    block = u64(h.path, h.reftable + 8 * (cluster // per_block)) & ~0x1FF
    with open(h.path, "r+b") as f:
        f.seek(block + 2 * (cluster % per_block))
        f.write(struct.pack(">H", h.refcount(cluster) + delta))


def damage(path: Path) -> Tuple[int, int]:
    """Add a cluster at the end of the file with a refcount but no reference (leaked)
    and take a reference off the refcount of the first data cluster qemu-img map
    shows (corrupt); returns both clusters."""
    h = Header(path)
    with open(path, "r+b") as f:
        f.truncate(h.clusters * h.cs + h.cs)
    h = Header(path)
    add_refcount(h, h.clusters - 1, 1)
    data = next(e["offset"] for e in imagekit.qemu_json("map", path) if "offset" in e)
    add_refcount(h, data // h.cs, -1)
    return h.clusters - 1, data // h.cs
