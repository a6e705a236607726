"""What changed between two images: header, extensions, guest mapping, refcounts,
snapshots, bitmaps and, on request, guest data.

Typically A and B are one image before and after a qemu operation. Each difference is
a Change named by a path in the specification's terms (`header.size`,
`extensions[0x12345678]`, `l2[guest 0x0..0x10000]`, `refcounts[host 0x50000..0x60000]`,
`snapshots[id 2]`, `bitmaps['b0'].dirty`). A structure that cannot be read in one of
the images is itself a change (`unreadable`), and the rest is still compared.

The guest mapping is compared L2 table by L2 table: a table whose L1 entry and bytes
are the same in both images is skipped, so two copies of a 1 TiB image that differ in
a few clusters cost a few reads. Runs of guest clusters that changed the same way,
with host offsets that continue each other, are one change.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import tables
from .errors import Qcow2Error
from .image import ClusterType, Image
from .names import FEATURE_BITS
from .snapshots import Snapshot, read_snapshots

SECTOR = 512
DATA_CHUNK = 4 << 20

# How a guest cluster changed, by the old and new cluster type.
ALLOCATED, FREED, ZEROED, MOVED, COPIED_SET, COPIED_CLEARED, SUBCLUSTERS, RETYPED = (
    "allocated", "freed", "zeroed", "moved", "copied-set", "copied-cleared",
    "subclusters", "retyped")
CHANGES = (ALLOCATED, FREED, ZEROED, MOVED, COPIED_SET, COPIED_CLEARED, SUBCLUSTERS,
           RETYPED)
_ZERO_TYPES = (ClusterType.zero_plain, ClusterType.zero_alloc)
_DATA_TYPES = (ClusterType.normal, ClusterType.compressed)


@dataclasses.dataclass(frozen=True)
class Change:
    """One difference: where (a spec path), what kind, the old and the new value."""

    path: str
    change: str
    old: Any = None
    new: Any = None
    detail: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_json(self) -> Dict[str, Any]:
        out = {"path": self.path, "change": self.change, "old": self.old, "new": self.new}
        out.update(self.detail)
        return out


def _readable(path: str, read: Callable[[Image], Any], a: Image, b: Image,
              out: List[Change]) -> Optional[Tuple[Any, Any]]:
    """Both images' values of read, or None after recording which cannot be read."""
    values: List[Any] = []
    errors: List[Optional[str]] = []
    for image in (a, b):
        try:
            values.append(read(image))
            errors.append(None)
        except Qcow2Error as exc:
            values.append(None)
            errors.append(str(exc))
    if any(errors):
        if errors[0] != errors[1]:
            out.append(Change(path, "unreadable", errors[0], errors[1]))
        return None
    return values[0], values[1]


# --- the header and extensions -------------------------------------------------------

def _bit_names(group: str, bits: int) -> List[str]:
    names = FEATURE_BITS.get(group, ())
    return [names[bit] if bit < len(names) else f"bit {bit}"
            for bit in range(64) if bits >> bit & 1]


def header_changes(a: Image, b: Image) -> List[Change]:
    out = []
    for field in a.header._fields:
        old, new = getattr(a.header, field), getattr(b.header, field)
        if old == new:
            continue
        detail: Dict[str, Any] = {}
        if field.endswith("_features"):
            group = field[:-len("_features")]
            detail = {"set": _bit_names(group, new & ~old),
                      "cleared": _bit_names(group, old & ~new)}
        if isinstance(old, bytes):
            old, new = old.hex(), new.hex()
        out.append(Change(f"header.{field}", "changed", old, new, detail))
    names = _readable("backing_file", lambda i: i.backing_file, a, b, out)
    if names is not None and names[0] != names[1]:
        out.append(Change("backing_file", "changed", names[0], names[1]))
    return out


