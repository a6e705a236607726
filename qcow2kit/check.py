"""`qemu-img check` for qcow2 images, read-only.

Every cluster's refcount is rebuilt from all references to it and compared with the
stored one, as qemu 7.2 does (block/qcow2-refcount.c, qcow2-bitmap.c and
qcow2-snapshot.c): the header cluster; the active L1 table, its L2 tables and their
data clusters (compressed data by the host clusters its bytes span); each snapshot's
L1 table and L2 tables; the snapshot table; the refcount table; the encryption
header; the bitmap directory, tables and data; and each refcount block, which must
be referenced exactly once. Then the copied flags (bit 63) of the active L1 and L2
entries are checked against the stored refcounts.

The findings, their order, qemu's stderr lines for them, the counts and the exit
status are qemu-img check's, so that the two can be compared with diff. Each finding
also names the structure and its offset in the file (`Problem.explanation`).

Speed: L2 tables are decoded whole with numpy and their references counted in bulk;
a table takes the entry-by-entry path (which gives qemu's messages in qemu's order)
only when it has something to report. Tables are read one at a time.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import (Dict, Iterable, Iterator, List, NamedTuple, Optional, Protocol, Tuple,
                    Union)

import numpy as np

from . import tables
from .errors import Qcow2Error
from .image import BitmapTableEntry, Image
from .progress import Progress
from .qemu_style import byte_width, c_string, to_json
from .snapshots import ENTRY_FIXED_BYTES, Snapshot, read_snapshots

CORRUPTION = "corruption"
LEAK = "leak"
CHECK_ERROR = "check-error"
NOTICE = "notice"  # printed by qemu-img check but counted nowhere

COPIED = 1 << 63
OFFSET = 0x00FFFFFFFFFFFE00  # L1 entry, standard L2 entry: bits 9..55
L1_RESERVED = 0x7F000000000001FF
L2_RESERVED = 0x3F000000000001FE
REFT_OFFSET = 0xFFFFFFFFFFFFFE00
REFT_RESERVED = 0x1FF
ALL_ALLOC = 0xFFFFFFFF  # extended L2 bitmap: allocated subclusters
AUTOCLEAR_BITMAPS = 1
MAX_L1_ENTRIES = tables.MAX_L1_BYTES // 8
MAX_CLUSTERS = 2**31 - 1  # qemu-img check gives up on larger files
COUNT_MAX = 2**32 - 1  # rebuilt refcounts are uint32


def _c_hex(value: int) -> str:
    """C's %#x: 0x-prefixed, but a plain 0 for zero."""
    return f"{value:#x}" if value else "0"


@dataclass(frozen=True)
class Problem:
    """One finding: how qemu-img check counts it and prints it, and where it is."""

    kind: str  # CORRUPTION, LEAK, CHECK_ERROR or NOTICE
    message: str  # the stderr line(s), qemu's wording where qemu prints any
    structure: str  # the structure at fault
    offset: Optional[int]  # where it is in the file
    detail: str  # what is wrong with it

    @property
    def explanation(self) -> str:
        where = f" at offset {self.offset:#x}" if self.offset is not None else ""
        return f"{self.structure}{where}: {self.detail}"


@dataclass(frozen=True)
class CheckResult:
    """What read-only qemu-img check reports for an image."""

    check_errors: int
    corruptions: int
    leaks: int
    total_clusters: int
    allocated_clusters: int
    fragmented_clusters: int
    compressed_clusters: int
    image_end_offset: int
    findings: Tuple[Iterable[Problem], ...] = ()
    failure: Optional[str] = None  # why the check could not be completed

    def problems(self) -> Iterator[Problem]:
        """Every finding, in the order qemu-img check prints them."""
        return itertools.chain.from_iterable(self.findings)

    @property
    def exit_code(self) -> int:
        """qemu-img check's: 1 check failed, 2 corruptions, 3 leaks only, 0 clean."""
        if self.failure is not None or self.check_errors:
            return 1
        if self.corruptions:
            return 2
        return 3 if self.leaks else 0


# --- reading the image as qemu does -------------------------------------------------

def _label(snapshot: Snapshot) -> str:
    """A snapshot as qemu names it in its messages."""
    return f"snapshot {c_string(snapshot.id)} ({c_string(snapshot.name)})"


def _snapshot_table_size(snapshots: List[Snapshot], table_offset: int) -> int:
    """qemu's size of the snapshot table: up to the end of the last entry's name,
    its padding left out."""
    if not snapshots:
        return 0
    last = snapshots[-1]
    end = (last.offset + ENTRY_FIXED_BYTES + last.extra_data_size + byte_width(last.id) +
           byte_width(last.name))
    return end - table_offset


