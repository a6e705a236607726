"""The decoded-table layer: every entry mask, and the big tables decoded in bulk with
numpy (L1; L2 standard, extended and compressed; refcount tables and blocks of every
width; bitmap tables) with the cluster and subcluster rules.

The generated parser reads a table entry by entry (about 2 s per million entries);
whole-image work reads each table with one read through Image and decodes it with
array operations instead. Geometry (offsets, sizes, widths) comes from the generated
parser; the bit layout of an entry is the spec's, and tests/test_tables.py holds
every decoded value, subcluster types included, equal to the generated parser's on
real images.
"""
from __future__ import annotations

from typing import (TYPE_CHECKING, Any, Dict, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import numpy as np

from .errors import Qcow2Error
from .generated.qcow2 import Qcow2
from .bits import (ALL_ALLOC, ALL_ZERO, BITMAP_ALL_ONES, BITMAP_KINDS, BITMAP_RESERVED,
                   COMPRESSED, COPIED, L1_RESERVED, L2_RESERVED, OFFSET, REFT_OFFSET,
                   REFT_RESERVED, SUBCLUSTERS, ZERO)
from .limits import MAX_L1_BYTES, MAX_READ_END, MAX_REFTABLE_BYTES
from .records import BitmapTableEntry, Geometry

if TYPE_CHECKING:
    from .image import Image

ClusterType = Qcow2.ClusterType
SubclusterType = Qcow2.SubclusterType

OFFSET_MASK = np.uint64(OFFSET)
REFTABLE_OFFSET_MASK = np.uint64(REFT_OFFSET)
COPIED_BIT = np.uint64(COPIED)
COMPRESSED_BIT = np.uint64(COMPRESSED)
ZERO_BIT = np.uint64(ZERO)
ALL_ALLOC_MASK = np.uint64(ALL_ALLOC)
BITMAP_RESERVED_MASK = np.uint64(BITMAP_RESERVED)
BITMAP_ALL_ONES_BIT = np.uint64(BITMAP_ALL_ONES)

UNALLOCATED = np.uint8(ClusterType.unallocated)
ZERO_PLAIN = np.uint8(ClusterType.zero_plain)
ZERO_ALLOC = np.uint8(ClusterType.zero_alloc)
NORMAL = np.uint8(ClusterType.normal)
COMPRESSED_TYPE = np.uint8(ClusterType.compressed)


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
    return u64_array(image.read(offset, size * 8, what))


class L2Table(NamedTuple):
    """One L2 table: raw descriptors and, with extended L2 entries, subcluster bitmaps."""

    l1_index: int
    offset: int
    entries: np.ndarray
    bitmaps: Optional[np.ndarray]


def l2_words(data: bytes, geometry: Geometry) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """An L2 table's cluster descriptors and, with extended L2 entries, their
    subcluster bitmaps (else None)."""
    raw = u64_array(data)
    return (raw[0::2], raw[1::2]) if geometry.extended_l2 else (raw, None)


def l2_tables(image: Image, l1: np.ndarray, geometry: Geometry) -> Iterator[L2Table]:
    """Every L2 table an L1 table points at, in L1 order."""
    for index in np.flatnonzero(l1 & OFFSET_MASK):
        offset = int(l1[index] & OFFSET_MASK)
        data = image.read(offset, geometry.cluster_size, f"L2 table (L1 entry {index})")
        yield L2Table(int(index), offset, *l2_words(data, geometry))


def _cluster_type_table() -> np.ndarray:
    """cluster_types' answer by compressed << 3 | zero flag << 2 | has offset << 1 |
    allocated."""
    table = np.zeros(16, dtype=np.uint8)
    for index in range(16):
        compressed, zero, offset, allocated = (index >> 3 & 1, index >> 2 & 1,
                                               index >> 1 & 1, index & 1)
        table[index] = (COMPRESSED_TYPE if compressed else ZERO_ALLOC if zero and offset
                        else ZERO_PLAIN if zero else NORMAL if allocated else UNALLOCATED)
    return table


_CLUSTER_TYPES = _cluster_type_table()
_THREE, _FOUR, _EIGHT = (np.uint8(n) for n in (3, 4, 8))


def cluster_types(entries: np.ndarray, geometry: Geometry) -> np.ndarray:
    """How each guest cluster reads (the spec's cluster_type), as QEMU classifies it:
    compressed; else, with the zero flag (standard L2 entries only), zero_alloc with
    an offset and zero_plain without; else normal when allocated (an offset, or with
    an external data file the copied flag); else unallocated."""
    def bit(mask: np.uint64) -> np.ndarray:  # 0 or 1 per entry, as uint8 (one pass each)
        return ((entries & mask) != 0).view(np.uint8)

    index = bit(COMPRESSED_BIT) * _EIGHT | bit(OFFSET_MASK) * _THREE
    if not geometry.extended_l2:
        index |= bit(ZERO_BIT) * _FOUR
    if geometry.external_data_file:
        index |= bit(COPIED_BIT)
    return _CLUSTER_TYPES.take(index)


INVALID_SUBCLUSTER = np.uint8(SubclusterType.invalid)
_STANDARD_SUBCLUSTER = np.array([SubclusterType.unallocated_plain, SubclusterType.zero_plain,
                                 SubclusterType.zero_alloc, SubclusterType.normal,
                                 SubclusterType.compressed], dtype=np.uint8)  # by ClusterType


def subcluster_types(types: np.ndarray, bitmaps: Optional[np.ndarray]) -> np.ndarray:
    """The spec's subcluster_type of every subcluster, one row per L2 entry, from the
    entries' cluster types (cluster_types) and, with extended L2 entries, their
    subcluster bitmaps (without them, one subcluster: the whole cluster).

    As QEMU classifies them: in an allocated cluster a subcluster reads as zeros, data,
    or is allocated but unwritten; in an unallocated one it reads as zeros or from
    below; a bitmap that says both zeros and data, or data without a host cluster, is
    invalid; a compressed cluster is compressed throughout.
    """
    if bitmaps is None:
        return _STANDARD_SUBCLUSTER[types][:, None]
    bits = np.arange(SUBCLUSTERS, dtype=np.uint64)
    alloc = ((bitmaps[:, None] >> bits) & np.uint64(1)).astype(bool)
    zero = ((bitmaps[:, None] >> (bits + np.uint64(SUBCLUSTERS))) & np.uint64(1)).astype(bool)
    normal = (types == NORMAL)[:, None]
    compressed = (types == COMPRESSED_TYPE)[:, None]
    invalid = (normal & ((bitmaps & (bitmaps >> np.uint64(SUBCLUSTERS))) != 0)[:, None]) | \
        (~normal & ~compressed & ((bitmaps & ALL_ALLOC_MASK) != 0)[:, None])
    return np.select(
        [compressed, invalid, normal & zero, normal & alloc, normal, zero],
        [SubclusterType.compressed, SubclusterType.invalid, SubclusterType.zero_alloc,
         SubclusterType.normal, SubclusterType.unallocated_alloc, SubclusterType.zero_plain],
        SubclusterType.unallocated_plain).astype(np.uint8)


def host_offsets(entries: np.ndarray) -> np.ndarray:
    """Standard descriptors' host cluster offsets (meaningless for compressed entries)."""
    return entries & OFFSET_MASK


def compressed_extents(entries: np.ndarray, geometry: Geometry):
    """(host offset, length in bytes up to the end of the last sector) of compressed entries."""
    x = np.uint64(geometry.compressed_offset_bits)
    offset = entries & ((np.uint64(1) << x) - np.uint64(1))
    sectors = ((entries & ~(COPIED_BIT | COMPRESSED_BIT)) >> x) + np.uint64(1)
    return offset, sectors * np.uint64(512) - (offset & np.uint64(511))


class L2Entries:
    """One L2 table decoded whole, its entries classified as qemu classifies them."""

    def __init__(self, data: bytes, geometry: Geometry) -> None:
        self.geometry = g = geometry
        self.entries, self.bitmaps = l2_words(data, g)
        e = self.entries
        self.compressed = (e & COMPRESSED_BIT) != 0
        self.any_compressed = bool(self.compressed.any())
        self.offsets = e & OFFSET_MASK
        hosted = self.offsets != 0
        if g.external_data_file:
            zero = ((e & ZERO_BIT) != 0) & (not g.extended_l2)
            hosted |= ~zero & ((e & COPIED_BIT) != 0)
        if self.any_compressed:
            hosted &= ~self.compressed
        self.hosted = hosted  # normal and zero_alloc clusters
        everything = bool(hosted.all())  # as in fully allocated tables: no copies
        self.hosted_entries = e if everything else e[hosted]
        self.hosted_offsets = self.offsets if everything else self.offsets[hosted]
        self.hosted_clusters = (self.hosted_offsets >> np.uint64(g.cluster_bits)).view(np.intp)
        self.c_offsets: Any  # arrays, None without compressed entries
        self.c_lengths: Any
        self.c_offsets, self.c_lengths = compressed_extents(
            e[self.compressed], g) if self.any_compressed else (None, None)

    def counted_compressed(self) -> np.ndarray:
        """Which compressed entries qemu counts: none with an external data file, and
        none with a subcluster bitmap (both are corruptions)."""
        if self.geometry.external_data_file:
            return np.zeros(self.c_offsets.size, dtype=bool)
        if self.bitmaps is None:
            return np.ones(self.c_offsets.size, dtype=bool)
        return self.bitmaps[self.compressed] == 0

    def references(self) -> Tuple[np.ndarray, np.ndarray]:
        """(entry index, cluster) of every cluster the table's entries reference."""
        positions, clusters = [], []
        if not self.geometry.external_data_file:
            hosted = np.flatnonzero(self.hosted)
            straddling = (self.hosted_offsets % np.uint64(self.geometry.cluster_size)) != 0
            positions += [hosted, hosted[straddling]]
            clusters += [self.hosted_clusters, self.hosted_clusters[straddling] + 1]
        if self.any_compressed:
            where = np.flatnonzero(self.compressed)
            bits = np.uint64(self.geometry.cluster_bits)
            first = (self.c_offsets >> bits).astype(np.intp)
            last = ((self.c_offsets + self.c_lengths - np.uint64(1)) >> bits).astype(np.intp)
            for k in range(int((last - first).max()) + 1):
                spans = first + k <= last
                positions.append(where[spans])
                clusters.append(first[spans] + k)
        if not clusters:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        return np.concatenate(positions), np.concatenate(clusters)

    def clusters(self) -> np.ndarray:
        """The clusters of references(), without their entry indexes."""
        if self.any_compressed or self.geometry.external_data_file:
            return self.references()[1]
        return self.hosted_clusters


def refcount_table(image: Image) -> np.ndarray:
    """The refcount table's raw entries."""
    h = image.header
    size = h.refcount_table_clusters * image.cluster_size
    if size > MAX_REFTABLE_BYTES:
        raise Qcow2Error("refcount table", h.refcount_table_offset,
                         f"{size} bytes exceed QEMU's limit of {MAX_REFTABLE_BYTES}")
    return u64_array(image.read(h.refcount_table_offset, size, "refcount table"))


_WIDE: Dict[int, np.dtype] = {3: np.dtype(">u1"), 4: np.dtype(">u2"), 5: np.dtype(">u4"), 6: np.dtype(">u8")}


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
    for first, block in _refcount_blocks(image, geometry, count):
        out[first:first + len(block)] = block
    return out


def referenced_clusters(image: Image, geometry: Geometry) -> int:
    """How many clusters of the file have a stored refcount other than 0 (read a
    refcount block at a time: a big sparse file has millions of clusters)."""
    return sum(int(np.count_nonzero(block)) for _, block in
               _refcount_blocks(image, geometry, geometry.file_clusters))


def _refcount_blocks(image: Image, geometry: Geometry,
                     count: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(first cluster, refcounts) of each allocated refcount block, up to cluster count."""
    per_block = geometry.refcount_block_entries
    table = refcount_table(image)
    for index in np.flatnonzero(table & REFTABLE_OFFSET_MASK):
        first = int(index) * per_block
        if first >= count:
            break
        offset = int(table[index] & REFTABLE_OFFSET_MASK)
        data = image.read(offset, geometry.cluster_size, f"refcount block {index}")
        yield first, decode_refcount_block(data, geometry.refcount_order)[:count - first]


BLOCK_CACHE_BYTES = 1 << 20  # decoded refcount blocks StoredRefcounts keeps


class StoredRefcounts:
    """The stored refcounts, as qemu's qcow2_get_refcount reads them: 0 beyond the
    refcount table or in an unallocated block; a block whose offset is not cluster
    aligned, or that ends past qemu's largest offset, cannot be read. Blocks are read
    when asked for, and the last ones used (BLOCK_CACHE_BYTES of them, at least one)
    kept, so that memory stays bounded on any image."""

    def __init__(self, image: Image, reftable: np.ndarray) -> None:
        g = image.geometry
        self.image = image
        self.cluster_size = g.cluster_size
        self.order = g.refcount_order
        self.per_block = g.refcount_block_entries
        self.dtype = refcount_dtype(g.refcount_order)
        offsets = reftable & REFTABLE_OFFSET_MASK
        used = np.flatnonzero(offsets)  # none past the last: those read as 0
        self.offsets = offsets[:int(used[-1]) + 1 if used.size else 0].tolist()
        self._cache: Dict[int, np.ndarray] = {}  # by table index, least recently used first
        self._cached_bytes = 0

    def readable(self, offset: int) -> bool:
        """Whether qemu can read a refcount block at offset."""
        return not offset % self.cluster_size and offset + self.cluster_size <= MAX_READ_END

    def unreadable(self, count: int) -> List[int]:
        """The refcount table indexes of the blocks of the first count clusters that
        cannot be read."""
        return [index for index, offset in enumerate(self.offsets[:-(-count // self.per_block)])
                if offset and not self.readable(offset)]

    def block(self, index: int) -> Optional[np.ndarray]:
        """The refcounts of refcount table entry index's block: zeros when it is
        unallocated or beyond the table, None when it cannot be read."""
        block = self._cache.pop(index, None)
        if block is not None:
            self._cache[index] = block  # now the most recently used
            return block
        offset = self.offsets[index] if index < len(self.offsets) else 0
        if not offset:
            return np.zeros(self.per_block, dtype=self.dtype)
        if not self.readable(offset):
            return None
        block = decode_refcount_block(self.image.read(offset, self.cluster_size), self.order)
        while self._cache and self._cached_bytes + block.nbytes > BLOCK_CACHE_BYTES:
            self._cached_bytes -= self._cache.pop(next(iter(self._cache))).nbytes
        self._cache[index] = block
        self._cached_bytes += block.nbytes
        return block

    def span(self, first: int, last: int) -> np.ndarray:
        """The refcounts of clusters first..last-1, read block by block (0 where a
        block cannot be read)."""
        out = np.zeros(last - first, dtype=self.dtype)
        per_block = self.per_block
        for index in range(first // per_block, min(-(-last // per_block), len(self.offsets))):
            if self.offsets[index]:
                block = self.block(index)
                if block is not None:
                    a, b = max(first, index * per_block), min(last, (index + 1) * per_block)
                    out[a - first:b - first] = block[a - index * per_block:b - index * per_block]
        return out

    def get(self, cluster: int) -> Optional[int]:
        """One cluster's refcount; None when its block cannot be read."""
        block = self.block(cluster // self.per_block)
        return None if block is None else int(block[cluster % self.per_block])

    def lookup(self, clusters: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Refcounts of many clusters, and which of them could be read (None: all)."""
        per_block = self.per_block
        if not clusters.size:
            return np.zeros(0, dtype=self.dtype), None
        first, last = int(clusters.min()) // per_block, int(clusters.max()) // per_block
        spanned = (last - first + 1) * per_block * self.dtype.itemsize
        if first == last or spanned <= BLOCK_CACHE_BYTES // 2:  # the usual case: every block
            # between the first and the last read (and kept) as one array
            found = [self.block(index) for index in range(first, last + 1)]
            blocks = [block for block in found if block is not None]
            if len(blocks) == len(found):  # all readable
                window = blocks[0] if first == last else np.concatenate(blocks)
                return window[clusters - first * per_block], None
        indexes = clusters // per_block  # scattered: only the blocks they lie in
        values = np.zeros(clusters.size, dtype=self.dtype)
        readable = np.ones(clusters.size, dtype=bool)
        for index in np.unique(indexes).tolist():
            where = indexes == index
            block = self.block(index)
            if block is None:
                readable[where] = False
            else:
                values[where] = block[clusters[where] - index * per_block]
        return values, None if readable.all() else readable


class BitmapTable(Sequence[BitmapTableEntry]):
    """A big bitmap table, every entry classified as bits.bitmap_kind does (small
    ones are bits.bitmap_entries lists).

    Decoded in bulk and held in arrays (a table can have a million entries); entries
    become BitmapTableEntry objects when they are read.
    """

    def __init__(self, kinds: np.ndarray, offsets: np.ndarray, reserved: np.ndarray) -> None:
        self.kinds, self.offsets, self.reserved = kinds, offsets, reserved

    @classmethod
    def decode(cls, data: bytes) -> "BitmapTable":
        raw = np.frombuffer(data, dtype=">u8").astype(np.uint64)
        offsets = raw & OFFSET_MASK
        kinds = (offsets != 0).astype(np.uint8) * 2 + (raw & BITMAP_ALL_ONES_BIT != 0)
        return cls(kinds, offsets, raw & BITMAP_RESERVED_MASK)

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
