"""Where every guest byte comes from, through the backing chain: `qemu-img map`.

A chain is a list of layers, the image first. Each layer answers for a guest range
the way QEMU's block status does: allocated data (with its host offset when it has
one), zeros, or nothing (then the next layer answers, one level deeper). Extents are
merged exactly when qemu-img map merges them, so the output is the same, for the qemu
release asked for (from 8.2 on, an extent also says whether it is compressed).
"""
from __future__ import annotations

import contextlib
import functools
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import (Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple,
                    Union)

import numpy as np

from .errors import Qcow2Error
from . import access, chain
from .image import Image, file_runs, open_image
from .output import FileId, file_id
from .progress import Progress
from .qemu_style import SECTOR, disk_size
from .qemu_version import MAP_COMPRESSED, NEWEST, QemuVersion
from .snapshots import Snapshot, read_snapshots
from . import tables


class Extent(NamedTuple):
    """A guest range with one status, as qemu-img map reports it."""

    start: int
    length: int
    depth: int
    present: bool
    zero: bool
    data: bool
    offset: Optional[int]
    filename: Optional[str]  # the file the data is in, when QEMU names one
    compressed: bool = False  # the data of a compressed cluster


# An extent's status as the bits of one code, so that arrays of extents hold it: the
# flags qemu-img map prints, and LOCATED when it has an offset (in the file its depth
# names).
PRESENT, ZERO, DATA, COMPRESSED, LOCATED = 1, 2, 4, 8, 16


def status_code(present: bool, zero: bool, data: bool, compressed: bool = False,
                has_offset: bool = False) -> int:
    """The code of an extent's status."""
    return (PRESENT * present | ZERO * zero | DATA * data | COMPRESSED * compressed
            | LOCATED * has_offset)


class Batch(NamedTuple):
    """Extents in guest order, as arrays: depths, guest starts and lengths, status
    codes, host offsets (0 without)."""

    depths: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    codes: np.ndarray
    offsets: np.ndarray


def _batch(depth: int, runs: Sequence[Tuple[int, int, int, int]]) -> Batch:
    """A batch of a few extents given as (start, end, code, offset)."""
    starts, ends, codes, offsets = (np.array(column, dtype=np.int64) for column in
                                    zip(*runs)) if runs else [np.zeros(0, np.int64)] * 4
    return Batch(np.full(len(starts), depth, dtype=np.int32), starts, ends - starts,
                 codes.astype(np.uint8), offsets)


class Layer(ABC):
    """One image of a chain: its virtual size and its own answer for a range."""

    size: int
    filename: str
    data_filename: str  # the file its extents' offsets are in

    @abstractmethod
    def batches(self, start: int, end: int, depth: int) -> Iterator[Batch]:
        """The extents of [start, end) in guest order, this layer's and, below it,
        its backing's."""


