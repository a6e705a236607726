"""Persistent dirty bitmaps: which guest byte ranges each bitmap marks dirty.

Each bitmap's data is decoded from its table (serialized clusters, least significant
bit first, and all-ones entries) into merged dirty extents. What is inconsistent on
the way is reported as a warning that names the structure; nothing stops the rest of
the bitmaps from being shown.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import Qcow2Error
from .image import Bitmap, BitmapTableEntry, BitmapType, Image
from .limits import BITMAP_GRANULARITY_BITS, MAX_BITMAP_NAME
from .names import (AUTOCLEAR_BITMAPS, BITMAP_FLAGS, EXTRA_DATA_COMPATIBLE, IN_USE,
                    KNOWN_BITMAP_FLAGS)

DIRTY_TRACKING = int(BitmapType.dirty_tracking)

DirtyExtent = Tuple[int, int]  # guest byte offset, length
Runs = Tuple[np.ndarray, np.ndarray]  # starts and (exclusive) ends of runs of set bits
Warn = Callable[[str], None]


class Extents(Sequence[DirtyExtent]):
    """Dirty extents as (start, length) pairs in guest bytes, held in two arrays.

    A random bitmap of 2 MiB has millions of extents; they become Python tuples only
    when they are iterated.
    """

    def __init__(self, starts: np.ndarray, lengths: np.ndarray) -> None:
        self.starts, self.lengths = starts, lengths

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: Union[int, slice]) -> Any:
        if isinstance(index, slice):
            return Extents(self.starts[index], self.lengths[index])
        return int(self.starts[index]), int(self.lengths[index])

    def __iter__(self) -> Iterator[DirtyExtent]:
        return zip(self.starts.tolist(), self.lengths.tolist())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == [tuple(e) for e in other]

    def __repr__(self) -> str:
        return f"Extents({list(self)!r})"

    @property
    def total(self) -> int:
        """The dirty bytes, all extents together."""
        return int(self.lengths.sum())


@dataclass(frozen=True)
class BitmapReport:
    """One bitmap: its directory entry, classified table, dirty extents and warnings."""

    name: str
    offset: int
    flags: int
    type: int
    granularity_bits: int
    table_offset: int
    table_size: int
    table: Sequence[BitmapTableEntry]
    extents: Extents
    warnings: List[str]

    @property
    def granularity(self) -> int:
        return 1 << self.granularity_bits

    @property
    def dirty_bytes(self) -> int:
        return self.extents.total

    @property
    def flag_names(self) -> List[str]:
        """The defined flags that are set, by name."""
        return [name for bit, name in enumerate(BITMAP_FLAGS) if self.flags >> bit & 1]

    @property
    def reserved_flags(self) -> int:
        return self.flags & ~KNOWN_BITMAP_FLAGS


@dataclass(frozen=True)
class BitmapsReport:
    """The bitmaps of an image and the warnings about the image as a whole."""

    bitmaps: List[BitmapReport]
    warnings: List[str]

    @property
    def all_warnings(self) -> List[str]:
        return self.warnings + [w for b in self.bitmaps for w in b.warnings]


class BitmapNotFound(Qcow2Error):
    """No bitmap has the requested name."""


@dataclass(frozen=True)
class BitmapGeometry:
    """How a bitmap of a disk maps onto its table: bits, bytes and clusters."""

    disk_size: int
    cluster_size: int
    granularity_bits: int

    @classmethod
    def of(cls, image: Image, bitmap: Bitmap) -> "BitmapGeometry":
        return cls(image.header.size, image.cluster_size, bitmap.granularity_bits)

    @property
    def bits(self) -> int:
        return -(-self.disk_size >> self.granularity_bits)

    @property
    def cluster_bits(self) -> int:
        return self.cluster_size * 8

    @property
    def table_size(self) -> int:
        """The number of table entries the bitmap data needs."""
        return -(-self.bits // self.cluster_bits)

    def entry_bits(self, index: int) -> Tuple[int, int]:
        """The first bit table entry index covers, and how many bits of the disk."""
        first = index * self.cluster_bits
        return first, min(self.cluster_bits, self.bits - first)

    def guest_range(self, index: int) -> str:
        """The guest bytes that table entry index covers, as text."""
        start = index * self.cluster_bits << self.granularity_bits
        end = min((index + 1) * self.cluster_bits << self.granularity_bits, self.disk_size)
        return f"guest bytes {start:#x}..{end:#x}"


# --- decoding -----------------------------------------------------------------------

def set_bit_runs(data: bytes, count: int) -> Runs:
    """Runs of set bits among the first count bits of data, least significant bit first."""
    raw = np.frombuffer(data, np.uint8, count=-(-count // 8))
    if not raw.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    bits = np.unpackbits(raw, count=count, bitorder="little").view(np.int8)
    edges = np.diff(bits, prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def tail_is_set(data: bytes, count: int) -> bool:
    """Whether any bit of data past the first count bits is set."""
    full, part = divmod(count, 8)
    return bool(part and data[full] >> part) or any(data[full + bool(part):])


def merge_runs(runs: List[Runs]) -> Runs:
    """Runs in order as two arrays, a run that ends where the next starts joined to it.

    The runs of one cluster are maximal already, so only runs that meet at a cluster
    boundary are joined; the arrays given may be changed.
    """
    starts: List[np.ndarray] = []
    ends: List[np.ndarray] = []
    for s, e in runs:
        if len(s) and ends and ends[-1][-1] == s[0]:
            ends[-1][-1] = e[0]
            s, e = s[1:], e[1:]
        if len(s):
            starts.append(s)
            ends.append(e)
    if not starts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(starts), np.concatenate(ends)


def to_extents(runs: Runs, geo: BitmapGeometry) -> Extents:
    """Bit runs as guest byte extents, the last one cut at the end of the disk."""
    starts, ends = runs
    shift = np.uint64(geo.granularity_bits)
    first = starts.astype(np.uint64)
    first <<= shift
    lengths = ends.astype(np.uint64)
    lengths <<= shift
    if len(ends) and ends[-1] == geo.bits:
        lengths[-1] = geo.disk_size
    lengths -= first
    return Extents(first, lengths)


class Decoder:
    """Decodes the bitmaps of one image, reading each data cluster at most once.

    A cluster that two table entries share is decoded for the first only, so a
    crafted table cannot make the work grow beyond the size of the file.
    """

    def __init__(self, image: Image) -> None:
        self.image = image
        self.owners: Dict[int, str] = {}  # data cluster offset -> the entry that uses it

    def runs(self, bitmap: Bitmap, table: Sequence[BitmapTableEntry], warn: Warn) -> Runs:
        """The merged runs of set bits of a bitmap (bit numbers, not bytes)."""
        geo = BitmapGeometry.of(self.image, bitmap)
        runs = []
        for index, entry in enumerate(table[:geo.table_size]):
            label = (f"bitmap {bitmap.name!r} table entry {index} "
                     f"at offset {bitmap.table_offset + 8 * index:#x}")
            if entry.reserved:
                warn(f"{label}: reserved bits set ({entry.reserved:#x})")
            found = self._entry_runs(geo, index, entry, label, warn)
            if found is not None:
                runs.append(found)
        return merge_runs(runs)

    def _entry_runs(self, geo: BitmapGeometry, index: int, entry: BitmapTableEntry,
                    label: str, warn: Warn) -> Optional[Runs]:
        if entry.kind == "all-ones":
            first, count = geo.entry_bits(index)
            return np.array([first]), np.array([first + count])
        if entry.kind == "invalid":
            warn(f"{label}: invalid: data offset {entry.offset:#x} with bit 0 set; "
                 f"{geo.guest_range(index)} not decoded")
            return None
        if entry.kind != "serialized":
            return None
        if entry.offset in self.owners:
            warn(f"{label}: data cluster at {entry.offset:#x} is also used by "
                 f"{self.owners[entry.offset]}; {geo.guest_range(index)} not decoded")
            return None
        self.owners[entry.offset] = label
        return self._cluster_runs(geo, index, entry.offset, label, warn)

    def _cluster_runs(self, geo: BitmapGeometry, index: int, offset: int, label: str,
                      warn: Warn) -> Optional[Runs]:
        first, count = geo.entry_bits(index)
        if offset % geo.cluster_size:
            warn(f"{label}: data offset {offset:#x} is not aligned to a cluster")
        if offset + (count + 7) // 8 > self.image.file_size:
            warn(f"{label}: data cluster at {offset:#x} runs past the end of the file "
                 f"({self.image.file_size} bytes); read as zeros there, as QEMU reads it")
        data = self.image.read(offset, geo.cluster_size)
        if index == geo.table_size - 1 and tail_is_set(data, count):
            warn(f"{label}: data cluster at {offset:#x} has non-zero bits past the end "
                 f"of the disk")
        starts, ends = set_bit_runs(data, count)
        return starts + first, ends + first


# --- consistency --------------------------------------------------------------------

def _image_warnings(image: Image) -> List[str]:
    has_ext = image.extension("bitmaps") is not None
    consistent = bool(image.header.autoclear_features & AUTOCLEAR_BITMAPS)
    field = image.qcow2.header._debug.get("autoclear_features")
    where = (f"header.autoclear_features at offset {field['start']:#x}" if field
             else "header (version 2: no autoclear_features)")
    if has_ext and not consistent:
        return [f"{where}: bit 0 (bitmaps) is clear while the bitmaps extension is "
                f"present: the bitmap data must be considered inconsistent"]
    if consistent and not has_ext:
        return [f"{where}: bit 0 (bitmaps) is set without a bitmaps extension"]
    return []


def _entry_warnings(image: Image, bitmap: Bitmap, others: List[Bitmap]) -> List[str]:
    """Problems of one directory entry, the table's contents aside."""
    label = f"bitmap {bitmap.name!r} (directory entry at offset {bitmap.offset:#x})"
    geo = BitmapGeometry.of(image, bitmap)
    problems = []
    if not bitmap.name.isascii():
        problems.append("the name is not ASCII")
    if bitmap.name_size > MAX_BITMAP_NAME:
        problems.append(f"the name is {bitmap.name_size} bytes long, more than QEMU's limit "
                        f"of {MAX_BITMAP_NAME}: qemu refuses such a bitmap")
    problems += [f"the name is also used by the directory entry at offset {o.offset:#x}"
                 for o in others if o.name == bitmap.name and o.offset != bitmap.offset]
    if bitmap.flags & IN_USE:
        problems.append("flag in-use is set: the bitmap was not saved correctly and "
                        "may be inconsistent")
    if bitmap.flags & ~KNOWN_BITMAP_FLAGS:
        problems.append(f"reserved flag bits set ({bitmap.flags & ~KNOWN_BITMAP_FLAGS:#x})")
    if bitmap.type != DIRTY_TRACKING:
        problems.append(f"type {bitmap.type} is reserved (1, dirty tracking, is the only one)")
    if bitmap.granularity_bits not in BITMAP_GRANULARITY_BITS:
        problems.append(f"granularity_bits {bitmap.granularity_bits} is outside the 9..31 "
                        f"that qemu supports")
    if bitmap.extra_data_size and not bitmap.flags & EXTRA_DATA_COMPATIBLE:
        problems.append(f"{bitmap.extra_data_size} bytes of extra data without the "
                        f"extra-data-compatible flag: the bitmap must not be used")
    if bitmap.table_offset % image.cluster_size:
        problems.append(f"bitmap_table_offset {bitmap.table_offset:#x} is not aligned "
                        f"to a cluster")
    if bitmap.table_size != geo.table_size:
        problems.append(f"bitmap_table_size is {bitmap.table_size}, but a disk of "
                        f"{image.header.size} bytes at granularity {1 << geo.granularity_bits} "
                        f"needs {geo.table_size}")
    return [f"{label}: {p}" for p in problems]


