"""The backing chain as qemu resolves it, for every command that follows one.

What an image names (its backing file, the backing file's format, its external data
file) is read here once: names are C strings, and of several extensions of one kind
the last is the one qemu keeps. Where a name leads is access's chain policy
(relative names, the `file:` prefix, protocols refused, overrides, safe mode); what
is below it is probed for its format when the image does not say, and a chain that
loops or runs deeper than MAX_DEPTH is refused.
"""
from __future__ import annotations

import os
from typing import Optional, Set

from . import access
from .errors import Qcow2Error
from .image import MAGIC, Image, text
from .qemu_style import c_string
from .records import Record

MAX_DEPTH = 64  # backing files below the top image (qemu itself sets no limit)
FORMATS = ("qcow2", "raw")


def _last_string(image: Image, kind: str) -> Optional[str]:
    """The C string of the last extension of that kind (qemu keeps the last)."""
    ext = image.extension(kind)
    return None if ext is None else c_string(text(ext.data))


def backing_name(image: Image) -> Optional[str]:
    """The backing file name the header gives, as a C string; None for none (an empty
    name is none)."""
    return c_string(image.backing_file or "") or None


def backing_format(image: Image) -> Optional[str]:
    """The backing file format the image names; None when it names none."""
    return _last_string(image, "backing_file_format")


def data_file_name(image: Image) -> Optional[str]:
    """The external data file name the image gives (maybe empty); None for none."""
    return _last_string(image, "external_data_file")


def probe_format(path: str, role: str = access.IMAGE) -> str:
    """qcow2 or raw, by the magic, as qemu probes a backing file without a format."""
    fd = access.open_input(path, role, lock=False)
    try:
        return "qcow2" if os.pread(fd, 4, 0) == MAGIC.to_bytes(4, "big") else "raw"
    finally:
        os.close(fd)


class Link(Record):
    """A file of the chain: its path, format ("qcow2" or "raw") and depth (0: the top)."""

    path: str
    format: str
    depth: int

    @property
    def role(self) -> str:
        return access.IMAGE if self.depth == 0 else access.BACKING


class Chain:
    """Follows a chain from the top image down, one link at a time."""

    def __init__(self, filename: str, max_depth: int = MAX_DEPTH) -> None:
        self.top = Link(access.file_path(filename), "qcow2", 0)
        self.max_depth = max_depth
        self._seen: Set[str] = {filename}

    def below(self, image: Image, link: Link) -> Optional[Link]:
        """The link below an open qcow2 image of the chain (None at the bottom), after
        its external data file passed the policy. Raises Qcow2Error for a file the
        policy refuses, a loop, a chain too deep or a format other than qcow2 and raw."""
        data_file = data_file_name(image)
        if data_file:
            access.data_file(link.path, data_file)
        below = access.backing_file(link.path, backing_name(image), backing_format(image),
                                    link.depth)
        if below is None:
            return None
        path, fmt = below
        if path in self._seen:
            raise Qcow2Error("backing chain", None,
                             f"backing file {path!r} creates an infinite loop")
        if link.depth + 1 > self.max_depth:
            raise Qcow2Error("backing chain", None, f"too deep (more than {self.max_depth} "
                             "backing files)")
        self._seen.add(path)
        fmt = fmt or probe_format(path, access.BACKING)
        if fmt not in FORMATS:
            raise Qcow2Error("backing chain", None,
                             f"{path!r}: the {fmt} format is not supported")
        return Link(path, fmt, link.depth + 1)
