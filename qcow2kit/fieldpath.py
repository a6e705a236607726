"""Any field of the spec by name: resolve a path such as
`l1_table[3].l2_table[17].ofs_host_cluster` on the generated parser, with the offset
and size the parser's debug mode records for it.

A path is names and indexes: `.name` (a qcow2.ksy attribute id, or its qcow2.txt name
where the spec has `-orig-id`), `[n]` (an array element, or an entry of a table the
spec reads in pieces: `l1_table[9000]` is `l1_table.pieces[1].entries[808]`), and
`["name"]` (a bitmap by name). A few names stand for spec paths: `extensions` for
`header_extensions.extensions`, `bitmaps` for the bitmap directory entries of the
bitmaps extension, `refcounts[n]` for the refcount of host cluster n (through the
refcount table) and `table` for a bitmap's `bitmap_table`.

Offsets: a field's recorded start is relative to the stream of the object holding it;
objects read through `io: _root._io` with `size:` get a stream of their own that
starts at their recorded (absolute) start, objects read without `size:` share their
parent's stream. Each node carries the absolute start of its object's stream.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple, Union

from kaitaistruct import KaitaiStruct

from . import fieldlimits
from .errors import Qcow2Error
from .generated.fields import TYPES
from .image import ExtensionType, Image, enum_name

Key = Union[int, str]
Step = Tuple[str, Key]  # ("name", id) or ("index", int or str)

# the types the spec reads in pieces of len_table_piece bytes, and the array of a piece
PIECED = {"l1_table": "entries", "l2_table": "entries", "refcount_table": "entries",
          "bitmap_table": "entries", "refcount_block": "refcounts"}
ALIASES = {"qcow2": {"extensions": "header_extensions.extensions"},
           "bitmap_directory_entry": {"table": "bitmap_table"}}
VIRTUAL = {"qcow2": ("refcounts", "bitmaps")}  # names resolved by this module
_CLASS_TYPES = {"".join(p.capitalize() for p in t.split("_")): t for t in TYPES}
_TOKEN = re.compile(r"""\s*(?:\.?([A-Za-z_][A-Za-z0-9_]*)|\[\s*(0[xX][0-9a-fA-F]+|\d+)\s*\]
                    |\[\s*"((?:[^"\\]|\\.)*)"\s*\]|\[\s*'((?:[^'\\]|\\.)*)'\s*\])""", re.X)


class PathError(Qcow2Error):
    """A path that does not name a field of this image (or a value set refuses)."""

    def __init__(self, where: str, offset: Optional[int], problem: str) -> None:
        super().__init__(where or "path", offset, problem)


class BadArgument(PathError):
    """A path or value that names nothing in the spec, whatever the image: a usage
    error (an unknown name, with the valid ones; a malformed path; not a number)."""


def parse(text: str) -> List[Step]:
    """The steps of a path; PathError for a malformed one."""
    steps: List[Step] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos or (m.group(1) and steps and
                                           not text[m.start():].lstrip().startswith(".")):
            raise BadArgument(text, None, f"malformed path at character {pos + 1} "
                            "(names, [n] and [\"name\"], e.g. l1_table[3].l2_table[17])")
        name, number, dq, sq = m.groups()
        if name is not None:
            steps.append(("name", name))
        elif number is not None:
            steps.append(("index", int(number, 0)))
        else:
            raw = dq if dq is not None else sq
            steps.append(("index", re.sub(r"\\(.)", r"\1", raw)))
        pos = m.end()
    if not steps or steps[0][0] != "name":
        raise BadArgument(text, None, "a path starts with a name, e.g. header.size")
    return steps


def type_id(obj: KaitaiStruct) -> str:
    return _CLASS_TYPES[type(obj).__name__]


