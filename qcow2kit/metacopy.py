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
import subprocess
import tempfile
from pathlib import Path
from typing import List, NamedTuple, Tuple, Union

import numpy as np

from .errors import Qcow2Error
from .image import Image
from .owners import OwnerTable
from .references import Context, Kind
from .snapshots import read_snapshots

CHUNK = 8 << 20  # bytes copied per read
_GUEST_DATA = (Kind.DATA, Kind.COMPRESSED)


class CopyReport(NamedTuple):
    """What a copy holds: its ranges of metadata and their total, the file's size,
    and the names it replaced (what, offset, length)."""

    ranges: List[Tuple[int, int]]
    metadata_bytes: int
    file_size: int
    scrubbed: List[Tuple[str, int, int]]


class NameSpan(NamedTuple):
    """A name stored in the image: what names it, and where its bytes lie."""

    what: str
    offset: int
    length: int


def name_spans(image: Image) -> List[NameSpan]:
    """Every name a user gave: snapshot and bitmap names, the backing file and the
    external data file."""
    spans = []
    h = image.header
    if h.backing_file_offset and h.backing_file_size:
        spans.append(NameSpan("backing file", h.backing_file_offset, h.backing_file_size))
    for ext in image.extensions:
        if ext.kind == "external_data_file" and ext.length:
            spans.append(NameSpan("data file", ext.data_offset, ext.length))
    spans += [NameSpan(f"snapshot {s.id}", s.name_offset, s.name_size)
              for s in read_snapshots(image)]
    spans += [NameSpan(f"bitmap {i}", b.name_offset, b.name_size)
              for i, b in enumerate(image.bitmap_directory())]
    return [s for s in spans if s.length]


SCRUB_ALPHABET = b"0123456789abcdefghijklmnopqrstuvwxyz"


def _neutral(what: str, number: int, length: int) -> bytes:
    """The kind's letter and number in base 36, padded with 'x' to length bytes."""
    digits = b""
    while True:
        number, digit = divmod(number, len(SCRUB_ALPHABET))
        digits = SCRUB_ALPHABET[digit:digit + 1] + digits
        if not number:
            break
    name = (what[:1].encode() + digits)[-length:]
    return name + b"x" * (length - len(name))


def neutral_names(image: Image, spans: List[NameSpan]) -> List[bytes]:
    """For each name, one of the same length that tells nothing: none equal to a name
    of the image or to another, where the length leaves room for that."""
    originals = {image.read(s.offset, s.length) for s in spans}
    taken: set = set()
    out = []
    number = 0
    for span in spans:
        tries = 0
        while True:
            name = _neutral(span.what, number, span.length)
            number += 1
            tries += 1
            if (name not in originals and name not in taken) or tries > 4096:
                break
        taken.add(name)
        out.append(name)
    return out


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


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tzst")


def is_archive(name: Union[str, Path]) -> bool:
    """Whether a copy named so is written as a (compressed) tar archive."""
    return str(name).endswith(ARCHIVE_SUFFIXES)


def _named(exc: OSError, out: Path) -> OSError:
    return OSError(exc.errno, exc.strerror, str(out))


def _write_copy(image: Image, out: Path, ranges: List[Tuple[int, int]],
                scrub: List[NameSpan]) -> None:
    """Write the copy to out, a new file, and remove it on any failure."""
    src = image._file.fileno()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise _named(exc, out) from None
    try:
        for start, end in ranges:
            for at in range(start, end, CHUNK):
                want = min(CHUNK, end - at)
                data = os.pread(src, want, at)
                if len(data) != want:
                    raise Qcow2Error("image", at, "the file shrank while it was copied")
                _write_all(fd, data, at)
        for span, name in zip(scrub, neutral_names(image, scrub)):
            _write_all(fd, name, span.offset)
        os.ftruncate(fd, image.file_size)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(out)
        raise _named(exc, out) from None
    except BaseException:
        os.close(fd)
        os.unlink(out)
        raise
    os.close(fd)


def _write_archive(image: Image, out: Path, ranges: List[Tuple[int, int]],
                   scrub: List[NameSpan]) -> None:
    """The copy as a sparse member, named as the image, of a tar archive that GNU tar
    compresses by out's suffix; nothing is left behind on failure."""
    if out.exists() or out.is_symlink():
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), str(out))
    with tempfile.TemporaryDirectory(prefix=".metadata-copy-", dir=out.parent) as tmp:
        member = Path(tmp) / image.path.name
        _write_copy(image, member, ranges, scrub)
        try:
            proc = subprocess.run(
                ["tar", "--create", "--auto-compress", "--sparse", "--hole-detection=seek",
                 "--format=posix", "--file", str(out), "--directory", tmp, member.name],
                capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        if proc.returncode != 0:
            out.unlink(missing_ok=True)
            problem = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise OSError(errno.EIO, f"tar failed: {problem[0]}", str(out))


def metadata_copy(image: Image, out: Union[str, Path], scrub_names: bool = False
                  ) -> CopyReport:
    """Write the metadata-only copy of image to out, a new file (never an existing
    one), or when out's name ends as a tar archive's (ARCHIVE_SUFFIXES), an archive
    holding the copy as a sparse member; with scrub_names, every name a user gave is
    replaced by a neutral one of the same length. On any failure out is removed, so
    nothing half-done is left; an OSError about out names it."""
    out = Path(out)
    ranges = metadata_ranges(image)
    scrub = name_spans(image) if scrub_names else []
    write = _write_archive if is_archive(out) else _write_copy
    write(image, out, ranges, scrub)
    return CopyReport(ranges, sum(end - start for start, end in ranges), image.file_size,
                      [tuple(span) for span in scrub])
