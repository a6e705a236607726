"""The owner table: every reference of an image as a host byte range, searchable.

Built from the walk of `references`, so it holds exactly what `qemu-img check` counts,
plus the references it refuses to count because they run a cluster or more past the
end of the file (`counted` is False for those). Rows are numpy columns sorted by host
offset: consecutive data clusters of one L2 table that are consecutive in the file
too are one row, so a 1 TiB image with preallocated metadata has a few thousand rows;
compressed clusters are a row each. Which rows hold a byte is two binary searches.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import numpy as np

from .progress import Progress
from .references import Context, Kind, L1Ref, Owner, walk
from .tables import REFT_OFFSET, REFT_RESERVED, L2Entries

U64_MAX = 2**64 - 1
_FLUSH = 8192  # rows kept as Python values before they become arrays
_COLUMNS = (("start", np.uint64), ("end", np.uint64), ("kind", np.uint8),
            ("source", np.int32), ("index", np.uint32), ("entry", np.uint32),
            ("counted", bool))
Rows = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # start, end, kind, entry


class _Collector:
    """The sink that turns every reference into rows, in the walk's order."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.blocks: List[Tuple[np.ndarray, ...]] = []
        self.pending: List[tuple] = []  # rows of Python values
        # the counter's view of the file's end: refcount blocks beyond it are not counted
        self.nb_clusters = ctx.geometry.file_clusters

    def corruption(self, message: str, structure: str, offset: Optional[int],
                   detail: str) -> None:
        """Findings are check's business."""

    def _counted(self, start: int, end: int) -> bool:
        """qemu counts a region unless it runs a cluster or more past the end of the file."""
        if end >= self.ctx.qemu_file_size + self.ctx.cs:
            return False
        self.nb_clusters = max(self.nb_clusters, ((end - 1) >> self.ctx.bits) + 1)
        return True

    def region(self, owner: Owner, offset: int, size: int) -> None:
        if size <= 0:
            return
        end = offset + size
        self._add(offset, min(end, U64_MAX), owner, self._counted(offset, end))

    def _add(self, start: int, end: int, owner: Owner, counted: bool) -> None:
        self.pending.append((start, end, *owner, counted))
        if len(self.pending) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            columns = zip(*self.pending)
            self.blocks.append(tuple(np.array(c, dtype=t) for c, (_, t) in
                                     zip(columns, _COLUMNS)))
            self.pending = []

    def refblock(self, index: int, entry: int) -> None:
        offset = entry & REFT_OFFSET
        if entry & REFT_RESERVED or offset % self.ctx.cs:
            return  # no reference: a corruption
        owner = Owner(Kind.REFCOUNT_BLOCK, index=index)
        if offset >> self.ctx.bits >= self.nb_clusters:
            self._add(offset, min(offset + self.ctx.cs, U64_MAX), owner, False)
        else:
            self.region(owner, offset, self.ctx.cs)

    def l2_table(self, ref: L1Ref, data: bytes, active: bool) -> None:
        table = L2Entries(data, self.ctx.geometry)
        parts = [part for part in (self._data(table), self._compressed(table))
                 if part is not None]
        if not parts:
            return
        start, end, kind, entry = (np.concatenate(c) for c in zip(*parts))
        order = np.argsort(entry, kind="stable")
        counted = end < np.uint64(self.ctx.qemu_file_size + self.ctx.cs)
        if counted.any():
            last = int(end[counted].max()) - 1
            self.nb_clusters = max(self.nb_clusters, (last >> self.ctx.bits) + 1)
        n = len(order)
        self._flush()
        self.blocks.append((start[order], end[order], kind[order],
                            np.full(n, ref.source, dtype=np.int32),
                            np.full(n, ref.index, dtype=np.uint32),
                            entry[order].astype(np.uint32), counted[order]))

    def _data(self, table: L2Entries) -> Optional[Rows]:
        """Runs of data clusters consecutive both in the table and in the file."""
        if self.ctx.geometry.external_data_file or not table.hosted_offsets.size:
            return None
        cs = np.uint64(self.ctx.cs)
        positions, offsets = np.flatnonzero(table.hosted), table.hosted_offsets
        inside = offsets < np.uint64(self.ctx.file_size)
        breaks = (np.diff(positions) != 1) | (np.diff(offsets) != cs) | \
            (inside[1:] != inside[:-1])
        firsts = np.concatenate(([0], np.flatnonzero(breaks) + 1))
        counts = np.diff(np.append(firsts, positions.size)).astype(np.uint64)
        start = offsets[firsts]
        return (start, start + counts * cs, np.full(firsts.size, Kind.DATA, dtype=np.uint8),
                positions[firsts])

    def _compressed(self, table: L2Entries) -> Optional[Rows]:
        """Compressed clusters, one row each, as qemu counts them."""
        if not table.any_compressed:
            return None
        keep = table.counted_compressed()
        start = table.c_offsets[keep]
        return (start, start + table.c_lengths[keep],
                np.full(start.size, Kind.COMPRESSED, dtype=np.uint8),
                np.flatnonzero(table.compressed)[keep])

    def columns(self) -> Tuple[np.ndarray, ...]:
        """Every row, in the walk's order, as one array per column."""
        self._flush()
        if not self.blocks:
            return tuple(np.zeros(0, dtype=t) for _, t in _COLUMNS)
        return tuple(np.concatenate(c) for c in zip(*self.blocks))


