"""Metadata-only copies: every metadata byte of an image at its own offset, guest data
left out as holes, so that an image can be shared without the data it holds.

What is metadata comes from the owner table (`owners`), the same walk `check` counts:
the header cluster, L1 and L2 tables (active and of every snapshot), the refcount table
and blocks, the snapshot table, the bitmap directory, tables and data, and the LUKS
header. Standard guest data clusters, and every byte nothing references (free or
leaked clusters may hold old guest data), are holes that read back as zeros; each
compressed cluster's slot gets a compressed cluster of zeros (a few dozen bytes), so
that it too reads as zeros rather than as a hole no decompressor accepts. A byte that
is both (a damaged image) is kept. The copy has the original's size, so qemu sees the same
image in every respect but guest data, corruptions included.
"""
from __future__ import annotations

import bisect
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import access, chain, compression
from .errors import Qcow2Error
from .image import Image
from .mapping import Qcow2Layer, chain_inputs, chain_layers, close_chain, open_chain
from .output import FileId, Output, OutputError, file_id, open_file
from .owners import OwnerTable
from .references import Context, Kind
from .snapshots import read_snapshots

CHUNK = 8 << 20  # bytes copied per read
_GUEST_DATA = (Kind.DATA, Kind.COMPRESSED)


class CopyReport(NamedTuple):
    """What a copy holds: its ranges of metadata and their total, the file's size,
    and the names it replaced (what, and the neutral name now there)."""

    ranges: List[Tuple[int, int]]
    metadata_bytes: int
    file_size: int
    scrubbed: List[Tuple[str, bytes]]


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


def neutral_names(image: Image, spans: List[NameSpan], taken: Optional[set] = None
                  ) -> List[bytes]:
    """For each name, one of the same length that tells nothing: none equal to a name
    of the image, to another, or to one in taken (which gets the new ones), where the
    length leaves room for that."""
    originals = {image.read(s.offset, s.length) for s in spans}
    taken = set() if taken is None else taken
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


