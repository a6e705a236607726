"""Every reference to a host cluster of a qcow2 image, walked as `qemu-img check` walks
them (qemu 7.2's block/qcow2-refcount.c, qcow2-bitmap.c and qcow2-snapshot.c).

The walk hands each reference to a sink, in qemu's order: the header cluster; the
active L1 table, each L2 table it points at and their data clusters (compressed data
by its byte range); each snapshot's L1 and L2 tables; the snapshot table; the
refcount table; the encryption header; the bitmap directory, tables and data; each
refcount block. A reference is an `Owner` (what holds the bytes, and where it is in
the metadata) with its byte range. `check` counts them into refcounts; `owners`
keeps them in a table that answers which structures hold a host byte.

The image is read as qemu reads it: zeros past the end of the file, limits checked
before anything is allocated.
"""
from __future__ import annotations

import functools
from enum import IntEnum
from typing import List, NamedTuple, Optional, Protocol

import numpy as np

from . import tables
from .errors import Qcow2Error
from .image import Bitmap, BitmapTableEntry, Image
from .limits import MAX_L1_ENTRIES, MAX_REFTABLE_BYTES
from .names import AUTOCLEAR_BITMAPS
from .progress import Progress
from .qemu_style import SECTOR, byte_width, c_string, disk_size
from .snapshots import ENTRY_FIXED_BYTES, Snapshot, read_snapshots
from .tables import L1_RESERVED, OFFSET

ACTIVE = -1  # the source of the active L1 table's references


def c_hex(value: int) -> str:
    """C's %#x: 0x-prefixed, but a plain 0 for zero."""
    return f"{value:#x}" if value else "0"


class Kind(IntEnum):
    """What a referenced byte range holds."""

    HEADER = 0
    L1 = 1
    L2 = 2
    DATA = 3
    COMPRESSED = 4
    SNAPSHOT_TABLE = 5
    REFCOUNT_TABLE = 6
    ENCRYPTION = 7
    BITMAP_DIRECTORY = 8
    BITMAP_TABLE = 9
    BITMAP_DATA = 10
    REFCOUNT_BLOCK = 11


class Owner(NamedTuple):
    """A referenced structure and where the reference is.

    source: the snapshot (index in the table, ACTIVE for the active L1 table) of L1,
    L2, data and compressed references; the bitmap (index in the directory) of bitmap
    tables and data. index: the L1 entry of an L2 table or data cluster, the refcount
    table entry of a refcount block, the bitmap table entry of bitmap data. entry:
    the L2 entry of a data cluster.
    """

    kind: Kind
    source: int = ACTIVE
    index: int = 0  # type: ignore[assignment]  # the field hides tuple.index
    entry: int = 0


def snapshot_label(snapshot: Snapshot) -> str:
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


