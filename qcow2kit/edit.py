"""Header and header extension rewriting that cannot leave a broken file behind.

An edit reads the first cluster into parts (header bytes, extensions with their
original padding, backing file name), changes them, lays them out again as QEMU does
(header, extensions, end marker, backing file name), re-parses the new bytes with the
generated parser and checks they say what was intended. Only then is the result
written, with one write and fsync, and never past the first cluster. Field positions
and widths come from the parser's recorded positions, not from a second layout table.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import List, Optional, Union

from kaitaistruct import KaitaiStream

from .errors import PARSE_ERRORS, Qcow2Error, from_parse
from .generated.qcow2 import Qcow2
from .image import LUKS, TYPED_LENGTHS, ExtensionType, Header, Image, read_header
from .locking import ImageLocked, lock_for_writing
from .names import (FEATURE_BITS, FEATURE_GROUPS, HEADER_FIELD_IDS, KNOWN_INCOMPATIBLE_BITS,
                    header_field, header_field_names)

CORRUPT_BIT = 1 << FEATURE_BITS["incompatible"].index("corrupt")
END_MARKER = bytes(8)
PathLike = Union[str, Path]


class EditError(Qcow2Error):
    """The edit was refused; the file is unchanged."""

    def __init__(self, problem: str) -> None:
        super().__init__("edit refused", None, problem)


class UnknownField(EditError):
    """No header field has that name (a usage error); the file is unchanged."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is not a known header field; the fields (by the spec's "
                         f"id, other names in parentheses): {header_field_names()}")


@dataclass
class ExtensionRecord:
    magic: int
    data: bytes
    padding: bytes

    def encode(self) -> bytes:
        return struct.pack(">II", self.magic, len(self.data)) + self.data + self.padding


def _field(name: str) -> str:
    """qcow2.py's name of a header field given by any of its names."""
    found = header_field(name)
    if found is None:
        raise UnknownField(name)
    return found


