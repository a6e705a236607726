"""Which host bytes hold a guest offset, through the backing chain, and what owns them:
`whatis --guest`.

The guest byte is followed down the chain as qemu reads it: the first layer that
allocates it (data, compressed data, or zeros) answers; unallocated bytes read from
the backing file, or as zeros past its end or without one. When the bytes lie in a
qcow2 file of the chain, whatis says what owns them there.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import printable, tables, whatis
from .errors import Qcow2Error
from .mapping import Layer, Qcow2Layer, RawLayer, close_chain, file_runs, open_chain

DATA, COMPRESSED, ZERO, UNALLOCATED = "data", "compressed", "zero", "unallocated"


@dataclass(frozen=True)
class Place:
    """Where guest byte guest_offset is read from.

    reads: DATA (host_offset of file holds it), COMPRESSED (the compressed cluster at
    host_offset, host_length bytes, holds it), ZERO (a zero cluster or subcluster of
    the layer, or a hole of a raw file; an allocated one or the hole has its
    host_offset) or UNALLOCATED (no layer allocates it: zeros). layer is the file of
    the chain that answers, at depth (0: the image); answer, what owns host_offset
    when file is a qcow2 file of the chain.
    """

    guest_offset: int
    depth: int
    layer: str
    reads: str
    file: Optional[str] = None
    host_offset: Optional[int] = None
    host_length: Optional[int] = None
    answer: Optional[whatis.Answer] = None


def _place(top: Layer, offset: int) -> Tuple[Place, Optional[Qcow2Layer]]:
    """The place of a guest byte, and the qcow2 layer whose file holds it (if any)."""
    layer, depth = top, 0
    while True:
        if isinstance(layer, RawLayer):  # its holes read as zeros
            _, _, is_data = next(file_runs(layer.file.fileno(), offset, offset + 1))
            return Place(offset, depth, layer.filename, DATA if is_data else ZERO,
                         layer.filename, offset, 1), None
        assert isinstance(layer, Qcow2Layer)
        run = next(layer.runs(offset, offset + 1))
        here = functools.partial(Place, offset, depth, layer.filename)
        own = None if layer.geometry.external_data_file else layer
        if run.kind == "normal":
            return here(reads=DATA, file=layer.data_filename, host_offset=run.offset,
                         host_length=1), own
        if run.kind == "compressed":
            start, length = (int(x[0]) for x in tables.compressed_extents(
                np.array(run.entries[:1], dtype=np.uint64), layer.geometry))
            return here(reads=COMPRESSED, file=layer.filename, host_offset=start,
                         host_length=length), layer
        if run.kind == "zero_alloc":
            return here(reads=ZERO, file=layer.data_filename,
                         host_offset=run.offset, host_length=1), own
        if run.kind == "zero_plain":
            return here(reads=ZERO), None
        below = layer.backing
        if below is None or offset >= below.size:
            return here(reads=UNALLOCATED), None
        layer, depth = below, depth + 1


def locate(path: Union[str, Path], offsets: Sequence[int],
           snapshot: Optional[str] = None) -> List[Place]:
    """The place of each guest offset of the image at path (or of one of its
    snapshots), with what owns its host bytes, under the chain policy of access."""
    top = open_chain(path, snapshot)
    try:
        found = []
        for offset in offsets:
            if offset >= top.size:
                raise Qcow2Error(f"guest offset {offset:#x}", None,
                                 f"past the end of the disk ({top.size} bytes)")
            found.append(_place(top, offset))
        answers: Dict[int, Dict[int, whatis.Answer]] = {}
        for place, layer in found:  # one owner table per file
            if layer is not None and id(layer) not in answers:
                hosts = sorted({p.host_offset for p, at in found if at is layer
                                and p.host_offset is not None})
                answers[id(layer)] = {a.offset: a for a in whatis.whatis(layer.image, hosts)}
        return [place if layer is None or place.host_offset is None else
                replace(place, answer=answers[id(layer)][place.host_offset])
                for place, layer in found]
    finally:
        close_chain(top)


def _where(place: Place) -> str:
    depth = f"depth {place.depth}: {place.layer}"
    if place.reads == DATA:
        return f"data at {place.host_offset:#x} of {place.file} ({depth})"
    if place.reads == COMPRESSED:
        return (f"compressed data at {place.host_offset:#x} of {place.file}, "
                f"{place.host_length} bytes ({depth})")
    if place.reads == ZERO and place.host_offset is None:
        return f"zeros: a zero cluster ({depth})"
    if place.reads == ZERO:  # an allocated zero cluster, or a hole of a raw file
        return f"zeros, at {place.host_offset:#x} of {place.file} ({depth})"
    return f"zeros: allocated in no layer (down to depth {place.depth}: {place.layer})"


def render_text(places: Sequence[Place]) -> str:
    """Per guest offset: a line saying where it is read from, then what owns those
    host bytes, indented (names read from the image escaped)."""
    lines = []
    for place in places:
        lines.append(printable.escape(f"guest {place.guest_offset:#x}: {_where(place)}"))
        if place.answer is not None:
            lines += ["    " + line for line in
                      whatis.render_text([place.answer]).splitlines()]
    return "\n".join(lines) + "\n"


def place_json(place: Place) -> Dict[str, Any]:
    """A place as JSON members; what owns the host bytes under "whatis" (null when
    they lie in no qcow2 file of the chain)."""
    return {"guest-offset": place.guest_offset, "depth": place.depth, "layer": place.layer,
            "reads": place.reads, "file": place.file, "host-offset": place.host_offset,
            "host-length": place.host_length,
            "whatis": None if place.answer is None else whatis.answer_json(place.answer)}


def render_json(places: Sequence[Place]) -> str:
    """A list with one object per guest offset (place_json)."""
    return json.dumps([place_json(p) for p in places], indent=2) + "\n"
