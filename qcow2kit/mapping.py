"""Where every guest byte comes from, through the backing chain: `qemu-img map`.

A chain is a list of layers, the image first. Each layer answers for a guest range
the way QEMU's block status does: allocated data (with its host offset when it has
one), zeros, or nothing (then the next layer answers, one level deeper). Extents are
merged exactly when qemu-img map merges them, so the output is the same.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from .errors import Qcow2Error
from . import access
from .image import Image, open_image, probe_format, text
from .output import FileId, file_id
from .progress import Progress
from .qemu_style import disk_size
from .snapshots import Snapshot, read_snapshots
from . import tables

SUBCLUSTERS = 32


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

    def mergeable(self, nxt: "Extent") -> bool:
        """qemu-img map's rule for joining consecutive extents."""
        if self.length == 0 or (self.zero, self.data, self.depth, self.present,
                                self.offset is None, self.filename) != \
                (nxt.zero, nxt.data, nxt.depth, nxt.present, nxt.offset is None, nxt.filename):
            return False
        return self.offset is None or self.offset + self.length == nxt.offset


class Layer(ABC):
    """One image of a chain: its virtual size and its own answer for a range."""

    size: int
    filename: str

    @abstractmethod
    def extents(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        """The extents of [start, end), this layer's and, below it, its backing's."""


def file_runs(fd: int, start: int, end: int) -> Iterator[tuple]:
    """(start, end, is_data) runs of a file region, from SEEK_DATA/SEEK_HOLE."""
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            data = end
        if data > pos:
            yield pos, min(data, end), False
            pos = min(data, end)
            continue
        hole = os.lseek(fd, pos, os.SEEK_HOLE)
        if hole <= pos:  # a device tells no holes (/dev/null answers 0): data to the end
            hole = end
        yield pos, min(hole, end), True
        pos = min(hole, end)


class RawLayer(Layer):
    """A raw image: data where the file has data, zeros in its holes."""

    def __init__(self, filename: str, role: str) -> None:
        self.file = os.fdopen(access.open_input(filename, role), "rb")
        self.size = os.fstat(self.file.fileno()).st_size
        self.filename = filename

    def extents(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        for a, b, is_data in file_runs(self.file.fileno(), start, end):
            yield Extent(a, b - a, depth, True, not is_data, is_data, a, self.filename)


# status of a (sub)cluster: (present, zero, data, has offset, reads from below)
_STATUS = {
    "normal": (True, False, True, True, False),
    "zero_alloc": (True, True, False, True, False),
    "zero_plain": (True, True, False, False, False),
    "compressed": (True, False, True, False, False),
    "unallocated_alloc": (False, False, False, True, True),
    "unallocated": (False, False, False, False, True),
}
_KINDS = list(_STATUS)
# A layer with nothing below: each status as a code, present*8 + zero*4 + data*2 +
# has offset (none in an encrypted layer), and the code of each kind.
_CODE_STATUS = {p * 8 + z * 4 + d * 2 + o: (bool(p), bool(z), bool(d), bool(o))
                for p in (0, 1) for z in (0, 1) for d in (0, 1) for o in (0, 1)}
_NO_OFFSET = (None, None)  # an extent's offset and file name when it has no offset
_STATUS_CODES = {encrypted: np.array(
    [p * 8 + (z or below) * 4 + d * 2 + (o and not encrypted)
     for p, z, d, o, below in _STATUS.values()], dtype=np.uint8) for encrypted in (False, True)}


class Run(NamedTuple):
    """Consecutive guest units of one kind; offset is the first byte's host offset (for
    kinds that have one) and entries the raw L2 entries of the units."""

    kind: str
    start: int
    end: int
    offset: int
    entries: np.ndarray

KIND = {name: np.uint8(i) for i, name in enumerate(_KINDS)}
_HAS_OFFSET = np.array([name in ("normal", "zero_alloc", "unallocated_alloc")
                        for name in _KINDS])  # by kind: runs break where offsets jump
NO_ENTRIES = np.zeros(0, dtype=np.uint64)
_FROM_CLUSTER_TYPE = np.array([KIND["unallocated"], KIND["zero_plain"], KIND["zero_alloc"],
                               KIND["normal"], KIND["compressed"]], dtype=np.uint8)


class Qcow2Layer(Layer):
    """A qcow2 image of the chain, its tables decoded in bulk one L2 table at a time."""

    def __init__(self, image: Image, filename: str, backing: Optional[Layer],
                 data_file: Optional[str], l1: Optional[np.ndarray] = None,
                 size: Optional[int] = None,
                 l1_where: Optional[Tuple[str, int]] = None) -> None:
        self.image = image
        self.geometry = tables.Geometry.of(image)
        self.size = disk_size(image.header.size) if size is None else size
        self.filename = filename
        self.backing = backing
        self.data_file = data_file  # the external data file's name, if the image gives one
        self.data_filename = data_file or filename
        self.encrypted = image.header.crypt_method != 0
        self.l1 = tables.l1_table(image) if l1 is None else l1
        self._check_l1_covers(*(l1_where or ("L1 table", image.header.l1_table_offset)))
        self.mapped = np.flatnonzero(self.l1 & tables.OFFSET_MASK)  # L1 entries with an L2 table
        self.unit = self.geometry.cluster_size // (SUBCLUSTERS if self.geometry.extended_l2 else 1)
        self.preallocated = self._metadata_preallocated()
        self.fd = image._file.fileno()

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
        real = os.fstat(self.image._file.fileno()).st_blocks * 512 // self.geometry.cluster_size
        threshold = max(real * 10 // 9, real + 2)
        counts = tables.refcounts(self.image, self.geometry)
        return int(np.count_nonzero(counts)) >= threshold

    # --- per L2 table ------------------------------------------------------------

    def _table(self, l1_index: int):
        """Kinds, host offsets and raw L2 entries of every unit (subcluster or cluster)
        the L2 table of an allocated L1 entry maps."""
        g = self.geometry
        table = next(tables.l2_tables(self.image, self.l1[l1_index:l1_index + 1], g))
        types = _FROM_CLUSTER_TYPE[tables.cluster_types(table.entries, g)]
        host = tables.host_offsets(table.entries)
        if not g.extended_l2:
            return types, host, table.entries
        kinds, offsets = self._subclusters(types, host, table, l1_index)
        return kinds, offsets, np.repeat(table.entries, SUBCLUSTERS)

    def _subclusters(self, types: np.ndarray, host: np.ndarray, table: tables.L2Table,
                     l1_index: int):
        bitmaps = table.bitmaps
        bits = np.arange(SUBCLUSTERS, dtype=np.uint64)
        alloc = ((bitmaps[:, None] >> bits) & np.uint64(1)).astype(bool)
        zero = ((bitmaps[:, None] >> (bits + np.uint64(32))) & np.uint64(1)).astype(bool)
        cluster = np.repeat(types, SUBCLUSTERS).reshape(-1, SUBCLUSTERS)
        normal = cluster == KIND["normal"]
        invalid = (normal & (bitmaps & (bitmaps >> np.uint64(32)) != 0)[:, None]) | \
            ((cluster == KIND["unallocated"]) & ((bitmaps & np.uint64(0xFFFFFFFF)) != 0)[:, None])
        # qemu reads only the entries that map the disk
        disk = -(-(self.size - l1_index * len(types) * self.geometry.cluster_size) //
                 self.geometry.cluster_size)
        if invalid[:disk].any():
            index = int(np.flatnonzero(invalid[:disk].any(axis=1))[0])
            raise Qcow2Error(f"L2 table (L1 entry {l1_index}) entry {index}",
                             table.offset + 16 * index, "invalid subcluster bitmap")
        kinds = np.select(
            [cluster == KIND["compressed"], normal & zero, normal & alloc, normal,
             (cluster == KIND["unallocated"]) & zero],
            [KIND["compressed"], KIND["zero_alloc"], KIND["normal"], KIND["unallocated_alloc"],
             KIND["zero_plain"]], KIND["unallocated"]).astype(np.uint8).reshape(-1)
        within = np.tile(bits * np.uint64(self.unit), len(types))
        offsets = np.repeat(host, SUBCLUSTERS) + within
        return kinds, offsets

    # --- extents -------------------------------------------------------------------

    def runs(self, start: int, end: int) -> Iterator[Run]:
        """This layer's own runs of [start, end): units of one kind, contiguous in the file."""
        for pos, stop, table in self._tables(start, end):
            if table is None:
                yield Run("unallocated", pos, stop, 0, NO_ENTRIES)
            else:
                yield from self._split(*table, pos, stop)

    def _tables(self, start: int, end: int) -> Iterator[Tuple[int, int, Optional[tuple]]]:
        """[pos, stop) ranges of [start, end) within one L2 table each, with the kinds,
        offsets and entries of the units from pos's on and the first one's guest
        offset; None for a range no L2 table maps."""
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

    def _split(self, kinds: np.ndarray, offsets: np.ndarray, entries: np.ndarray,
               first_start: int, start: int, end: int) -> Iterator[Run]:
        unit = self.unit
        contiguous = offsets[1:] == offsets[:-1] + np.uint64(unit)
        has_offset = _HAS_OFFSET[kinds[1:]]
        breaks = np.flatnonzero((kinds[1:] != kinds[:-1]) | (has_offset & ~contiguous)) + 1
        firsts = [0, *breaks.tolist()]
        # per run, plain ints: numpy scalars cost a microsecond each
        for a, b, kind, offset in zip(firsts, [*firsts[1:], len(kinds)],
                                      kinds[firsts].tolist(), offsets[firsts].tolist()):
            first = first_start + a * unit
            run_start = start if start > first else first
            run_end = min(end, first_start + b * unit)
            yield Run(_KINDS[kind], run_start, run_end, offset + run_start - first,
                      entries[a:b])

    def extents(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        if self.backing is None and not self.preallocated:
            yield from self._own_extents(start, end, depth)
            return
        below = self.backing is not None
        for kind, run_start, run_end, offset, _ in self.runs(start, end):
            if (below and _STATUS[kind][4]) or (kind == "normal" and self.preallocated):
                yield from self._status(kind, run_start, run_end, offset, depth)
            else:
                yield self._extent(kind, run_start, run_end, offset, depth)

    def _own_extents(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        """The extents of a layer that nothing shows through (no backing file, no
        preallocated file), found per L2 table with array operations: units are
        grouped by their status (_extent's), and by contiguous offsets where it has
        them, so that each group is the extent qemu-img map merges them into."""
        codes_of = _STATUS_CODES[self.encrypted]
        unit = self.unit
        for pos, stop, table in self._tables(start, end):
            if table is None:
                yield self._extent("unallocated", pos, stop, 0, depth)
                continue
            kinds, offsets, _, first_start = table
            codes = codes_of[kinds]
            jump = offsets[1:] != offsets[:-1] + np.uint64(unit)
            breaks = np.flatnonzero((codes[1:] != codes[:-1]) | (jump & (codes[1:] & 1 == 1))) + 1
            firsts = np.concatenate(([0], breaks))
            ends = np.concatenate((breaks, [len(kinds)])) * unit  # from first_start
            starts = firsts * unit
            starts[0] = pos - first_start  # the first and last groups cut to [pos, stop)
            ends[-1] = stop - first_start
            with_offset = (offsets[firsts] + (starts - firsts * unit).astype(np.uint64)).tolist()
            filename = self.data_filename
            for start, end, code, offset in zip(starts.tolist(), ends.tolist(),
                                                codes[firsts].tolist(), with_offset):
                present, zero, data, has_offset = _CODE_STATUS[code]
                yield Extent(first_start + start, end - start, depth, present, zero, data,
                             *((offset, filename) if has_offset else _NO_OFFSET))

    def _status(self, kind: str, start: int, end: int, offset: int,
                depth: int) -> Iterator[Extent]:
        """The extents of a run that reads from below or from a preallocated file."""
        if _STATUS[kind][4] and self.backing is not None:
            yield from self._backing(start, end, depth)
            return
        if kind == "normal" and self.preallocated and not self.encrypted:
            filename = self.data_filename
            for a, b, is_data in file_runs(self.fd, offset, offset + end - start):
                yield Extent(start + a - offset, b - a, depth, True, not is_data, True, a, filename)
            return
        yield self._extent(kind, start, end, offset, depth)

    def _extent(self, kind: str, start: int, end: int, offset: int, depth: int) -> Extent:
        """A run's extent when nothing below it and no file hole shows through."""
        present, zero, data, has_offset, below = _STATUS[kind]
        if has_offset and not self.encrypted:
            return Extent(start, end - start, depth, present, zero or below, data, offset,
                          self.data_filename)
        return Extent(start, end - start, depth, present, zero or below, data, None, None)

    def _backing(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        below = self.backing
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
        fd = layer.fd if isinstance(layer, Qcow2Layer) else layer.file.fileno()
        found.setdefault(file_id(os.fstat(fd)), f"{role} {layer.filename}")
        if isinstance(layer, Qcow2Layer) and layer.data_file:
            with contextlib.suppress(OSError):
                found.setdefault(file_id(os.stat(layer.data_filename)),
                                 f"the external data file {layer.data_file}")
    return found


def close_chain(top: Layer) -> None:
    """Close every file of the chain's layers."""
    for layer in chain_layers(top):
        if isinstance(layer, Qcow2Layer):
            layer.image.close()
        else:
            layer.file.close()


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


def c_string(name: Optional[str]) -> Optional[str]:
    """A name as QEMU reads it from the image, a C string: up to its first NUL (an
    empty backing file name is no backing file)."""
    return None if name is None else name.split("\0", 1)[0]


def open_chain(path: Union[str, Path], snapshot: Optional[str] = None,
               max_depth: int = 64) -> Layer:
    """The image at path (or one of its snapshots) with its backing chain opened as
    QEMU resolves it, under the chain policy of access (overrides, safe mode).

    Backing names are relative to the directory of the image naming them; external
    data file names, as in QEMU, to the current directory.
    """
    return _open_layer(str(path), "qcow2", 0, max_depth, snapshot)


def _open_layer(filename: str, fmt: Optional[str], depth: int, max_depth: int,
                snapshot: Optional[str] = None) -> Layer:
    if depth > max_depth:
        raise Qcow2Error("backing chain", None, "too deep (a loop?)")
    role = access.IMAGE if depth == 0 else access.BACKING
    fmt = fmt or probe_format(filename, role)
    if fmt == "raw":
        return RawLayer(filename, role)
    if fmt != "qcow2":
        raise Qcow2Error("backing file format", None, f"{fmt!r} images are not supported")
    image = open_image(filename, role=role)
    try:
        return _qcow2_layer(image, filename, depth, max_depth, snapshot)
    except BaseException:
        image.close()
        raise


def _qcow2_layer(image: Image, filename: str, depth: int, max_depth: int,
                 snapshot: Optional[str]) -> Qcow2Layer:
    fmt_ext = image.extension("backing_file_format")
    fmt = c_string(text(fmt_ext.data)) if fmt_ext else None
    below = access.backing_file(filename, c_string(image.backing_file), fmt, depth)
    data_ext = image.extension("external_data_file")
    data_file = c_string(text(data_ext.data)) if data_ext else None
    if data_file:
        access.data_file(filename, data_file)
    backing = None if below is None else _open_layer(*below, depth + 1, max_depth)
    if snapshot is None:
        return Qcow2Layer(image, filename, backing, data_file)
    snap = select_snapshot(image, snapshot)
    what = f"L1 table of snapshot {snap.id}"
    l1 = tables.l1_table(image, snap.l1_table_offset, snap.l1_size, what)
    return Qcow2Layer(image, filename, backing, data_file, l1,
                      image.header.size if snap.disk_size is None else snap.disk_size,
                      (what, snap.l1_table_offset))


def image_map(path: Union[str, Path]) -> Iterator[Extent]:
    """The merged extents of the whole virtual disk, as qemu-img map lists them."""
    top = open_chain(path)
    current: Optional[Extent] = None
    with Progress("map", top.size) as progress:
        for extent in top.extents(0, top.size, 0):
            progress.advance(extent.length)
            if current is not None and current.mergeable(extent):
                current = current._replace(length=current.length + extent.length)
                continue
            if current is not None:
                yield current
            current = extent
    if current is not None:
        yield current


EMPTY_DISK = Extent(0, 0, 0, False, False, False, None, None)  # qemu's for a 0-byte disk


def render_json(extents: Iterator[Extent]) -> str:
    """qemu-img map --output=json, byte for byte (a disk of size 0 gets qemu's one
    empty extent)."""
    lines = [_json_line(e) for e in extents]
    return "[" + ",\n".join(lines or [_json_line(EMPTY_DISK)]) + "]\n"


_JSON_BOOL = ("false", "true")


def _json_line(e: Extent) -> str:
    start, length, depth, present, zero, data, offset, _ = e
    line = ('{ "start": %d, "length": %d, "depth": %d, "present": %s, "zero": %s, "data": %s'
            % (start, length, depth, _JSON_BOOL[present], _JSON_BOOL[zero], _JSON_BOOL[data]))
    if offset is not None:
        return line + ', "offset": %d}' % offset
    return line + "}"


def _c_hex(value: int) -> str:
    """C's %#x: no 0x prefix for zero."""
    return f"{value:#x}" if value else "0"


def render_human(extents: Iterator[Extent]) -> Iterator[str]:
    """qemu-img map's default output, line by line: mapped data ranges only.

    Like qemu-img it stops with an error at data that has no offset in a file
    (compressed or encrypted clusters), after the lines before it.
    """
    yield f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File"
    current: Optional[Extent] = None
    for nxt in itertools.chain(extents, [None]):
        if current is not None and nxt is not None and current.mergeable(nxt):
            current = current._replace(length=current.length + nxt.length)
            continue
        if current is not None:
            if current.data and current.offset is None:
                raise Qcow2Error("map", None, "File contains external, encrypted or "
                                 "compressed clusters.")
            if current.data and not current.zero:
                yield (f"{_c_hex(current.start):<16}{_c_hex(current.length):<16}"
                       f"{_c_hex(current.offset):<16}{current.filename or ''}")
            if nxt is not None and (not nxt.data or nxt.zero) and (nxt.data or not nxt.zero):
                nxt = nxt._replace(data=False, zero=True)  # not already so
        current = nxt