def extension_changes(a: Image, b: Image) -> List[Change]:
    """Extensions by magic, in order: added, removed, or with other data."""
    out: List[Change] = []
    pairs = _readable("extensions", lambda i: i.extensions, a, b, out)
    if pairs is None:
        return out
    by_magic: Dict[int, Tuple[list, list]] = {}
    for side, extensions in enumerate(pairs):
        for ext in extensions:
            by_magic.setdefault(ext.magic, ([], []))[side].append(ext)
    for magic, (old, new) in by_magic.items():
        kind = (old or new)[0].kind
        for i in range(max(len(old), len(new))):
            path = f"extensions[{magic:#010x}]" + (f"[{i}]" if max(len(old), len(new)) > 1
                                                   else "")
            o = old[i].data.hex() if i < len(old) else None
            n = new[i].data.hex() if i < len(new) else None
            if o != n:
                change = "added" if o is None else "removed" if n is None else "changed"
                out.append(Change(path, change, o, n, {"kind": kind} if kind else {}))
    return out


# --- the guest mapping ------------------------------------------------------------------

class _L2Side:
    """One image's L2 entries (and subcluster bitmaps) for one L1 index."""

    def __init__(self, image: Image, geometry: tables.Geometry, l1: np.ndarray,
                 index: int) -> None:
        self.l1_entry = int(l1[index]) if index < len(l1) else 0
        offset = self.l1_entry & tables.OFFSET
        n = geometry.l2_entries
        self.offset = offset
        if offset == 0:
            self.raw = b""
            self.entries = np.zeros(n, dtype=np.uint64)
            self.bitmaps = np.zeros(n, dtype=np.uint64)
            return
        self.raw = image.read(offset, geometry.cluster_size, f"L2 table (L1 entry {index})")
        self.entries, bitmaps = tables.l2_words(self.raw, geometry)
        self.bitmaps = np.zeros(n, dtype=np.uint64) if bitmaps is None else bitmaps


def _host(entries: np.ndarray, types: np.ndarray, geometry: tables.Geometry) -> np.ndarray:
    """Each entry's host offset: the cluster's, or the compressed data's."""
    compressed_offset, _ = tables.compressed_extents(entries, geometry)
    return np.where(types == ClusterType.compressed, compressed_offset,
                    tables.host_offsets(entries))


ALL_ZERO_SUBCLUSTERS = np.uint64(tables.ALL_ZERO)  # extended L2: every zero bit set


def _types(side: _L2Side, geometry: tables.Geometry) -> np.ndarray:
    """Cluster types; with extended L2 entries a cluster whose subclusters all read
    as zeros is a zero cluster."""
    types = tables.cluster_types(side.entries, geometry)
    if geometry.extended_l2:
        zero = (side.bitmaps == ALL_ZERO_SUBCLUSTERS) & (types != ClusterType.compressed)
        types = np.where(zero & (types == ClusterType.normal), np.uint8(ClusterType.zero_alloc),
                         np.where(zero, np.uint8(ClusterType.zero_plain), types))
    return types.astype(np.uint8)


def _classify(old: _L2Side, new: _L2Side, geometry: tables.Geometry) -> np.ndarray:
    """Each cluster's change as an index into CHANGES (-1: unchanged)."""
    ta, tb = (_types(s, geometry) for s in (old, new))
    ha, hb = _host(old.entries, ta, geometry), _host(new.entries, tb, geometry)
    copied_a = (old.entries & tables.COPIED_BIT) != 0
    copied_b = (new.entries & tables.COPIED_BIT) != 0
    differs = (old.entries != new.entries) | (old.bitmaps != new.bitmaps)
    was_data, is_data = np.isin(ta, _DATA_TYPES), np.isin(tb, _DATA_TYPES)
    was_zero, is_zero = np.isin(ta, _ZERO_TYPES), np.isin(tb, _ZERO_TYPES)
    same_place = (ta == tb) & (ha == hb)
    conditions = [
        ~differs,
        ~was_data & is_data,
        is_zero & ~was_zero,
        (ta != ClusterType.unallocated) & (tb == ClusterType.unallocated),
        (ta == tb) & (ha != hb) & np.isin(ta, _DATA_TYPES + (ClusterType.zero_alloc,)),
        same_place & ~copied_a & copied_b & (old.bitmaps == new.bitmaps),
        same_place & copied_a & ~copied_b & (old.bitmaps == new.bitmaps),
        same_place & (copied_a == copied_b) & (old.bitmaps != new.bitmaps),
    ]
    choices = [-1, CHANGES.index(ALLOCATED), CHANGES.index(ZEROED), CHANGES.index(FREED),
               CHANGES.index(MOVED), CHANGES.index(COPIED_SET),
               CHANGES.index(COPIED_CLEARED), CHANGES.index(SUBCLUSTERS)]
    return np.select(conditions, choices, CHANGES.index(RETYPED)).astype(np.int8)