class FirstCluster:
    """The editable contents of an image's first cluster."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.parsed_header = image.qcow2.header
        self.header = bytearray(image.read(0, image.header.header_length))
        self.extensions = [ExtensionRecord(e.magic, e.data, e.padding)
                           for e in image.extensions]
        h = image.header
        self.original = image.read(0, image.cluster_size)
        # QEMU reads the name only in the first cluster; verify() refuses it elsewhere
        self.backing = self.original[h.backing_file_offset:][:h.backing_file_size] \
            if h.backing_file_offset else None
        self.backing_placed_by_user = False

    # --- changes -------------------------------------------------------------

    def _span(self, name: str) -> range:
        field = HEADER_FIELD_IDS[name]
        info = self.parsed_header._debug.get(field, {})
        if "end" not in info:
            raise EditError(f"{name} is not present in this version {self.image.header.version} "
                            f"header (header_length {self.image.header.header_length})")
        return range(info["start"], info["end"])

    def get(self, name: str) -> int:
        """A header field by any of its names (see names.header_field)."""
        name = _field(name)
        span = self._span(name)
        return int.from_bytes(self.header[span.start:span.stop], "big")

    def set(self, name: str, value: int) -> None:
        """Set a header field given by any of its names (see names.header_field)."""
        name = _field(name)
        span = self._span(name)
        width = len(span)
        if not 0 <= value < 1 << 8 * width:
            raise EditError(f"{value:#x} does not fit {name} ({width} bytes)")
        if name == "version" and value != self.image.header.version:
            raise EditError("changing the version would reinterpret the header; "
                            "use qemu-img amend -o compat=...")
        if name == "header_length":
            if value > self.image.cluster_size:
                raise EditError(f"header_length {value} is larger than the cluster "
                                f"({self.image.cluster_size})")
            self._resize_header(value)
        if name in ("backing_file_offset", "backing_file_size"):
            self.backing_placed_by_user = True
        self._store(span, value)

    def _store(self, span: range, value: int) -> None:
        self.header[span.start:span.stop] = value.to_bytes(len(span), "big")

    def _resize_header(self, length: int) -> None:
        if length < len(self.header):
            del self.header[length:]
        else:
            self.header += bytes(length - len(self.header))

    def set_feature_bit(self, group: str, bit: int) -> None:
        if group not in FEATURE_GROUPS:
            raise EditError(f"{group!r} is not a valid group, try 'incompatible', "
                            "'compatible', or 'autoclear'")
        if not 0 <= bit < 64:
            raise EditError(f"{bit} is not a valid bit number in range [0, 64)")
        name = f"{group}_features"
        self.set(name, self.get(name) | 1 << bit)

    def add_extension(self, magic: int, data: bytes) -> None:
        if not 0 < magic < 1 << 32:
            raise EditError(f"{magic:#x} is not a valid extension magic (1..0xffffffff; "
                            "0 ends the extension area)")
        self.extensions.append(ExtensionRecord(magic, data, bytes(-len(data) % 8)))

    def delete_extension(self, magic: int) -> int:
        kept = [e for e in self.extensions if e.magic != magic]
        removed = len(self.extensions) - len(kept)
        self.extensions = kept
        return removed

    # --- layout and verification ----------------------------------------------

    def layout(self) -> bytes:
        """Header, extensions, end marker and backing file name, as QEMU places them."""
        area = b"".join(e.encode() for e in self.extensions) + END_MARKER
        new = bytes(self.header) + area
        if self.backing is not None and not self.backing_placed_by_user:
            self._store(self._span("backing_file_offset"), len(new))
            new = bytes(self.header) + area + self.backing
        if len(new) > self.image.cluster_size:
            raise EditError(f"the header, extensions and backing file name need {len(new)} "
                            f"bytes, more than the first cluster ({self.image.cluster_size})")
        if len(new) > self.image.file_size:
            raise EditError(f"the file ends at byte {self.image.file_size}, before the new "
                            f"header area does ({len(new)} bytes): a truncated image is not "
                            "extended by an edit")
        return new

    def verify(self, new: bytes) -> None:
        """Re-parse the new first cluster and check it says what the edit intended."""
        cluster = new + self.original[len(new):]
        parsed = Qcow2(KaitaiStream(BytesIO(cluster)))
        try:
            read_header(parsed)
            parsed._read()
            header = Header.from_parsed(parsed.header)
            area = getattr(parsed, "header_extensions", None)
            got = [] if area is None else [
                (int(e.magic), e._raw_data if hasattr(e, "_raw_data") else e.data)
                for e in area.extensions if e.magic != ExtensionType.end_of_extensions]
            backing = parsed.backing_file_name
        except PARSE_ERRORS as exc:
            raise EditError(f"the new header would not parse: {from_parse(parsed, exc)}") \
                from None
        except Qcow2Error as exc:
            raise EditError(f"the new header would not parse: {exc}") from None
        for name in HEADER_FIELD_IDS:
            if name != "magic" and "end" in parsed.header._debug.get(HEADER_FIELD_IDS[name], {}):
                if getattr(header, name) != self.get(name):
                    raise EditError(f"re-parsed {name} is {getattr(header, name)}, "
                                    f"not {self.get(name)}")
        if got != [(e.magic, e.data) for e in self.extensions]:
            raise EditError("re-parsed header extensions differ from the intended ones")
        if not self.backing_placed_by_user and self.backing is not None \
                and backing != self.backing:
            raise EditError("re-parsed backing file name differs from the original")

    def warnings(self) -> List[str]:
        """What about the result QEMU will object to (crafting such images is allowed)."""
        out = []
        if self.image.header.version >= 3:
            incompatible = self.get("incompatible_features")
            unknown = [b for b in range(64) if incompatible >> b & 1
                       and not KNOWN_INCOMPATIBLE_BITS >> b & 1]
            if unknown:
                out.append(f"qemu will refuse to open the image: unknown incompatible "
                           f"feature bits {unknown}")
            if incompatible & CORRUPT_BIT:
                out.append("qemu will refuse to write to the image: the corrupt bit is set")
        size, l1_size = self.get("size"), self.get("l1_size")
        covered = l1_size * self.image.cluster_size * self.image.qcow2.num_l2_entries
        if size > covered:
            out.append(f"qemu will refuse to open the image: the L1 table ({l1_size} "
                       f"entries) covers {covered} bytes, less than the size {size}")
        if size != self.image.header.size and self._has_bitmaps():
            out.append("the persistent bitmaps are sized for the old virtual size; qemu "
                       "will refuse the image until they are removed")
        seen = set()
        for e in self.extensions:
            kind = ExtensionType._value2member_map_.get(e.magic)
            if kind is not None and e.magic in seen:
                out.append(f"extension {e.magic:#x} appears more than once; qemu may "
                           "refuse the image")
            seen.add(e.magic)
            out += self._typed_warnings(e, kind.name if kind is not None else "")
        return out

    def _has_bitmaps(self) -> bool:
        try:
            return bool(self.image.bitmap_directory())
        except Qcow2Error:  # a bitmaps extension qemu refuses: warned about anyway
            return False

    def _typed_warnings(self, e: ExtensionRecord, kind: str) -> List[str]:
        """What qemu refuses in a bitmaps or encryption header pointer extension."""
        length = TYPED_LENGTHS.get(kind)
        if length is not None and len(e.data) != length:
            return [f"qemu will refuse to open the image: the {kind} extension "
                    f"{e.magic:#x} holds {len(e.data)} bytes, not {length}"]
        if kind == "full_disk_encryption" and self.get("crypt_method") != LUKS:
            return [f"qemu will refuse to open the image: extension {e.magic:#x} points "
                    "at an encryption header of an image not encrypted with LUKS"]
        return []


def write_in_place(path: Path, offset: int, old: bytes, new: bytes, force: bool,
                   what: str, override: str) -> None:
    """One write of new at offset of the file, under qemu's write lock (unless force;
    override says how to skip it), only if the file still holds old there: what was
    read when the edit began. Flushed to disk before it returns."""
    with open(path, "r+b") as f:
        fd = f.fileno()
        if not force:
            try:
                lock_for_writing(fd, override)
            except ImageLocked as exc:
                raise EditError(exc.problem) from None
        if os.pread(fd, len(old), offset) != old:
            raise EditError(f"{what}: the file changed while it was being edited")
        if os.pwrite(fd, new, offset) != len(new):
            raise EditError(f"{what}: short write at {offset:#x}")
        os.fsync(fd)


class Edit:
    """Open an image, change its first cluster, and write it back safely.

        with Edit(path) as edit:
            edit.cluster.set("size", 1 << 30)

    Leaving the block without an exception verifies and writes the result; the
    warnings about it are in edit.warnings afterwards.
    """

    def __init__(self, path: PathLike, force: bool = False) -> None:
        self.path = Path(path)
        self.force = force
        self.warnings: List[str] = []
        self.image: Optional[Image] = None

    def __enter__(self) -> "Edit":
        self.image = Image(self.path, lock=False)  # write_in_place takes the write lock
        try:
            self.cluster = FirstCluster(self.image)
        except BaseException:
            self.image.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.image is not None
        try:
            if exc_type is None:
                new = self.cluster.layout()
                self.cluster.verify(new)
                self.warnings = self.cluster.warnings()
                old = self.cluster.original[:len(new)]  # in the file: layout() saw to it
                if new != old:
                    write_in_place(self.path, 0, old, new, self.force, "the first cluster",
                                   "--force edits it anyway")
        finally:
            self.image.close()


def set_header_field(path: PathLike, name: str, value: int, force: bool = False) -> List[str]:
    """Set one header field; returns warnings about the result."""
    with Edit(path, force) as edit:
        edit.cluster.set(name, value)
    return edit.warnings


def set_feature_bit(path: PathLike, group: str, bit: int, force: bool = False) -> List[str]:
    """Set a bit of the incompatible, compatible or autoclear feature bitmask."""
    with Edit(path, force) as edit:
        edit.cluster.set_feature_bit(group, bit)
    return edit.warnings


def add_extension(path: PathLike, magic: int, data: bytes, force: bool = False) -> List[str]:
    """Append a header extension (kept before the end marker)."""
    with Edit(path, force) as edit:
        edit.cluster.add_extension(magic, data)
    return edit.warnings


class NoSuchExtension(EditError):
    def __init__(self, magic: int) -> None:
        super().__init__(f"no header extension with magic {magic:#x}")


def delete_extension(path: PathLike, magic: int, force: bool = False) -> List[str]:
    """Remove every header extension with this magic."""
    with Edit(path, force) as edit:
        if edit.cluster.delete_extension(magic) == 0:
            raise NoSuchExtension(magic)
    return edit.warnings

