"""Where every guest byte comes from, through the backing chain: `qemu-img map`.

A chain is a list of layers, the image first. Each layer answers for a guest range
the way QEMU's block status does: allocated data (with its host offset when it has
one), zeros, or nothing (then the next layer answers, one level deeper). Extents are
merged exactly when qemu-img map merges them, so the output is the same, for the qemu
release asked for (from 8.2 on, an extent also says whether it is compressed).
"""
from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from .errors import Qcow2Error
from . import access, chain
from .image import Image, file_runs, open_image
from .output import FileId, file_id
from .progress import Progress
from .qemu_style import disk_size
from .qemu_version import MAP_COMPRESSED, NEWEST, QemuVersion
from .snapshots import Snapshot, read_snapshots
from . import tables


class Extent(NamedTuple):
    """A guest range with one status, as qemu-img map reports it (a named tuple: a
    fragmented image has hundreds of thousands)."""

    start: int
    length: int
    depth: int
    present: bool
    zero: bool
    data: bool
    offset: Optional[int]
    filename: Optional[str]  # the file the data is in, when QEMU names one
    compressed: bool = False  # the data of a compressed cluster

    def mergeable(self, nxt: "Extent", by_compressed: bool = True) -> bool:
        """qemu-img map's rule for joining consecutive extents (by_compressed: from
        8.2, extents that differ in being compressed are not joined)."""
        if self.length == 0 or (self.zero, self.data, self.depth, self.present,
                                self.offset is None, self.filename) != \
                (nxt.zero, nxt.data, nxt.depth, nxt.present, nxt.offset is None, nxt.filename):
            return False
        if by_compressed and self.compressed != nxt.compressed:
            return False
        return self.offset is None or self.offset + self.length == nxt.offset