@dataclass
class Node:
    """A resolved path: its value as the parser holds it and where it lies.

    offset and size are absent for values computed from other fields; a sub-byte
    array element has bits = (shift, width) within the byte at offset.
    """

    path: str
    spec_path: str
    value: Any
    offset: Optional[int] = None
    size: Optional[int] = None
    bits: Optional[Tuple[int, int]] = None
    owner: Optional[KaitaiStruct] = None  # the object holding the attribute
    attr: Optional[str] = None  # its attribute id (None for an array element)
    base: int = 0  # absolute start of the stream of value (a struct) or of owner
    parent_path: str = ""  # the path of the struct or array holding it

    @property
    def type(self) -> Optional[str]:
        return type_id(self.value) if isinstance(self.value, KaitaiStruct) else None


def int_fields(obj: KaitaiStruct) -> Optional[List[str]]:
    """The seq fields of obj when they are all integers of whole bytes (an entry or
    a bitmask, which reads as one integer), else None."""
    attrs = {a: info for a, info in TYPES[type_id(obj)].items() if info.get("seq")}
    if attrs and all((info.get("type") or "").startswith("u") for info in attrs.values()):
        return list(attrs)
    return None


def _spec_name(t: str, name: str) -> Optional[str]:
    attrs = TYPES[t]
    if name in attrs:
        return name
    return next((a for a, info in attrs.items() if info.get("orig") == name), None)


def names(obj: Any) -> List[str]:
    """The names a path can take after obj: its attributes, aliases and indexes."""
    if isinstance(obj, KaitaiStruct):
        t = type_id(obj)
        return [*TYPES[t], *ALIASES.get(t, {}), *VIRTUAL.get(t, ()),
                *(info["orig"] for info in TYPES[t].values() if info.get("orig"))]
    return []


