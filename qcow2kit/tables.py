"""Bulk decoding of the big tables (L1, L2, refcounts, bitmap tables) with numpy.

The generated parser reads a table entry by entry (about 2 s per million entries);
whole-image work reads each table with one pread and decodes it with array
operations instead. Geometry (offsets, sizes, widths) comes from the generated
parser; the bit layout of an entry is the spec's, and tests/test_tables.py holds
every decoded value equal to the generated parser's on real images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np

from .errors import Qcow2Error
from . import image as _image
from .image import BitmapTableEntry, ClusterType, Image

OFFSET_MASK = np.uint64(0x00FFFFFFFFFFFE00)  # bits 9..55: L1, L2 and bitmap table offsets
REFTABLE_OFFSET_MASK = np.uint64(0xFFFFFFFFFFFFFE00)  # bits 9..63
COPIED = np.uint64(1 << 63)
COMPRESSED = np.uint64(1 << 62)
ZERO = np.uint64(1)
L1_RESERVED_MASK = np.uint64(0x7F000000000001FF)
L2_STANDARD_RESERVED_MASK = np.uint64(0x3F000000000001FE)
SUBCLUSTERS = 32
MAX_L1_BYTES = 32 << 20  # QEMU's limits
MAX_REFTABLE_BYTES = 8 << 20

UNALLOCATED = np.uint8(ClusterType.unallocated)
ZERO_PLAIN = np.uint8(ClusterType.zero_plain)
ZERO_ALLOC = np.uint8(ClusterType.zero_alloc)
NORMAL = np.uint8(ClusterType.normal)
COMPRESSED_TYPE = np.uint8(ClusterType.compressed)


@dataclass(frozen=True)
class Geometry:
    """The numbers that shape an image's tables, from the generated parser."""

    cluster_bits: int
    cluster_size: int
    extended_l2: bool
    l2_entries: int
    refcount_order: int
    refcount_block_entries: int
    compressed_offset_bits: int
    external_data_file: bool
    file_size: int

    @classmethod
    def of(cls, image: Image) -> "Geometry":
        q = image.qcow2
        return cls(
            cluster_bits=q.header.cluster_bits, cluster_size=q.cluster_size,
            extended_l2=bool(q.is_extended_l2), l2_entries=q.num_l2_entries,
            refcount_order=q.header.refcount_order_effective,
            refcount_block_entries=q.num_refcount_block_entries,
            compressed_offset_bits=q.compressed_offset_bits,
            external_data_file=bool(q.has_external_data_file), file_size=image.file_size)

    @property
    def file_clusters(self) -> int:
        return -(-self.file_size // self.cluster_size)


def read_table(image: Image, offset: int, size: int, what: str) -> bytes:
    """size bytes at offset; zeros past the end of the file, which is a finding."""
    image.past_end(what, offset, size)
    return image.read(offset, size)


def u64_array(data: bytes, count: Optional[int] = None) -> np.ndarray:
    """Big-endian 64-bit entries as native uint64."""
    return np.frombuffer(data, dtype=">u8", count=-1 if count is None else count).astype(np.uint64)


def l1_table(image: Image, offset: Optional[int] = None, size: Optional[int] = None,
             what: str = "L1 table") -> np.ndarray:
    """The raw entries of the active L1 table, or of the one at offset with size entries."""
    h = image.header
    offset = h.l1_table_offset if offset is None else offset
    size = h.l1_size if size is None else size
    if size * 8 > MAX_L1_BYTES:
        raise Qcow2Error(what, offset, f"{size} entries exceed QEMU's limit of "
                         f"{MAX_L1_BYTES // 8}")
    return u64_array(read_table(image, offset, size * 8, what))


class L2Table(NamedTuple):
    """One L2 table: raw descriptors and, with extended L2 entries, subcluster bitmaps."""

    l1_index: int
    offset: int
    entries: np.ndarray
    bitmaps: Optional[np.ndarray]


def l2_tables(image: Image, l1: np.ndarray, geometry: Geometry) -> Iterator[L2Table]:
    """Every L2 table an L1 table points at, in L1 order."""
    for index in np.flatnonzero(l1 & OFFSET_MASK):
        offset = int(l1[index] & OFFSET_MASK)
        data = read_table(image, offset, geometry.cluster_size, f"L2 table (L1 entry {index})")
        raw = u64_array(data)
        if geometry.extended_l2:
            yield L2Table(int(index), offset, raw[0::2], raw[1::2])
        else:
            yield L2Table(int(index), offset, raw, None)


def cluster_types(entries: np.ndarray, geometry: Geometry) -> np.ndarray:
    """How each guest cluster reads (the spec's cluster_type), as QEMU classifies it."""
    offset = entries & OFFSET_MASK
    compressed = (entries & COMPRESSED) != 0
    zero = ((entries & ZERO) != 0) & ~compressed & (not geometry.extended_l2)
    allocated = (offset != 0) | (geometry.external_data_file & ((entries & COPIED) != 0))
    return np.select(
        [compressed, zero & (offset != 0), zero, allocated],
        [COMPRESSED_TYPE, ZERO_ALLOC, ZERO_PLAIN, NORMAL], UNALLOCATED).astype(np.uint8)


def host_offsets(entries: np.ndarray) -> np.ndarray:
    """Standard descriptors' host cluster offsets (meaningless for compressed entries)."""
    return entries & OFFSET_MASK


def compressed_extents(entries: np.ndarray, geometry: Geometry):
    """(host offset, length in bytes up to the end of the last sector) of compressed entries."""
    x = np.uint64(geometry.compressed_offset_bits)
    offset = entries & ((np.uint64(1) << x) - np.uint64(1))
    sectors = ((entries & ~(COPIED | COMPRESSED)) >> x) + np.uint64(1)
    return offset, sectors * np.uint64(512) - (offset & np.uint64(511))


def refcount_table(image: Image) -> np.ndarray:
    """The refcount table's raw entries."""
    h = image.header
    size = h.refcount_table_clusters * image.cluster_size
    if size > MAX_REFTABLE_BYTES:
        raise Qcow2Error("refcount table", h.refcount_table_offset,
                         f"{size} bytes exceed QEMU's limit of {MAX_REFTABLE_BYTES}")
    return u64_array(read_table(image, h.refcount_table_offset, size, "refcount table"))


_WIDE = {3: np.dtype(">u1"), 4: np.dtype(">u2"), 5: np.dtype(">u4"), 6: np.dtype(">u8")}


def refcount_dtype(order: int) -> np.dtype:
    """The native dtype that holds refcounts of 1 << order bits."""
    return _WIDE.get(order, np.dtype(np.uint8)).newbyteorder("=")


def decode_refcount_block(data: bytes, order: int) -> np.ndarray:
    """A refcount block's refcounts; sub-byte widths are least significant bit first."""
    if order in _WIDE:
        return np.frombuffer(data, dtype=_WIDE[order]).astype(refcount_dtype(order))
    raw = np.frombuffer(data, dtype=np.uint8)
    bits = 1 << order
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    return ((raw[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)


def refcounts(image: Image, geometry: Geometry, count: Optional[int] = None) -> np.ndarray:
    """Stored refcounts of clusters 0..count-1 (default: every cluster of the file)."""
    count = geometry.file_clusters if count is None else count
    out = np.zeros(count, dtype=refcount_dtype(geometry.refcount_order))
    per_block = geometry.refcount_block_entries
    table = refcount_table(image)
    for index in np.flatnonzero(table & REFTABLE_OFFSET_MASK):
        first = int(index) * per_block
        if first >= count:
            break
        offset = int(table[index] & REFTABLE_OFFSET_MASK)
        data = read_table(image, offset, geometry.cluster_size, f"refcount block {index}")
        block = decode_refcount_block(data, geometry.refcount_order)
        n = min(per_block, count - first)
        out[first:first + n] = block[:n]
    return out


BITMAP_OFFSET = np.uint64(_image.BITMAP_OFFSET)
BITMAP_RESERVED = np.uint64(_image.BITMAP_RESERVED)
BITMAP_ALL_ONES = np.uint64(_image.BITMAP_ALL_ONES)
BITMAP_KINDS = _image.BITMAP_KINDS


class BitmapTable(Sequence[BitmapTableEntry]):
    """A big bitmap table, every entry classified as image.bitmap_kind does (small
    ones are image.bitmap_entries lists).

    Decoded in bulk and held in arrays (a table can have a million entries); entries
    become BitmapTableEntry objects when they are read.
    """

    def __init__(self, kinds: np.ndarray, offsets: np.ndarray, reserved: np.ndarray) -> None:
        self.kinds, self.offsets, self.reserved = kinds, offsets, reserved

    @classmethod
    def decode(cls, data: bytes) -> "BitmapTable":
        raw = np.frombuffer(data, dtype=">u8").astype(np.uint64)
        offsets = raw & BITMAP_OFFSET
        kinds = (offsets != 0).astype(np.uint8) * 2 + (raw & BITMAP_ALL_ONES != 0)
        return cls(kinds, offsets, raw & BITMAP_RESERVED)

    def __len__(self) -> int:
        return len(self.kinds)

    def __getitem__(self, index: Union[int, slice]) -> Any:
        if isinstance(index, slice):
            return BitmapTable(self.kinds[index], self.offsets[index], self.reserved[index])
        return BitmapTableEntry(BITMAP_KINDS[self.kinds[index]], int(self.offsets[index]),
                                int(self.reserved[index]))

    def __iter__(self) -> Iterator[BitmapTableEntry]:
        for k, o, r in zip(self.kinds.tolist(), self.offsets.tolist(), self.reserved.tolist()):
            yield BitmapTableEntry(BITMAP_KINDS[k], o, r)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"BitmapTable({list(self)!r})"
