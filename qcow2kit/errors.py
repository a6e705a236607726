"""One error type for every bad input, and the locator that names where parsing failed."""
from __future__ import annotations

import kaitaistruct as ks

from .records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Tuple


class Qcow2Error(Exception):
    """A structure of the image cannot be read or used.

    ``str()`` gives one line that names the structure and its offset in the file.
    """

    def __init__(self, structure: str, offset: Optional[int], problem: str) -> None:
        self.structure = structure
        self.offset = offset
        self.problem = problem
        where = f" at offset {offset:#x}" if offset is not None else ""
        super().__init__(f"{structure}{where}: {problem}")


def _open_field(obj: Any) -> Optional[Tuple[str, dict]]:
    """The field of obj whose parsing started and did not end, if any."""
    debug = getattr(obj, "_debug", None)
    if not debug:
        return None
    for name, info in reversed(list(debug.items())):
        if "start" in info and "end" not in info:
            return name, info
    return None


def _child(obj: Any, name: str, info: dict) -> Tuple[Any, str, int]:
    """The partly parsed value of field name, its label suffix and its start."""
    value = getattr(obj, name, None)
    label = name[3:] if name.startswith("_m_") else name
    start = info["start"]
    arr = info.get("arr")
    if arr is not None and isinstance(value, list) and value:
        index = len(value) - 1
        start = arr[index]["start"]
        return value[index], f"{label}[{index}]", start
    return value, label, start


class Location(Record):
    """Where parsing failed: the dotted field path and its absolute offset."""

    path: str
    offset: int
    in_file: bool  # the field is read from the file itself, not from a sized substream


def locate(root: ks.KaitaiStruct, exc: Optional[BaseException] = None,
           start: Optional[ks.KaitaiStruct] = None, base: int = 0,
           path: str = "") -> Location:
    """Follow the open fields down to the one that failed.

    start is the object whose field (or lazy instance) was being read, base the
    absolute offset of its stream and path its name; by default the root. A failed
    `valid` check closes its field before raising, so its seq index is taken from
    the exception.
    """
    obj = root if start is None else start
    names = [path] if path else []
    offset = base
    while True:
        found = _open_field(obj)
        if found is None:
            break
        name, info = found
        value, label, field_start = _child(obj, name, info)
        names.append(label)
        # Positioned instances (_m_*) all read from the root stream in qcow2.ksy.
        offset = field_start if name.startswith("_m_") else base + field_start
        if not isinstance(value, ks.KaitaiStruct):
            return Location(".".join(names), offset, obj._io is root._io or name.startswith("_m_"))
        base = 0 if value._io is root._io else (base if value._io is obj._io else offset)
        obj = value
    src = getattr(exc, "src_path", "") or ""
    if "/seq/" in src and hasattr(obj, "SEQ_FIELDS"):
        field = obj.SEQ_FIELDS[int(src.rsplit("/", 1)[1])]
        names.append(field)
        offset = base + obj._debug[field]["start"]
    return Location(".".join(names) or "image", offset, obj._io is root._io)


def describe(exc: BaseException, in_file: bool = True) -> str:
    """What went wrong, in words, for a parser exception."""
    if isinstance(exc, ks.ValidationNotEqualError):
        return f"expected {exc.expected!r}, found {exc.actual!r}"
    if isinstance(exc, ks.ValidationNotAnyOfError):
        return f"{exc.actual} is not an allowed value"
    if isinstance(exc, ks.ValidationLessThanError):
        return f"{exc.actual} is below the minimum {exc.min}"
    if isinstance(exc, ks.ValidationGreaterThanError):
        return f"{exc.actual} is above the maximum {exc.max}"
    if isinstance(exc, (EOFError, ks.EndOfStreamError)):
        return ("runs past the end of the file" if in_file
                else "runs past the end of the structure that contains it")
    if isinstance(exc, UnicodeDecodeError):
        return "is not valid UTF-8 text"
    if isinstance(exc, ks.KaitaiStructError):
        return str(exc)
    if isinstance(exc, (OverflowError, ValueError)):  # a seek or size beyond 2^63
        return "an offset or size larger than any file"
    return f"{type(exc).__name__}: {exc}"


PARSE_ERRORS = (ks.KaitaiStructError, EOFError, UnicodeDecodeError, ValueError,
                OverflowError)


def from_parse(root: ks.KaitaiStruct, exc: BaseException,
               start: Optional[ks.KaitaiStruct] = None, base: int = 0,
               path: str = "") -> Qcow2Error:
    """A Qcow2Error for an exception raised while parsing below start (or root)."""
    where = locate(root, exc, start, base, path)
    return Qcow2Error(where.path, where.offset, describe(exc, where.in_file))