class Context:
    """The image, its geometry and tables, read as qemu reads them."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.geometry = g = image.geometry
        self.bits = g.cluster_bits
        self.cs = g.cluster_size
        self.file_size = g.file_size
        # the file's length as qemu sees it (bdrv_getlength): in whole 512-byte sectors
        self.qemu_file_size = disk_size(g.file_size + SECTOR - 1)
        self.entry_size = 16 if g.extended_l2 else 8
        self._check_tables()
        self.snapshots = read_snapshots(image)
        self.snapshot_table_size = _snapshot_table_size(self.snapshots,
                                                        image.header.snapshot_offset)
        h = image.header
        self.reftable = self.entries(h.refcount_table_offset,
                                     h.refcount_table_clusters * self.cs // 8)

    def read(self, offset: int, size: int) -> bytes:
        """size bytes at offset, zeros past the end of the file (and beyond 2^63,
        where qemu's checks never read)."""
        return self.image.read(offset, size) if offset < self.file_size else bytes(size)

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
        if h.refcount_table_clusters * self.cs > MAX_REFTABLE_BYTES:
            raise Qcow2Error("refcount table", h.refcount_table_offset,
                             f"{h.refcount_table_clusters} clusters exceed QEMU's limit of "
                             f"{MAX_REFTABLE_BYTES} bytes")
        for what, offset in (("L1 table", h.l1_table_offset),
                             ("refcount table", h.refcount_table_offset)):
            if offset % self.cs:
                raise Qcow2Error(what, offset, "not cluster aligned")

    @functools.cached_property
    def bitmaps(self) -> List[Bitmap]:
        """The bitmap directory (tables not read), when the bitmaps extension is valid
        (its autoclear bit set); else none, as qemu ignores it."""
        image = self.image
        if image.extension("bitmaps") is None or \
                not image.header.autoclear_features & AUTOCLEAR_BITMAPS:
            return []
        return image.bitmap_directory()

    def l1_label(self, source: int) -> str:
        """The active ("L1") or a snapshot's L1 table, as check's messages name it."""
        return "L1" if source == ACTIVE else f"{snapshot_label(self.snapshots[source])} L1"

    def name(self, owner: Owner) -> str:
        """The owner as check's messages name it."""
        kind, source, index, entry = owner
        if kind == Kind.L1:
            return f"{self.l1_label(source)} table"
        if kind in (Kind.L2, Kind.DATA, Kind.COMPRESSED):
            table = f"L2 table ({self.l1_label(source)} entry {index})"
            if kind == Kind.L2:
                return table
            what = "data cluster" if kind == Kind.DATA else "compressed data"
            return f"{what} ({table} entry {entry})"
        if kind == Kind.BITMAP_TABLE:
            return f"bitmap '{self.bitmaps[source].name}' table"
        if kind == Kind.BITMAP_DATA:
            return f"bitmap '{self.bitmaps[source].name}' data (table entry {index})"
        if kind == Kind.REFCOUNT_BLOCK:
            return f"refcount block {index}"
        return _FIXED_NAMES[kind]


_FIXED_NAMES = {Kind.HEADER: "header", Kind.SNAPSHOT_TABLE: "snapshot table",
                Kind.REFCOUNT_TABLE: "refcount table", Kind.ENCRYPTION: "encryption header",
                Kind.BITMAP_DIRECTORY: "bitmap directory"}


class L1Ref(NamedTuple):
    """An L1 entry and the L2 table it points at."""

    label: str  # "L1", or "snapshot 1 (name) L1"
    source: int  # ACTIVE or the snapshot's index
    index: int  # type: ignore[assignment]  # the field hides tuple.index
    entry: int
    offset: int  # of the L2 table

    @property
    def table(self) -> str:
        return f"L2 table ({self.label} entry {self.index})"


# --- the walk, in qemu's order -------------------------------------------------------

class Sink(Protocol):
    """What the walk hands every reference and structural corruption to."""

    def corruption(self, message: str, structure: str, offset: Optional[int],
                   detail: str) -> None: ...

    def region(self, owner: Owner, offset: int, size: int) -> None: ...

    def l2_table(self, ref: L1Ref, data: bytes, active: bool) -> None: ...

    def refblock(self, index: int, entry: int) -> None: ...


def walk(ctx: Context, sink: Sink, progress: Optional[Progress] = None) -> None:
    """Hand every reference qemu counts to sink, in qemu's order."""
    h = ctx.image.header
    sink.region(Owner(Kind.HEADER), 0, ctx.cs)
    _walk_l1(ctx, sink, ACTIVE, h.l1_table_offset, h.l1_size, progress)
    if ctx.geometry.external_data_file and ctx.snapshots:
        sink.corruption(f"ERROR {len(ctx.snapshots)} snapshots in image with data file",
                        "snapshot table", h.snapshot_offset,
                        "internal snapshots are not allowed with an external data file")
    for s in ctx.snapshots:
        if _snapshot_l1_usable(s, ctx, sink):
            _walk_l1(ctx, sink, s.index, s.l1_table_offset, s.l1_size, progress)
    sink.region(Owner(Kind.SNAPSHOT_TABLE), h.snapshot_offset, ctx.snapshot_table_size)
    sink.region(Owner(Kind.REFCOUNT_TABLE), h.refcount_table_offset,
                h.refcount_table_clusters * ctx.cs)
    crypto = ctx.image.extension("full_disk_encryption")
    if crypto is not None:
        sink.region(Owner(Kind.ENCRYPTION), crypto.parsed.ofs_encryption_header,
                    crypto.parsed.len_encryption_header)
    _walk_bitmaps(ctx, sink)
    for index in np.flatnonzero(ctx.reftable):
        sink.refblock(int(index), int(ctx.reftable[index]))


def walk_length(ctx: Context) -> int:
    """The walk's length for a progress bar: the L1 entries it goes through."""
    return ctx.image.header.l1_size + sum(s.l1_size for s in ctx.snapshots
                                          if s.l1_size <= MAX_L1_ENTRIES)


def _snapshot_l1_usable(s: Snapshot, ctx: Context, sink: Sink) -> bool:
    label, offset = snapshot_label(s), s.l1_table_offset
    if offset % ctx.cs:
        sink.corruption(f"ERROR {label} l1_offset={c_hex(offset)}: L1 table is not cluster "
                        "aligned; snapshot table entry corrupted", "snapshot table", s.offset,
                        f"{label}: L1 table offset {offset:#x} is not cluster aligned")
        return False
    if s.l1_size > MAX_L1_ENTRIES:
        sink.corruption(f"ERROR {label} l1_size={c_hex(s.l1_size)}: L1 table is too large; "
                        "snapshot table entry corrupted", "snapshot table", s.offset,
                        f"{label}: {s.l1_size} L1 entries exceed QEMU's limit of "
                        f"{MAX_L1_ENTRIES}")
        return False
    return True


def _walk_l1(ctx: Context, sink: Sink, source: int, offset: int, size: int,
             progress: Optional[Progress]) -> None:
    """An L1 table, then each L2 table it points at (qemu's check_refcounts_l1)."""
    if size == 0:
        return
    label = ctx.l1_label(source)
    sink.region(Owner(Kind.L1, source), offset, size * 8)
    l1 = ctx.entries(offset, size)
    done = 0
    for index in np.flatnonzero(l1):
        ref = L1Ref(label, source, int(index), int(l1[index]), int(l1[index]) & OFFSET)
        at = offset + 8 * ref.index
        if ref.entry & L1_RESERVED:
            sink.corruption(f"ERROR found L1 entry with reserved bits set: {ref.entry:x}",
                            f"{label} table", at, f"entry {ref.index} ({ref.entry:#x}) has "
                            "reserved bits set")
        sink.region(Owner(Kind.L2, source, ref.index), ref.offset, ctx.cs)
        if ref.offset % ctx.cs:
            sink.corruption(f"ERROR l2_offset={ref.offset:x}: Table is not cluster aligned; "
                            "L1 entry corrupted", f"{label} table", at, f"entry {ref.index}: "
                            f"L2 table offset {ref.offset:#x} is not cluster aligned")
        sink.l2_table(ref, ctx.read(ref.offset, ctx.cs), source == ACTIVE)
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


def _walk_bitmaps(ctx: Context, sink: Sink) -> None:
    """The bitmap directory, each bitmap table and its data clusters, when the
    bitmaps extension is valid (its autoclear bit set)."""
    ext = ctx.image.extension("bitmaps")
    if ext is None or not ctx.image.header.autoclear_features & AUTOCLEAR_BITMAPS:
        return
    sink.region(Owner(Kind.BITMAP_DIRECTORY), ext.parsed.ofs_bitmap_directory,
                ext.parsed.len_bitmap_directory)
    for i, bitmap in enumerate(ctx.bitmaps):
        table = f"bitmap '{bitmap.name}' table"
        sink.region(Owner(Kind.BITMAP_TABLE, i), bitmap.table_offset, bitmap.table_size * 8)
        for j, entry in enumerate(ctx.image.bitmap_table(i)):
            fault = _bitmap_entry_fault(entry, ctx.cs)
            if fault is not None:
                sink.corruption(f"ERROR bitmap '{bitmap.name}' table entry {j} is invalid: "
                                f"{fault}", table, bitmap.table_offset + 8 * j,
                                f"entry {j}: {fault}")
            elif entry.offset:
                sink.region(Owner(Kind.BITMAP_DATA, i, j), entry.offset, ctx.cs)
