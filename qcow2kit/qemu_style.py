"""How qemu-img prints: its JSON key order and layout, its human dumps, its sizes.

qemu builds its output as QDicts, which iterate in hash order: 512 buckets, bucket 0
first, and within a bucket the key inserted last first. Callers build dicts in the
order qemu inserts the keys (the order of the QAPI schema's members); the writers here
put them in qemu's iteration order.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

BUCKETS = 512
INDENT = "    "
SIZE_UNITS = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                "\r": "\\r", "\t": "\\t"}
REPLACEMENT = 0xFFFD
SECTOR = 512


def disk_size(size: int) -> int:
    """The virtual disk size qemu uses: the header's size in whole 512-byte sectors."""
    return size // SECTOR * SECTOR


def _bucket(key: str) -> int:
    """The QDict bucket of a key."""
    data = key.encode()
    value = 0x238F13AF * len(data) & 0xFFFFFFFF
    for i, byte in enumerate(data):
        value = value + (byte << (i * 5 % 24)) & 0xFFFFFFFF
    return (1103515243 * value + 12345 & 0xFFFFFFFF) % BUCKETS


class InOrder(Dict[str, Any]):
    """A dict the writers print in insertion order: qcow2kit's own data, not a QDict."""


def qdict_items(members: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """The members of a dict built in qemu's insertion order, in qemu's iteration
    order (an InOrder dict's in its own order)."""
    if isinstance(members, InOrder):
        return list(members.items())
    ranked = sorted(enumerate(members.items()), key=lambda e: (_bucket(e[1][0]), -e[0]))
    return [item for _, item in ranked]


# --- JSON ----------------------------------------------------------------------

def _noncharacter(cp: int) -> bool:
    return 0xFDD0 <= cp <= 0xFDEF or cp & 0xFFFE == 0xFFFE


def _escape(cp: int) -> str:
    if _noncharacter(cp):
        cp = REPLACEMENT
    if cp > 0xFFFF:
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04X}\\u{0xDC00 + (cp & 0x3FF):04X}"
    return f"\\u{cp:04X}"


def json_string(text: str) -> str:
    """A JSON string as qemu writes it: ASCII only, invalid UTF-8 (bytes kept as
    surrogate escapes) and noncharacters as U+FFFD."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    out = [JSON_ESCAPES.get(ch) or (ch if 0x20 <= ord(ch) < 0x7F else _escape(ord(ch)))
           for ch in text]
    return '"' + "".join(out) + '"'


def _container(opening: str, closing: str, members: List[str], depth: int) -> str:
    inner = "\n" + INDENT * (depth + 1)
    body = inner + ("," + inner).join(members) if members else ""
    return f"{opening}{body}\n{INDENT * depth}{closing}"


def to_json(value: Any, depth: int = 0) -> str:
    """value pretty-printed as qemu-img --output=json does (without the final newline)."""
    if isinstance(value, dict):
        members = [f"{json_string(k)}: {to_json(v, depth + 1)}" for k, v in qdict_items(value)]
        return _container("{", "}", members, depth)
    if isinstance(value, list):
        return _container("[", "]", [to_json(v, depth + 1) for v in value], depth)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json_string(value)
    if value is None:
        return "null"
    raise TypeError(f"no JSON form for {type(value).__name__}")


# --- human output -------------------------------------------------------------------

def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def dump_tree(value: Any, level: int) -> str:
    """A dict or list as qemu-img's human output dumps format-specific data: one
    "key: value" line per member (dashes in keys as spaces, list items as [i]),
    nested members indented by four spaces per level."""
    if isinstance(value, dict):
        items = [(k.replace("-", " "), v) for k, v in qdict_items(value)]
    else:
        items = [(f"[{i}]", v) for i, v in enumerate(value)]
    out = []
    for label, member in items:
        head = f"{INDENT * level}{label}:"
        if isinstance(member, (dict, list)):
            out.append(f"{head}\n{dump_tree(member, level + 1)}")
        else:
            out.append(f"{head} {_scalar(member)}\n")
    return "".join(out)


def size_to_str(value: int) -> str:
    """A size in bytes with three significant digits and a binary unit, as qemu
    prints it: the unit switches once the number would reach 1000."""
    exponent = math.frexp(value / (1000.0 / 1024.0))[1]
    unit = max(exponent - 1, 0) // 10
    return "%0.3g %sB" % (value / (1 << unit * 10), SIZE_UNITS[unit])


# --- C strings --------------------------------------------------------------------

def c_string(text: str, buffer: Optional[int] = None) -> str:
    """text as qemu holds it in a C string: up to the first NUL and, when copied into
    a buffer of that many bytes, cut to one byte less (a cut UTF-8 sequence is kept
    as surrogate escapes)."""
    text = text.split("\0", 1)[0]
    if buffer is None:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    return raw[:buffer - 1].decode("utf-8", "surrogateescape")


def byte_width(text: str) -> int:
    """Columns printf counts for text: its bytes."""
    return len(text.encode("utf-8", "surrogateescape"))


def ljust(text: str, width: int) -> str:
    """text padded on the right to width bytes, as printf's %-Ns."""
    return text + " " * max(0, width - byte_width(text))
