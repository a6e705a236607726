"""Metadata-only copies: every metadata byte of an image at its own offset, guest data
left out as holes, so that an image can be shared without the data it holds.

What is metadata comes from the owner table (`owners`), the same walk `check` counts:
the header cluster, L1 and L2 tables (active and of every snapshot), the refcount table
and blocks, the snapshot table, the bitmap directory, tables and data, and the LUKS
header. Standard and compressed guest data clusters, and every byte nothing references
(free or leaked clusters may hold old guest data), read back as zeros. A byte that is
both (a damaged image) is kept. The copy has the original's size, so qemu sees the same
image in every respect but guest data, corruptions included.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import List, NamedTuple, Tuple, Union

import numpy as np

from .errors import Qcow2Error
from .image import Image
from .owners import OwnerTable
from .references import Context, Kind

CHUNK = 8 << 20  # bytes copied per read
_GUEST_DATA = (Kind.DATA, Kind.COMPRESSED)


class CopyReport(NamedTuple):
    """What a copy holds: its ranges of metadata and their total, the file's size."""

    ranges: List[Tuple[int, int]]
    metadata_bytes: int
    file_size: int


def metadata_ranges(image: Image) -> List[Tuple[int, int]]:
    """The host byte ranges [start, end) that hold metadata, merged, sorted and clipped
    to the end of the file; the first cluster always among them."""
    ctx = Context(image)
    table = OwnerTable(ctx)
    keep = ~np.isin(table.kind, np.array(_GUEST_DATA, dtype=np.uint8))
    size = np.uint64(ctx.file_size)
    starts = np.minimum(table.start[keep], size)
    ends = np.minimum(table.end[keep], size)
    pairs = sorted([(0, min(ctx.cs, ctx.file_size))] + list(zip(starts.tolist(),
                                                                   ends.tolist())))
    merged: List[Tuple[int, int]] = []
    for start, end in pairs:
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _write_all(fd: int, data: bytes, offset: int) -> None:
    """Write data at offset, all of it, or raise OSError."""
    done = 0
    while done < len(data):
        n = os.pwrite(fd, data[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        done += n


def metadata_copy(image: Image, out: Union[str, Path]) -> CopyReport:
    """Write the metadata-only copy of image to out, a new file (never an existing
    one); on any failure out is removed, so nothing half-done is left. An OSError
    about out names it."""
    out = Path(out)
    ranges = metadata_ranges(image)
    src = image._file.fileno()
    size = os.fstat(src).st_size
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(out)) from None
    try:
        for start, end in ranges:
            for at in range(start, end, CHUNK):
                want = min(CHUNK, end - at)
                data = os.pread(src, want, at)
                if len(data) != want:
                    raise Qcow2Error("image", at, "the file shrank while it was copied")
                try:
                    _write_all(fd, data, at)
                except OSError as exc:
                    raise OSError(exc.errno, exc.strerror, str(out)) from None
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(out)) from None
    except BaseException:
        os.close(fd)
        os.unlink(out)
        raise
    os.close(fd)
    return CopyReport(ranges, sum(end - start for start, end in ranges), size)
