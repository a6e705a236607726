"""The header dump in the exact text and JSON formats of qemu's iotests qcow2.py.

qemu's own tests compare this output byte for byte, so the field names, their order
and the number formats are a contract: `dump-header` is the header, an empty line,
then the extensions; `dump-header-exts` is only the extensions.
"""
from __future__ import annotations

import io
import struct

from .errors import Qcow2Error
from .image import TYPED_LENGTHS, Bitmap, ExtensionType, Header, Image
from .names import BITMAP_FLAGS
from .records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Tuple

    Format = Callable[[int], str]


def _hex(value: int) -> str:
    return f"{value:#x}"


def _bit_list(value: int) -> str:
    return str([bit for bit in range(64) if value >> bit & 1])


# (name as qcow2.py prints it, how the value is printed)
HEADER_FIELDS: List[Tuple[str, Format]] = [
    ("magic", _hex),
    ("version", str),
    ("backing_file_offset", _hex),
    ("backing_file_size", _hex),
    ("cluster_bits", str),
    ("size", str),
    ("crypt_method", str),
    ("l1_size", str),
    ("l1_table_offset", _hex),
    ("refcount_table_offset", _hex),
    ("refcount_table_clusters", str),
    ("nb_snapshots", str),
    ("snapshot_offset", _hex),
    ("incompatible_features", _bit_list),
    ("compatible_features", _bit_list),
    ("autoclear_features", _bit_list),
    ("refcount_order", str),
    ("header_length", str),
]

# qcow2.py's display name of each extension kind (by the spec's enum name)
EXTENSION_NAMES: Dict[str, str] = {
    "backing_file_format": "Backing format",
    "feature_name_table": "Feature table",
    "full_disk_encryption": "Crypto header",
    "bitmaps": "Bitmaps",
    "external_data_file": "Data file",
}

BITMAP_FLAG_NAMES = dict(enumerate(BITMAP_FLAGS[:2]))  # the flags qcow2.py names

# Python's string.printable, written out (importing the string module costs the drop-in
# about what a dump's own work does): visible ASCII, space and the whitespace characters
_PRINTABLE = frozenset(range(0x20, 0x7F)) | frozenset(b"\t\n\r\x0b\x0c")


def _line(name: str, value: object) -> str:
    return f"{name:<25} {value}"


class Ext(Record):
    """A header extension as qcow2.py reads it."""

    offset: int
    magic: int
    length: int
    data: bytes  # the data (of a bitmaps extension: the bytes of its fields)

    @property
    def kind(self) -> str:
        """The spec's name of the extension type; "" for an unknown magic."""
        member = ExtensionType._value2member_map_.get(self.magic)
        return member.name if member is not None else ""

    @property
    def bitmaps_fields(self) -> Tuple[int, int, int, int]:
        """nb_bitmaps, reserved32, bitmap_directory_size and _offset."""
        return struct.unpack(">IIQQ", self.data)