def _state(types: np.ndarray, hosts: np.ndarray, j: int) -> Dict[str, Any]:
    kind = ClusterType(int(types[j])).name
    host = int(hosts[j]) if kind != "unallocated" and kind != "zero_plain" else None
    return {"type": kind, "host": host}


def _runs(index: int, old: _L2Side, new: _L2Side, geometry: tables.Geometry,
          change: np.ndarray) -> Iterator[Change]:
    """Changed clusters of one L2 table as runs: the same change, types, and host
    offsets that continue each other."""
    cs, n = geometry.cluster_size, geometry.l2_entries
    ta, tb = (_types(s, geometry) for s in (old, new))
    ha, hb = _host(old.entries, ta, geometry), _host(new.entries, tb, geometry)
    base = index * n
    j = 0
    positions = np.flatnonzero(change >= 0).tolist()
    while j < len(positions):
        first = last = positions[j]
        j += 1
        while j < len(positions) and positions[j] == last + 1 \
                and change[positions[j]] == change[first] \
                and ta[positions[j]] == ta[first] and tb[positions[j]] == tb[first] \
                and _continues(ha, ta, first, positions[j], cs) \
                and _continues(hb, tb, first, positions[j], cs):
            last = positions[j]
            j += 1
        start = (base + first) * cs
        length = (last - first + 1) * cs
        yield Change(f"l2[guest {start:#x}..{start + length:#x}]", CHANGES[change[first]],
                     _state(ta, ha, first), _state(tb, hb, first),
                     {"guest_start": start, "guest_length": length})


def _continues(hosts: np.ndarray, types: np.ndarray, first: int, j: int, cs: int) -> bool:
    """Whether cluster j continues the run from first: no host cluster on either, or
    host clusters in step (a compressed cluster is always a run of its own)."""
    kind = types[first]
    if kind in (ClusterType.unallocated, ClusterType.zero_plain):
        return True
    if kind == ClusterType.compressed:
        return False
    return int(hosts[j]) == int(hosts[first]) + (j - first) * cs


def mapping_changes(a: Image, b: Image) -> List[Change]:
    """The active guest mapping, cluster by cluster, where the two images differ."""
    out: List[Change] = []
    geos = _readable("geometry", lambda i: i.geometry, a, b, out)
    if geos is None:
        return out
    ga, gb = geos
    if ga.cluster_size != gb.cluster_size or ga.extended_l2 != gb.extended_l2:
        return [Change("l2", "not-compared", None, None,
                       {"reason": "the images have different cluster sizes or L2 formats"})]
    l1s = _readable("l1_table", tables.l1_table, a, b, out)
    if l1s is None:
        return out
    for index in range(max(len(l1s[0]), len(l1s[1]))):
        sides: List[Union[_L2Side, Qcow2Error]] = []
        for image, geo, l1 in ((a, ga, l1s[0]), (b, gb, l1s[1])):
            try:
                sides.append(_L2Side(image, geo, l1, index))
            except Qcow2Error as exc:
                sides.append(exc)
        old, new = sides
        if isinstance(old, Exception) or isinstance(new, Exception):
            errors = [str(s) if isinstance(s, Exception) else None for s in sides]
            if errors[0] != errors[1]:
                out.append(Change(f"l1_table[{index}]", "unreadable", errors[0], errors[1]))
            continue
        if old.l1_entry == new.l1_entry and old.raw == new.raw:
            continue
        if old.l1_entry != new.l1_entry:
            out.append(Change(f"l1_table[{index}]", "changed", old.l1_entry, new.l1_entry))
        change = _classify(old, new, ga)
        out.extend(_runs(index, old, new, ga, change))
    return out


# --- refcounts -------------------------------------------------------------------------

