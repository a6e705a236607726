"""What is at a host offset of a qcow2 image: `qcow2kit whatis`.

Each byte is looked up in the owner table (every reference `qemu-img check` counts):
the structures that hold it, where each sits in the metadata (L1 and L2 entries,
guest offsets and the snapshots that map them, refcount block coverage, bitmap
entries), its cluster's stored refcount and how many references the cluster has. The
header cluster is taken apart with the generated parser's field positions.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import printable, tables
from .crypto import CRYPT_LUKS, luks_parts
from .errors import Qcow2Error
from .image import ClusterType, ExtensionType, Image
from .owners import OwnerTable
from .progress import Progress
from .references import ACTIVE, Context, Kind, Owner, snapshot_label, walk_length
from .snapshots import entry_field
from .tables import ALL_ALLOC, OFFSET, REFT_OFFSET, SUBCLUSTERS, StoredRefcounts

MAX_OFFSET = 2**64 - 1

IN_USE, FREE, LEAKED, CORRUPT = "in-use", "free", "leaked", "corrupt"
UNREADABLE, BEYOND_EOF = "unreadable-refcount", "beyond-end-of-file"


@dataclass(frozen=True)
class Holder:
    """One structure that holds the byte: its kind, a line of text, where it is in
    the file, and the facts behind the text (the JSON members)."""

    kind: str
    description: str
    start: int
    length: int
    counted: bool = True  # False: qemu does not count it (it runs past the end of the file)
    facts: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """What is at one host offset."""

    offset: int
    cluster: int
    refcount: Optional[int]  # stored; None when its refcount block cannot be read
    references: int  # counted references to the cluster
    status: str  # IN_USE, FREE, LEAKED, CORRUPT, UNREADABLE or BEYOND_EOF
    holders: List[Holder]


def _check_offset(value: int, what: str) -> None:
    if value < 0:
        raise Qcow2Error(what, None, "negative (offsets count from the start of the file)")
    if value > MAX_OFFSET:
        raise Qcow2Error(what, None, "beyond 2**64-1")


def whatis(image: Image, offsets: Sequence[int], progress: bool = False) -> List[Answer]:
    """What is at each host offset of image; progress shows a bar on stderr when it is
    a terminal and reading the metadata takes more than a second."""
    for offset in offsets:
        _check_offset(offset, f"offset {offset}")
    explainer = _Explainer(image, progress)
    return [explainer.answer(offset) for offset in offsets]


# --- words --------------------------------------------------------------------------

def _state(ctx: Context, source: int) -> str:
    return "the active state" if source == ACTIVE else snapshot_label(ctx.snapshots[source])


def _join(names: List[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _states(ctx: Context, sources: List[int]) -> str:
    return _join([_state(ctx, s) for s in sources])


def _snapshot_json(ctx: Context, source: int) -> Optional[Dict[str, str]]:
    """null for the active state, else the snapshot's id and name."""
    if source == ACTIVE:
        return None
    s = ctx.snapshots[source]
    return {"id": s.id, "name": s.name}


def _ranges(offsets: List[int], step: int, most: int = 8) -> str:
    """Sorted offsets as runs a..b of consecutive multiples of step, at most `most`."""
    runs: List[List[int]] = []
    for x in offsets:
        if runs and x == runs[-1][1] + step:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    text = ", ".join(f"{a:#x}" if a == b else f"{a:#x}..{b:#x}" for a, b in runs[:most])
    return text + (f" and {len(runs) - most} more runs" if len(runs) > most else "")


def _l2_entry_text(raw: np.ndarray, ctx: Context) -> str:
    """What an L2 entry (and its subcluster bitmap) says."""
    g = ctx.geometry
    kind = ClusterType(int(tables.cluster_types(raw[:1], g)[0]))
    entry = int(raw[0])
    if kind == ClusterType.compressed:
        start, length = (int(v[0]) for v in tables.compressed_extents(raw[:1], g))
        text = f"compressed data at {start:#x}, {length} bytes"
    elif kind == ClusterType.normal:
        text = f"data at {entry & OFFSET:#x}"
        if g.external_data_file:
            text += " of the external data file"
    elif kind == ClusterType.zero_alloc:
        text = f"zeros, preallocated at {entry & OFFSET:#x}"
    else:
        text = "zeros" if kind == ClusterType.zero_plain else "unallocated"
    if len(raw) > 1 and kind != ClusterType.compressed:
        bitmap = int(raw[1])
        text += (f"; subclusters allocated {bitmap & ALL_ALLOC:#010x}, "
                 f"zero {bitmap >> SUBCLUSTERS:#010x}")
    return text