def extensions(image: Image) -> List[Ext]:
    """The header extensions in the order qcow2.py walks them, from header_length to
    the end marker, the backing file name or the end of the first cluster: a bitmaps
    extension spans the 24 bytes of its fields whatever its length (so one of another
    length shifts the walk as it does in qcow2.py), any other its length padded to 8.
    Data is read up to the end of the first cluster at most."""
    h, cs = image.header, image.cluster_size
    end = min(cs, h.backing_file_offset) if h.backing_file_offset else cs
    bitmaps = ExtensionType.bitmaps.value
    out, pos = [], h.header_length
    while pos < end:
        magic, length = struct.unpack(">II", image.read(pos, 8))
        if magic == 0:
            break
        size = TYPED_LENGTHS["bitmaps"] if magic == bitmaps else -(-length // 8) * 8
        wanted = size if magic == bitmaps else min(length, max(0, cs - pos - 8))
        out.append(Ext(pos, magic, length, image.read(pos + 8, wanted)))
        pos += 8 + size
    return out


def _ext_name(ext: Ext) -> str:
    return EXTENSION_NAMES.get(ext.kind, "<unknown>")


def _bitmaps_of(image: Image, ext: Ext) -> List[Bitmap]:
    """The bitmap directory a bitmaps extension points at: the image's own when it is
    the extension the image uses; none when it counts none."""
    if ext.bitmaps_fields[0] == 0:
        return []
    used = image.extension("bitmaps")
    if used is not None and used.offset == ext.offset and used.length == ext.length:
        return image.bitmaps
    raise Qcow2Error("header extension bitmaps", ext.offset,
                     "the bitmaps of an extension the image does not use cannot be shown")


def _data_str(data: bytes) -> str:
    """The data quoted when every byte is printable ASCII, else <binary>."""
    if all(b in _PRINTABLE for b in data):
        return f"'{data.decode('ascii')}'"
    return "<binary>"


def _bitmap_flags(flags: int) -> str:
    names = [BITMAP_FLAG_NAMES.get(bit, f"bit-{bit}") for bit in range(64) if flags >> bit & 1]
    return f"{flags:#x} ({names})"


def _check_ascii(bitmap: Bitmap) -> None:
    if not bitmap.name.isascii():
        raise Qcow2Error(f"bitmap directory entry {bitmap.name!r}", bitmap.offset,
                         "the name is not ASCII, which the qcow2.py dump format cannot show")


def header_values(header: Header) -> Dict[str, int]:
    return {name: getattr(header, name) for name, _ in HEADER_FIELDS}


def header_text(image: Image) -> List[str]:
    values = header_values(image.header)
    return [_line(name, fmt(values[name])) for name, fmt in HEADER_FIELDS]


def _bitmap_text(image: Image, bitmap: Bitmap) -> List[str]:
    lines = [
        _line("Bitmap name", bitmap.name),
        _line("bitmap_table_offset", _hex(bitmap.table_offset)),
        _line("bitmap_table_size", bitmap.table_size),
        _line("flags", _bitmap_flags(bitmap.flags)),
        _line("type", bitmap.type),
        _line("granularity_bits", bitmap.granularity_bits),
        _line("name_size", bitmap.name_size),
        _line("extra_data_size", bitmap.extra_data_size),
        f"{'Bitmap table':<14} {'type':<15} {'size':<12} offset",
    ]
    for i, entry in enumerate(bitmap.table):
        size = image.cluster_size if entry.kind == "serialized" else 0
        lines.append(f"{i:<14} {entry.kind:<15} {size:<12} {entry.offset}")
    return lines


def extensions_text(image: Image) -> List[str]:
    lines: List[str] = []
    for ext in extensions(image):
        lines += ["Header extension:",
                  _line("magic", f"{ext.magic:#x} ({_ext_name(ext)})"),
                  _line("length", ext.length)]
        if ext.kind == "bitmaps":
            count, reserved, size, offset = ext.bitmaps_fields
            lines += [_line("nb_bitmaps", count),
                      _line("reserved32", reserved),
                      _line("bitmap_directory_size", _hex(size)),
                      _line("bitmap_directory_offset", _hex(offset))]
            for bitmap in _bitmaps_of(image, ext):
                _check_ascii(bitmap)
                lines += [""] + _bitmap_text(image, bitmap)
        else:
            lines.append(_line("data", _data_str(ext.data)))
        lines.append("")
    return lines


def _bitmap_json(bitmap: Bitmap) -> Dict[str, Any]:
    _check_ascii(bitmap)
    return {
        "name": bitmap.name,
        "bitmap_table_offset": bitmap.table_offset,
        "bitmap_table_size": bitmap.table_size,
        "flags": bitmap.flags,
        "type": bitmap.type,
        "granularity_bits": bitmap.granularity_bits,
        "name_size": bitmap.name_size,
        "extra_data_size": bitmap.extra_data_size,
        "bitmap_table": [{"type": t.kind, "offset": t.offset, "reserved": t.reserved}
                         for t in bitmap.table],
    }


def extensions_json(image: Image) -> List[Dict[str, Any]]:
    out = []
    for ext in extensions(image):
        item: Dict[str, Any] = {"name": _ext_name(ext), "magic": ext.magic,
                                "length": ext.length}
        if ext.kind == "bitmaps":
            count, reserved, size, offset = ext.bitmaps_fields
            item["data"] = {
                "nb_bitmaps": count,
                "reserved32": reserved,
                "bitmap_directory_size": size,
                "bitmap_directory_offset": offset,
                "bitmap_directory": [_bitmap_json(b) for b in _bitmaps_of(image, ext)],
            }
        else:
            item["data_str"] = _data_str(ext.data)
        out.append(item)
    return out


def _json(value: Any) -> str:
    """json.dumps(value, indent=4), written piece by piece: the pieces of a million-entry
    bitmap table would take a gigabyte as one list."""
    import json  # here: the text dump (and qcow2.py's drop-in) starts without it

    out = io.StringIO()
    for chunk in json.JSONEncoder(indent=4).iterencode(value):
        out.write(chunk)
    return out.getvalue()


def render(image: Image, exts_only: bool = False, as_json: bool = False) -> str:
    """The whole output of `qcow2.py IMAGE dump-header[-exts] [-j]`, newline-terminated."""
    parts: List[str] = []
    if not exts_only:
        if as_json:
            parts += [_json(header_values(image.header)), ""]
        else:
            parts += header_text(image) + [""]
    if as_json:
        parts.append(_json(extensions_json(image)))
    else:
        parts += extensions_text(image)
    return "".join(line + "\n" for line in parts)