def _merged(pairs: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Ranges sorted and merged where they touch or overlap; empty ones dropped."""
    merged: List[Tuple[int, int]] = []
    for start, end in sorted(pairs):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class Layout(NamedTuple):
    """What the copy keeps (metadata ranges) and the compressed clusters' slots."""

    metadata: List[Tuple[int, int]]
    compressed: List[Tuple[int, int]]


def layout(image: Image) -> Layout:
    """The host byte ranges [start, end) that hold metadata, merged, sorted and clipped
    to the end of the file (the first cluster always among them), and the slots of
    compressed clusters inside the file."""
    ctx = Context(image)
    table = OwnerTable(ctx)
    guest = np.isin(table.kind, np.array(_GUEST_DATA, dtype=np.uint8))
    size = np.uint64(ctx.file_size)
    starts, ends = np.minimum(table.start, size), np.minimum(table.end, size)
    metadata = _merged([(0, min(ctx.cs, ctx.file_size))]
                       + list(zip(starts[~guest].tolist(), ends[~guest].tolist())))
    slots = table.kind == np.uint8(Kind.COMPRESSED)
    compressed = sorted(set(zip(starts[slots].tolist(), ends[slots].tolist())))
    return Layout(metadata, compressed)


def _outside(ranges: List[Tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) touches none of the sorted, merged ranges."""
    i = bisect.bisect_right(ranges, (start, 2**64)) - 1
    if i >= 0 and ranges[i][1] > start:
        return False
    return i + 1 >= len(ranges) or ranges[i + 1][0] >= end


def zero_clusters(image: Image, found: Layout) -> List[Tuple[int, bytes]]:
    """For each compressed cluster, a compressed cluster of zeros to put in its slot,
    where it fits without touching metadata: guest data that then reads as zeros, not
    as a hole no decompressor accepts."""
    stream = compression.compress(bytes(image.cluster_size), image.header.compression_type)
    return [(start, stream) for start, end in found.compressed
            if len(stream) <= end - start
            and _outside(found.metadata, start, start + len(stream))]


ARCHIVE_SUFFIXES = {".tar": "", ".tar.gz": "--gzip", ".tgz": "--gzip",
                    ".tar.xz": "--xz", ".txz": "--xz", ".tar.zst": "--zstd",
                    ".tzst": "--zstd"}  # GNU tar's compressor option for each name
PIPE_CHUNK = 1 << 20


def archive_compressor(name: Union[str, Path]) -> Optional[str]:
    """For a name that ends as a tar archive's, GNU tar's compressor option ("" for a
    plain .tar); None for any other name."""
    return next((option for suffix, option in ARCHIVE_SUFFIXES.items()
                 if str(name).endswith(suffix)), None)


def _inputs(image: Image) -> Dict[FileId, str]:
    return {file_id(image.stat()): f"the image {image.path}"}


def _fill(image: Image, out: Output, found: Layout,
          scrub: List[Tuple[NameSpan, bytes]]) -> None:
    """The copy's bytes into out: metadata ranges, compressed clusters of zeros, then
    the neutral names."""
    for start, end in found.metadata:
        for at in range(start, end, CHUNK):
            want = min(CHUNK, end - at)
            data = image.read_stored(at, want)
            if len(data) != want:
                raise Qcow2Error("image", at, "the file shrank while it was copied")
            out.write(at, data)
    for start, stream in zero_clusters(image, found):
        out.write(start, stream)
    for span, name in scrub:
        out.write(span.offset, name)
    out.finish(image.file_size)


def _write_archive(image: Image, out: Output, compressor: str, found: Layout,
                   scrub: List[Tuple[NameSpan, bytes]]) -> None:
    """The copy, written sparse into a private temporary folder, becomes the one
    member (named as the image) of a tar archive that GNU tar streams into out."""
    with tempfile.TemporaryDirectory(prefix="qcow2kit-metadata-copy-") as tmp:
        member = os.path.join(tmp, image.path.name)
        with open_file(member, _inputs(image)) as copy:
            _fill(image, copy, found, scrub)
        args = ["tar", "--create", "--sparse", "--hole-detection=seek", "--format=posix",
                *([compressor] if compressor else []), "--file", "-", "--directory", tmp,
                image.path.name]
        try:
            tar = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise OutputError(out.name, f"cannot run GNU tar: {exc.strerror}") from None
        assert tar.stdout is not None and tar.stderr is not None
        with tar:
            at = 0
            while True:
                chunk = tar.stdout.read(PIPE_CHUNK)
                if not chunk:
                    break
                out.write(at, chunk)
                at += len(chunk)
            problem = tar.stderr.read().decode(errors="replace").strip()
        if tar.returncode != 0:
            last = problem.splitlines()[-1:] or [f"exit status {tar.returncode}"]
            raise OutputError(out.name, f"tar failed: {last[0]}")
        out.finish(at)


def metadata_copy(image: Image, out: Union[str, Path], scrub_names: bool = False,
                  inputs: Optional[Dict[FileId, str]] = None,
                  taken: Optional[set] = None) -> CopyReport:
    """Write the metadata-only copy of image to out or, when out's name ends as a tar
    archive's (ARCHIVE_SUFFIXES), an archive holding the copy as a sparse member; with
    scrub_names, every name a user gave is replaced by a neutral one of the same
    length (none in taken, the names other copies got). The output is handled as
    every output is (output.py): never the image (nor any of inputs), locked, every
    write checked, removed on failure."""
    found = layout(image)
    spans = name_spans(image) if scrub_names else []
    scrub = list(zip(spans, neutral_names(image, spans, taken)))
    compressor = archive_compressor(out)
    with open_file(str(out), {**_inputs(image), **(inputs or {})}) as output:
        if compressor is None:
            _fill(image, output, found, scrub)
        else:
            _write_archive(image, output, compressor, found, scrub)
    ranges = found.metadata
    return CopyReport(ranges, sum(end - start for start, end in ranges), image.file_size,
                      [(span.what, name) for span, name in scrub])


def _beside(copy: Path, name: str, role: str) -> Path:
    """Where a file the copy names as name goes with --chain: beside the copy, which
    only a plain relative name allows."""
    parts = name.split("/")
    if name.startswith("/") or access.has_protocol(name) or ".." in parts or "" in parts:
        raise Qcow2Error(role, None, f"{name!r} is not a plain relative name, so its copy "
                         "cannot go beside the image's (--scrub-names gives one)")
    return copy.parent / name


def _hole_file(path: Path, size: int, inputs: Dict[FileId, str]) -> None:
    """A file of size bytes that are all a hole: a raw layer's or a data file's copy."""
    with open_file(str(path), inputs) as out:
        out.finish(size)


def chain_copy(path: Union[str, Path], out: Union[str, Path], scrub_names: bool = False
               ) -> List[Tuple[str, Optional[CopyReport]]]:
    """metadata_copy of the image and of every layer of its backing chain; each lower
    layer's copy goes beside out under the name (or neutral name) the layer above
    gives it; raw layers and external data files become holes of their size. Returns
    each copy's path with its report (None for a hole file)."""
    top = open_chain(str(path))
    try:
        inputs = chain_inputs(top)
        done: List[Tuple[str, Optional[CopyReport]]] = []
        taken: set = set()
        dest = Path(out)
        for layer in chain_layers(top):
            if any(os.path.abspath(dest) == os.path.abspath(path) for path, _ in done):
                raise Qcow2Error("backing chain", None, f"two layers would be copied to "
                                 f"{dest} (a loop, or names that repeat)")
            if not isinstance(layer, Qcow2Layer):
                _hole_file(dest, layer.size, inputs)
                done.append((str(dest), None))
                break
            if archive_compressor(dest) is not None:
                raise Qcow2Error("metadata-copy", None, "--chain writes image files, "
                                 "not an archive")
            report = metadata_copy(layer.image, dest, scrub_names, inputs, taken)
            done.append((str(dest), report))
            neutral = {what: name.decode() for what, name in report.scrubbed}
            if layer.data_file:
                data = _beside(dest, neutral.get("data file", layer.data_file),
                               "external data file")
                _hole_file(data, os.stat(layer.data_filename).st_size, inputs)
                done.append((str(data), None))
            if layer.backing is not None:
                stored = neutral.get("backing file") or chain.backing_name(layer.image)
                dest = _beside(dest, stored or "", "backing file")
        return done
    finally:
        close_chain(top)