# How a subcluster (the whole cluster without extended L2 entries) reads, by the spec's
# subcluster_type
_T = tables.SubclusterType
_READS = {_T.normal: "data", _T.compressed: "data", _T.zero_alloc: "zeros",
          _T.zero_plain: "zeros", _T.unallocated_alloc: "unallocated",
          _T.unallocated_plain: "unallocated", _T.invalid: "invalid"}
_HOW = {"zeros": "reads as zeros", "unallocated": "unallocated",
        "invalid": "invalid: its bitmap says both data and zeros"}


def _reads_as(raw: np.ndarray, within: int, ctx: Context) -> Tuple[str, Optional[int]]:
    """How byte `within` of a data cluster reads through this L2 entry: "data",
    "zeros" (a preallocated zero cluster or zero subcluster), "unallocated" (an
    unallocated subcluster: from the backing file) or "invalid" (as tables'
    subcluster rules classify it); and its subcluster, with extended L2 entries."""
    bitmaps = raw[1:2] if len(raw) > 1 else None
    types = tables.subcluster_types(tables.cluster_types(raw[:1], ctx.geometry), bitmaps)[0]
    sub = within // (ctx.cs // SUBCLUSTERS) if bitmaps is not None else None
    return _READS[_T(int(types[sub or 0]))], sub


def _how(reads: str, sub: Optional[int]) -> str:
    """How a state reads a data cluster byte, in words ("" for its data)."""
    if reads == "data":
        return ""
    what = _HOW[reads]
    return f" (subcluster {sub} {what})" if sub is not None else f" ({what})"


def _in_hole(image: Image, offset: int) -> bool:
    """Whether a byte inside the file is in a hole (reads as zeros, takes no space)."""
    return not next(image.data_runs(offset, offset + 1))[2]


def _header_part(image: Image, offset: int) -> Tuple[str, str, Dict[str, Any]]:
    """The field of the header, header extension, end marker or backing file name
    that holds a byte of the first cluster, from the generated parser's positions."""
    q, h = image.qcow2, image.header
    for name, span in q.header._debug.items():
        if span["start"] <= offset < span["end"]:
            first, last = span["start"], span["end"] - 1
            where = f"byte {first:#x}" if first == last else f"bytes {first:#x}..{last:#x}"
            return "header", f"header field {name} ({where})", {"field": name}
    area = q.header_extensions
    if area is not None:
        base = q._debug["header_extensions"]["start"]
        for i, ext in enumerate(area.extensions):
            span = area._debug["extensions"]["arr"][i]
            if not base + span["start"] <= offset < base + span["end"]:
                continue
            if ext.magic == ExtensionType.end_of_extensions:
                return "header-extension", "end of the header extensions (end marker)", \
                    {"extension": i, "end-marker": True}
            part = next(name for name, s in ext._debug.items()
                        if base + s["start"] <= offset < base + s["end"])
            magic = int(ext.magic)
            kind = getattr(ext.magic, "name", "unknown")
            text = f"header extension {i} ({kind}, {magic:#010x}), field {part}"
            if part == "data":
                at = offset - base - ext._debug["data"]["start"]
                text += f", byte {at} of {ext.len_data}"
            return "header-extension", text, {"extension": i, "magic": magic,
                                              "extension-kind": kind, "field": part}
    if h.backing_file_offset <= offset < h.backing_file_offset + h.backing_file_size:
        return "backing-file-name", f"backing file name '{image.backing_file}', byte " \
            f"{offset - h.backing_file_offset}", {"backing-file": image.backing_file}
    return "header-unused", "unused rest of the header cluster", {}


# --- the answers --------------------------------------------------------------------

Described = Tuple[str, str, Dict[str, Any]]


