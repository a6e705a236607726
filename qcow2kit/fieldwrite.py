"""`set`: write one fixed-size field anywhere in an image, as the edits write.

The field is found by its path (fieldpath.py) at the offset the parser's debug mode
records. Its new bytes are built in memory and laid over the file; the image is
parsed again through that overlay and the path resolved again: the field must read
the intended value, and every other field of its structure (and the neighbouring
table entries) what it read before. Only then are the bytes written, in one write
with fsync, under qemu's write lock, and only if the file still holds the bytes
that were read.

What can be set: an integer field of any width (sub-byte refcounts included), a
fixed-size byte field, a whole entry or bitmask made of integer fields (its value is
the big-endian integer of all its bytes: 64 bits for an L1 entry, 128 for an extended
L2 entry), and the named parts of an entry that the spec computes from its bits
(`copied`, `ofs_host_cluster`, `all_ones`, `dirty`, ...; BITS below).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from kaitaistruct import KaitaiStream, KaitaiStruct

from .edit import EditError, write_in_place
from .errors import PARSE_ERRORS, Qcow2Error, from_parse
from .fieldpath import TYPES, BadArgument, Node, PathError, Resolver, int_fields, type_id
from .generated.qcow2 import Qcow2
from .image import Image, ZeroPadded, enum_name, read_header
from .names import FEATURE_BITS
from .tables import (BITMAP_ALL_ONES, COMPRESSED, COPIED, OFFSET_MASK, REFTABLE_OFFSET_MASK,
                     ZERO)

PathLike = Union[str, Path]
U64 = (1 << 64) - 1


def _bit(n: int) -> Callable[[Any], Tuple[int, int]]:
    return lambda root: (1 << n, n)


def _mask(mask: Any) -> Callable[[Any], Tuple[int, int]]:
    """A field of the bits of mask, holding its value in place (an offset)."""
    return lambda root: (int(mask), 0)


def _flag(mask: Any) -> Callable[[Any], Tuple[int, int]]:
    """A one-bit flag at the bit of mask: 0 or 1."""
    return _bit(int(mask).bit_length() - 1)


def _compressed_offset(root: Any) -> Tuple[int, int]:
    return (1 << root.compressed_offset_bits) - 1, 0


def _compressed_sectors(root: Any) -> Tuple[int, int]:
    x = root.compressed_offset_bits
    return ((1 << 62) - 1) & ~((1 << x) - 1), x


HALVES = ("hi", "lo")
# (type, instance) -> (the integer fields it is computed from, (mask, shift) of it)
BITS: Dict[Tuple[str, str], Tuple[Tuple[str, ...], Callable[[Any], Tuple[int, int]]]] = {
    ("l1_entry", "ofs_l2_table"): (HALVES, _mask(OFFSET_MASK)),
    ("l1_entry", "copied"): (HALVES, _flag(COPIED)),
    ("l2_entry", "copied"): (HALVES, _flag(COPIED)),
    ("l2_entry", "compressed"): (HALVES, _flag(COMPRESSED)),
    ("l2_entry", "zero"): (HALVES, _flag(ZERO)),
    ("l2_entry", "ofs_host_cluster"): (HALVES, _mask(OFFSET_MASK)),
    ("l2_entry", "ofs_compressed_data"): (HALVES, _compressed_offset),
    ("l2_entry", "num_additional_sectors"): (HALVES, _compressed_sectors),
    ("refcount_table_entry", "ofs_refcount_block"): (HALVES, _mask(REFTABLE_OFFSET_MASK)),
    ("bitmap_table_entry", "ofs_data"): (HALVES, _mask(OFFSET_MASK)),  # bits 9..55 too
    ("bitmap_table_entry", "all_ones"): (HALVES, _flag(BITMAP_ALL_ONES)),
    # the bitmap flags and feature bits, numbered as names.py holds them
    **{("bitmap_directory_entry", name): (("flags",), _bit(bit)) for bit, name in
       enumerate(("in_use", "is_auto", "extra_data_compatible"))},
    **{(f"{group}_features", name): (HALVES, _bit(bit))
       for group, names in FEATURE_BITS.items() for bit, name in enumerate(names)},
    ("snapshot", "vm_clock_nsec"): (("vm_clock_nsec_hi", "vm_clock_nsec_lo"), _mask(U64)),
    ("snapshot_extra_data", "icount"): (("icount_hi", "icount_lo"), _mask(U64)),
}
SIGNED = {("snapshot_extra_data", "icount")}
# the other named parts a part changes by design (the compressed flag decides which
# descriptor layout the offsets are read with); any other one must keep its value
AFFECTS = {("l2_entry", "compressed"): {"ofs_host_cluster", "ofs_compressed_data",
                                        "num_additional_sectors"}}


@dataclass
class Change:
    """The bytes a set writes: new over old at offset."""

    path: str
    offset: int
    old: bytes
    new: bytes
    bits: Optional[Tuple[int, int]] = None

    def describe(self) -> str:
        where = f"{self.offset:#x}"
        if self.bits is not None:
            shift, width = self.bits
            where += f" bits {shift}..{shift + width - 1}"
        return (f"{self.path}: {len(self.old)} bytes at {where}: "
                f"{self.old.hex(' ')} -> {self.new.hex(' ')}")


def parse_value(text: str, node: Node) -> Any:
    """VALUE for the node: a number in any int() base, true/false, an enum name, or
    for a byte field hex digits of its exact size."""
    current = node.value
    if isinstance(current, bytes):
        try:
            return bytes.fromhex(text[2:] if text.lower().startswith("0x") else text)
        except ValueError:
            raise BadArgument(node.path, node.offset, f"{text!r} is not hex bytes") from None
    if text.lower() in ("true", "false"):
        return int(text.lower() == "true")
    name = enum_name(current)
    if name is not None:
        member = type(current).__members__.get(text)
        if member is not None:
            return int(member)
    try:
        return int(text, 0)
    except ValueError:
        raise BadArgument(node.path, node.offset, f"{text!r} is not a number") from None


class Patched(ZeroPadded):
    """The file as ZeroPadded reads it, with the new bytes laid over it."""

    def __init__(self, fd: int, file_size: int, offset: int, data: bytes) -> None:
        super().__init__(fd, file_size)
        self._patch = (offset, data)

    def read(self, n: Optional[int] = -1) -> bytes:
        start = self.tell()
        data = super().read(n)
        offset, patch = self._patch
        lo, hi = max(start, offset), min(start + len(data), offset + len(patch))
        if lo >= hi:
            return data
        return data[:lo - start] + patch[lo - offset:hi - offset] + data[hi - start:]


def plan(resolver: Resolver, node: Node, value: Any) -> Change:
    """The bytes that give the node the value; PathError when it cannot be set."""
    image = resolver.image
    owner_type = type_id(node.owner) if node.owner is not None else None
    if node.attr is not None and owner_type is not None \
            and (owner_type, node.attr) in BITS:
        return _plan_bits(resolver, node, value, owner_type)
    if node.offset is None or node.size is None:
        raise PathError(node.path, None, "a value computed from other fields, not one "
                        "stored in the file: set the fields it is computed from")
    if isinstance(node.value, KaitaiStruct):
        if int_fields(node.value) is None:
            raise PathError(node.path, node.offset, f"a {type_id(node.value)} has fields of "
                            "variable size: set its fields one by one")
        return _plan_int(node, value, image.read(node.offset, node.size))
    if isinstance(node.value, bytes):
        info = TYPES[owner_type][node.attr] if owner_type and node.attr else {}
        if info.get("size") is None:
            raise PathError(node.path, node.offset, f"a field of variable size "
                            f"({node.size} bytes here): not set by set")
        if not isinstance(value, bytes) or len(value) != node.size:
            raise PathError(node.path, node.offset, f"takes exactly {node.size} bytes "
                            "(as hex digits)")
        return Change(node.path, node.offset, image.read(node.offset, node.size), value)
    if isinstance(node.value, (list, str)) or node.value is None:
        raise PathError(node.path, node.offset, "not a single fixed-size field")
    old = image.read(node.offset, node.size)
    if node.bits is not None:
        shift, width = node.bits
        if not 0 <= value < 1 << width:
            raise PathError(node.path, node.offset, f"{value} does not fit {width} bits")
        byte = old[0] & ~(((1 << width) - 1) << shift) | value << shift
        return Change(node.path, node.offset, old, bytes([byte]), node.bits)
    return _plan_int(node, value, old)


def _plan_int(node: Node, value: Any, old: bytes) -> Change:
    assert node.offset is not None
    if not isinstance(value, int) or not 0 <= value < 1 << 8 * len(old):
        raise PathError(node.path, node.offset, f"{value:#x} does not fit {len(old)} bytes"
                        if isinstance(value, int) else "takes a number")
    return Change(node.path, node.offset, old, value.to_bytes(len(old), "big"))


def _plan_bits(resolver: Resolver, node: Node, value: Any, owner_type: str) -> Change:
    assert node.attr is not None
    fields, layout = BITS[(owner_type, node.attr)]
    mask, shift = layout(resolver.root)
    parts = [resolver.child(_owner_node(node), f) for f in fields]
    offsets = [p.offset for p in parts if p.offset is not None]
    if len(offsets) < len(parts):
        raise PathError(node.path, None, f"absent in this image ({'/'.join(fields)} "
                        "not stored)")
    start, size = offsets[0], sum(p.size or 0 for p in parts)
    if (owner_type, node.attr) in SIGNED and isinstance(value, int) and -(1 << 63) <= value < 0:
        value += 1 << 64
    if not isinstance(value, int) or value < 0 or (value << shift) & ~mask:
        raise PathError(node.path, None, f"{value:#x} does not fit the bits "
                        f"{_bit_range(mask)} of {'/'.join(fields)}"
                        if isinstance(value, int) else "takes a number")
    old = resolver.image.read(start, size)
    raw = int.from_bytes(old, "big") & ~mask | value << shift
    return Change(node.path, start, old, raw.to_bytes(size, "big"))


def _bit_range(mask: int) -> str:
    bits = [b for b in range(mask.bit_length()) if mask >> b & 1]
    return f"{bits[0]}" if len(bits) == 1 else f"{bits[0]}..{bits[-1]}"


def _owner_node(node: Node) -> Node:
    """The node of the struct that holds node's attribute."""
    return Node(node.parent_path, node.spec_path.rsplit(".", 1)[0], node.owner, base=node.base)