class Resolver:
    """Resolves paths on an image's parser (or on another parse of the same layout)."""

    def __init__(self, image: Image, root: Optional[KaitaiStruct] = None) -> None:
        self.image = image
        self.root = image.qcow2 if root is None else root

    def resolve(self, text: str) -> Node:
        steps = parse(text)
        node = Node("", "", self.root, 0, None)
        for kind, key in steps:
            node = self.child(node, str(key)) if kind == "name" else self._index(node, key)
        if isinstance(node.value, _Refcounts):
            raise BadArgument(node.path, None, "the refcount of cluster n is refcounts[n]")
        node.path = text.strip()
        return node

    # --- steps -----------------------------------------------------------------

    def _evaluate(self, node: Node, obj: KaitaiStruct, attr: str) -> Any:
        with self.image.parsing(obj, node.base, node.spec_path):
            return getattr(obj, attr, None)  # a seq field whose `if` is false: absent

    def child(self, node: Node, name: str) -> Node:
        obj = node.value
        where = node.path or "image"
        if not isinstance(obj, KaitaiStruct):
            if obj is None:
                raise PathError(where, node.offset, "absent in this image")
            raise BadArgument(where, node.offset, f"{_describe(obj)} has no field {name!r}")
        t = type_id(obj)
        alias = ALIASES.get(t, {}).get(name)
        if alias is not None:
            parent = node.path
            for part in alias.split("."):
                node = self.child(node, part)
            node.path = _join(parent, name)
            return node
        if name in VIRTUAL.get(t, ()):
            return self._virtual(node, name)
        attr = _spec_name(t, name)
        if attr is None:
            valid = ", ".join(dict.fromkeys(names(obj)))
            raise BadArgument(where, node.offset, f"no field {name!r} in {t}; valid: {valid}")
        info = TYPES[t][attr]
        fieldlimits.check(obj, t, attr)
        value = self._evaluate(node, obj, attr)
        key = attr if info.get("seq") else f"_m_{attr}"
        debug = obj._debug.get(key, {})
        base = 0 if info.get("root_io") else node.base
        start = base + debug["start"] if "start" in debug and not info.get("value") else None
        offset = size = None
        if start is not None and (info.get("seq") or debug.get("end") != debug["start"]):
            offset = start  # (an instance that reads no bytes, subclusters, has no place)
            size = debug["end"] - debug["start"] if "end" in debug else None
        child_base = base
        if isinstance(value, KaitaiStruct):
            child_base = self._stream_base(obj, value, base, start)
        elif isinstance(value, list):
            child_base = base  # elements: positions in the owner's stream (arr)
        return Node(_join(node.path, name), _join(node.spec_path, attr), value, offset, size,
                    owner=obj, attr=attr, base=child_base, parent_path=node.path)

    def _stream_base(self, owner: KaitaiStruct, value: KaitaiStruct, base: int,
                     offset: Optional[int]) -> int:
        if value._io is self.root._io:
            return 0
        if value._io is owner._io:
            return base
        assert offset is not None, "a struct in a stream of its own has a recorded start"
        return offset

    def element(self, node: Node, i: int, path: str, spec_path: str) -> Node:
        items = node.value
        if not 0 <= i < len(items):
            raise PathError(node.path, node.offset,
                            f"index {i} is out of range ({len(items)} items)")
        owner, attr = node.owner, node.attr
        info = TYPES[type_id(owner)][attr] if owner is not None and attr else {}
        key = attr if info.get("seq") else f"_m_{attr}"
        arr = owner._debug.get(key, {}).get("arr", []) if owner is not None else []
        value = items[i]
        offset = size = bits = None
        typ = info.get("type") or ""
        if typ.startswith("b") and typ[1:].isdigit():  # bit-sized: the spec's bit-endian le
            width = int(typ[1:])
            offset, bits, size = node.base + i * width // 8, (i * width % 8, width), 1
        elif i < len(arr) and arr[i].get("end", arr[i]["start"]) > arr[i]["start"]:
            offset = node.base + arr[i]["start"]
            size = arr[i]["end"] - arr[i]["start"]
        base = node.base
        if isinstance(value, KaitaiStruct):
            base = self._stream_base(owner, value, node.base, offset)
        return Node(path, spec_path, value, offset, size, bits, owner, None, base, node.path)

    def _index(self, node: Node, key: Key) -> Node:
        obj = node.value
        path = f"{node.path}[{key!r}]" if isinstance(key, str) else f"{node.path}[{key}]"
        if isinstance(obj, _Refcounts):
            if not isinstance(key, int):
                raise BadArgument(node.path, None, "refcounts[n]: n is a host cluster number")
            return self.refcount(node, key, path)
        if isinstance(obj, KaitaiStruct) and type_id(obj) in PIECED:
            if not isinstance(key, int):
                raise BadArgument(node.path, node.offset, "a table is indexed by number")
            return self.table_entry(node, key, path)
        if isinstance(obj, list):
            if isinstance(key, str):
                return self._by_name(node, key, path)
            return self.element(node, key, path, f"{node.spec_path}[{key}]")
        if obj is None:
            raise PathError(node.path, node.offset, "absent in this image")
        raise BadArgument(node.path, node.offset, f"{_describe(obj)} has no elements")

    def table_entry(self, node: Node, i: int, path: str) -> Node:
        """Entry i of a table read in pieces."""
        t = type_id(node.value)
        table = node.value
        bits = self.entry_bits(t)
        count = table._io.size() * 8 // bits
        if not 0 <= i < count:
            raise PathError(node.path, node.offset,
                            f"index {i} is out of range ({count} entries)")
        per_piece = self.root.len_table_piece * 8 // bits
        piece = self.child(node, "pieces")
        piece = self.element(piece, i // per_piece, "", f"{piece.spec_path}[{i // per_piece}]")
        array = PIECED[t]
        if array == "refcounts":
            array = f"refcounts_{self.root.header.refcount_bits}"
        entries = self.child(piece, array)
        j = i % per_piece
        return self.element(entries, j, path, f"{entries.spec_path}[{j}]")

    def entry_bits(self, t: str) -> int:
        if t == "l2_table":
            return self.root.len_l2_entry * 8
        if t == "refcount_block":
            return self.root.header.refcount_bits
        return 64

    def _by_name(self, node: Node, name: str, path: str) -> Node:
        items = node.value
        for i, item in enumerate(items):
            if isinstance(item, KaitaiStruct) and isinstance(getattr(item, "name", None), bytes) \
                    and item.name == name.encode("utf-8", "surrogateescape"):
                return self.element(node, i, path, f"{node.spec_path}[{i}]")
        raise PathError(node.path, node.offset, f"no entry named {name!r}")

    def _virtual(self, node: Node, name: str) -> Node:
        if name == "bitmaps":
            return self._bitmaps(node)
        return Node(_join(node.path, name), node.spec_path, _Refcounts(), None, None,
                    base=node.base)

    def _bitmaps(self, node: Node) -> Node:
        """The bitmap directory entries of the bitmaps extension (the last, as QEMU)."""
        exts = self.child(node, "header_extensions")
        if exts.value is None:
            raise PathError("bitmaps", None, "the image has no header extensions")
        exts = self.child(exts, "extensions")
        found = None
        for i, ext in enumerate(exts.value):
            if ext.magic == ExtensionType.bitmaps:
                found = i
        if found is None:
            raise PathError("bitmaps", None, "the image has no bitmaps extension")
        ext = self.element(exts, found, "", f"{exts.spec_path}[{found}]")
        data = self.child(ext, "data")
        if not isinstance(data.value, KaitaiStruct):
            raise PathError(f"extensions[{found}]", ext.offset,
                            "the bitmaps extension has the wrong length (QEMU refuses it)")
        directory = self.child(self.child(data, "bitmap_directory"), "entries")
        directory.path = "bitmaps"
        return directory

    def refcount(self, node: Node, cluster: int, path: str) -> Node:
        per_block = self.root.num_refcount_block_entries
        rt = self.child(Node("", "", self.root, 0, None), "refcount_table")
        covered = rt.value._io.size() // 8 * per_block
        if not 0 <= cluster < covered:
            raise PathError(node.path, None, f"host cluster {cluster} is out of range (the "
                            f"refcount table covers {covered} clusters)")
        entry = self.table_entry(rt, cluster // per_block,
                                  f"refcount_table[{cluster // per_block}]")
        block = self.child(entry, "refcount_block")
        if block.value is None:
            raise PathError(entry.path, entry.offset,
                            f"no refcount block for host cluster {cluster}")
        return self.table_entry(block, cluster % per_block, path)


class _Refcounts:
    """refcounts: the refcount of each host cluster, through the refcount table."""

    def __repr__(self) -> str:
        return "refcounts"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(value: Any) -> str:
    if value is None:
        return "an absent value"
    if isinstance(value, KaitaiStruct):
        return type_id(value)
    return f"the value {value!r}"


# --- what get prints ----------------------------------------------------------------

def attributes(resolver: Resolver, node: Node) -> Iterator[Node]:
    """The nodes of a struct's attributes (seq fields, then instances), or of a
    pieced table's entries, or of an array's elements."""
    value = node.value
    if isinstance(value, KaitaiStruct) and type_id(value) in PIECED:
        count = value._io.size() * 8 // resolver.entry_bits(type_id(value))
        for i in range(count):
            yield resolver.table_entry(node, i, f"{node.path}[{i}]")
    elif isinstance(value, KaitaiStruct):
        for attr in TYPES[type_id(value)]:
            try:
                yield resolver.child(node, attr)
            except Qcow2Error as exc:
                yield Node(_join(node.path, attr), _join(node.spec_path, attr), exc)
    elif isinstance(value, list):
        for i in range(len(value)):
            yield resolver.element(node, i, f"{node.path}[{i}]", f"{node.spec_path}[{i}]")


def _is_part(node: Node) -> bool:
    """Whether the node is read with its owner (a seq field, an array element),
    not a table of its own placed elsewhere."""
    if node.attr is None or node.owner is None:
        return True
    return bool(TYPES[type_id(node.owner)][node.attr].get("seq"))


def to_json(resolver: Resolver, node: Node) -> Any:
    """The node's value as JSON: structs as objects of their fields, tables read
    elsewhere as their offset and size, bytes as hex, enums by name."""
    value = node.value
    if isinstance(value, Qcow2Error):
        return {"error": str(value)}
    if isinstance(value, (KaitaiStruct, list)):
        if isinstance(value, KaitaiStruct) and type_id(value) in PIECED \
                or isinstance(value, list):
            return [to_json(resolver, n) for n in attributes(resolver, node)]
        out = {}
        for child in attributes(resolver, node):
            name = child.spec_path.rsplit(".", 1)[-1]
            if isinstance(child.value, (KaitaiStruct, list)) and not _is_part(child):
                out[name] = {"offset": child.offset, "size": child.size}
            else:
                out[name] = to_json(resolver, child)
        return out
    return scalar_json(value)


def scalar_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        name = enum_name(value)
        return name if name is not None else int(value)
    raise TypeError(f"unexpected value {value!r}")


def scalar_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Qcow2Error):
        return f"<{value}>"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        name = enum_name(value)
        if name is not None:
            return f"{name} ({int(value)})"
        return f"{int(value)} ({int(value):#x})" if value > 9 else str(int(value))
    if isinstance(value, bytes):
        if all(32 <= b < 127 for b in value):
            return f'"{value.decode()}"'
        return value.hex() if len(value) <= 64 else f"{value[:64].hex()}... ({len(value)} bytes)"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, KaitaiStruct):
        return type_id(value)
    if isinstance(value, list):
        return f"[{len(value)} items]"
    return repr(value)