class OwnerTable:
    """Every reference of an image as rows (start, end, kind, source, index, entry,
    counted) sorted by host offset; seq is each row's place in the walk."""

    def __init__(self, ctx: Context, progress: Optional[Progress] = None) -> None:
        collector = _Collector(ctx)
        walk(ctx, collector, progress)
        columns = collector.columns()
        order = np.argsort(columns[0], kind="stable")
        (self.start, self.end, self.kind, self.source, self.index, self.entry,
         self.counted) = (c[order] for c in columns)
        self.seq = order
        self.reach = np.maximum.accumulate(self.end) if len(order) else self.end
        self.ctx = ctx

    def overlapping(self, lo: int, hi: int) -> np.ndarray:
        """The rows that hold a byte of [lo, hi), in the walk's order."""
        first = int(np.searchsorted(self.reach, lo, side="right"))
        last = int(np.searchsorted(self.start, hi, side="left"))
        rows = np.arange(first, max(first, last))
        rows = rows[self.end[rows] > np.uint64(lo)]
        return rows[np.argsort(self.seq[rows], kind="stable")]

    def owner(self, row: int) -> Owner:
        return Owner(Kind(int(self.kind[row])), int(self.source[row]), int(self.index[row]),
                     int(self.entry[row]))

    def entries(self, row: int, lo: int, hi: int) -> range:
        """The L2 entries of a data row whose cluster holds a byte of [lo, hi)."""
        cs, start = self.ctx.cs, int(self.start[row])
        count = (int(self.end[row]) - start) // cs
        first = max(0, -(-(lo - start - cs + 1) // cs))
        last = min(count - 1, (hi - 1 - start) // cs)
        base = int(self.entry[row])
        return range(base + first, base + last + 1)

    def cluster_owners(self, cluster: int) -> Iterator[Owner]:
        """The counted references to a cluster, one per L2 entry for data, in the
        walk's order."""
        lo = cluster << self.ctx.bits
        hi = lo + self.ctx.cs
        for row in self.overlapping(lo, hi):
            if not self.counted[row]:
                continue
            owner = self.owner(int(row))
            if owner.kind == Kind.DATA:
                for j in self.entries(int(row), lo, hi):
                    yield owner._replace(entry=j)
            else:
                yield owner

    def references(self, cluster: int) -> int:
        """How many counted references there are to a cluster (its rebuilt refcount)."""
        return sum(1 for _ in self.cluster_owners(cluster))
