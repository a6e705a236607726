"""Where guest data is written: a raw output file, a device or stdout.

An output is never one of the files being read (same device and inode, whatever
the name), carries qemu's write lock for the whole run, and is refused when a qemu
process uses it. Every write is checked: a short write, ENOSPC or EIO is an
OutputError naming the output. A regular file is written sparse: every 4 KiB block
(of the output's own grid) that holds only zeros stays a hole, as qemu-img
convert's default -S 4k leaves it. When the run fails or is interrupted, an output
file it created is removed; an existing one it overwrote is named in a note.
"""
from __future__ import annotations

import contextlib
import os
import stat
from typing import Dict, Iterator, Tuple, Union

from .locking import ImageLocked, lock_for_writing

SPARSE_BLOCK = 4096  # qemu-img convert's default minimum hole (-S 4k)
WRITE_MAX = 256 << 10  # bytes per write call: Linux (6.x, ext4) caches a larger write in
# large folios, whose allocation made writing 1 GiB 3 to 5 times slower here
SMALL_VIEW = 1 << 20  # writes up to this size are scanned for zero blocks without numpy
_ZEROS = bytes(SPARSE_BLOCK)
FileId = Tuple[int, int]  # st_dev, st_ino
_FLAGS = os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO without reader: ENXIO
# qemu's locks are read locks, which need a readable descriptor: files and block
# devices are opened for reading and writing, anything else (a FIFO) write-only.
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | _FLAGS


class ReaderGone(Exception):
    """The reader of a stream output (stdout into `head`, say) went away: the run ends
    quietly, as cat's does."""


class OutputError(Exception):
    """The output is refused or cannot be written."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")


def file_id(st: os.stat_result) -> FileId:
    return st.st_dev, st.st_ino


def add_note(exc: BaseException, text: str) -> None:
    """Attach a line for the user to an exception (BaseException.add_note's field)."""
    exc.__notes__ = [*getattr(exc, "__notes__", []), text]  # type: ignore[attr-defined]


class Output:
    """An open output: writes at guest offsets, checked; sparse for a regular file
    (then writes may come in any order), in order for anything else."""

    def __init__(self, fd: int, name: str, sparse: bool) -> None:
        self.fd = fd
        self.name = name
        self.sparse = sparse
        self.pos = 0
        self.touched = False  # some bytes (may) have been written

    def write(self, offset: int, data: Union[bytes, memoryview]) -> None:
        """Write data at offset; in a sparse output its zero blocks stay holes."""
        if not self.sparse:
            assert offset == self.pos, "a stream is written in order"
            self._write_all(memoryview(data), offset)
            return
        view = memoryview(data).cast("B")
        for start, end in nonzero_blocks(view, offset):
            self._write_all(view[start:end], offset + start)

    def zeros(self, offset: int, length: int) -> None:
        """Guest zeros: nothing in a sparse output (its holes read as zeros)."""
        if self.sparse:
            return
        block = bytes(min(length, 1 << 20))
        while length:
            n = min(length, len(block))
            self._write_all(memoryview(block)[:n], offset)
            offset += n
            length -= n

    def _write_all(self, view: memoryview, offset: int) -> None:
        while len(view):
            try:
                part = view[:WRITE_MAX]
                n = os.pwrite(self.fd, part, offset) if self.sparse else os.write(self.fd, part)
            except BrokenPipeError:
                raise ReaderGone(self.name) from None
            except OSError as exc:
                raise OutputError(self.name, exc.strerror or str(exc)) from None
            except BaseException:  # interrupted: part of the write may be out
                self.touched = True
                raise
            self.touched = self.touched or n > 0
            if n <= 0:
                raise OutputError(self.name, f"short write: {len(view)} bytes at offset "
                                  f"{offset} not written")
            view = view[n:]
            offset += n
            self.pos = offset

    def finish(self, size: int) -> None:
        """Give a sparse output its full size (a trailing hole)."""
        if self.sparse:
            try:
                os.ftruncate(self.fd, size)
            except OSError as exc:
                raise OutputError(self.name, exc.strerror or str(exc)) from None


def nonzero_blocks(view: memoryview, offset: int) -> Iterator[Tuple[int, int]]:
    """The [start, end) ranges of view, on the SPARSE_BLOCK grid of the output (view
    lands at offset), made of blocks that are not all zeros; runs of such blocks
    joined. Up to SMALL_VIEW bytes (a cluster) block by block, else with numpy."""
    n = len(view)
    if n == 0:
        return
    head = -offset % SPARSE_BLOCK
    if n <= SMALL_VIEW:
        yield from _nonzero_blocks_small(view, head)
        return
    import numpy as np  # here, not at the top: the commands that write no output start without it

    edges = np.arange(head if head else SPARSE_BLOCK, n, SPARSE_BLOCK)
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [n]))
    busy = np.maximum.reduceat(np.frombuffer(view, dtype=np.uint8), starts) != 0
    flips = np.flatnonzero(np.diff(np.concatenate(([False], busy, [False])).astype(np.int8)))
    for first, last in zip(flips[::2], flips[1::2]):
        yield int(starts[first]), int(ends[last - 1])