def where(node: Node) -> Tuple[str, str]:
    """The node's offset and size columns ('-' for a computed value)."""
    if node.offset is None:
        return "-", "-"
    if node.bits is not None:
        shift, width = node.bits
        return f"{node.offset:#x}", f"bits {shift}..{shift + width - 1}"
    return f"{node.offset:#x}", "-" if node.size is None else str(node.size)


def text_lines(resolver: Resolver, node: Node) -> List[str]:
    """One line for a value, or a heading and one line per field or entry for a
    struct or table: name, offset, size, value."""
    offset, size = where(node)
    if not isinstance(node.value, (KaitaiStruct, list)):
        return [f"{node.path}  {offset}  {size}  {scalar_text(node.value)}"]
    kind = node.type or "array"
    lines = [f"{node.path}: {kind}" + ("" if node.offset is None
                                       else f" at {offset}, {size} bytes")]
    rows = []
    for child in attributes(resolver, node):
        name = child.path[len(node.path):].lstrip(".")
        o, s = where(child)
        rows.append((name, o, s, _summary(resolver, child)))
    widths = [max((len(r[k]) for r in rows), default=0) for k in range(3)]
    for name, o, s, v in rows:
        lines.append(f"  {name:<{widths[0]}}  {o:>{widths[1]}}  {s:>{widths[2]}}  {v}")
    return lines