# --- the report ---------------------------------------------------------------------

def _report(decoder: Decoder, index: int, bitmap: Bitmap,
            warnings: List[str]) -> BitmapReport:
    table: Sequence[BitmapTableEntry]
    try:
        table = decoder.image.bitmap_table(index)
    except Qcow2Error as exc:
        warnings.append(f"bitmap {bitmap.name!r}: {exc}; no extents decoded")
        table = []
    runs = decoder.runs(bitmap, table, warnings.append)
    return BitmapReport(
        name=bitmap.name, offset=bitmap.offset, flags=bitmap.flags, type=bitmap.type,
        granularity_bits=bitmap.granularity_bits, table_offset=bitmap.table_offset,
        table_size=bitmap.table_size, table=table,
        extents=to_extents(runs, BitmapGeometry.of(decoder.image, bitmap)), warnings=warnings)


def bitmap_report(image: Image, name: Optional[str] = None) -> BitmapsReport:
    """Every bitmap of image (or those called name) with its dirty extents.

    Raises BitmapNotFound when name is given and no bitmap has it, and Qcow2Error
    when the bitmap directory itself cannot be read. The image's findings (what was
    read past the end of the file) come last among the image's warnings.
    """
    directory = image.bitmap_directory()
    chosen = [(i, b) for i, b in enumerate(directory) if name is None or b.name == name]
    if name is not None and not chosen:
        names = ", ".join(repr(b.name) for b in directory) or "none"
        raise BitmapNotFound("bitmap directory", None,
                             f"no bitmap named {name!r} (the image has: {names})")
    decoder = Decoder(image)
    return BitmapsReport(
        bitmaps=[_report(decoder, i, b, _entry_warnings(image, b, directory))
                 for i, b in chosen],
        warnings=_image_warnings(image) + [str(f) for f in image.findings])


