"""QEMU's image locks: open-file-description byte-range locks on the image file.

A QEMU process that holds a permission on an image takes a shared lock on byte
100 + n (n = the permission's bit); one that does not let others hold it takes a
shared lock on byte 200 + n. Write is bit 1.
"""
from __future__ import annotations

import fcntl
import struct
from typing import BinaryIO

F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_FLOCK = "hhqqi4x"  # struct flock on Linux: type, whence, start, len, pid

LOCK_BASE_PERM = 100
LOCK_BASE_SHARED = 200
PERM_WRITE_BIT = 1
WRITE_BYTES = (LOCK_BASE_PERM + PERM_WRITE_BIT, LOCK_BASE_SHARED + PERM_WRITE_BIT)


class ImageLocked(Exception):
    """Another process holds the image open for writing (or forbids writers)."""


def _conflicts(f: BinaryIO, byte: int) -> bool:
    probe = struct.pack(_FLOCK, fcntl.F_WRLCK, 0, byte, 1, 0)
    answer = struct.unpack(_FLOCK, fcntl.fcntl(f.fileno(), F_OFD_GETLK, probe))
    return answer[0] != fcntl.F_UNLCK


def lock_for_writing(f: BinaryIO) -> None:
    """Refuse when a QEMU process writes to the image, then lock it as qemu-img would.

    The shared locks taken on the write bytes last as long as f is open, so that no
    QEMU process starts writing to the image while it is being edited.
    """
    if any(_conflicts(f, byte) for byte in WRITE_BYTES):
        raise ImageLocked('failed to get "write" lock: is another process (qemu) using '
                          "the image? --force edits it anyway")
    for byte in WRITE_BYTES:
        request = struct.pack(_FLOCK, fcntl.F_RDLCK, 0, byte, 1, 0)
        try:
            fcntl.fcntl(f.fileno(), F_OFD_SETLK, request)
        except OSError as exc:
            raise ImageLocked(f'failed to get "write" lock: {exc.strerror}') from None
