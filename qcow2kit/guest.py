"""The guest disk's contents, read as QEMU reads them: a file-like reader and raw export.

Every guest range is resolved to a piece: zeros, bytes at an offset of a file (the
image, its external data file or a raw backing file), or a decompressed cluster.
Unallocated ranges read from the backing chain, or zeros past its end.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import Future
from pathlib import Path
from typing import (Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union,
                    cast)

import numpy as np

from . import access, ahead, compression
from .crypto import Decryptor, open_decryptor
from .errors import Qcow2Error
from .output import FileId, Output, open_file, open_stream
from .mapping import (Layer, Qcow2Layer, RawLayer, Run, chain_inputs, close_chain,
                      file_runs, open_chain)
from .progress import Progress
from .secret import Secrets
from . import tables

COPY_CHUNK = 64 << 20
BATCH_BYTES = 1 << 20  # decompressed bytes per job of the thread pool (and per piece)
AHEAD_BYTES = 4 << 20  # data decompressed ahead of the writer: about the larger of
# this and two jobs per core
DECRYPT_CHUNK = 4 << 20  # guest bytes decrypted at a time
SECTOR = 512
PathLike = Union[str, Path]


class Piece(NamedTuple):
    """Guest bytes [start, start+length): zeros, a file's bytes at offset, or data."""

    start: int
    length: int
    fd: Optional[int] = None
    offset: int = 0
    data: Optional[Union[bytes, memoryview]] = None

    @property
    def zero(self) -> bool:
        return self.fd is None and self.data is None