def refcount_changes(a: Image, b: Image) -> List[Change]:
    """Host ranges whose refcount changed, one change per run of clusters that went
    from the same old to the same new refcount."""
    out: List[Change] = []
    geos = _readable("geometry", lambda i: i.geometry, a, b, out)
    if geos is None:
        return out
    count = max(g.file_clusters for g in geos)
    counts = _readable("refcounts", lambda i: tables.refcounts(i, i.geometry,
                                                                 count), a, b, out)
    if counts is None:
        return out
    old, new = (c.astype(np.uint64) for c in counts)
    if geos[0].cluster_size != geos[1].cluster_size:
        return out + [Change("refcounts", "not-compared", None, None,
                             {"reason": "the images have different cluster sizes"})]
    cs = geos[0].cluster_size
    changed = np.flatnonzero(old != new)
    if not changed.size:
        return out
    breaks = (np.diff(changed) != 1) | (np.diff(old[changed]) != 0) | \
        (np.diff(new[changed]) != 0)
    firsts = np.concatenate(([0], np.flatnonzero(breaks) + 1))
    lasts = np.append(firsts[1:], changed.size) - 1
    for f, l in zip(changed[firsts].tolist(), changed[lasts].tolist()):
        start, end = f * cs, (l + 1) * cs
        out.append(Change(f"refcounts[host {start:#x}..{end:#x}]", "changed",
                          int(old[f]), int(new[f]),
                          {"host_start": start, "host_length": end - start}))
    return out


# --- snapshots and bitmaps ------------------------------------------------------------

_SNAPSHOT_FIELDS = [name for name in Snapshot._fields
                    if name not in ("index", "offset", "id", "name_offset", "name_size")]


def snapshot_changes(a: Image, b: Image) -> List[Change]:
    """Snapshots by id: added, removed, or with changed fields."""
    out: List[Change] = []
    both = _readable("snapshots", read_snapshots, a, b, out)
    if both is None:
        return out
    old, new = ({s.id: s for s in side} for side in both)
    for sid in list(old) + [s for s in new if s not in old]:
        path = f"snapshots[id {sid}]"
        if sid not in new:
            out.append(Change(path, "removed", old[sid].name, None))
        elif sid not in old:
            out.append(Change(path, "added", None, new[sid].name))
        else:
            for field in _SNAPSHOT_FIELDS:
                o, n = getattr(old[sid], field), getattr(new[sid], field)
                if o != n:
                    out.append(Change(f"{path}.{field}", "changed", o, n))
    return out


def _dirty(image: Image) -> Dict[str, Tuple[Dict[str, Any], List[Tuple[int, int]]]]:
    from .bitmaps import bitmap_report  # numpy-heavy; images with bitmaps only

    report = bitmap_report(image)
    return {b.name: ({"flags": b.flag_names, "granularity": b.granularity,
                      "table_offset": b.table_offset}, list(b.extents))
            for b in report.bitmaps}


def _ranges_minus(a: Sequence[Tuple[int, int]], b: Sequence[Tuple[int, int]]
                  ) -> List[Tuple[int, int]]:
    """The parts of extents a not covered by extents b, as (start, length)."""
    out, j = [], 0
    b = sorted(b)
    for start, length in sorted(a):
        pos, end = start, start + length
        while j < len(b) and b[j][0] + b[j][1] <= pos:
            j += 1
        k = j
        while pos < end:
            if k < len(b) and b[k][0] < end:
                if b[k][0] > pos:
                    out.append((pos, b[k][0] - pos))
                pos = max(pos, b[k][0] + b[k][1])
                k += 1
            else:
                out.append((pos, end - pos))
                pos = end
    return out


def bitmap_changes(a: Image, b: Image) -> List[Change]:
    """Bitmaps by name: added, removed, changed settings, newly dirty and cleaned
    guest ranges."""
    out: List[Change] = []
    both = _readable("bitmaps", _dirty, a, b, out)
    if both is None:
        return out
    old, new = both
    for name in list(old) + [n for n in new if n not in old]:
        path = f"bitmaps[{name!r}]"
        if name not in new:
            out.append(Change(path, "removed", old[name][0], None))
            continue
        if name not in old:
            out.append(Change(path, "added", None, new[name][0]))
            continue
        (so, eo), (sn, en) = old[name], new[name]
        for key in so:
            if so[key] != sn[key] and key != "table_offset":
                out.append(Change(f"{path}.{key}", "changed", so[key], sn[key]))
        for change, ranges in (("dirtied", _ranges_minus(en, eo)),
                               ("cleaned", _ranges_minus(eo, en))):
            if ranges:
                out.append(Change(f"{path}.dirty", change, None, None,
                                  {"ranges": [[s, n] for s, n in ranges],
                                   "bytes": sum(n for _, n in ranges)}))
    return out