def _nonzero_blocks_small(view: memoryview, head: int) -> Iterator[Tuple[int, int]]:
    """nonzero_blocks of a small view whose first block ends at head (0: a whole one).
    A block whose first or last byte is not zero is data without comparing the rest."""
    n = len(view)
    edges = [0, *range(head or SPARSE_BLOCK, n, SPARSE_BLOCK), n]
    zero = [not (view[a] or view[b - 1]) and view[a:b].tobytes() == _ZEROS[:b - a]
            for a, b in zip(edges, edges[1:])]
    if True not in zero:
        yield 0, n
        return
    start = None  # of the current run of blocks with data
    for a, is_zero in zip(edges, zero):
        if not is_zero:
            if start is None:
                start = a
        elif start is not None:
            yield start, a
            start = None
    if start is not None:
        yield start, n


def _refuse_input(name: str, st: os.stat_result, inputs: Dict[FileId, str]) -> None:
    what = inputs.get(file_id(st))
    if what is not None:
        raise OutputError(name, f"refused: it is the same file as {what}, an input")


@contextlib.contextmanager
def open_stream(fd: int, name: str, inputs: Dict[FileId, str]) -> Iterator[Output]:
    """An output on an open descriptor (stdout), written in order."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        _refuse_input(name, st, inputs)
    yield Output(fd, name, sparse=False)


@contextlib.contextmanager
def open_file(path: str, inputs: Dict[FileId, str]) -> Iterator[Output]:
    """The output file at path, created or overwritten (truncated only once it is
    known not to be an input and qemu's write lock is held); sparse when it is a
    regular file. On failure or interrupt a file created here is removed, and an
    overwritten one is named in a note on the exception."""
    try:
        _refuse_input(path, os.stat(path), inputs)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise OutputError(path, exc.strerror or str(exc)) from None
    fd, created = _open(path)
    out = None
    try:
        st = os.fstat(fd)
        _refuse_input(path, st, inputs)
        regular = stat.S_ISREG(st.st_mode)
        if regular or stat.S_ISBLK(st.st_mode):
            try:
                lock_for_writing(fd)
            except ImageLocked as exc:
                raise OutputError(path, exc.problem) from None
        os.set_blocking(fd, True)
        if regular and not created:  # (ext4 writes back a file cut to 0 when it is closed)
            _io(path, os.ftruncate, fd, 0)
        out = Output(fd, path, sparse=regular)
        yield out
    except BaseException as exc:
        _close_quietly(fd)
        if created:
            with contextlib.suppress(OSError):
                os.unlink(path)
        elif out is not None and (out.sparse or out.touched):
            add_note(exc, f"{path}: the existing file was overwritten and is left incomplete"
                     if out.sparse else f"{path}: partly written")
        raise
    _io(path, os.close, fd)


def _open(path: str) -> Tuple[int, bool]:
    try:
        return os.open(path, _CREATE, 0o666), True
    except FileExistsError:
        pass
    except OSError as exc:
        raise OutputError(path, exc.strerror or str(exc)) from None
    try:
        mode = os.stat(path).st_mode
        lockable = stat.S_ISREG(mode) or stat.S_ISBLK(mode)
        return os.open(path, (os.O_RDWR if lockable else os.O_WRONLY) | _FLAGS), False
    except OSError as exc:
        raise OutputError(path, exc.strerror or str(exc)) from None


def _io(name: str, func, *args) -> None:
    try:
        func(*args)
    except OSError as exc:
        raise OutputError(name, exc.strerror or str(exc)) from None


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