class _Context:
    """The image, its geometry and tables, read as qemu reads them: zeros past the
    end of the file, limits checked before anything is allocated."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.geometry = g = tables.Geometry.of(image)
        self.bits = g.cluster_bits
        self.cs = g.cluster_size
        self.file_size = g.file_size
        self.entry_size = 16 if g.extended_l2 else 8
        self._fd = image._file.fileno()
        self._check_tables()
        self.snapshots = read_snapshots(image)
        self.snapshot_table_size = _snapshot_table_size(self.snapshots,
                                                        image.header.snapshot_offset)
        h = image.header
        self.reftable = self.entries(h.refcount_table_offset,
                                     h.refcount_table_clusters * self.cs // 8)

    def read(self, offset: int, size: int) -> bytes:
        """size bytes at offset, zeros past the end of the file."""
        data = os.pread(self._fd, size, offset) if offset < self.file_size else b""
        return data + bytes(size - len(data))

    def entries(self, offset: int, count: int) -> np.ndarray:
        """Up to count big-endian 64-bit entries at offset: those inside the file (qemu
        reads the rest as zeros, which reference nothing)."""
        inside = max(0, min(count * 8, self.file_size - offset))
        return tables.u64_array(self.read(offset, -(-inside // 8) * 8))

    def _check_tables(self) -> None:
        """What qemu refuses to open: oversized or misaligned L1 and refcount tables."""
        h = self.image.header
        if h.l1_size > MAX_L1_ENTRIES:
            raise Qcow2Error("L1 table", h.l1_table_offset, f"{h.l1_size} entries exceed "
                             f"QEMU's limit of {MAX_L1_ENTRIES}")
        if h.refcount_table_clusters * self.cs > tables.MAX_REFTABLE_BYTES:
            raise Qcow2Error("refcount table", h.refcount_table_offset,
                             f"{h.refcount_table_clusters} clusters exceed QEMU's limit of "
                             f"{tables.MAX_REFTABLE_BYTES} bytes")
        for what, offset in (("L1 table", h.l1_table_offset),
                             ("refcount table", h.refcount_table_offset)):
            if offset % self.cs:
                raise Qcow2Error(what, offset, "not cluster aligned")


class _Stored:
    """The stored refcounts, as qemu's qcow2_get_refcount reads them: 0 beyond the
    refcount table or in an unallocated block; a block whose offset is not cluster
    aligned cannot be read."""

    def __init__(self, ctx: _Context, count: int) -> None:
        g = ctx.geometry
        self.ctx = ctx
        self.per_block = g.refcount_block_entries
        self.offsets = (ctx.reftable & tables.REFTABLE_OFFSET_MASK).tolist()
        self.values = np.zeros(count, dtype=tables.refcount_dtype(g.refcount_order))
        self.unreadable: List[int] = []  # refcount table indices
        for index, offset in enumerate(self.offsets[:-(-count // self.per_block)]):
            if offset and offset % ctx.cs:
                self.unreadable.append(index)
            elif offset:
                first = index * self.per_block
                n = min(self.per_block, count - first)
                self.values[first:first + n] = self._block(offset)[:n]

    def _block(self, offset: int) -> np.ndarray:
        data = self.ctx.read(offset, self.ctx.cs)
        return tables.decode_refcount_block(data, self.ctx.geometry.refcount_order)

    def get(self, cluster: int) -> Optional[int]:
        """One cluster's refcount; None when its block cannot be read."""
        index = cluster // self.per_block
        offset = self.offsets[index] if index < len(self.offsets) else 0
        if offset % self.ctx.cs:
            return None
        if not offset:
            return 0
        if cluster < len(self.values):
            return int(self.values[cluster])
        return int(self._block(offset)[cluster - index * self.per_block])

    def lookup(self, clusters: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Refcounts of many clusters, and which of them could be read (None: all)."""
        inside = clusters < len(self.values)
        if not self.unreadable and inside.all():
            return self.values[clusters], None
        values = np.zeros(clusters.size, dtype=np.uint64)
        values[inside] = self.values[clusters[inside]]
        readable = ~np.isin(clusters // self.per_block, self.unreadable)
        for i in np.flatnonzero(~inside):
            value = self.get(int(clusters[i]))
            readable[i] = value is not None
            values[i] = value or 0
        return values, readable

    def corruption_notice(self, index: int) -> Problem:
        """qemu's one-time notice when a refcount lookup meets an unaligned block."""
        offset = self.offsets[index]
        return Problem(
            NOTICE, f"qcow2: Image is corrupt: Refblock offset {_c_hex(offset)} unaligned "
            f"(reftable index: {_c_hex(index)}); further non-fatal corruption events will "
            "be suppressed", "refcount table",
            self.ctx.image.header.refcount_table_offset + 8 * index,
            f"entry {index}: refcount block offset {offset:#x} is not cluster aligned")


class _L2:
    """One L2 table decoded whole, its entries classified as qemu classifies them."""

    def __init__(self, data: bytes, ctx: _Context) -> None:
        g = ctx.geometry
        self.ctx = ctx
        raw = np.frombuffer(data, dtype=">u8").astype(np.uint64)
        self.entries = e = raw[0::2] if g.extended_l2 else raw
        self.bitmaps = raw[1::2] if g.extended_l2 else None
        self.compressed = (e & tables.COMPRESSED) != 0
        self.any_compressed = bool(self.compressed.any())
        self.offsets = e & tables.OFFSET_MASK
        hosted = self.offsets != 0
        if g.external_data_file:
            zero = ((e & tables.ZERO) != 0) & (not g.extended_l2)
            hosted |= ~zero & ((e & tables.COPIED) != 0)
        if self.any_compressed:
            hosted &= ~self.compressed
        self.hosted = hosted  # normal and zero_alloc clusters
        everything = bool(hosted.all())  # as in fully allocated tables: no copies
        self.hosted_entries = e if everything else e[hosted]
        self.hosted_offsets = self.offsets if everything else self.offsets[hosted]
        self.hosted_clusters = (self.hosted_offsets >> np.uint64(ctx.bits)).view(np.intp)
        self.c_offsets, self.c_lengths = tables.compressed_extents(
            e[self.compressed], g) if self.any_compressed else (None, None)

    def quiet(self) -> bool:
        """No entry for qemu to report, so the bulk path gives qemu's result."""
        ctx, g = self.ctx, self.ctx.geometry
        flagged = (self.entries & np.uint64(L2_RESERVED | ((ctx.cs - 1) & OFFSET))) != 0
        if self.any_compressed:
            flagged &= ~self.compressed
        if flagged.any() or not self._bitmaps_quiet():
            return False
        if not g.external_data_file and self.hosted_offsets.size and \
                int(self.hosted_offsets.max()) >= ctx.file_size:
            return False
        if not self.any_compressed:
            return True
        return not (g.external_data_file or
                    (self.entries[self.compressed] & tables.COPIED).any() or
                    (self.c_offsets + self.c_lengths >= ctx.file_size + ctx.cs).any())

    def _bitmaps_quiet(self) -> bool:
        b = self.bitmaps
        if b is None:
            return True
        alloc = b & np.uint64(ALL_ALLOC)
        unallocated = ~self.hosted & ~self.compressed
        return not ((alloc & (b >> np.uint64(32)))[self.hosted].any() or
                    alloc[unallocated].any() or b[self.compressed].any())

    def references(self) -> Tuple[np.ndarray, np.ndarray]:
        """(entry index, cluster) of every cluster the table's entries reference."""
        positions, clusters = [], []
        if not self.ctx.geometry.external_data_file:
            hosted = np.flatnonzero(self.hosted)
            straddling = (self.hosted_offsets % np.uint64(self.ctx.cs)) != 0
            positions += [hosted, hosted[straddling]]
            clusters += [self.hosted_clusters, self.hosted_clusters[straddling] + 1]
        if self.any_compressed:
            where = np.flatnonzero(self.compressed)
            bits = np.uint64(self.ctx.bits)
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
        if self.any_compressed or self.ctx.geometry.external_data_file:
            return self.references()[1]
        return self.hosted_clusters


class _L1Entry(NamedTuple):
    """An L1 entry and the L2 table it points at."""

    label: str  # "L1", or "snapshot 1 (name) L1"
    index: int
    entry: int
    offset: int  # of the L2 table

    @property
    def table(self) -> str:
        return f"L2 table ({self.label} entry {self.index})"


# --- the references, in qemu's order ------------------------------------------------

class _Sink(Protocol):
    """What the walk hands every reference and structural finding to."""

    def problem(self, kind: str, message: str, structure: str, offset: Optional[int],
                detail: str) -> None: ...

    def region(self, name: str, offset: int, size: int) -> None: ...

    def l2_table(self, ref: _L1Entry, data: bytes, active: bool) -> None: ...

    def refblock(self, index: int, entry: int) -> None: ...


def _walk(ctx: _Context, sink: _Sink, progress: Optional[Progress] = None) -> None:
    """Hand every reference qemu counts to sink, in qemu's order."""
    h = ctx.image.header
    sink.region("header", 0, ctx.cs)
    _walk_l1(ctx, sink, "L1", h.l1_table_offset, h.l1_size, True, progress)
    if ctx.geometry.external_data_file and ctx.snapshots:
        sink.problem(CORRUPTION, f"ERROR {len(ctx.snapshots)} snapshots in image with data "
                     "file", "snapshot table", h.snapshot_offset,
                     "internal snapshots are not allowed with an external data file")
    for s in ctx.snapshots:
        if _snapshot_l1_usable(s, ctx, sink):
            _walk_l1(ctx, sink, f"{_label(s)} L1", s.l1_table_offset, s.l1_size, False,
                     progress)
    sink.region("snapshot table", h.snapshot_offset, ctx.snapshot_table_size)
    sink.region("refcount table", h.refcount_table_offset, h.refcount_table_clusters * ctx.cs)
    crypto = ctx.image.extension("full_disk_encryption")
    if crypto is not None:
        sink.region("encryption header", crypto.parsed.ofs_encryption_header,
                    crypto.parsed.len_encryption_header)
    _walk_bitmaps(ctx, sink)
    for index in np.flatnonzero(ctx.reftable):
        sink.refblock(int(index), int(ctx.reftable[index]))


def _snapshot_l1_usable(s: Snapshot, ctx: _Context, sink: _Sink) -> bool:
    label, offset = _label(s), s.l1_table_offset
    if offset % ctx.cs:
        sink.problem(CORRUPTION, f"ERROR {label} l1_offset={_c_hex(offset)}: L1 table is not "
                     "cluster aligned; snapshot table entry corrupted", "snapshot table",
                     s.offset, f"{label}: L1 table offset {offset:#x} is not cluster aligned")
        return False
    if s.l1_size > MAX_L1_ENTRIES:
        sink.problem(CORRUPTION, f"ERROR {label} l1_size={_c_hex(s.l1_size)}: L1 table is "
                     "too large; snapshot table entry corrupted", "snapshot table", s.offset,
                     f"{label}: {s.l1_size} L1 entries exceed QEMU's limit of "
                     f"{MAX_L1_ENTRIES}")
        return False
    return True


def _walk_l1(ctx: _Context, sink: _Sink, label: str, offset: int, size: int, active: bool,
             progress: Optional[Progress]) -> None:
    """An L1 table, then each L2 table it points at (qemu's check_refcounts_l1)."""
    if size == 0:
        return
    sink.region(f"{label} table", offset, size * 8)
    l1 = ctx.entries(offset, size)
    done = 0
    for index in np.flatnonzero(l1):
        ref = _L1Entry(label, int(index), int(l1[index]), int(l1[index]) & OFFSET)
        at = offset + 8 * ref.index
        if ref.entry & L1_RESERVED:
            sink.problem(CORRUPTION, f"ERROR found L1 entry with reserved bits set: "
                         f"{ref.entry:x}", f"{label} table", at, f"entry {ref.index} "
                         f"({ref.entry:#x}) has reserved bits set")
        sink.region(ref.table, ref.offset, ctx.cs)
        if ref.offset % ctx.cs:
            sink.problem(CORRUPTION, f"ERROR l2_offset={ref.offset:x}: Table is not cluster "
                         "aligned; L1 entry corrupted", f"{label} table", at,
                         f"entry {ref.index}: L2 table offset {ref.offset:#x} is not "
                         "cluster aligned")
        sink.l2_table(ref, ctx.read(ref.offset, ctx.cs), active)
        if progress is not None:
            progress.advance(ref.index + 1 - done)
            done = ref.index + 1
    if progress is not None:
        progress.advance(size - done)


def _bitmap_entry_fault(entry: BitmapTableEntry, cluster_size: int) -> Optional[str]:
    """Why qemu rejects a bitmap table entry, if it does."""
    if entry.reserved:
        return f"reserved bits {entry.reserved:#x} are set"
    if entry.kind == "invalid":
        return f"the all-ones flag is set on allocated data at {entry.offset:#x}"
    if entry.offset % cluster_size:
        return f"data offset {entry.offset:#x} is not cluster aligned"
    return None


def _walk_bitmaps(ctx: _Context, sink: _Sink) -> None:
    """The bitmap directory, each bitmap table and its data clusters, when the
    bitmaps extension is valid (its autoclear bit set)."""
    image = ctx.image
    ext = image.extension("bitmaps")
    if ext is None or not image.header.autoclear_features & AUTOCLEAR_BITMAPS:
        return
    sink.region("bitmap directory", ext.parsed.ofs_bitmap_directory,
                ext.parsed.len_bitmap_directory)
    for i, bitmap in enumerate(image.bitmap_directory()):
        table = f"bitmap '{bitmap.name}' table"
        sink.region(table, bitmap.table_offset, bitmap.table_size * 8)
        for j, entry in enumerate(image.bitmap_table(i)):
            fault = _bitmap_entry_fault(entry, ctx.cs)
            if fault is not None:
                sink.problem(CORRUPTION, f"ERROR bitmap '{bitmap.name}' table entry {j} is "
                             f"invalid: {fault}", table, bitmap.table_offset + 8 * j,
                             f"entry {j}: {fault}")
            elif entry.offset:
                sink.region(f"bitmap '{bitmap.name}' data (table entry {j})", entry.offset,
                            ctx.cs)


# --- counting ------------------------------------------------------------------------

class _Counter:
    """The sink that rebuilds refcounts, reports what qemu reports while doing so,
    keeps qemu's fragmentation figures and checks the active copied flags."""

    def __init__(self, ctx: _Context, stored: _Stored) -> None:
        self.ctx = ctx
        self.stored = stored
        self.computed = np.zeros(len(stored.values), dtype=np.uint32)
        # qemu stops counting at the refcount width's maximum; counts are uint32 here,
        # so 64-bit refcounts stop at 2**32 - 1 (a number of references never seen)
        self.limit = min((1 << (1 << ctx.image.header.refcount_order)) - 1, COUNT_MAX)
        self.nb_clusters = ctx.geometry.file_clusters
        self.problems: List[Problem] = []
        # copied flag findings, reported last
        self.copied: List[Union[_Unreadable, Iterable[Problem]]] = []
        self.allocated = self.fragmented = self.compressed = 0

    def problem(self, kind: str, message: str, structure: str, offset: Optional[int],
                detail: str) -> None:
        self.problems.append(Problem(kind, message, structure, offset, detail))

    # qemu's qcow2_inc_refcounts_imrt
    def region(self, name: str, offset: int, size: int) -> None:
        if size <= 0:
            return
        if offset + size - self.ctx.file_size >= self.ctx.cs:
            self.problem(CORRUPTION, "ERROR: counting reference for region exceeding the end "
                         f"of the file by one cluster or more: offset {offset:#x} size "
                         f"{size:#x}", name, offset, f"{size} bytes run past the end of the "
                         f"file ({self.ctx.file_size} bytes) by a cluster or more")
            return
        first, last = offset >> self.ctx.bits, (offset + size - 1) >> self.ctx.bits
        window = self.computed[first:last + 1]
        if int(window.max()) < self.limit:
            window += np.uint32(1)
            self.nb_clusters = max(self.nb_clusters, last + 1)
            return
        for cluster in range(first, last + 1):
            self._count(name, cluster)

    def _count(self, name: str, cluster: int) -> None:
        if self.computed[cluster] >= self.limit:
            offset = cluster << self.ctx.bits
            self.problem(CORRUPTION, f"ERROR: overflow cluster offset={offset:#x}\nUse "
                         "qemu-img amend to increase the refcount entry width or qemu-img "
                         "convert to create a clean copy if the image cannot be opened for "
                         "writing", name, offset, f"cluster {cluster} already has "
                         f"{self.limit} references, the most its refcount can hold")
            return
        self.computed[cluster] += 1
        self.nb_clusters = max(self.nb_clusters, cluster + 1)

    def _count_bulk(self, clusters: np.ndarray) -> bool:
        """Count many references at once; False (and nothing counted) on overflow."""
        if not clusters.size:
            return True
        low, high = int(clusters.min()), int(clusters.max())
        if high - low < 4 * clusters.size:  # a table's clusters are usually close
            counts = np.bincount(clusters - low).astype(np.uint32)
            window = self.computed[low:high + 1]
            window += counts
            if int(window.max()) > self.limit:
                window -= counts
                return False
        else:
            np.add.at(self.computed, clusters, np.uint32(1))
            if int(self.computed[clusters].max()) > self.limit:
                np.subtract.at(self.computed, clusters, np.uint32(1))
                return False
        self.nb_clusters = max(self.nb_clusters, high + 1)
        return True

    # qemu's check_refcounts_l2
    def l2_table(self, ref: _L1Entry, data: bytes, active: bool) -> None:
        table = _L2(data, self.ctx)
        if active:
            self._check_copied(ref, table)
        if table.quiet() and self._count_bulk(table.clusters()):
            if active:
                self._fragmentation(table)
        else:
            self._l2_entries(ref, table, active)

    def _fragmentation(self, table: _L2) -> None:
        offsets = table.hosted_offsets
        compressed = int(np.count_nonzero(table.compressed)) if table.any_compressed else 0
        jumps = np.count_nonzero(offsets[1:] != offsets[:-1] + np.uint64(self.ctx.cs))
        self.allocated += offsets.size + compressed
        self.compressed += compressed
        self.fragmented += compressed + int(jumps)

    def _l2_entries(self, ref: _L1Entry, table: _L2, active: bool) -> None:
        """Entry by entry, for a table with something to report."""
        bitmaps = table.bitmaps if table.bitmaps is not None else np.zeros_like(table.entries)
        compressed = iter(zip(table.c_offsets if table.any_compressed else (),
                              table.c_lengths if table.any_compressed else ()))
        contiguous = 0
        for j in np.flatnonzero(table.entries | bitmaps):
            entry, bitmap = int(table.entries[j]), int(bitmaps[j])
            at = ref.offset + int(j) * self.ctx.entry_size
            if table.compressed[j]:
                offset, length = next(compressed)
                self._compressed_entry(ref, int(j), at, entry, bitmap, int(offset),
                                       int(length), active)
                continue
            if entry & L2_RESERVED:
                self.problem(CORRUPTION, f"ERROR found l2 entry with reserved bits set: "
                             f"{entry:x}", ref.table, at,
                             f"entry {j} ({entry:#x}) has reserved bits set")
            if table.hosted[j]:
                contiguous = self._hosted_entry(ref, int(j), at, entry, bitmap, active,
                                                contiguous)
            elif bitmap & ALL_ALLOC:
                self.problem(CORRUPTION, "ERROR: Unallocated cluster has non-zero subcluster "
                             "allocation map", ref.table, at, f"entry {j}: unallocated "
                             f"cluster with allocated subclusters ({bitmap & ALL_ALLOC:#x})")

    def _compressed_entry(self, ref: _L1Entry, j: int, at: int, entry: int, bitmap: int,
                          offset: int, length: int, active: bool) -> None:
        if entry & COPIED:
            self.problem(CORRUPTION, f"ERROR: coffset={offset:#x}: copied flag must never be "
                         "set for compressed clusters", ref.table, at,
                         f"entry {j}: compressed cluster with the copied flag set")
            entry &= ~COPIED
        if self.ctx.geometry.external_data_file:
            self.problem(CORRUPTION, f"ERROR compressed cluster {j} with data file, "
                         f"entry={entry:#x}", ref.table, at, f"entry {j}: compressed cluster "
                         "in an image with an external data file")
            return
        if bitmap:
            self.problem(CORRUPTION, f"ERROR compressed cluster {j} with non-zero subcluster "
                         f"allocation bitmap, entry={entry:#x}", ref.table, at,
                         f"entry {j}: compressed cluster with subcluster bitmap {bitmap:#x}")
            return
        self.region(f"compressed data ({ref.table} entry {j})", offset, length)
        if active:
            self.allocated += 1
            self.compressed += 1
            self.fragmented += 1

    def _hosted_entry(self, ref: _L1Entry, j: int, at: int, entry: int, bitmap: int,
                      active: bool, contiguous: int) -> int:
        """A normal or preallocated zero cluster; returns the next contiguous offset."""
        offset = entry & OFFSET
        if (bitmap >> 32) & bitmap:
            self.problem(CORRUPTION, f"ERROR offset={offset:x}: Allocated cluster has "
                         "corrupted subcluster allocation bitmap", ref.table, at,
                         f"entry {j}: subclusters {(bitmap >> 32) & bitmap:#x} are both "
                         "allocated and zero")
        if offset % self.ctx.cs:
            has_data = bitmap & ALL_ALLOC if self.ctx.geometry.extended_l2 else not entry & 1
            what = "Data" if has_data else "Preallocated"
            self.problem(CORRUPTION, f"ERROR offset={offset:x}: {what} cluster is not "
                         "properly aligned; L2 entry corrupted.", ref.table, at, f"entry {j}: "
                         f"{what.lower()} cluster offset {offset:#x} is not cluster aligned")
        if active:
            self.allocated += 1
            self.fragmented += bool(contiguous and offset != contiguous)
            contiguous = offset + self.ctx.cs
        if not self.ctx.geometry.external_data_file:
            self.region(f"data cluster ({ref.table} entry {j})", offset, self.ctx.cs)
        return contiguous

    # qemu's check_refblocks, one refcount table entry
    def refblock(self, index: int, entry: int) -> None:
        at = self.ctx.image.header.refcount_table_offset + 8 * index
        offset = entry & REFT_OFFSET
        if entry & REFT_RESERVED:
            fault = (f"ERROR refcount table entry {index} has reserved bits set",
                     f"entry {index} ({entry:#x}) has reserved bits set")
        elif offset % self.ctx.cs:
            fault = (f"ERROR refcount block {index} is not cluster aligned; refcount table "
                     "entry corrupted", f"entry {index}: refcount block offset {offset:#x} "
                     "is not cluster aligned")
        elif offset >> self.ctx.bits >= self.nb_clusters:
            fault = (f"ERROR refcount block {index} is outside image", f"entry {index}: "
                     f"refcount block at {offset:#x} is beyond the end of the file")
        else:
            self.region(f"refcount block {index}", offset, self.ctx.cs)
            count = int(self.computed[offset >> self.ctx.bits])
            if count != 1:
                self.problem(CORRUPTION, f"ERROR refcount block {index} refcount={count}",
                             f"refcount block {index}", offset,
                             f"referenced {count} times, must be exactly once")
            return
        self.problem(CORRUPTION, fault[0], "refcount table", at, fault[1])

    # qemu's check_oflag_copied, for one active L1 entry and its L2 table
    def _check_copied(self, ref: _L1Entry, table: _L2) -> None:
        if not ref.offset:
            return
        refcount = self.stored.get(ref.offset >> self.ctx.bits)
        if refcount is None:
            self.copied.append(_Unreadable(ref.offset >> self.ctx.bits))
            return
        if (refcount == 1) != bool(ref.entry & COPIED):
            self.copied.append([Problem(
                CORRUPTION, f"ERROR OFLAG_COPIED L2 cluster: l1_index={ref.index} "
                f"l1_entry={ref.entry:x} refcount={refcount}", "L1 table",
                self.ctx.image.header.l1_table_offset + 8 * ref.index,
                f"entry {ref.index}: copied flag {_set(ref.entry)} but the L2 table at "
                f"{ref.offset:#x} has refcount {refcount}")])
        refcounts, readable = self._data_refcounts(table.hosted_clusters)
        wrong = (refcounts == 1) != ((table.hosted_entries & tables.COPIED) != 0)
        if readable is None or readable.all():
            self._keep(ref, table, refcounts, np.flatnonzero(wrong))
            return
        first = int(np.argmin(readable))
        wrong = np.flatnonzero(wrong & readable)
        self._keep(ref, table, refcounts, wrong[wrong < first])
        self.copied.append(_Unreadable(int(table.hosted_clusters[first])))
        self._keep(ref, table, refcounts, wrong[wrong > first])

    def _keep(self, ref: _L1Entry, table: _L2, refcounts: np.ndarray,
              which: np.ndarray) -> None:
        """Keep the copied flag findings for these hosted entries of table."""
        if which.size:
            self.copied.append(_CopiedData(ref, np.flatnonzero(table.hosted)[which],
                                           table.hosted_entries[which], refcounts[which],
                                           self.ctx))

    def _data_refcounts(self, clusters: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Stored refcounts of data clusters, and which could be read (None: all)."""
        if self.ctx.geometry.external_data_file:  # qemu takes 1 for external data
            return np.ones(clusters.size, dtype=np.uint64), None
        return self.stored.lookup(clusters)


class _Unreadable(NamedTuple):
    """Where qemu's copied flag check first meets an unreadable refcount block."""

    cluster: int


@dataclass(frozen=True)
class _CopiedData:
    """Data clusters of one L2 table whose copied flag disagrees with their refcount."""

    ref: _L1Entry
    positions: np.ndarray
    entries: np.ndarray
    refcounts: np.ndarray
    ctx: _Context

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator[Problem]:
        for j, entry, count in zip(self.positions.tolist(), self.entries.tolist(),
                                   self.refcounts.tolist()):
            yield Problem(
                CORRUPTION, f"ERROR OFLAG_COPIED data cluster: l2_entry={entry:x} "
                f"refcount={count}", self.ref.table,
                self.ref.offset + j * self.ctx.entry_size,
                f"entry {j}: copied flag {_set(entry)} but the data cluster at "
                f"{entry & OFFSET:#x} has refcount {count}")


def _set(entry: int) -> str:
    return "set" if entry & COPIED else "clear"


# --- explanations --------------------------------------------------------------------

class _Owners:
    """The sink that records which structures reference some clusters."""

    def __init__(self, ctx: _Context, targets: np.ndarray) -> None:
        self.ctx = ctx
        self.targets = targets  # bool per cluster
        self.owners: Dict[int, List[str]] = defaultdict(list)

    def problem(self, kind: str, message: str, structure: str, offset: Optional[int],
                detail: str) -> None:
        """Findings are the counter's business."""

    def region(self, name: str, offset: int, size: int) -> None:
        if size <= 0 or offset + size - self.ctx.file_size >= self.ctx.cs:
            return
        first, last = offset >> self.ctx.bits, (offset + size - 1) >> self.ctx.bits
        for cluster in np.flatnonzero(self.targets[first:last + 1]) + first:
            self.owners[int(cluster)].append(name)

    def l2_table(self, ref: _L1Entry, data: bytes, active: bool) -> None:
        table = _L2(data, self.ctx)
        positions, clusters = table.references()
        inside = clusters < self.targets.size
        hit = np.zeros(clusters.size, dtype=bool)
        hit[inside] = self.targets[clusters[inside]]
        order = np.argsort(positions[hit], kind="stable")
        for j, cluster in zip(positions[hit][order], clusters[hit][order]):
            kind = "compressed data" if table.compressed[j] else "data cluster"
            self.owners[int(cluster)].append(f"{kind} ({ref.table} entry {j})")

    def refblock(self, index: int, entry: int) -> None:
        offset = entry & REFT_OFFSET
        if not entry & REFT_RESERVED and not offset % self.ctx.cs:
            self.region(f"refcount block {index}", offset, self.ctx.cs)


# --- comparing ---------------------------------------------------------------------

class _Refcounts:
    """qemu's compare_refcounts findings, in cluster order, kept as arrays (a dirty
    image can have one for every cluster); the Problems are made when iterated."""

    def __init__(self, ctx: _Context, stored: _Stored, counter: _Counter) -> None:
        n = counter.nb_clusters
        values, computed = stored.values[:n], counter.computed[:n]
        differ = values != computed
        if stored.unreadable:
            unreadable = np.zeros(n, dtype=bool)
            for index in stored.unreadable:
                unreadable[index * stored.per_block:(index + 1) * stored.per_block] = True
            differ &= ~unreadable
            used = ((values != 0) | (computed != 0)) & ~unreadable
            self.highest = max(_last_nonzero(used), 0)
            self.unreadable = np.flatnonzero(unreadable)
        else:
            self.highest = max(_last_nonzero(values), _last_nonzero(computed), 0)
            self.unreadable = np.zeros(0, dtype=np.intp)
        self.clusters = np.flatnonzero(differ)
        self.refcount = values[self.clusters].astype(np.uint64)
        self.references = computed[self.clusters].astype(np.uint64)
        self.ctx, self.store = ctx, stored
        self.owners: Dict[int, List[str]] = {}

    def counts(self) -> Dict[str, int]:
        corruptions = int(np.count_nonzero(self.refcount < self.references))
        return {CORRUPTION: corruptions, LEAK: len(self.clusters) - corruptions,
                CHECK_ERROR: len(self.unreadable)}

    def __iter__(self) -> Iterator[Problem]:
        mismatches = ((c, self._mismatch(c, r, x)) for c, r, x in zip(
            self.clusters.tolist(), self.refcount.tolist(), self.references.tolist()))
        return (problem for _, problem in heapq.merge(
            mismatches, self._unreadable(), key=lambda pair: pair[0]))

    def _mismatch(self, cluster: int, refcount: int, references: int) -> Problem:
        index = cluster // self.store.per_block
        block = self.store.offsets[index] if index < len(self.store.offsets) else 0
        where = (f"refcount block {index} at {block:#x}" if block
                 else f"refcount table entry {index} is empty")
        detail = f"stored refcount {refcount} ({where}), references found: {references}"
        if cluster in self.owners:
            detail += _owners(self.owners[cluster])
        line = f"cluster {cluster} refcount={refcount} reference={references}"
        if refcount < references:
            return Problem(CORRUPTION, f"ERROR {line}", f"cluster {cluster}",
                           cluster << self.ctx.bits, detail)
        return Problem(LEAK, f"Leaked {line}", f"cluster {cluster}", cluster << self.ctx.bits,
                       detail)

    def _unreadable(self) -> Iterator[Tuple[int, Problem]]:
        per_block = self.store.per_block
        for k, cluster in enumerate(self.unreadable.tolist()):
            index = cluster // per_block
            if k == 0:
                yield cluster, self.store.corruption_notice(index)
            yield cluster, Problem(
                CHECK_ERROR, f"Can't get refcount for cluster {cluster}: Input/output error",
                f"cluster {cluster}", cluster << self.ctx.bits, f"its refcount block "
                f"({self.store.offsets[index]:#x}, refcount table entry {index}) is "
                "not cluster aligned")


def _last_nonzero(array: np.ndarray) -> int:
    """Index of the last non-zero element (-1 if none), looking from the end."""
    step = 1 << 20
    for end in range(len(array), 0, -step):
        found = np.flatnonzero(array[max(end - step, 0):end])
        if found.size:
            return max(end - step, 0) + int(found[-1])
    return -1


def _owners(names: List[str]) -> str:
    """The structures that reference a cluster, for a refcount finding."""
    if not names:
        return "; no structure references it"
    kinds = {name.split(" (")[0] for name in names}
    label = "overlapping structures" if len(kinds) > 1 else "referenced by"
    return f"; {label}: {', '.join(names)}"


def _copied_findings(counter: _Counter, notice_given: bool) -> List[Iterable[Problem]]:
    """The copied flag findings, with qemu's one-time notice at the first unreadable
    refcount unless the comparison already gave it."""
    out: List[Iterable[Problem]] = []
    for item in counter.copied:
        if isinstance(item, _Unreadable):
            if not notice_given:
                index = item.cluster // counter.stored.per_block
                out.append([counter.stored.corruption_notice(index)])
                notice_given = True
        else:
            out.append(item)
    return out


def _incomplete_snapshots(ctx: _Context) -> List[Problem]:
    """Version 3 snapshot entries need 16 bytes of extra data (qemu checks this first)."""
    if ctx.image.header.version < 3:
        return []
    return [Problem(CORRUPTION, f"ERROR snapshot table entry {i} is incomplete",
                    "snapshot table", s.offset, f"{_label(s)}: {s.extra_data_size} bytes of "
                    "extra data, version 3 needs at least 16")
            for i, s in enumerate(ctx.snapshots) if s.extra_data_size < 16]


def _tally(findings: Iterable[Iterable[Problem]]) -> Dict[str, int]:
    counts: Dict[str, int] = defaultdict(int)
    for part in findings:
        if isinstance(part, _Refcounts):
            for kind, n in part.counts().items():
                counts[kind] += n
        elif isinstance(part, _CopiedData):
            counts[CORRUPTION] += len(part)
        else:
            for problem in part:
                counts[problem.kind] += 1
    return counts


def check_image(image: Image, explain: bool = False, progress: bool = False) -> CheckResult:
    """Check image as read-only `qemu-img check` does.

    explain names, for each refcount finding, the structures that reference its
    cluster (a second pass over the metadata); progress shows a bar on stderr when
    it is a terminal. Raises Qcow2Error for what qemu refuses to open.
    """
    ctx = _Context(image)
    g = ctx.geometry
    if g.file_clusters > MAX_CLUSTERS:
        return CheckResult(0, 0, 0, 0, 0, 0, 0, 0, failure="File too large")
    stored = _Stored(ctx, g.file_clusters + 1)
    counter = _Counter(ctx, stored)
    total = image.header.l1_size + sum(s.l1_size for s in ctx.snapshots
                                       if s.l1_size <= MAX_L1_ENTRIES)
    with Progress("check", total) if progress else contextlib.nullcontext() as bar:
        _walk(ctx, counter, bar)
    refcounts = _Refcounts(ctx, stored, counter)
    if explain and refcounts.clusters.size:
        targets = np.zeros(len(stored.values), dtype=bool)
        targets[refcounts.clusters] = True
        owners = _Owners(ctx, targets)
        _walk(ctx, owners)
        refcounts.owners = {c: owners.owners.get(c, []) for c in refcounts.clusters.tolist()}
    findings = (_incomplete_snapshots(ctx), counter.problems, refcounts,
                *_copied_findings(counter, bool(refcounts.unreadable.size)))
    counts = _tally(findings)
    return CheckResult(
        check_errors=counts[CHECK_ERROR], corruptions=counts[CORRUPTION], leaks=counts[LEAK],
        total_clusters=-(-(image.header.size // 512 * 512) // ctx.cs),
        allocated_clusters=counter.allocated, fragmented_clusters=counter.fragmented,
        compressed_clusters=counter.compressed,
        image_end_offset=(refcounts.highest + 1) * ctx.cs, findings=findings)


# --- output --------------------------------------------------------------------------

def render_text(result: CheckResult) -> str:
    """qemu-img check's report on stdout (nothing when the check failed)."""
    if result.failure is not None:
        return ""
    r = result
    lines = []
    if not (r.corruptions or r.leaks or r.check_errors):
        lines.append("No errors were found on the image.")
    if r.corruptions:
        lines += ["", f"{r.corruptions} errors were found on the image.",
                  "Data may be corrupted, or further writes to the image may corrupt it."]
    if r.leaks:
        lines += ["", f"{r.leaks} leaked clusters were found on the image.",
                  "This means waste of disk space, but no harm to data."]
    if r.check_errors:
        lines += ["", f"{r.check_errors} internal errors have occurred during the check."]
    if r.total_clusters and r.allocated_clusters:
        a = r.allocated_clusters
        lines.append(f"{a}/{r.total_clusters} = {a * 100.0 / r.total_clusters:.2f}% "
                     f"allocated, {r.fragmented_clusters * 100.0 / a:.2f}% fragmented, "
                     f"{r.compressed_clusters * 100.0 / a:.2f}% compressed clusters")
    if r.image_end_offset:
        lines.append(f"Image end offset: {r.image_end_offset}")
    return "\n".join(lines) + "\n"


def stderr_lines(result: CheckResult, explain: bool = False) -> Iterator[str]:
    """The findings as qemu-img check prints them on stderr; with explain, each
    followed by the structure, its offset and what is wrong."""
    for problem in result.problems():
        yield from problem.message.split("\n")
        if explain:
            yield f"    {problem.explanation}"


def failure_line(result: CheckResult) -> Optional[str]:
    """qemu-img check's last stderr line when the check failed (without the program
    name), else None."""
    if result.failure is not None:
        return f"Check failed: {result.failure}"
    return "Check failed" if result.check_errors else None


def render_json(result: CheckResult, filename: str) -> str:
    """qemu-img check --output=json (nothing when the check failed): the optional
    members only when non-zero, in qemu's order."""
    if result.failure is not None:
        return ""
    members = {"filename": filename, "format": "qcow2", "check-errors": result.check_errors}
    optional = (("image-end-offset", result.image_end_offset),
                ("corruptions", result.corruptions), ("leaks", result.leaks),
                ("total-clusters", result.total_clusters),
                ("allocated-clusters", result.allocated_clusters),
                ("fragmented-clusters", result.fragmented_clusters),
                ("compressed-clusters", result.compressed_clusters))
    members.update((key, value) for key, value in optional if value)
    return to_json(members) + "\n"
