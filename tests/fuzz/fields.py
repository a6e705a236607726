"""The fields of a seed image, located with the generated parser's recorded positions.

Every structure the spec reaches is read on the seed, lazy instances included (the
positioned ones, those whose getter seeks). Each integer field, byte string and
8- or 16-byte table entry becomes a Field with its absolute offset and width, taken
from the parser's `_debug` records; nothing here knows the qcow2 layout. Large
arrays are sampled: their non-zero elements and a few others.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from kaitaistruct import KaitaiStruct

from qcow2kit.errors import PARSE_ERRORS
from qcow2kit.generated.qcow2 import Qcow2
from qcow2kit.image import open_image

ARRAY_HEAD = 16  # elements always kept from the start of an array
ARRAY_NONZERO = 256  # non-zero elements kept at most
ENTRY_WIDTHS = (8, 16)  # a structure this long is also mutated as one 64-bit entry

# the group a field belongs to, by the spec type that holds it
GROUPS = {
    "Header": "header", "IncompatibleFeatures": "header", "CompatibleFeatures": "header",
    "AutoclearFeatures": "header", "HeaderExtensionArea": "extensions",
    "HeaderExtension": "extensions", "StringExtension": "extensions",
    "FeatureNameTable": "feature_table", "FeatureName": "feature_table",
    "BitmapsExtension": "bitmaps", "BitmapDirectory": "bitmaps",
    "BitmapDirectoryEntry": "bitmaps", "BitmapTableEntry": "bitmaps",
    "FullDiskEncryptionExtension": "encryption", "LuksHeader": "encryption",
    "LuksKeySlot": "encryption", "L1Entry": "l1", "L2Table": "l2", "L2Entry": "l2",
    "RefcountTableEntry": "refcount", "RefcountBlock": "refcount",
    "Snapshot": "snapshots", "SnapshotExtraData": "snapshots", "Qcow2": "backing",
}


@dataclass(frozen=True)
class Field:
    """One mutable field of a seed: cls is its path with the indices left out."""

    cls: str
    path: str
    group: str
    offset: int
    width: int
    kind: str  # "int", "bytes" or "entry"


@dataclass
class SeedLayout:
    """What the mutators know about a seed: its fields by class and where its
    structures start (targets for offsets that point somewhere real)."""

    fields: Dict[str, List[Field]]
    targets: List[int]
    cluster_size: int
    size: int


def _positioned(cls: type) -> List[str]:
    """The instances of a generated class that read from a position (they seek)."""
    return [name for name, attr in vars(cls).items()
            if isinstance(attr, property) and "seek" in attr.fget.__code__.co_names]


def _in_snapshot(path: str) -> bool:
    return path.startswith("snapshots[")


def _group(obj: KaitaiStruct, field: str, path: str) -> str:
    if _in_snapshot(path):
        return "snapshots"
    if type(obj).__name__ == "Header" and field == "len_header":
        return "header_length"
    return GROUPS.get(type(obj).__name__, "other")


def _strip(path: str) -> str:
    out, depth = [], 0
    for ch in path:
        depth += ch == "["
        if depth == 0 or ch in "[]":
            out.append(ch)
        depth -= ch == "]"
    return "".join(out)


class _Walker:
    """Walks the parsed tree of one seed, collecting fields and structure starts."""

    def __init__(self, root: Qcow2, data: bytes) -> None:
        self.root = root
        self.data = data
        self.fields: List[Field] = []
        self.targets = {0}

    def _nonzero(self, start: int, end: int) -> bool:
        return any(self.data[start:end])

    def _keep(self, arr: List[dict], base: int) -> Iterator[int]:
        """Indices of the array elements to walk: the head, then non-zero ones."""
        kept = 0
        for i, info in enumerate(arr):
            if i < ARRAY_HEAD or i == len(arr) - 1:
                yield i
            elif kept < ARRAY_NONZERO and "end" in info and \
                    self._nonzero(base + info["start"], base + info["end"]):
                kept += 1
                yield i

    def walk(self, obj: KaitaiStruct, base: int, path: str) -> None:
        for name in _positioned(type(obj)):
            try:
                getattr(obj, name)
            except PARSE_ERRORS:
                pass
        for name, info in list(obj._debug.items()):
            if "start" not in info or "end" not in info:
                continue
            instance = name.startswith("_m_")
            label = f"{path}.{name[3:] if instance else name}".lstrip(".")
            at = 0 if instance else base  # positioned instances read the root stream
            value = getattr(obj, name, None)
            if instance:
                self.targets.add(info["start"])
            if isinstance(value, list) and "arr" in info:
                for i in self._keep(info["arr"], at):
                    elem = info["arr"][i]
                    if "end" in elem:
                        self._value(obj, name, value[i], at + elem["start"], at + elem["end"],
                                    f"{label}[{i}]", at)
            else:
                self._value(obj, name, value, at + info["start"], at + info["end"], label, at)

    def _value(self, obj: KaitaiStruct, name: str, value: Any, start: int, end: int,
               path: str, stream_base: int) -> None:
        cls, group = _strip(path), _group(obj, name, path)
        if isinstance(value, KaitaiStruct):
            if value._io is self.root._io:
                child_base = 0
            elif value._io is obj._io:
                child_base = stream_base
            else:
                child_base = start
            if end - start in ENTRY_WIDTHS:
                self.fields.append(Field(cls + ".entry", path + ".entry",
                                         "snapshots" if _in_snapshot(path)
                                         else GROUPS.get(type(value).__name__, group),
                                         start, 8, "entry"))
            self.walk(value, child_base, path)
        elif isinstance(value, (bytes, str)) and end > start:
            self.fields.append(Field(cls, path, group, start, end - start, "bytes"))
        elif isinstance(value, (int, enum.Enum)) and not isinstance(value, bool) \
                and end - start in (1, 2, 4, 8):  # bit fields are left out below
            number = value.value if isinstance(value, enum.Enum) else value
            if int.from_bytes(self.data[start:end], "big") == number:  # not a bit field
                    self.fields.append(Field(cls, path, group, start, end - start, "int"))


def layout(path: Path) -> SeedLayout:
    """Parse a seed completely and list its fields."""
    data = path.read_bytes()
    with open_image(path) as image:
        walker = _Walker(image.qcow2, data)
        walker.walk(image.qcow2, 0, "")
        cluster_size = image.cluster_size
    by_class: Dict[str, List[Field]] = {}
    for f in walker.fields:
        by_class.setdefault(f.cls, []).append(f)
    return SeedLayout(by_class, sorted(walker.targets), cluster_size, len(data))


def groups(seed: SeedLayout) -> Dict[str, List[str]]:
    """The field classes of a seed by group."""
    out: Dict[str, List[str]] = {}
    for cls, fields in sorted(seed.fields.items()):
        out.setdefault(fields[0].group, []).append(cls)
    return out


def summary(seed: SeedLayout) -> List[Tuple[str, int]]:
    """(group, number of fields) for a seed, for reports."""
    counts: Dict[str, int] = {}
    for fields in seed.fields.values():
        counts[fields[0].group] = counts.get(fields[0].group, 0) + len(fields)
    return sorted(counts.items())