# --- guest data -------------------------------------------------------------------------

def data_changes(a_path: str, b_path: str) -> List[Change]:
    """Guest ranges whose data differs, by sector, as qemu-img compare compares them
    (past the end of the smaller disk, the larger one is compared with zeros)."""
    from .guest import GuestDisk

    out = []
    with GuestDisk(a_path) as da, GuestDisk(b_path) as db:
        size = max(da.size, db.size)
        run: Optional[List[int]] = None
        for pos in range(0, size, DATA_CHUNK):
            n = min(DATA_CHUNK, size - pos)
            chunks = []
            for disk in (da, db):
                disk.seek(pos)
                data = disk.read(n)
                chunks.append(np.frombuffer(data + bytes(n - len(data)), dtype=np.uint8))
            pad = -n % SECTOR
            sectors = [np.concatenate((c, np.zeros(pad, np.uint8))).reshape(-1, SECTOR)
                       for c in chunks]
            differs = np.flatnonzero((sectors[0] != sectors[1]).any(axis=1))
            for s in differs.tolist():
                at = pos + s * SECTOR
                if run is not None and run[1] == at:
                    run[1] = min(at + SECTOR, size)
                else:
                    if run is not None:
                        out.append(run)
                    run = [at, min(at + SECTOR, size)]
        if run is not None:
            out.append(run)
    return [Change(f"data[guest {s:#x}..{e:#x}]", "differs", None, None,
                   {"guest_start": s, "guest_length": e - s}) for s, e in out]


# --- the whole comparison ---------------------------------------------------------------

SECTIONS = (("header", header_changes), ("extensions", extension_changes),
            ("mapping", mapping_changes), ("refcounts", refcount_changes),
            ("snapshots", snapshot_changes), ("bitmaps", bitmap_changes))


def diff(a: Image, b: Image, data: bool = False) -> Dict[str, List[Change]]:
    """Every change from image a to image b, by section (data only when asked)."""
    out = {name: compare(a, b) for name, compare in SECTIONS}
    if data:
        out["data"] = data_changes(str(a.path), str(b.path))
    return out


def render_json(changes: Dict[str, List[Change]]) -> str:
    return json.dumps({k: [c.as_json() for c in v] for k, v in changes.items()},
                      indent=4) + "\n"


HEX_WORDS = ("offset", "size", "l1_table", "features")  # paths whose numbers are hex
TEXT_BYTES = 32  # longer extension data is cut in the text


def _value(value: Any, path: str) -> str:
    if isinstance(value, dict):
        if "type" in value:
            host = value.get("host")
            return value["type"] + (f" at {host:#x}" if host is not None else "")
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool) \
            and any(word in path for word in HEX_WORDS):
        return f"{value:#x}"
    if isinstance(value, str) and path.startswith("extensions") and len(value) > 2 * TEXT_BYTES:
        return f"{value[:2 * TEXT_BYTES]}... ({len(value) // 2} bytes)"
    return "-" if value is None else repr(value) if isinstance(value, str) else str(value)


def render_text(changes: Dict[str, List[Change]]) -> str:
    """For a person: one line per change, with counts per kind at each section's head."""
    lines = []
    for section, items in changes.items():
        if not items:
            continue
        counts: Dict[str, int] = {}
        for c in items:
            counts[c.change] = counts.get(c.change, 0) + 1
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        lines.append(f"{section}: {summary}")
        for c in items:
            text = f"  {c.path}: {c.change}"
            if c.old is not None or c.new is not None:
                text += f" {_value(c.old, c.path)} -> {_value(c.new, c.path)}"
            extra = {k: v for k, v in c.detail.items()
                     if k not in ("guest_start", "guest_length", "host_start",
                                  "host_length", "ranges")}
            if "ranges" in c.detail:
                extra["ranges"] = ", ".join(f"{s:#x}+{n:#x}" for s, n in c.detail["ranges"])
            if extra:
                text += " (" + "; ".join(f"{k}: {v}" for k, v in extra.items()) + ")"
            lines.append(text)
    return "".join(line + "\n" for line in lines)
