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

The references come from the walk of `references`, shared with `whatis` and
`layout`. Speed: L2 tables are decoded whole with numpy and their references counted
in bulk; a table takes the entry-by-entry path (which gives qemu's messages in qemu's
order) only when it has something to report. Tables are read one at a time. Memory:
a byte per cluster of the file for the rebuilt refcounts (widened only when a count
outgrows it); the stored refcounts are read a block at a time and compared in pieces.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import printable, tables
from .image import LUKS, Image, refuse_as_qemu
from .limits import MAX_CHECK_CLUSTERS
from .names import AUTOCLEAR_BITMAPS
from .progress import Progress
from .qemu_style import disk_size, to_json
from .snapshots import ENTRY_FIXED_BYTES
from .references import Context, Kind, L1Ref, Owner, c_hex, snapshot_label, walk, walk_length
from .tables import (ALL_ALLOC, COPIED, L2_RESERVED, OFFSET, REFT_OFFSET, REFT_RESERVED,
                     SUBCLUSTERS, ZERO, L2Entries, StoredRefcounts)

CORRUPTION = "corruption"
LEAK = "leak"
CHECK_ERROR = "check-error"
NOTICE = "notice"  # printed by qemu-img check but counted nowhere

# qemu's last line of the stale bitmaps notice, which it prints without a newline
UNTERMINATED = "Some clusters may be leaked, run 'qemu-img check -r' on the image file to " \
    "fix."
COUNT_MAX = 2**32 - 1  # rebuilt refcounts are uint32 at most
COMPARED_CLUSTERS = 1 << 18  # stored and rebuilt refcounts compared this many at a time


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


# --- check's view of the references ------------------------------------------------

class _Stored(StoredRefcounts):
    """The stored refcounts, and qemu's notice when it meets an unreadable block."""

    def corruption_notice(self, index: int) -> Optional[Problem]:
        """qemu's one-time notice when a refcount lookup meets an unaligned block (none
        for a block past qemu's largest offset, which is an I/O error only)."""
        offset = self.offsets[index]
        if not offset % self.cluster_size:
            return None
        return Problem(
            NOTICE, f"qcow2: Image is corrupt: Refblock offset {c_hex(offset)} unaligned "
            f"(reftable index: {c_hex(index)}); further non-fatal corruption events will "
            "be suppressed", "refcount table",
            self.image.header.refcount_table_offset + 8 * index,
            f"entry {index}: refcount block offset {offset:#x} is not cluster aligned")


class _L2(L2Entries):
    """An L2 table, and whether qemu has something to report about it."""

    def __init__(self, data: bytes, ctx: Context) -> None:
        super().__init__(data, ctx.geometry)
        self.ctx = ctx

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
                    (self.entries[self.compressed] & tables.COPIED_BIT).any() or
                    (self.c_offsets + self.c_lengths >= ctx.qemu_file_size + ctx.cs).any())

    def _bitmaps_quiet(self) -> bool:
        b = self.bitmaps
        if b is None:
            return True
        alloc = b & tables.ALL_ALLOC_MASK
        unallocated = ~self.hosted & ~self.compressed
        return not ((alloc & (b >> np.uint64(32)))[self.hosted].any() or
                    alloc[unallocated].any() or b[self.compressed].any())


# --- counting ------------------------------------------------------------------------