def stored(resolver: Resolver, node: Node) -> Dict[str, Any]:
    """The stored fields of the value at node (integers, flags and bytes of its seq
    fields, nested ones included), by spec path; a scalar by itself."""
    if not isinstance(node.value, KaitaiStruct):
        return {node.spec_path: _plain(node.value)}
    out: Dict[str, Any] = {}
    for attr, info in TYPES[type_id(node.value)].items():
        if info.get("seq"):
            child = resolver.child(node, attr)
            if isinstance(child.value, list):
                for i in range(len(child.value)):
                    out.update(stored(resolver, resolver.element(
                        child, i, "", f"{child.spec_path}[{i}]")))
            else:
                out.update(stored(resolver, child))
    return out


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, int) else value


def _comparable(resolver: Resolver, node: Node) -> Dict[str, Any]:
    """What must not change when node is set: the other stored fields of its
    structure (or, for a named part of an entry, the entry's other named parts), by
    spec path."""
    if node.attr is None or node.owner is None:
        return {}
    owner = resolver.resolve(node.parent_path) if node.parent_path else \
        Node("", "", resolver.root)
    out = {k: v for k, v in stored(resolver, owner).items()
           if not (k == node.spec_path or k.startswith(node.spec_path + ".")
                   or k.startswith(node.spec_path + "["))}
    key = (type_id(node.owner), node.attr)
    if key in BITS:
        fields = BITS[key][0]
        out = {k: v for k, v in out.items() if k.rsplit(".", 1)[-1] not in fields}
        for (t, attr), (other_fields, _) in BITS.items():
            if t == key[0] and other_fields == fields and attr != node.attr \
                    and attr not in AFFECTS.get(key, ()):
                part = resolver.child(owner, attr)
                out[part.spec_path] = _plain(part.value)
    return out


