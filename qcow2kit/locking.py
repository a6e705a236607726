"""QEMU's image locks: open-file-description byte-range locks on the image file.

A QEMU process that holds a permission on an image takes a shared lock on byte
100 + n (n = the permission's bit); one that does not let others hold it takes a
shared lock on byte 200 + n. Consistent read is bit 0, write is bit 1.
"""
from __future__ import annotations

import errno
import fcntl
import struct

from .errors import Qcow2Error

F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_FLOCK = "hhqqi4x"  # struct flock on Linux: type, whence, start, len, pid

LOCK_BASE_PERM = 100
LOCK_BASE_SHARED = 200
PERM_READ_BIT = 0
PERM_WRITE_BIT = 1
WRITER = LOCK_BASE_PERM + PERM_WRITE_BIT  # held by a process that writes
NO_OTHER_WRITER = LOCK_BASE_SHARED + PERM_WRITE_BIT  # held by one that lets nobody write
WRITE_BYTES = (WRITER, NO_OTHER_WRITER)
READ_BYTES = (LOCK_BASE_PERM + PERM_READ_BIT, NO_OTHER_WRITER)  # what qemu-img info holds
_UNSUPPORTED = (errno.ENOTSUP, errno.EINVAL, errno.ENOLCK)


class ImageLocked(Qcow2Error):
    """Another process holds the image open for writing (or forbids writers)."""

    def __init__(self, problem: str) -> None:
        super().__init__("image lock", None, problem)


def _conflicts(fd: int, byte: int) -> bool:
    probe = struct.pack(_FLOCK, fcntl.F_WRLCK, 0, byte, 1, 0)
    try:
        answer = struct.unpack(_FLOCK, fcntl.fcntl(fd, F_OFD_GETLK, probe))
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:  # a file system or file without locks
            return False
        raise
    return answer[0] != fcntl.F_UNLCK


def _take(fd: int, bytes_: tuple, what: str) -> None:
    for byte in bytes_:
        request = struct.pack(_FLOCK, fcntl.F_RDLCK, 0, byte, 1, 0)
        try:
            fcntl.fcntl(fd, F_OFD_SETLK, request)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                return
            raise ImageLocked(f'failed to get "{what}" lock: {exc.strerror}') from None


def lock_for_writing(fd: int, override: str = "") -> None:
    """Refuse when a QEMU process writes to the file or forbids writers, then lock it
    as qemu-img does for writing; override tells the option that skips this.

    The locks last as long as the open file description, so that no QEMU process
    starts writing to the file meanwhile.
    """
    if any(_conflicts(fd, byte) for byte in WRITE_BYTES):
        raise ImageLocked(" ".join(['failed to get "write" lock: is another process '
                                    "(qemu) using the image?", override]).strip())
    _take(fd, WRITE_BYTES, "write")


def writer_present(fd: int) -> bool:
    """Whether a QEMU process holds the file open for writing."""
    return _conflicts(fd, WRITER)


def lock_for_reading(fd: int, name: str) -> None:
    """Refuse when a QEMU process writes to the file name, then lock it as qemu-img
    info does: a consistent reader that lets nobody start writing."""
    if writer_present(fd):
        raise ImageLocked(f'failed to get shared "write" lock: is another process (qemu) '
                          f"writing to {name}? -U/--force-share reads it anyway")
    _take(fd, READ_BYTES, "consistent read")