class _Explainer:
    """The owner table and stored refcounts of an image, and the words for them."""

    def __init__(self, image: Image, progress: bool) -> None:
        self.image = image
        self.ctx = ctx = Context(image)
        with Progress("whatis", walk_length(ctx)) if progress else \
                contextlib.nullcontext() as bar:
            self.table = OwnerTable(ctx, bar)
        self.stored = StoredRefcounts(ctx.image, ctx.reftable)
        self.l2_span = ctx.geometry.l2_entries * ctx.cs  # guest bytes an L1 entry maps

    def _entries(self, offset: int, count: int) -> np.ndarray:
        """count big-endian 64-bit entries at offset, zeros past the end of the file."""
        return tables.u64_array(self.ctx.read(offset, 8 * count))

    def answer(self, offset: int) -> Answer:
        ctx, table = self.ctx, self.table
        cluster = offset >> ctx.bits
        refcount = self.stored.get(cluster)
        references = table.references(cluster)
        rows = table.overlapping(offset, offset + 1).tolist()
        holders = self._holders(offset, rows)
        if not rows:
            lo = cluster << ctx.bits
            around = table.overlapping(lo, lo + ctx.cs).tolist()
            if around:
                holders.append(self._unused(offset, around))
        if offset >= ctx.file_size:
            status = BEYOND_EOF
        elif refcount is None:
            status = UNREADABLE
        elif refcount < references:
            status = CORRUPT
        elif refcount > references:
            status = LEAKED
        else:
            status = IN_USE if references else FREE
        return Answer(offset, cluster, refcount, references, status, holders)

    def _holders(self, offset: int, rows: List[int]) -> List[Holder]:
        """One holder per structure: the states that share an L2 table, a data cluster
        or a compressed cluster make one holder.

        An L2 entry gives compressed data's length in sectors, so its range runs on to
        the end of its last sector, over the start of the data that qemu packed after
        it: of the compressed ranges that reach the byte, the one that starts last holds
        it (the others are named in its description)."""
        compressed = [r for r in rows if self.table.kind[r] == Kind.COMPRESSED]
        if compressed:
            last = max(int(self.table.start[r]) for r in compressed)
            rows = [r for r in rows if r not in compressed or self.table.start[r] == last]
        groups: Dict[Tuple, List[Tuple[int, Owner]]] = {}
        for row in rows:
            key: Tuple[Any, ...]
            owner = self.table.owner(row)
            if owner.kind == Kind.DATA:  # the entry of the run that holds the byte
                owner = owner._replace(entry=self.table.entries(row, offset, offset + 1)[0])
            if owner.kind in (Kind.L2, Kind.DATA, Kind.COMPRESSED):
                key = (owner.kind, self._host(row, owner), self._guest(owner))
            else:
                key = (row,)
            groups.setdefault(key, []).append((row, owner))
        return [self._describe(offset, group) for group in groups.values()]

    def _host(self, row: int, owner: Owner) -> int:
        """Where an owner of a row starts: a data entry's cluster, else the row's start."""
        start = int(self.table.start[row])
        if owner.kind == Kind.DATA:
            return start + (owner.entry - int(self.table.entry[row])) * self.ctx.cs
        return start

    def _guest(self, owner: Owner) -> int:
        """The guest offset an L2 entry or data entry maps (an L2 table: its first)."""
        return owner.index * self.l2_span + owner.entry * self.ctx.cs

    def _describe(self, offset: int, group: List[Tuple[int, Owner]]) -> Holder:
        row, owner = group[0]
        start, end = self._host(row, owner), int(self.table.end[row])
        if owner.kind == Kind.DATA:
            end = start + self.ctx.cs
        sources = [o.source for _, o in group]
        kind, text, facts = _DESCRIBERS[owner.kind](self, offset, owner, start, end, sources)
        counted = bool(self.table.counted[row])
        if not counted:
            text += " (not counted by qemu: it runs past the end of the file)"
        return Holder(kind, text, start, end - start, counted, facts)

    # --- each kind of structure --------------------------------------------------------

    def _header(self, offset: int, owner: Owner, start: int, end: int,
                sources: List[int]) -> Described:
        return _header_part(self.image, offset)

    def _l1(self, offset: int, owner: Owner, start: int, end: int,
            sources: List[int]) -> Described:
        i = (offset - start) // 8
        l2 = int(self._entries(start + 8 * i, 1)[0]) & OFFSET
        what = f"L2 table at {l2:#x}" if l2 else "no L2 table"
        text = (f"L1 table of {_state(self.ctx, owner.source)}, entry {i} (guest "
                f"{i * self.l2_span:#x}..{(i + 1) * self.l2_span - 1:#x}): {what}")
        return "l1-table", text, {"snapshot": _snapshot_json(self.ctx, owner.source),
                                  "entry": i, "l2-table-offset": l2 or None}

    def _l2(self, offset: int, owner: Owner, start: int, end: int,
            sources: List[int]) -> Described:
        ctx = self.ctx
        j, within = divmod(offset - start, ctx.entry_size)
        guest = self._guest(owner._replace(entry=j))
        raw = self._entries(start + j * ctx.entry_size, ctx.entry_size // 8)
        part = "subcluster bitmap of entry" if within >= 8 else "entry"
        text = (f"L2 table for L1 entry {owner.index} of {_states(ctx, sources)}, {part} {j} "
                f"(guest offset {guest:#x}): {_l2_entry_text(raw, ctx)}")
        return "l2-table", text, {
            "states": [_snapshot_json(ctx, s) for s in sources], "l1-index": owner.index,
            "entry": j, "guest-offset": guest, "subcluster-bitmap": within >= 8}

    def _data(self, offset: int, owner: Owner, start: int, end: int,
              sources: List[int]) -> Described:
        ctx = self.ctx
        guest = self._guest(owner)
        byte = guest + offset - start
        reads = [_reads_as(self._l2_entry(s, owner.index, owner.entry), offset - start, ctx)
                 for s in sources]
        states = _join([_state(ctx, s) + _how(*how) for s, how in zip(sources, reads)])
        text = f"data cluster of guest offset {guest:#x} (guest byte {byte:#x}) in {states}"
        if self.image.header.crypt_method:
            text += "; encrypted"
        hole = offset < ctx.file_size and _in_hole(self.image, offset)
        if hole:
            text += "; the file has a hole here (it reads as zeros)"
        return "data", text, {
            "guest-offset": guest, "guest-byte": byte, "l1-index": owner.index,
            "l2-index": owner.entry, "hole": hole,
            "states": [{"snapshot": _snapshot_json(ctx, s), "reads": how, "subcluster": sub}
                       for s, (how, sub) in zip(sources, reads)]}

    def _l2_entry(self, source: int, l1_index: int, j: int) -> np.ndarray:
        """L2 entry j (with its subcluster bitmap) of the table that L1 entry l1_index
        of the active state or a snapshot points at."""
        ctx = self.ctx
        l1 = self.image.header.l1_table_offset if source == ACTIVE else \
            ctx.snapshots[source].l1_table_offset
        l2 = int(self._entries(l1 + 8 * l1_index, 1)[0]) & OFFSET
        return self._entries(l2 + j * ctx.entry_size, ctx.entry_size // 8)

    def _compressed(self, offset: int, owner: Owner, start: int, end: int,
                    sources: List[int]) -> Described:
        ctx, table = self.ctx, self.table
        guest = self._guest(owner)
        lo = offset >> ctx.bits << ctx.bits
        earlier: Dict[int, Tuple[int, int]] = {}  # ranges that reach the byte, start before
        neighbours: Dict[int, Tuple[int, int]] = {}  # the rest of the cluster's
        for row in table.overlapping(lo, lo + ctx.cs).tolist():
            a, b = int(table.start[row]), int(table.end[row])
            g = self._guest(table.owner(row))
            if table.kind[row] == Kind.COMPRESSED and g != guest:
                (earlier if a < start and offset < b else neighbours).setdefault(g, (a, b))
        text = (f"compressed data of guest cluster {guest:#x} in {_states(ctx, sources)}: "
                f"host bytes {start:#x}..{end - 1:#x} ({end - start} bytes to the end of "
                "its last sector)")
        if earlier:
            many = len(earlier) > 1
            text += ("; the ranges of guest clusters " if many else
                     "; the range of guest cluster ") + _ranges(sorted(earlier), ctx.cs) + \
                (" reach this byte too, their data ending" if many else
                 " reaches this byte too, its data ending") + f" before {start:#x}"
        if neighbours:
            text += f"; its cluster also holds compressed data of {len(neighbours)} other " \
                f"guest cluster{'s' if len(neighbours) > 1 else ''}: " + \
                _ranges(sorted(neighbours), ctx.cs)

        def ranges(found: Dict[int, Tuple[int, int]]) -> List[Dict[str, int]]:
            return [{"guest-offset": g, "start": a, "length": b - a}
                    for g, (a, b) in sorted(found.items())]
        return "compressed", text, {
            "guest-offset": guest, "l1-index": owner.index, "l2-index": owner.entry,
            "states": [_snapshot_json(ctx, s) for s in sources],
            "earlier": ranges(earlier), "neighbours": ranges(neighbours)}

    def _refcount_table(self, offset: int, owner: Owner, start: int, end: int,
                        sources: List[int]) -> Described:
        n = (offset - start) // 8
        per_block = self.stored.per_block
        block = int(self._entries(start + 8 * n, 1)[0]) & REFT_OFFSET
        first, last = n * per_block, (n + 1) * per_block - 1
        what = f"refcount block at {block:#x}" if block else "no refcount block"
        text = f"refcount table, entry {n} (clusters {first}..{last}): {what}"
        return "refcount-table", text, {"entry": n, "refcount-block-offset": block or None,
                                        "first-cluster": first, "last-cluster": last}

    def _refcount_block(self, offset: int, owner: Owner, start: int, end: int,
                        sources: List[int]) -> Described:
        per_block = self.stored.per_block
        width = 1 << self.ctx.geometry.refcount_order
        first = owner.index * per_block
        a = first + (offset - start) * 8 // width
        b = a + max(1, 8 // width) - 1
        held = f"cluster {a}" if a == b else f"clusters {a}..{b}"
        text = (f"refcount block {owner.index} covering clusters {first}.."
                f"{first + per_block - 1}: the refcount of {held}")
        return "refcount-block", text, {"index": owner.index, "first-cluster": first,
                                        "last-cluster": first + per_block - 1,
                                        "refcount-of": [a, b]}

    def _snapshot_table(self, offset: int, owner: Owner, start: int, end: int,
                        sources: List[int]) -> Described:
        snapshot = [s for s in self.ctx.snapshots if s.offset <= offset][-1]
        name = entry_field(self.image, snapshot, offset)
        text = f"snapshot table, entry {snapshot.index} ({snapshot_label(snapshot)})"
        if name is not None:
            text += f", field {name}"
        return "snapshot-table", text, {"entry": snapshot.index, "snapshot-id": snapshot.id,
                                        "snapshot-name": snapshot.name, "field": name}

    def _encryption(self, offset: int, owner: Owner, start: int, end: int,
                    sources: List[int]) -> Described:
        text = f"encryption header, byte {offset - start} of {end - start}"
        if self.image.header.crypt_method != CRYPT_LUKS:
            return "encryption-header", text, {}
        try:
            luks = luks_parts(self.image)
        except Qcow2Error as exc:
            return "encryption-header", f"{text} (LUKS header unreadable: {exc})", {}
        for part in luks:
            if part.start <= offset < part.end:
                where = f"byte {offset - part.start} of {part.end - part.start}"
                if part.slot is None:
                    return "encryption-header", f"{text}: LUKS header field {part.field}, " \
                        f"{where}", {"luks-field": part.field}
                state = "active" if part.active else "inactive"
                label = f"key slot {part.slot} ({state})"
                if part.field == "key_material":
                    return "encryption-header", f"{text}: key material of LUKS {label}, " \
                        f"{where}", {"key-slot": part.slot, "active": part.active,
                                     "luks-field": part.field}
                return "encryption-header", f"{text}: LUKS {label}, field {part.field}", \
                    {"key-slot": part.slot, "active": part.active, "luks-field": part.field}
        return "encryption-header", f"{text}: unused", {}

    def _bitmap_directory(self, offset: int, owner: Owner, start: int, end: int,
                          sources: List[int]) -> Described:
        entry = [b for b in self.ctx.bitmaps if b.offset <= offset][-1]
        return "bitmap-directory", f"bitmap directory, entry of bitmap '{entry.name}'", \
            {"bitmap": entry.name}

    def _bitmap_table(self, offset: int, owner: Owner, start: int, end: int,
                      sources: List[int]) -> Described:
        name = self.ctx.bitmaps[owner.source].name
        j = (offset - start) // 8
        bits = self.ctx.cs * 8
        first, last = self._bitmap_guest(owner.source, j * bits, (j + 1) * bits)
        text = f"bitmap table of bitmap '{name}', entry {j} (guest {first:#x}..{last:#x})"
        return "bitmap-table", text, {"bitmap": name, "entry": j, "guest-first": first,
                                      "guest-last": last}

    def _bitmap_data(self, offset: int, owner: Owner, start: int, end: int,
                     sources: List[int]) -> Described:
        name = self.ctx.bitmaps[owner.source].name
        bit = owner.index * self.ctx.cs * 8 + (offset - start) * 8
        first, last = self._bitmap_guest(owner.source, bit, bit + 8)
        text = (f"bitmap data of bitmap '{name}', table entry {owner.index}: this byte "
                f"holds the bits of guest {first:#x}..{last:#x}")
        return "bitmap-data", text, {"bitmap": name, "entry": owner.index,
                                     "guest-first": first, "guest-last": last}

    def _bitmap_guest(self, source: int, bit: int, end_bit: int) -> Tuple[int, int]:
        """The first and last guest byte that bits bit..end_bit-1 of a bitmap cover."""
        shift = self.ctx.bitmaps[source].granularity_bits
        size = self.image.header.size
        return min(bit << shift, size), min(end_bit << shift, size) - 1

    def _unused(self, offset: int, rows: List[int]) -> Holder:
        """The bytes of a referenced cluster that no structure holds."""
        names: List[str] = []
        compressed: List[int] = []  # guest clusters, summed up: a cluster holds many
        for row in rows:
            owner = self.table.owner(row)
            if owner.kind == Kind.COMPRESSED:
                compressed.append(self._guest(owner))
            elif self.ctx.name(owner) not in names:
                names.append(self.ctx.name(owner))
        guests = sorted(set(compressed))
        if guests:
            names.append(f"compressed data of {len(guests)} guest cluster"
                         f"{'s' if len(guests) > 1 else ''} ({_ranges(guests, self.ctx.cs)})")
        text = "unused bytes of a cluster that holds " + ", ".join(names)
        return Holder("unused", text, offset >> self.ctx.bits << self.ctx.bits, self.ctx.cs,
                      True, {"cluster-holds": names})


_DESCRIBERS: Dict[Kind, Callable[..., Described]] = {
    Kind.HEADER: _Explainer._header, Kind.L1: _Explainer._l1, Kind.L2: _Explainer._l2,
    Kind.DATA: _Explainer._data, Kind.COMPRESSED: _Explainer._compressed,
    Kind.SNAPSHOT_TABLE: _Explainer._snapshot_table,
    Kind.REFCOUNT_TABLE: _Explainer._refcount_table, Kind.ENCRYPTION: _Explainer._encryption,
    Kind.BITMAP_DIRECTORY: _Explainer._bitmap_directory,
    Kind.BITMAP_TABLE: _Explainer._bitmap_table, Kind.BITMAP_DATA: _Explainer._bitmap_data,
    Kind.REFCOUNT_BLOCK: _Explainer._refcount_block,
}


# --- output --------------------------------------------------------------------------

def _status_text(a: Answer) -> str:
    refs = f"{a.references} reference" + ("" if a.references == 1 else "s")
    if a.status == BEYOND_EOF:
        held = f", refcount {a.refcount}, {refs}" if a.refcount or a.references else ""
        return "beyond the end of the file" + held
    if a.status == UNREADABLE:
        return f"its refcount block cannot be read, {refs}"
    if a.status == FREE:
        return "free (refcount 0, no references)"
    if a.status == LEAKED:
        return f"leaked: refcount {a.refcount}, {refs}"
    if a.status == CORRUPT:
        return f"corrupt: refcount {a.refcount}, {refs}"
    return f"refcount {a.refcount}"


def render_text(answers: Sequence[Answer]) -> str:
    """Per offset: a line with its cluster and refcount, then one line per holder
    (names read from the image in it escaped)."""
    lines = []
    for a in answers:
        lines.append(f"{a.offset:#x}: cluster {a.cluster}, {_status_text(a)}")
        lines += [f"    {printable.escape(h.description)}" for h in a.holders]
    return "\n".join(lines) + "\n"


def answer_json(a: Answer) -> Dict[str, Any]:
    """An answer as JSON members: offset, cluster, refcount, references, status and
    the holders (kind, description, start, length, counted, facts)."""
    return {"offset": a.offset, "cluster": a.cluster, "refcount": a.refcount,
            "references": a.references, "status": a.status,
            "holders": [{"kind": h.kind, "description": h.description, "start": h.start,
                         "length": h.length, "counted": h.counted, **h.facts}
                        for h in a.holders]}


def render_json(answers: Sequence[Answer]) -> str:
    """A list with one object per offset (answer_json)."""
    return json.dumps([answer_json(a) for a in answers], indent=2) + "\n"