def _summary(resolver: Resolver, node: Node) -> str:
    """A value in one line; an entry made of integers as the hex of its bytes."""
    value = node.value
    if isinstance(value, KaitaiStruct) and node.offset is not None and node.size \
            and int_fields(value) is not None:
        raw = resolver.image.read(node.offset, node.size)
        return f"{int.from_bytes(raw, 'big'):#0{2 * len(raw) + 2}x} {type_id(value)}"
    return scalar_text(value)


def render_text(resolver: Resolver, nodes: List[Node]) -> str:
    """get's text: the lines of each node in turn."""
    return "".join(line + "\n" for n in nodes for line in text_lines(resolver, n))


def render_json(resolver: Resolver, nodes: List[Node]) -> str:
    """get's JSON: per node its path, spec path, offset, size (bits for a sub-byte
    field) and value."""
    return json.dumps([{"path": n.path, "spec_path": n.spec_path, "offset": n.offset,
                        "size": n.size, **({"bits": list(n.bits)} if n.bits else {}),
                        "value": to_json(resolver, n)} for n in nodes], indent=2) + "\n"


def completions(resolver: Resolver, incomplete: str) -> List[str]:
    """The paths that extend incomplete by one name (for shell completion)."""
    head, _, partial = incomplete.rpartition(".")
    if not head:
        node, prefix = Node("", "", resolver.root), ""
    else:
        node, prefix = resolver.resolve(head), f"{head}."
    if isinstance(node.value, (list, _Refcounts)) or (
            isinstance(node.value, KaitaiStruct) and type_id(node.value) in PIECED):
        return [f"{head}[0]"] if not partial else []
    return [prefix + n for n in dict.fromkeys(names(node.value)) if n.startswith(partial)]