class _Counter:
    """The sink that rebuilds refcounts, reports what qemu reports while doing so,
    keeps qemu's fragmentation figures and checks the active copied flags."""

    def __init__(self, ctx: Context, stored: _Stored) -> None:
        self.ctx = ctx
        self.stored = stored
        # a byte per cluster of the file and the one after it (the furthest a
        # reference can reach), widened when a count outgrows it
        self.computed = np.zeros(ctx.geometry.file_clusters + 1, dtype=np.uint8)
        self.cap = 255  # the most computed's dtype holds
        # qemu stops counting at the refcount width's maximum; counts are at most
        # uint32 here, so 64-bit refcounts stop at 2**32 - 1 (a number of references
        # never seen)
        self.limit = min((1 << (1 << ctx.image.header.refcount_order)) - 1, COUNT_MAX)
        self.nb_clusters = ctx.geometry.file_clusters
        self.problems: List[Problem] = []
        # copied flag findings, reported last
        self.copied: List[Union[_Unreadable, Iterable[Problem]]] = []
        self.allocated = self.fragmented = self.compressed = 0

    def problem(self, kind: str, message: str, structure: str, offset: Optional[int],
                detail: str) -> None:
        self.problems.append(Problem(kind, message, structure, offset, detail))

    def corruption(self, message: str, structure: str, offset: Optional[int],
                   detail: str) -> None:
        self.problem(CORRUPTION, message, structure, offset, detail)

    # qemu's qcow2_inc_refcounts_imrt
    def region(self, owner: Owner, offset: int, size: int) -> None:
        if size <= 0:
            return
        if offset + size - self.ctx.qemu_file_size >= self.ctx.cs:
            self.problem(CORRUPTION, "ERROR: counting reference for region exceeding the end "
                         f"of the file by one cluster or more: offset {offset:#x} size "
                         f"{size:#x}", self.ctx.name(owner), offset, f"{size} bytes run past "
                         f"the end of the file ({self.ctx.file_size} bytes) by a cluster or "
                         "more")
            return
        first, last = offset >> self.ctx.bits, (offset + size - 1) >> self.ctx.bits
        if first == last:  # most regions
            self._count(owner, first)
            return
        top = int(self.computed[first:last + 1].max())
        if top < self.limit:
            self._hold(top + 1)
            self.computed[first:last + 1] += 1
            self.nb_clusters = max(self.nb_clusters, last + 1)
            return
        for cluster in range(first, last + 1):
            self._count(owner, cluster)

    def _hold(self, count: int) -> None:
        """Widen the counts (uint8, then uint16 or uint32) so that they hold count."""
        if count > self.cap:
            self.computed = self.computed.astype(np.min_scalar_type(count))
            self.cap = int(np.iinfo(self.computed.dtype).max)

    def _count(self, owner: Owner, cluster: int) -> None:
        count = int(self.computed[cluster])
        if count >= self.limit:
            offset = cluster << self.ctx.bits
            self.problem(CORRUPTION, f"ERROR: overflow cluster offset={offset:#x}\nUse "
                         "qemu-img amend to increase the refcount entry width or qemu-img "
                         "convert to create a clean copy if the image cannot be opened for "
                         "writing", self.ctx.name(owner), offset,
                         f"cluster {cluster} already has "
                         f"{self.limit} references, the most its refcount can hold")
            return
        self._hold(count + 1)
        self.computed[cluster] += 1
        self.nb_clusters = max(self.nb_clusters, cluster + 1)

    def _count_bulk(self, clusters: np.ndarray) -> bool:
        """Count many references at once; False (and nothing counted) on overflow."""
        if not clusters.size:
            return True
        low, high = int(clusters.min()), int(clusters.max())
        if high - low < 4 * clusters.size:  # a table's clusters are usually close
            where: Any = slice(low, high + 1)
            counts = np.bincount(clusters - low)
        else:
            where, counts = np.unique(clusters, return_counts=True)
        before = self.computed[where]
        peak = int(before.max()) + int(counts.max())
        if peak > min(self.limit, self.cap):  # then the exact one
            peak = int((before + counts).max())
            if peak > self.limit:
                return False
            self._hold(peak)
        self.computed[where] += counts.astype(self.computed.dtype)
        self.nb_clusters = max(self.nb_clusters, high + 1)
        return True

    # qemu's check_refcounts_l2
    def l2_table(self, ref: L1Ref, data: bytes, active: bool) -> None:
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

    def _l2_entries(self, ref: L1Ref, table: _L2, active: bool) -> None:
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

    def _compressed_entry(self, ref: L1Ref, j: int, at: int, entry: int, bitmap: int,
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
        self.region(Owner(Kind.COMPRESSED, ref.source, ref.index, j), offset, length)
        if active:
            self.allocated += 1
            self.compressed += 1
            self.fragmented += 1

    def _hosted_entry(self, ref: L1Ref, j: int, at: int, entry: int, bitmap: int,
                      active: bool, contiguous: int) -> int:
        """A normal or preallocated zero cluster; returns the next contiguous offset."""
        offset = entry & OFFSET
        if (bitmap >> SUBCLUSTERS) & bitmap:
            self.problem(CORRUPTION, f"ERROR offset={offset:x}: Allocated cluster has "
                         "corrupted subcluster allocation bitmap", ref.table, at,
                         f"entry {j}: subclusters {(bitmap >> 32) & bitmap:#x} are both "
                         "allocated and zero")
        if offset % self.ctx.cs:
            has_data = bitmap & ALL_ALLOC if self.ctx.geometry.extended_l2 else not entry & ZERO
            what = "Data" if has_data else "Preallocated"
            self.problem(CORRUPTION, f"ERROR offset={offset:x}: {what} cluster is not "
                         "properly aligned; L2 entry corrupted.", ref.table, at, f"entry {j}: "
                         f"{what.lower()} cluster offset {offset:#x} is not cluster aligned")
        if active:
            self.allocated += 1
            self.fragmented += bool(contiguous and offset != contiguous)
            contiguous = offset + self.ctx.cs
        if not self.ctx.geometry.external_data_file:
            self.region(Owner(Kind.DATA, ref.source, ref.index, j), offset, self.ctx.cs)
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
            self.region(Owner(Kind.REFCOUNT_BLOCK, index=index), offset, self.ctx.cs)
            count = int(self.computed[offset >> self.ctx.bits])
            if count != 1:
                self.problem(CORRUPTION, f"ERROR refcount block {index} refcount={count}",
                             f"refcount block {index}", offset,
                             f"referenced {count} times, must be exactly once")
            return
        self.problem(CORRUPTION, fault[0], "refcount table", at, fault[1])

    # qemu's check_oflag_copied, for one active L1 entry and its L2 table
    def _check_copied(self, ref: L1Ref, table: _L2) -> None:
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
        wrong = (refcounts == 1) != ((table.hosted_entries & tables.COPIED_BIT) != 0)
        if readable is None or readable.all():
            self._keep(ref, table, refcounts, np.flatnonzero(wrong))
            return
        first = int(np.argmin(readable))
        wrong = np.flatnonzero(wrong & readable)
        self._keep(ref, table, refcounts, wrong[wrong < first])
        self.copied.append(_Unreadable(int(table.hosted_clusters[first])))
        self._keep(ref, table, refcounts, wrong[wrong > first])

    def _keep(self, ref: L1Ref, table: _L2, refcounts: np.ndarray,
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

    ref: L1Ref
    positions: np.ndarray
    entries: np.ndarray
    refcounts: np.ndarray
    ctx: Context

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


# --- comparing ---------------------------------------------------------------------

class _Refcounts:
    """qemu's compare_refcounts findings, in cluster order, kept as arrays (a dirty
    image can have one for every cluster); the Problems are made when iterated.

    The stored refcounts are read and compared COMPARED_CLUSTERS at a time."""

    def __init__(self, ctx: Context, stored: _Stored, counter: _Counter) -> None:
        n = min(counter.nb_clusters, len(counter.computed))
        per_block = stored.per_block
        unreadable = stored.unreadable(n)
        self.highest = 0
        clusters, refcount, references = [], [], []
        step = max(COMPARED_CLUSTERS // per_block, 1) * per_block
        for first in range(0, n, step):
            last = min(n, first + step)
            values, computed = stored.span(first, last), counter.computed[first:last]
            hidden = [(max(i * per_block, first) - first, min((i + 1) * per_block, last) - first)
                      for i in unreadable if first < (i + 1) * per_block and i * per_block < last]
            if hidden:  # what qemu cannot read is neither compared nor used
                computed = computed.copy()
                for a, b in hidden:
                    computed[a:b] = 0
            differ = np.flatnonzero(values != computed)
            clusters.append(differ + first)
            refcount.append(values[differ])
            references.append(computed[differ])
            used = max(_last_nonzero(values), _last_nonzero(computed))
            if used >= 0:
                self.highest = first + used
        self.unreadable_blocks = unreadable
        self.unreadable = np.concatenate([np.zeros(0, dtype=np.intp)] + [
            np.arange(i * per_block, min((i + 1) * per_block, n)) for i in unreadable])
        self.clusters = np.concatenate(clusters or [np.zeros(0, dtype=np.intp)])
        self.refcount = np.concatenate(refcount or [np.zeros(0, dtype=np.uint8)])
        self.references = np.concatenate(references or [np.zeros(0, dtype=np.uint8)])
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
        notice = None
        for cluster in self.unreadable.tolist():
            index = cluster // per_block
            offset = self.store.offsets[index]
            if notice is None:
                notice = self.store.corruption_notice(index)
                if notice is not None:
                    yield cluster, notice
            why = "ends past qemu's largest offset" if not offset % self.ctx.cs else \
                "is not cluster aligned"
            yield cluster, Problem(
                CHECK_ERROR, f"Can't get refcount for cluster {cluster}: Input/output error",
                f"cluster {cluster}", cluster << self.ctx.bits, f"its refcount block "
                f"({offset:#x}, refcount table entry {index}) {why}")

    @property
    def noticed(self) -> bool:
        """Whether the comparison gives qemu's notice of an unaligned block."""
        return any(self.store.offsets[i] % self.ctx.cs for i in self.unreadable_blocks)


def _last_nonzero(array: np.ndarray) -> int:
    """Index of the last non-zero element (-1 if none)."""
    nonzero = array != 0
    return len(array) - 1 - int(np.argmax(nonzero[::-1])) if nonzero.any() else -1


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
            notice = None if notice_given else counter.stored.corruption_notice(
                item.cluster // counter.stored.per_block)
            if notice is not None:
                out.append([notice])
                notice_given = True
        else:
            out.append(item)
    return out


def _incomplete_snapshots(ctx: Context) -> List[Problem]:
    """Version 3 snapshot entries need 16 bytes of extra data (qemu checks this first)."""
    if ctx.image.header.version < 3:
        return []
    return [Problem(CORRUPTION, f"ERROR snapshot table entry {i} is incomplete",
                    "snapshot table", s.offset, f"{snapshot_label(s)}: {s.extra_data_size} "
                    "bytes of extra data, version 3 needs at least 16")
            for i, s in enumerate(ctx.snapshots) if s.extra_data_size < 16]


def _stale_bitmaps(ctx: Context) -> List[Problem]:
    """qemu's warning when it opens an image whose bitmaps extension a program without
    bitmap support left behind (the extension there, its autoclear bit clear)."""
    image = ctx.image
    if image.extension("bitmaps") is None or \
            image.header.autoclear_features & AUTOCLEAR_BITMAPS:
        return []
    return [Problem(NOTICE, "qcow2kit: warning: a program lacking bitmap support modified "
                    "this file, so all bitmaps are now considered inconsistent\n"
                    + UNTERMINATED,
                    "header.autoclear_features",
                    image.qcow2.header._debug["autoclear_features"]["start"],
                    "the bitmaps extension is there but autoclear bit 0 is clear")]


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


INT64_MAX = 2**63 - 1


def snapshot_table_offset_valid(image: Image) -> bool:
    """qemu's validate_table_offset on the snapshot table: cluster aligned, and its
    end (the fixed part of each entry counted) within a signed 64-bit offset."""
    h = image.header
    size = h.nb_snapshots * ENTRY_FIXED_BYTES
    return h.snapshot_offset % image.cluster_size == 0 and \
        h.snapshot_offset <= INT64_MAX - size


def check_image(image: Image, explain: bool = False, progress: bool = False) -> CheckResult:
    """Check image as read-only `qemu-img check` does.

    explain names, for each refcount finding, the structures that reference its
    cluster (from an owner table: a second pass over the metadata); progress shows a
    bar on stderr when it is a terminal. Raises Qcow2Error for what qemu refuses to
    open.
    """
    refuse_as_qemu(image)
    if image.header.crypt_method == LUKS and image.extension("full_disk_encryption"):
        from .crypto import luks_header  # here: hashlib and the ciphers for LUKS only

        luks_header(image)  # qemu opens no image whose LUKS header it cannot read
    if not snapshot_table_offset_valid(image):  # qemu checks it before anything else
        return CheckResult(1, 0, 0, 0, 0, 0, 0, 0, failure="Invalid argument", findings=([
            Problem(CHECK_ERROR, "qcow2kit: ERROR snapshot table offset invalid",
                    "header.snapshot_offset",
                    image.qcow2.header._debug["ofs_snapshot_table"]["start"],
                    f"{image.header.snapshot_offset:#x} is not cluster aligned or "
                    "runs past qemu's largest offset")],))
    ctx = Context(image)
    g = ctx.geometry
    if g.file_clusters > MAX_CHECK_CLUSTERS:
        return CheckResult(0, 0, 0, 0, 0, 0, 0, 0, failure="File too large")
    stored = _Stored(ctx.image, ctx.reftable)
    counter = _Counter(ctx, stored)
    with Progress("check", walk_length(ctx)) if progress else contextlib.nullcontext() as bar:
        walk(ctx, counter, bar)
    refcounts = _Refcounts(ctx, stored, counter)
    if explain and refcounts.clusters.size:
        from .owners import OwnerTable

        owners = OwnerTable(ctx)
        refcounts.owners = {c: [ctx.name(o) for o in owners.cluster_owners(c)]
                            for c in refcounts.clusters.tolist()}
    findings: Tuple[Iterable[Problem], ...] = (
        _stale_bitmaps(ctx), _incomplete_snapshots(ctx), counter.problems, refcounts,
        *_copied_findings(counter, refcounts.noticed))
    counts = _tally(findings)
    return CheckResult(
        check_errors=counts[CHECK_ERROR], corruptions=counts[CORRUPTION], leaks=counts[LEAK],
        total_clusters=-(-disk_size(image.header.size) // ctx.cs),
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
    followed by the structure, its offset and what is wrong (names read from the
    image in it escaped: the explanation is qcow2kit's own)."""
    pending = ""
    for problem in result.problems():
        lines = problem.message.split("\n")
        lines[0] = pending + lines[0]
        pending = lines.pop() if problem.message.endswith(UNTERMINATED) else ""
        yield from lines
        if explain:
            yield f"    {pending}{printable.escape(problem.explanation)}"
            pending = ""
    if pending:
        yield pending


def failure_line(result: CheckResult) -> Optional[str]:
    """qemu-img check's last stderr line when the check failed (without the program
    name), else None."""
    if result.failure is not None:
        return f"Check failed: {result.failure}"
    return "Check failed" if result.check_errors else None


def problem_json(problem: Problem) -> Dict[str, Any]:
    """A finding as JSON members: its kind, qemu's message, the structure at fault,
    its offset (null when unknown), what is wrong, and all of it as --explain says it."""
    return {"kind": problem.kind, "message": problem.message, "structure": problem.structure,
            "offset": problem.offset, "detail": problem.detail,
            "explanation": problem.explanation}


def render_json(result: CheckResult, filename: str, explain: bool = False) -> str:
    """qemu-img check --output=json (nothing when the check failed): the optional
    members only when non-zero, in qemu's order; with explain, every finding under
    "qcow2kit": {"findings": [...]} (problem_json)."""
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
    if explain:
        members["qcow2kit"] = {"findings": [problem_json(p) for p in result.problems()]}
    return to_json(members) + "\n"