def _siblings(path: str) -> List[str]:
    """The paths of the array elements beside the one path ends at, if it does."""
    head, sep, tail = path.rpartition("[")
    if not sep or not tail.endswith("]"):
        return []
    try:
        i = int(tail[:-1], 0)
    except ValueError:
        return []
    return [f"{head}[{j}]" for j in (i - 1, i + 1) if j >= 0]


def _read_back(image: Image, node: Node, change: Change) -> Any:
    """The value the parser reads for node after the change; for a whole entry, each
    integer field must be the bytes of the change at the field's recorded place."""
    if not isinstance(node.value, KaitaiStruct):
        return _plain(node.value)
    resolver = Resolver(image, node.value._root)
    for attr in int_fields(node.value) or []:
        part = resolver.child(node, attr)
        if part.offset is None or part.size is None:  # absent: the extended L2 bitmap
            continue                                    # of a standard entry
        start = part.offset - change.offset
        expected = int.from_bytes(change.new[start:start + part.size], "big")
        if int(part.value) != expected:
            return f"{attr} = {int(part.value):#x}, not {expected:#x}"
    return int.from_bytes(change.new, "big")


def verify(image: Image, path: str, change: Change, intended: Any) -> None:
    """Parse the image again with the change laid over it: path must read the
    intended value, the rest of its structure and its neighbours as before."""
    before = Resolver(image)
    old = before.resolve(path)
    with open(image.path, "rb") as f:
        _verify_on(image, Patched(f.fileno(), image.file_size, change.offset, change.new),
                   path, change, intended, before, old)