class RawLayer(Layer):
    """A raw image: data where the file has data, zeros in its holes and up to its
    size, which is QEMU's: the file's, in whole sectors (the last one's tail a hole)."""

    def __init__(self, filename: str, role: str) -> None:
        self.file = os.fdopen(access.open_input(filename, role), "rb")
        self.size = -(-os.fstat(self.file.fileno()).st_size // SECTOR) * SECTOR
        self.filename = self.data_filename = filename

    def batches(self, start: int, end: int, depth: int) -> Iterator[Batch]:
        yield _file_batch(depth, file_runs(self.file.fileno(), start, end), start, start)


def _cut(found: Batch, lo: np.ndarray, hi: np.ndarray) -> Batch:
    """The parts of extents inside the guest ranges [lo, hi) (sorted, apart)."""
    ends = found.starts + found.lengths
    first = np.searchsorted(ends, lo, side="right")  # the first extent each range meets
    counts = np.maximum(np.searchsorted(found.starts, hi, side="left") - first, 0)
    ranges = np.repeat(np.arange(len(lo)), counts)
    which = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    starts = np.maximum(found.starts[which], lo[ranges])
    lengths = np.minimum(ends[which], hi[ranges]) - starts
    codes = found.codes[which]
    offsets = np.where(codes & LOCATED, found.offsets[which] + starts - found.starts[which], 0)
    return Batch(found.depths[which], starts, lengths, codes, offsets)


def _file_batch(depth: int, runs: Iterable[Tuple[int, int, bool]], start: int, offset: int,
                holes: int = status_code(True, True, False, has_offset=True)) -> Batch:
    """The extents of file runs (host offsets from offset on) mapping guest bytes from
    start on: data where the file has data, holes with the status code holes."""
    data = status_code(True, False, True, has_offset=True)
    return _batch(depth, [(start + a - offset, start + b - offset, data if is_data else holes, a)
                         for a, b, is_data in runs])


# where the file of a metadata-preallocated image has a hole, its data reads as zeros
_PREALLOCATED_HOLE = status_code(True, True, True, has_offset=True)


# status of a (sub)cluster, by the spec's subcluster_type (invalid ones are refused):
# (present, zero, data, has offset, reads from below)
_STATUS = {
    "unallocated_plain": (False, False, False, False, True),
    "unallocated_alloc": (False, False, False, True, True),
    "zero_plain": (True, True, False, False, False),
    "zero_alloc": (True, True, False, True, False),
    "normal": (True, False, True, True, False),
    "compressed": (True, False, True, False, False),
}
_KINDS = [t.name for t in sorted(tables.SubclusterType)]
HAS_OFFSET = np.array([_STATUS.get(name, (False,) * 5)[3] for name in _KINDS], dtype=bool)
READS_BELOW = np.array([_STATUS.get(name, (False,) * 5)[4] for name in _KINDS], dtype=bool)
NORMAL_KIND = _KINDS.index("normal")


def _codes(encrypted: bool) -> np.ndarray:
    """The status code of each kind's run when nothing below it and no hole of the
    file shows through (what reads from below, with nothing below, reads as zeros; an
    encrypted layer names no offsets)."""
    codes = [0] * len(_KINDS)
    for kind, (present, zero, data, has_offset, below) in _STATUS.items():
        codes[_KINDS.index(kind)] = status_code(present, zero or below, data,
                                                kind == "compressed",
                                                has_offset and not encrypted)
    return np.array(codes, dtype=np.uint8)


class Run(NamedTuple):
    """Consecutive guest units of one kind; offset is the first byte's host offset (for
    kinds that have one) and entries the raw L2 entries of the units."""

    kind: str
    start: int
    end: int
    offset: int
    entries: np.ndarray


NO_ENTRIES = np.zeros(0, dtype=np.uint64)


class Runs(NamedTuple):
    """The runs of one L2 table's stretch as arrays: the index of each run's first unit
    and its kind, guest start and end, and its first byte's host offset."""

    firsts: np.ndarray
    kinds: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    offsets: np.ndarray


def _split(runs: Runs, at: int) -> Runs:
    """Runs with the one that spans guest offset at, if any, cut in two there."""
    spans = np.flatnonzero((runs.starts < at) & (runs.ends > at))
    if not len(spans):
        return runs
    i = int(spans[0])
    return Runs(np.insert(runs.firsts, i + 1, runs.firsts[i]),
                np.insert(runs.kinds, i + 1, runs.kinds[i]), np.insert(runs.starts, i + 1, at),
                np.insert(runs.ends, i, at),
                np.insert(runs.offsets, i + 1, runs.offsets[i] + at - runs.starts[i]))


class Qcow2Layer(Layer):
    """A qcow2 image of the chain, its tables decoded in bulk one L2 table at a time."""

    def __init__(self, image: Image, filename: str, backing: Optional[Layer],
                 data_file: Optional[str], l1: Optional[np.ndarray] = None,
                 size: Optional[int] = None,
                 l1_where: Optional[Tuple[str, int]] = None) -> None:
        self.image = image
        self.geometry = image.geometry
        self.size = disk_size(image.header.size) if size is None else size
        self.filename = filename
        self.backing = backing
        self.data_file = data_file  # the external data file's name, if the image gives one
        self.data_filename = data_file or filename
        self.encrypted = image.header.crypt_method != 0
        self.codes = _codes(self.encrypted)
        self.l1 = tables.l1_table(image) if l1 is None else l1
        self._check_l1_covers(*(l1_where or ("L1 table", image.header.l1_table_offset)))
        self.mapped = np.flatnonzero(self.l1 & tables.OFFSET_MASK)  # L1 entries with an L2 table
        self.unit = self.geometry.cluster_size // (tables.SUBCLUSTERS if self.geometry.extended_l2
                                                   else 1)
        self._last_table: Tuple[Optional[int], Any] = (None, None)

    def _check_l1_covers(self, what: str, offset: int) -> None:
        """QEMU's "L1 table is too small": the L1 table must map the whole disk."""
        g = self.geometry
        covered = len(self.l1) * g.l2_entries * g.cluster_size
        if self.size > covered:
            raise Qcow2Error(what, offset, f"{len(self.l1)} entries map {covered} bytes, "
                             f"less than the virtual disk size {self.size}")

    @functools.cached_property
    def preallocated(self) -> bool:
        """QEMU's test of a metadata-preallocated image: many more refcounted clusters
        than the file has blocks (map asks it; guest reads do not need it)."""
        if self.geometry.external_data_file:
            return False
        real = self.image.allocated // self.geometry.cluster_size
        threshold = max(real * 10 // 9, real + 2)
        return tables.referenced_clusters(self.image, self.geometry) >= threshold

    # --- per L2 table ------------------------------------------------------------

    def _table(self, l1_index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kinds (subcluster types), host offsets and raw L2 entries of every unit
        (subcluster or cluster) the L2 table of an allocated L1 entry maps; the last
        table asked for is kept (a backing file's table is asked for again by each
        stretch of the image above that falls in it, and by guest reads range by
        range)."""
        if self._last_table[0] != l1_index:
            self._last_table = (l1_index, self._decode_table(l1_index))
        return self._last_table[1]

    def _decode_table(self, l1_index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = self.geometry
        table = next(tables.l2_tables(self.image, self.l1[l1_index:l1_index + 1], g))
        types = tables.subcluster_types(tables.cluster_types(table.entries, g), table.bitmaps)
        host = tables.host_offsets(table.entries)
        if not g.extended_l2:
            return types.reshape(-1), host, table.entries
        # qemu reads only the entries that map the disk
        disk = -(-(self.size - l1_index * len(types) * g.cluster_size) // g.cluster_size)
        invalid = (types[:disk] == tables.INVALID_SUBCLUSTER).any(axis=1)
        if invalid.any():
            index = int(np.flatnonzero(invalid)[0])
            raise Qcow2Error(f"L2 table (L1 entry {l1_index}) entry {index}",
                             table.offset + 16 * index, "invalid subcluster bitmap")
        within = np.tile(np.arange(tables.SUBCLUSTERS, dtype=np.uint64) * np.uint64(self.unit),
                         len(types))
        offsets = np.repeat(host, tables.SUBCLUSTERS) + within
        return types.reshape(-1), offsets, np.repeat(table.entries, tables.SUBCLUSTERS)

    def _stretches(self, start: int, end: int) -> Iterator[Tuple[int, int, Optional[tuple]]]:
        """[pos, stop) pieces of [start, end), each within one L2 table's span, with
        the kinds, offsets and entries of the units that cover it and the first unit's
        guest offset; None for a piece no L2 table maps (nothing is allocated there)."""
        g = self.geometry
        span = g.l2_entries * g.cluster_size
        end = min(end, self.size)
        pos = start
        while pos < end:
            l1_index = pos // span
            base = l1_index * span
            mapped = self._next_mapped(l1_index)
            if mapped != l1_index:  # up to the next L2 table, nothing is allocated
                stop = end if mapped is None else min(end, mapped * span)
                yield pos, stop, None
                pos = stop
                continue
            stop = min(end, base + span)
            kinds, offsets, entries = self._table(l1_index)
            first, last = (pos - base) // self.unit, -(-(stop - base) // self.unit)
            yield pos, stop, (kinds[first:last], offsets[first:last], entries[first:last],
                              base + first * self.unit)
            pos = stop

    def _next_mapped(self, l1_index: int) -> Optional[int]:
        """The first L1 entry from l1_index on that has an L2 table, if any."""
        i = int(np.searchsorted(self.mapped, l1_index))
        return int(self.mapped[i]) if i < len(self.mapped) else None

    def _runs(self, kinds: np.ndarray, offsets: np.ndarray, first_start: int, start: int,
              end: int) -> Runs:
        """Units (the first at guest offset first_start) split into runs: of one kind,
        contiguous in the file for kinds with an offset; cut to [start, end)."""
        unit = self.unit
        breaks = kinds[1:] != kinds[:-1]
        breaks |= HAS_OFFSET[kinds[1:]] & (offsets[1:] != offsets[:-1] + np.uint64(unit))
        firsts = np.flatnonzero(np.concatenate(([True], breaks)))
        whole = first_start + firsts * unit  # where each run's first unit starts
        starts = whole.copy()
        starts[0] = max(start, first_start)
        ends = np.concatenate((whole[1:], [min(end, first_start + len(kinds) * unit)]))
        return Runs(firsts, kinds[firsts], starts, ends,
                    offsets[firsts].astype(np.int64) + (starts - whole))

    # --- runs and extents ------------------------------------------------------------

    def runs(self, start: int, end: int) -> Iterator[Run]:
        """This layer's own runs of [start, end): units of one kind, contiguous in the file."""
        for pos, stop, table in self._stretches(start, end):
            if table is None:
                yield Run("unallocated_plain", pos, stop, 0, NO_ENTRIES)
                continue
            kinds, offsets, entries, first_start = table
            runs = self._runs(kinds, offsets, first_start, pos, stop)
            firsts = runs.firsts.tolist()
            # per run, plain ints: a numpy scalar costs a microsecond each
            for a, b, kind, run_start, run_end, offset in zip(
                    firsts, [*firsts[1:], len(kinds)], runs.kinds.tolist(),
                    runs.starts.tolist(), runs.ends.tolist(), runs.offsets.tolist()):
                yield Run(_KINDS[kind], run_start, run_end, offset, entries[a:b])

    def batches(self, start: int, end: int, depth: int) -> Iterator[Batch]:
        unallocated = _KINDS.index("unallocated_plain")
        for pos, stop, table in self._stretches(start, end):
            if table is None:
                runs = Runs(*(np.array([value]) for value in (0, unallocated, pos, stop, 0)))
            else:
                kinds, offsets, _, first_start = table
                runs = self._runs(kinds, offsets, first_start, pos, stop)
            yield from self._run_batches(runs, depth)

    def _run_batches(self, runs: Runs, depth: int) -> Iterator[Batch]:
        """The extents of runs: each run's own, but where the backing file shows
        through (runs that read from below, up to the backing file's end: asked for
        once, from the first such run's start to the last one's end, and cut to them)
        or the file's holes do (allocated runs of a metadata-preallocated image),
        theirs. Past the backing file's end a run is its own, as with no backing file:
        QEMU's block layer adds "zero" to the status the image gives there, which keeps
        the offset of an allocated cluster's unallocated subclusters."""
        below, backing = None, self.backing
        if backing is not None:
            runs = _split(runs, backing.size)
            below = READS_BELOW[runs.kinds] & (runs.starts < backing.size)
        codes = self.codes[runs.kinds]
        own = Batch(np.full(len(codes), depth, dtype=np.int32), runs.starts,
                    runs.ends - runs.starts, codes, np.where(codes & LOCATED, runs.offsets, 0))
        in_file = (runs.kinds == NORMAL_KIND) if self.preallocated and not self.encrypted \
            else None
        if (below is None or not below.any()) and (in_file is None or not in_file.any()):
            yield own
            return
        through = np.zeros(len(codes), dtype=bool)
        parts = []
        if backing is not None and below is not None and below.any():
            through |= below
            lo, hi = runs.starts[below], runs.ends[below]
            parts += [_cut(found, lo, hi)
                      for found in backing.batches(int(lo[0]), int(hi[-1]), depth + 1)]
        if in_file is not None:
            through |= in_file
            for i in np.flatnonzero(in_file).tolist():
                run_start, run_end, offset = (int(runs.starts[i]), int(runs.ends[i]),
                                              int(runs.offsets[i]))
                found_runs = self.image.data_runs(offset, offset + run_end - run_start)
                parts.append(_file_batch(depth, found_runs, run_start, offset,
                                         _PREALLOCATED_HOLE))
        parts.append(Batch(*(column[~through] for column in own)))
        joined = Batch(*(np.concatenate(column) for column in zip(*parts)))
        yield Batch(*(column[np.argsort(joined.starts, kind="stable")] for column in joined))


Chain = List[Layer]


def chain_layers(top: Layer) -> Iterator[Layer]:
    """The layers of a chain, from the top down."""
    layer: Optional[Layer] = top
    while layer is not None:
        yield layer
        layer = layer.backing if isinstance(layer, Qcow2Layer) else None


def chain_inputs(top: Layer) -> Dict[FileId, str]:
    """Every file of the chain that exists, by device and inode, in words: what an
    output must never be."""
    found: Dict[FileId, str] = {}
    for layer in chain_layers(top):
        role = "the image" if layer is top else "the backing file"
        st = (layer.image.stat() if isinstance(layer, Qcow2Layer)
              else os.fstat(_raw(layer).file.fileno()))
        found.setdefault(file_id(st), f"{role} {layer.filename}")
        if isinstance(layer, Qcow2Layer) and layer.data_file:
            with contextlib.suppress(OSError):
                found.setdefault(file_id(os.stat(layer.data_filename)),
                                 f"the external data file {layer.data_file}")
    return found


def _raw(layer: Layer) -> RawLayer:
    """A layer that is not qcow2: raw."""
    assert isinstance(layer, RawLayer)
    return layer


def close_chain(top: Layer) -> None:
    """Close every file of the chain's layers."""
    for layer in chain_layers(top):
        if isinstance(layer, Qcow2Layer):
            layer.image.close()
        else:
            _raw(layer).file.close()


def select_snapshot(image: Image, key: str) -> Snapshot:
    """The snapshot whose id is key, else the one whose name is key."""
    table = read_snapshots(image)
    for field in ("id", "name"):
        found = [s for s in table if getattr(s, field) == key]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise Qcow2Error("snapshot table", image.header.snapshot_offset,
                             f"{len(found)} snapshots have the {field} {key!r}")
    raise Qcow2Error("snapshot table", image.header.snapshot_offset,
                     f"no snapshot with the id or name {key!r}")


def open_chain(path: Union[str, Path], snapshot: Optional[str] = None,
               max_depth: int = chain.MAX_DEPTH) -> Layer:
    """The image at path (or one of its snapshots) with its backing chain opened as
    chain resolves it, under the chain policy of access (overrides, safe mode).

    Backing names are relative to the directory of the image naming them; external
    data file names, as in QEMU, to the current directory.
    """
    files = chain.Chain(str(path), max_depth)
    return _open_layer(files, files.top, snapshot)


def _open_layer(files: chain.Chain, link: chain.Link,
                snapshot: Optional[str] = None) -> Layer:
    if link.format == "raw":
        return RawLayer(link.path, link.role)
    image = open_image(link.path, role=link.role)
    try:
        return _qcow2_layer(files, image, link, snapshot)
    except BaseException:
        image.close()
        raise


def _qcow2_layer(files: chain.Chain, image: Image, link: chain.Link,
                 snapshot: Optional[str]) -> Qcow2Layer:
    below = files.below(image, link)
    data_file = chain.data_file_name(image) or None
    backing = None if below is None else _open_layer(files, below)
    filename = link.path
    if snapshot is None:
        return Qcow2Layer(image, filename, backing, data_file)
    snap = select_snapshot(image, snapshot)
    what = f"L1 table of snapshot {snap.id}"
    l1 = tables.l1_table(image, snap.l1_table_offset, snap.l1_size, what)
    return Qcow2Layer(image, filename, backing, data_file, l1,
                      image.header.size if snap.disk_size is None else snap.disk_size,
                      (what, snap.l1_table_offset))


class Columns(NamedTuple):
    """Consecutive extents as arrays: lengths, depths, status codes and host offsets
    (0 without)."""

    lengths: np.ndarray
    depths: np.ndarray
    codes: np.ndarray
    offsets: np.ndarray

    def cut(self, first: int, last: int) -> "Columns":
        return Columns(*(column[first:last] for column in self))


class Extents(Sequence[Extent]):
    """The merged extents of a map from guest offset start on, in pieces of arrays (a
    fragmented image has hundreds of thousands), with the file each depth's offsets
    are in. They follow each other without a gap, and become Extent tuples when they
    are read."""

    def __init__(self, start: int, pieces: Sequence[Columns], names: Sequence[str]) -> None:
        self.start = start
        self.pieces = [piece for piece in pieces if len(piece.lengths)]
        self.names = names
        self.counts = np.cumsum([0] + [len(piece.lengths) for piece in self.pieces])

    def chunks(self, size: int) -> Iterator[Tuple[np.ndarray, Columns]]:
        """(guest starts, columns) of the extents, at most size at a time, in order."""
        start = self.start
        for piece in self.pieces:
            for first in range(0, len(piece.lengths), size):
                chunk = piece.cut(first, first + size)
                ends = np.cumsum(chunk.lengths) + start
                yield ends - chunk.lengths, chunk
                start = int(ends[-1])

    def __len__(self) -> int:
        return int(self.counts[-1])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        index = range(len(self))[index]
        at = int(np.searchsorted(self.counts, index, side="right")) - 1
        start = self.start + sum(int(piece.lengths.sum()) for piece in self.pieces[:at])
        piece = self.pieces[at]
        within = index - int(self.counts[at])
        start += int(piece.lengths[:within].sum())
        return next(iter(Extents(start, [piece.cut(within, within + 1)], self.names)))

    def __iter__(self) -> Iterator[Extent]:
        names = self.names
        for starts, chunk in self.chunks(CHUNK):
            for start, length, depth, code, offset in zip(
                    starts.tolist(), *(column.tolist() for column in chunk)):
                located = code & LOCATED
                yield Extent(start, length, depth, bool(code & PRESENT), bool(code & ZERO),
                             bool(code & DATA), offset if located else None,
                             names[depth] if located else None, bool(code & COMPRESSED))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Extents({list(self)!r})"


def merged(batches: Sequence[Batch], by_compressed: bool) -> Columns:
    """The extents of consecutive batches joined exactly when qemu-img map joins
    them: of one depth and status (from 8.2, compressed or not too), with nothing in
    between, and for those with an offset, contiguous in the file."""
    lengths, codes, offsets = (np.concatenate(column) for column in list(zip(*batches))[2:])
    depths = np.concatenate([b.depths for b in batches])
    key = (codes & (0xFF if by_compressed else ~COMPRESSED & 0xFF)) | (depths << 8)
    located = (codes[:-1] & LOCATED) != 0
    joined = (lengths[:-1] != 0) & (key[:-1] == key[1:]) & \
        (~located | (offsets[:-1] + lengths[:-1] == offsets[1:]))
    firsts = np.flatnonzero(np.concatenate(([True], ~joined)))
    return Columns(np.add.reduceat(lengths, firsts), depths[firsts], codes[firsts],
                   offsets[firsts])


MERGED_AT_ONCE = 1 << 11  # extents: found ones are merged in groups of about as many
CHUNK = 1 << 11  # extents rendered (and written) at a time


def image_map(path: Union[str, Path], start: int = 0, length: Optional[int] = None,
              qemu: QemuVersion = NEWEST) -> Extents:
    """The merged extents of the virtual disk, as qemu-img map of release qemu lists
    them: from guest offset start, length bytes (to the end of the disk without
    length, and never past it), as its --start-offset and --max-length have them."""
    by_compressed = qemu.has(MAP_COMPRESSED)
    top = open_chain(path)
    try:
        names = [layer.data_filename for layer in chain_layers(top)]
        end = top.size if length is None else min(start + length, top.size)
        pieces: List[Columns] = []
        group: List[Batch] = []
        count = 0
        with Progress("map", max(0, end - start)) as progress:
            for found in top.batches(start, end, 0):
                progress.advance(int(found.lengths.sum()))
                group.append(found)
                count += len(found.lengths)
                if count >= MERGED_AT_ONCE:  # its last extent may join the next group's
                    piece = merged(group, by_compressed)
                    group_end = int(group[0].starts[0]) + int(piece.lengths.sum())
                    pieces.append(piece.cut(0, -1))
                    group, count = [_last(piece, group_end)], 1
    finally:
        close_chain(top)
    if group:
        pieces.append(merged(group, by_compressed))
    return Extents(start, pieces, names)


def _last(piece: Columns, end: int) -> Batch:
    """The last of merged extents that end at guest offset end, to be merged again."""
    length = piece.lengths[-1:]
    return Batch(piece.depths[-1:], end - length, length, piece.codes[-1:], piece.offsets[-1:])


_JSON_BOOL = ("false", "true")


def render_json(extents: Extents, start: int = 0,
                qemu: QemuVersion = NEWEST) -> Iterator[str]:
    """qemu-img map --output=json of release qemu, byte for byte, in pieces (an empty
    range, a disk of size 0 or a start past the end, gets qemu's one empty extent at
    start)."""
    if not len(extents):
        zero = np.zeros(1, dtype=np.int64)
        extents = Extents(start, [Columns(zero, zero, zero, zero)], [])
    compressed = qemu.has(MAP_COMPRESSED)
    codes = 2 * LOCATED
    # a line's format by depth and status code, its numbers filled in for a chunk
    formats = np.array([_json_format(depth, code, compressed)
                        for depth in range(len(extents.names) or 1) for code in range(codes)],
                       dtype=object)
    opening = "["
    for starts, chunk in extents.chunks(CHUNK):
        numbers = np.stack([starts, chunk.lengths, chunk.offsets], axis=1)
        printed = np.ones(numbers.shape, dtype=bool)
        printed[:, 2] = (chunk.codes & LOCATED) != 0
        lines = formats[chunk.depths * codes + chunk.codes].tolist()
        lines[0] = opening + lines[0]
        yield ",\n".join(lines) % tuple(numbers[printed].tolist())
        opening = ",\n"
    yield "]\n"


def _json_format(depth: int, code: int, compressed: bool) -> str:
    line = ('{ "start": %%d, "length": %%d, "depth": %d, "present": %s, "zero": %s, '
            '"data": %s' % (depth, _JSON_BOOL[code & PRESENT > 0], _JSON_BOOL[code & ZERO > 0],
                            _JSON_BOOL[code & DATA > 0]))
    if compressed:
        line += ', "compressed": ' + _JSON_BOOL[code & COMPRESSED > 0]
    return line + (', "offset": %d}' if code & LOCATED else "}")


_HEX_ZERO = "%-16s" % "0"  # C's %#x: no 0x prefix for zero


def render_human(extents: Extents, qemu: QemuVersion = NEWEST) -> Iterator[str]:
    """qemu-img map's default output in release qemu, in pieces of whole lines: the
    ranges that hold data (extents with data that are not zero).

    Like qemu-img it stops with an error at data that has no offset in a file
    (compressed or encrypted clusters), after the lines before it (qemu does not
    stop at the first extent's data without an offset when it reads as zeros).
    """
    yield f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File\n"
    # a line's format by depth and which of its numbers are 0
    formats = np.array([
        "".join(_HEX_ZERO if zeros >> i & 1 else "%#-16x" for i in range(3))
        + name.replace("%", "%%") for name in extents.names for zeros in range(8)],
        dtype=object)
    first = True
    for starts, chunk in extents.chunks(CHUNK):
        data, zero = (chunk.codes & DATA) != 0, (chunk.codes & ZERO) != 0
        unmapped = data & ((chunk.codes & LOCATED) == 0)
        unmapped[1 if first else 0:] &= ~zero[1 if first else 0:]
        first = False
        stop = int(np.argmax(unmapped)) if unmapped.any() else len(unmapped)
        shown = np.flatnonzero(data[:stop] & ~zero[:stop])
        numbers = np.stack([starts[shown], chunk.lengths[shown], chunk.offsets[shown]], axis=1)
        nonzero = numbers != 0
        keys = chunk.depths[shown] * 8 + (~nonzero * [1, 2, 4]).sum(axis=1)
        if len(shown):
            yield "\n".join(formats[keys].tolist()) % tuple(numbers[nonzero].tolist()) + "\n"
        if stop < len(unmapped):
            raise Qcow2Error("map", None, "File contains external, encrypted or "
                             "compressed clusters.")