# --- rendering ----------------------------------------------------------------------

def _bitmap_json(b: BitmapReport) -> Dict[str, Any]:
    return {
        "name": b.name, "granularity": b.granularity, "flags": b.flag_names,
        "reserved-flags": b.reserved_flags, "type": b.type,
        "granularity-bits": b.granularity_bits,
        "bitmap-table-offset": b.table_offset, "bitmap-table-size": b.table_size,
        "bitmap-table": [{"kind": t.kind, "offset": t.offset, "reserved": t.reserved}
                         for t in b.table],
        "dirty-extents": list(b.extents), "dirty-bytes": b.dirty_bytes,
        "warnings": b.warnings,
    }


def render_json(report: BitmapsReport) -> str:
    """The report as JSON on one line; name, granularity and flags as qemu-img info
    names them. Compact, so that millions of extents are written at C speed."""
    return json.dumps({"bitmaps": [_bitmap_json(b) for b in report.bitmaps],
                       "warnings": report.warnings}) + "\n"


def _table_text(b: BitmapReport) -> List[str]:
    kinds = [t.kind for t in b.table]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds)))
    lines = [f"  table:       {b.table_size} entries at {b.table_offset:#x}"
             + (f" ({counts})" if counts else "")]
    lines += [f"    {i:<6} {t.kind:<11} {t.offset:#x}" for i, t in enumerate(b.table)
              if t.kind != "all-zeroes"]
    return lines


def _bitmap_text(b: BitmapReport) -> List[str]:
    flags = ", ".join(b.flag_names) or "none"
    if b.reserved_flags:
        flags += f", reserved {b.reserved_flags:#x}"
    lines = [f"bitmap {b.name!r}",
             f"  flags:       {flags}",
             f"  type:        {b.type}" + (" (dirty tracking)" if b.type == DIRTY_TRACKING else ""),
             f"  granularity: {b.granularity} bytes"]
    lines += _table_text(b)
    lines.append(f"  dirty:       {b.dirty_bytes} bytes in {len(b.extents)} extents")
    if b.extents:
        lines.append(f"    {'start':<18} length")
        lines += [f"    {start:<#18x} {length:#x}" for start, length in b.extents]
    return lines


def render_text(report: BitmapsReport) -> str:
    """The report for people: per bitmap a header, flags, table summary and extents."""
    if not report.bitmaps:
        return "no bitmaps\n"
    return "\n".join("\n".join(_bitmap_text(b)) + "\n" for b in report.bitmaps)