def _verify_on(image: Image, patched: Patched, path: str, change: Change, intended: Any,
               before: Resolver, old: Node) -> None:
    root = Qcow2(KaitaiStream(patched))
    try:
        read_header(root)
        root._read()
        after = Resolver(image, root)
        new = after.resolve(path)
        got = _read_back(image, new, change)
        unchanged = [(_comparable(before, old), _comparable(after, new))]
        for sibling in _siblings(path):
            try:
                left = stored(before, before.resolve(sibling))
            except Qcow2Error:  # out of range: no neighbour there
                continue
            unchanged.append((left, stored(after, after.resolve(sibling))))
    except PARSE_ERRORS as exc:
        raise EditError(f"the image would not parse: {from_parse(root, exc)}") from None
    except Qcow2Error as exc:
        raise EditError(f"{path} would not read back: {exc}") from None
    if (new.offset, new.bits) != (old.offset, old.bits):
        raise EditError(f"{path} would move: the change alters where it lies")
    if got != intended:
        raise EditError(f"{path} would read {got!r}, not {intended!r}")
    for a, b in unchanged:
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if changed:
            raise EditError(f"setting {path} would also change {', '.join(changed)}")


def set_field(image_path: PathLike, path: str, text: str, dry_run: bool = False,
              force: bool = False) -> Change:
    """Set the field at path to the value text gives; returns the change (written
    unless dry_run)."""
    with Image(image_path, lock=False) as image:
        resolver = Resolver(image)
        node = resolver.resolve(path)
        value = parse_value(text, node)
        change = plan(resolver, node, value)
        if change.offset + len(change.new) > image.file_size:
            raise PathError(path, change.offset, f"lies past the end of the file "
                            f"({image.file_size} bytes)")
        verify(image, path, change, value)
    if not dry_run and change.new != change.old:
        write_in_place(Path(image_path), change.offset, change.old, change.new, force,
                       change.path, "--force sets it anyway")
    return change