class Layer(ABC):
    """One image of a chain: its virtual size and its own answer for a range."""

    size: int
    filename: str

    @abstractmethod
    def extents(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        """The extents of [start, end), this layer's and, below it, its backing's."""


class RawLayer(Layer):
    """A raw image: data where the file has data, zeros in its holes."""

    def __init__(self, filename: str, role: str) -> None:
        self.file = os.fdopen(access.open_input(filename, role), "rb")
        self.size = os.fstat(self.file.fileno()).st_size
        self.filename = filename

    def extents(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        for a, b, is_data in file_runs(self.file.fileno(), start, end):
            yield Extent(a, b - a, depth, True, not is_data, is_data, a, self.filename)


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
HAS_OFFSET = np.array([t.name in _STATUS and _STATUS[t.name][3]
                       for t in sorted(tables.SubclusterType)])


class Run(NamedTuple):
    """Consecutive guest units of one kind; offset is the first byte's host offset (for
    kinds that have one) and entries the raw L2 entries of the units."""

    kind: str
    start: int
    end: int
    offset: int
    entries: np.ndarray


NO_ENTRIES = np.zeros(0, dtype=np.uint64)


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
        self.l1 = tables.l1_table(image) if l1 is None else l1
        self._check_l1_covers(*(l1_where or ("L1 table", image.header.l1_table_offset)))
        self.mapped = np.flatnonzero(self.l1 & tables.OFFSET_MASK)  # L1 entries with an L2 table
        self.unit = self.geometry.cluster_size // (tables.SUBCLUSTERS if self.geometry.extended_l2
                                                   else 1)
        self.preallocated = self._metadata_preallocated()

    def _check_l1_covers(self, what: str, offset: int) -> None:
        """QEMU's "L1 table is too small": the L1 table must map the whole disk."""
        g = self.geometry
        covered = len(self.l1) * g.l2_entries * g.cluster_size
        if self.size > covered:
            raise Qcow2Error(what, offset, f"{len(self.l1)} entries map {covered} bytes, "
                             f"less than the virtual disk size {self.size}")

    def _metadata_preallocated(self) -> bool:
        """QEMU's test: many more refcounted clusters than the file has blocks."""
        if self.geometry.external_data_file:
            return False
        real = self.image.allocated // self.geometry.cluster_size
        threshold = max(real * 10 // 9, real + 2)
        counts = tables.refcounts(self.image, self.geometry)
        return int(np.count_nonzero(counts)) >= threshold

    # --- per L2 table ------------------------------------------------------------

    def _table(self, l1_index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kinds (subcluster types), host offsets and raw L2 entries of every unit
        (subcluster or cluster) the L2 table of an allocated L1 entry maps."""
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

    # --- extents -------------------------------------------------------------------

    def runs(self, start: int, end: int) -> Iterator[Run]:
        """This layer's own runs of [start, end): units of one kind, contiguous in the file."""
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
                yield Run("unallocated_plain", pos, stop, 0, NO_ENTRIES)
                pos = stop
                continue
            stop = min(end, base + span)
            kinds, offsets, entries = self._table(l1_index)
            first, last = (pos - base) // self.unit, -(-(stop - base) // self.unit)
            yield from self._split(kinds[first:last], offsets[first:last], entries[first:last],
                                   base + first * self.unit, pos, stop)
            pos = stop

    def _next_mapped(self, l1_index: int) -> Optional[int]:
        """The first L1 entry from l1_index on that has an L2 table, if any."""
        i = int(np.searchsorted(self.mapped, l1_index))
        return int(self.mapped[i]) if i < len(self.mapped) else None

    def _split(self, kinds: np.ndarray, offsets: np.ndarray, entries: np.ndarray,
               first_start: int, start: int, end: int) -> Iterator[Run]:
        unit = self.unit
        contiguous = offsets[1:] == offsets[:-1] + np.uint64(unit)
        has_offset = HAS_OFFSET[kinds[1:]]
        breaks = np.flatnonzero((kinds[1:] != kinds[:-1]) | (has_offset & ~contiguous)) + 1
        firsts = [0, *breaks.tolist()]
        # per run, plain ints: a numpy scalar costs a microsecond each
        for a, b, kind, offset in zip(firsts, [*firsts[1:], len(kinds)],
                                      kinds[firsts].tolist(), offsets[firsts].tolist()):
            first = first_start + a * unit
            run_start = start if start > first else first
            run_end = min(end, first_start + b * unit)
            yield Run(_KINDS[kind], run_start, run_end, offset + run_start - first,
                      entries[a:b])

    def extents(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        below = self.backing is not None
        for kind, run_start, run_end, offset, _ in self.runs(start, end):
            if (below and _STATUS[kind][4]) or (kind == "normal" and self.preallocated):
                yield from self._status(kind, run_start, run_end, offset, depth)
            else:  # one extent, made here: a generator per run costs as much again
                yield self._extent(kind, run_start, run_end, offset, depth)

    def _status(self, kind: str, start: int, end: int, offset: int,
                depth: int) -> Iterator[Extent]:
        """The extents of a run that reads from below or from a preallocated file."""
        if _STATUS[kind][4] and self.backing is not None:
            yield from self._backing(start, end, depth)
            return
        if kind == "normal" and self.preallocated and not self.encrypted:
            filename = self.data_filename
            for a, b, is_data in self.image.data_runs(offset, offset + end - start):
                yield Extent(start + a - offset, b - a, depth, True, not is_data, True, a, filename)
            return
        yield self._extent(kind, start, end, offset, depth)

    def _extent(self, kind: str, start: int, end: int, offset: int, depth: int) -> Extent:
        """A run's extent when nothing below it and no hole of the file shows through
        (what reads from below, with nothing below, reads as zeros)."""
        present, zero, data, has_offset, below = _STATUS[kind]
        if has_offset and not self.encrypted:
            return Extent(start, end - start, depth, present, zero or below, data, offset,
                          self.data_filename, kind == "compressed")
        return Extent(start, end - start, depth, present, zero or below, data, None, None,
                      kind == "compressed")

    def _backing(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        below = self.backing
        assert below is not None
        if start < below.size:
            yield from below.extents(start, min(end, below.size), depth + 1)
        if end > below.size:  # past the end of the backing file: zeros, from this layer
            a = max(start, below.size)
            yield Extent(a, end - a, depth, False, True, False, None, None)


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


def image_map(path: Union[str, Path], start: int = 0, length: Optional[int] = None,
              qemu: QemuVersion = NEWEST) -> Iterator[Extent]:
    """The merged extents of the virtual disk, as qemu-img map of release qemu lists
    them: from guest offset start, length bytes (to the end of the disk without
    length, and never past it), as its --start-offset and --max-length have them."""
    by_compressed = qemu.has(MAP_COMPRESSED)
    top = open_chain(path)
    end = top.size if length is None else min(start + length, top.size)
    current: Optional[Extent] = None
    with Progress("map", max(0, end - start)) as progress:
        for extent in top.extents(start, end, 0):
            progress.advance(extent.length)
            if current is not None and current.mergeable(extent, by_compressed):
                current = current._replace(length=current.length + extent.length)
                continue
            if current is not None:
                yield current
            current = extent
    if current is not None:
        yield current


def render_json(extents: Iterable[Extent], start: int = 0, qemu: QemuVersion = NEWEST) -> str:
    """qemu-img map --output=json of release qemu, byte for byte (an empty range, a
    disk of size 0 or a start past the end, gets qemu's one empty extent at start)."""
    compressed = qemu.has(MAP_COMPRESSED)
    lines = [_json_line(e, compressed) for e in extents]
    empty = Extent(start, 0, 0, False, False, False, None, None)
    return "[" + ",\n".join(lines or [_json_line(empty, compressed)]) + "]\n"


_JSON_BOOL = ("false", "true")


def _json_line(e: Extent, compressed: bool) -> str:
    line = ('{ "start": %d, "length": %d, "depth": %d, "present": %s, "zero": %s, "data": %s'
            % (e.start, e.length, e.depth, _JSON_BOOL[e.present], _JSON_BOOL[e.zero],
               _JSON_BOOL[e.data]))
    if compressed:
        line += ', "compressed": ' + _JSON_BOOL[e.compressed]
    if e.offset is not None:
        return line + ', "offset": %d}' % e.offset
    return line + "}"


def _c_hex(value: int) -> str:
    """C's %#x: no 0x prefix for zero."""
    return f"{value:#x}" if value else "0"


def render_human(extents: Iterable[Extent], qemu: QemuVersion = NEWEST) -> Iterator[str]:
    """qemu-img map's default output in release qemu, line by line: mapped data
    ranges only.

    Like qemu-img it stops with an error at data that has no offset in a file
    (compressed or encrypted clusters), after the lines before it.
    """
    yield f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File"
    by_compressed = qemu.has(MAP_COMPRESSED)
    current: Optional[Extent] = None
    for nxt in [*extents, None]:
        if current is not None and nxt is not None and current.mergeable(nxt, by_compressed):
            current = current._replace(length=current.length + nxt.length)
            continue
        if current is not None:
            if current.data and current.offset is None:
                raise Qcow2Error("map", None, "File contains external, encrypted or "
                                 "compressed clusters.")
            if current.data and not current.zero:
                yield (f"{_c_hex(current.start):<16}{_c_hex(current.length):<16}"
                       f"{_c_hex(current.offset or 0):<16}{current.filename or ''}")
            if nxt is not None and (not nxt.data or nxt.zero):
                nxt = nxt._replace(data=False, zero=True)
        current = nxt