class _Decompressor:
    """Compressed clusters of one image, read and decompressed as QEMU does, a batch
    per job on the chain's thread pool, into buffers used again once their piece is
    done with; the last cluster decompressed is kept for the next read of it."""

    def __init__(self, layer: Qcow2Layer, pool: ahead.Pool) -> None:
        self.size = layer.geometry.cluster_size
        self.per_job = max(1, BATCH_BYTES // self.size)
        self.image = layer.image
        self.compression_type = layer.image.header.compression_type
        self.pool = pool
        self.outputs: List[bytearray] = []  # free buffers, per_job clusters each
        self.inputs: List[bytearray] = []  # free buffers for compressed bytes
        self.last: Optional[Tuple[int, bytes]] = None  # L2 entry, cluster
        compression.check_available(self.compression_type)

    def submit(self, last: int, offsets: List[int], lengths: List[int]) -> Future[memoryview]:
        """A job that decompresses clusters (at most per_job; their compressed extents
        at offsets, lengths), in order, into one buffer; last is the L2 entry of the
        last of them."""
        return self.pool.submit(self._clusters, last, offsets, lengths)

    def release(self, clusters: memoryview) -> None:
        """A job's buffer is no longer used."""
        self.outputs.append(cast(bytearray, clusters.obj))

    def _clusters(self, entry: int, offsets: List[int], lengths: List[int]) -> memoryview:
        """Runs on the pool: the clusters, their compressed bytes read at once when
        they lie together (as qemu writes them) and one by one when scattered."""
        size = self.size
        low = min(offsets)
        high = max(o + n for o, n in zip(offsets, lengths))
        together = high - low <= sum(lengths) + size
        out = memoryview(_take(self.outputs, self.per_job * size))[:len(offsets) * size]
        need = high - low if together else max(lengths)
        raw = _take(self.inputs, need, need // 4)
        try:
            stored = self._read(raw, low, high - low) if together else memoryview(raw)
            decompress = compression.decompressor(self.compression_type)
            at = 0
            for offset, length in zip(offsets, lengths):
                data = stored[offset - low:offset - low + length] if together \
                    else self._read(raw, offset, length)
                try:
                    done = decompress(data, out[at:at + size])
                except compression.CompressionError as exc:
                    raise Qcow2Error("compressed cluster", offset,
                                     f"does not decompress: {exc}") from None
                if done != size:
                    raise Qcow2Error("compressed cluster", offset, f"decompresses to "
                                     f"{done} bytes, not a whole cluster ({size})")
                at += size
        finally:
            self.inputs.append(raw)
        self.last = (entry, out[at - size:at].tobytes())
        return out

    def _read(self, raw: bytearray, offset: int, length: int) -> memoryview:
        """length bytes of the image at offset, read into raw: short at its end."""
        view = memoryview(raw)[:length]
        return view[:os.preadv(self.image.fileno(), [view], offset)]


def _take(free: List[bytearray], size: int, spare: int = 0) -> bytearray:
    """A buffer of at least size bytes: a free one, else a new one with spare bytes
    more (for the next, slightly larger needs)."""
    try:
        buffer = free.pop()
    except IndexError:
        return bytearray(size + spare)
    return buffer if len(buffer) >= size else bytearray(size + spare)


class Chain:
    """An opened backing chain with what reading it needs: data file descriptors,
    decompressors and, for encrypted layers, decryptors (secrets asks for a layer's
    secret by its file name)."""

    def __init__(self, top: Layer, secrets: Optional[Secrets] = None,
                 key_slot: Optional[int] = None) -> None:
        self.top = top
        self.data_fds: Dict[int, int] = {}
        self.decompressors: Dict[int, _Decompressor] = {}
        self.decryptors: Dict[int, Decryptor] = {}
        self.pool = ahead.Pool()
        biggest = max(BATCH_BYTES, DECRYPT_CHUNK if secrets is not None else 0)  # of a piece
        layer: Optional[Layer] = top
        while layer is not None:
            if isinstance(layer, Qcow2Layer):
                biggest = max(biggest, layer.geometry.cluster_size)
            if isinstance(layer, Qcow2Layer) and layer.encrypted:
                if secrets is None:
                    raise Qcow2Error("header.crypt_method", None, "the image is encrypted: "
                                     "its secret is needed to read guest data")
                decryptor = open_decryptor(layer.image, secrets(layer.filename), key_slot)
                assert decryptor is not None
                self.decryptors[id(layer)] = decryptor
            layer = layer.backing if isinstance(layer, Qcow2Layer) else None
        self.ahead = max(2 * self.pool.workers, AHEAD_BYTES // biggest)

    def close(self) -> None:
        self.pool.close()
        for fd in self.data_fds.values():
            os.close(fd)
        close_chain(self.top)

    def _data_fd(self, layer: Qcow2Layer) -> int:
        if not layer.geometry.external_data_file:
            return layer.image.fileno()
        if not layer.data_file:
            raise Qcow2Error("external data file", None, "the image keeps its data in an "
                             "external data file and does not name it")
        key = id(layer)
        if key not in self.data_fds:
            try:  # QEMU opens a relative data file name from the current directory
                self.data_fds[key] = access.open_input(layer.data_filename, access.DATA,
                                                       layer.data_file)
            except OSError as exc:
                raise Qcow2Error("external data file", None,
                                 f"{layer.data_filename}: {exc.strerror}") from None
        return self.data_fds[key]

    def inputs(self) -> Dict[FileId, str]:
        """Every file of the chain that exists, by device and inode, in words."""
        return chain_inputs(self.top)

    def pieces(self, layer: Layer, start: int, end: int) -> Iterator[Piece]:
        """What guest bytes [start, end) of layer (and below it) read as, in order;
        compressed clusters are decompressed ahead on every core (see AHEAD_BYTES).
        A piece's data is valid until the next piece is asked for."""
        return ahead.in_order(self._pieces(layer, start, end), self.ahead)

    def _pieces(self, layer: Layer, start: int, end: int
                ) -> Iterator[Union[Piece, ahead.Later]]:
        if isinstance(layer, RawLayer):
            yield from self._raw(layer, start, end)
            return
        assert isinstance(layer, Qcow2Layer)
        decryptor = self.decryptors.get(id(layer))
        for run in layer.runs(start, end):
            if run.kind == "normal" and decryptor is not None:
                yield from self._decrypted(layer, decryptor, run)
            elif run.kind == "normal":
                yield Piece(run.start, run.end - run.start, self._data_fd(layer), run.offset)
            elif run.kind == "compressed":
                yield from self._compressed(layer, run)
            elif run.kind.startswith("unallocated") and layer.backing is not None:
                yield from self._backing(layer.backing, run.start, run.end)
            else:
                yield Piece(run.start, run.end - run.start)

    def _decrypted(self, layer: Qcow2Layer, decryptor: Decryptor, run: Run
                   ) -> Iterator[Piece]:
        """A run of data clusters, read a whole number of sectors at a time and
        decrypted (qemu does not encrypt compressed clusters)."""
        fd = self._data_fd(layer)
        pos = run.start
        while pos < run.end:
            stop = min(run.end, pos + DECRYPT_CHUNK)
            lead = pos % SECTOR
            host = run.offset + (pos - run.start) - lead
            span = -(-(stop - pos + lead) // SECTOR) * SECTOR
            raw = os.pread(fd, span, host)
            raw += bytes(span - len(raw))  # past the end of the file: zeros
            plain = decryptor.decrypt(raw, host, pos - lead)
            yield Piece(pos, stop - pos, data=plain[lead:lead + stop - pos])
            pos = stop

    def _raw(self, layer: RawLayer, start: int, end: int) -> Iterator[Piece]:
        stop = min(end, layer.size)
        if start < stop:
            yield Piece(start, stop - start, layer.file.fileno(), start)
        if end > max(start, stop):
            yield Piece(max(start, stop), end - max(start, stop))

    def _backing(self, below: Layer, start: int, end: int
                 ) -> Iterator[Union[Piece, ahead.Later]]:
        stop = min(end, below.size)
        if start < stop:
            yield from self._pieces(below, start, stop)
        if end > max(start, stop):
            yield Piece(max(start, stop), end - max(start, stop))

    def _compressed(self, layer: Qcow2Layer, run: Run) -> Iterator[Union[Piece, ahead.Later]]:
        """A run of compressed clusters, BATCH_BYTES of them per job and per piece."""
        decompressor = self.decompressors.get(id(layer))
        if decompressor is None:
            decompressor = self.decompressors[id(layer)] = _Decompressor(layer, self.pool)
        size = layer.geometry.cluster_size
        first_unit = run.start - run.start % layer.unit
        starts = np.arange(run.start - run.start % size, run.end, size, dtype=np.int64)
        starts[0] = run.start  # where each cluster's part of the run begins
        raw_entries = run.entries[(starts - first_unit) // layer.unit]
        offsets, lengths = tables.compressed_extents(raw_entries, layer.geometry)
        entries, offsets, lengths = raw_entries.tolist(), offsets.tolist(), lengths.tolist()
        bounds = [*starts.tolist(), run.end]
        last = decompressor.last
        first = 0
        if last is not None and last[0] == entries[0]:  # the cluster read last time
            lead = bounds[0] % size
            yield Piece(bounds[0], bounds[1] - bounds[0],
                        data=last[1][lead:lead + bounds[1] - bounds[0]])
            first = 1
        per_job = decompressor.per_job
        for a in range(first, len(entries), per_job):
            b = min(a + per_job, len(entries))
            job = decompressor.submit(entries[b - 1], offsets[a:b], lengths[a:b])
            yield _later(job, bounds[a], bounds[b], size, decompressor.release)


def _later(job: Future[memoryview], start: int, end: int, size: int,
           release: Callable[[memoryview], None]) -> ahead.Later:
    """Guest bytes [start, end) of the clusters a decompression job returns (the
    first cluster is the one start falls in)."""
    lead = start % size
    return ahead.Later(job, lambda clusters: Piece(start, end - start,
                                                   data=clusters[lead:lead + end - start]),
                       release)


def _fill(piece: Piece, view: memoryview) -> None:
    if piece.data is not None:
        view[:] = piece.data
    elif piece.fd is None:
        view[:] = bytes(len(view))
    else:
        done = os.preadv(piece.fd, [view], piece.offset)
        if done < len(view):  # past the end of the file: zeros, as QEMU reads it
            view[done:] = bytes(len(view) - done)


class GuestDisk(io.RawIOBase):
    """The virtual disk of an image (or of one of its snapshots), read-only.

        with GuestDisk("disk.qcow2") as disk:
            disk.seek(1 << 20)
            sector = disk.read(512)
    """

    def __init__(self, path: PathLike, snapshot: Optional[str] = None,
                 secrets: Optional[Secrets] = None, key_slot: Optional[int] = None) -> None:
        super().__init__()
        self.policy = access.current()  # files it opens later (a data file) obey it too
        self.chain = Chain(open_chain(path, snapshot), secrets, key_slot)
        self.size = self.chain.top.size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self.pos))
        with access.using(self.policy):
            for piece in self.chain.pieces(self.chain.top, self.pos, self.pos + n):
                at = piece.start - self.pos
                _fill(piece, view[at:at + piece.length])
        self.pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self.chain.close()
        super().close()


def convert(path: PathLike, output: Union[PathLike, int], snapshot: Optional[str] = None,
            name: str = "stdout", secrets: Optional[Secrets] = None,
            key_slot: Optional[int] = None) -> None:
    """Write the guest disk as a raw image to the file at output (sparse: zero runs of
    4 KiB and more become holes, as in qemu-img convert's output) or, in order, to the
    descriptor output (named name in errors). See output.py for what is refused."""
    with GuestDisk(path, snapshot, secrets, key_slot) as disk:
        if isinstance(output, int):
            with open_stream(output, name, disk.chain.inputs()) as out:
                copy(disk, out, 0, disk.size)
            return
        with open_file(str(output), disk.chain.inputs()) as out:
            copy(disk, out, 0, disk.size)
            out.finish(disk.size)


def cat(path: PathLike, output: int, start: int = 0, length: Optional[int] = None,
        snapshot: Optional[str] = None, name: str = "stdout",
        secrets: Optional[Secrets] = None, key_slot: Optional[int] = None) -> None:
    """Write guest bytes [start, start+length), in order, to the descriptor output
    (named name in errors): to the end of the disk without length, and never past
    it. A start past the end of the disk is an error that gives its size."""
    with GuestDisk(path, snapshot, secrets, key_slot) as disk:
        if start > disk.size:
            raise Qcow2Error("guest disk", None, f"offset {start} is past the end of the "
                             f"disk ({disk.size} bytes)")
        count = disk.size - start if length is None else min(length, disk.size - start)
        with open_stream(output, name, disk.chain.inputs()) as out:
            copy(disk, out, start, count, "cat")


def copy(disk: GuestDisk, out: Output, start: int, length: int,
         label: str = "convert") -> None:
    """Write guest bytes [start, start+length) to out, at their offsets less start."""
    buffer: Optional[memoryview] = None  # made when a file range is first copied
    with Progress(label, length) as progress:
        for piece in disk.chain.pieces(disk.chain.top, start, start + length):
            at = piece.start - start
            if piece.data is not None:
                out.write(at, piece.data)
            elif piece.fd is not None:
                if buffer is None:
                    buffer = memoryview(bytearray(min(COPY_CHUNK, length)))
                _copy_file(piece, out, at, buffer)
            else:
                out.zeros(at, piece.length)
            progress.advance(piece.length)


def _copy_file(piece: Piece, out: Output, at: int, buffer: memoryview) -> None:
    """Copy a file range through buffer; the source's holes and what lies past its
    end are zeros (holes in a sparse output)."""
    assert piece.fd is not None
    for a, b, is_data in file_runs(piece.fd, piece.offset, piece.offset + piece.length):
        if not is_data:
            out.zeros(at + a - piece.offset, b - a)
            continue
        while a < b:
            view = buffer[:min(len(buffer), b - a)]
            done = os.preadv(piece.fd, [view], a)
            out.write(at + a - piece.offset, view[:done])
            if done < len(view):  # the file ended: zeros
                out.zeros(at + a - piece.offset + done, b - a - done)
                break
            a += done
