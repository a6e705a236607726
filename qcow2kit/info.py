"""`qcow2kit info`: what `qemu-img info` says about an image, and what it does not.

image_info gives qemu's ImageInfo as a dict with qemu's field names and values, built
in the order qemu inserts them; the renderers print it as qemu-img does, byte for
byte, for a qemu release (qemu_version: from 8.0 on, each image has a child node,
its file). Only the header, the extensions, the snapshot table, the bitmap directory
and the LUKS header are read, never the big tables. The "qcow2kit" member adds what
qemu-img does not say: the set feature bits by name from the image's own feature name
table, the header extensions, unknown bits and extensions flagged, and the file's
length (whatever the release).
"""
from __future__ import annotations

import fcntl
import os
import struct
from typing import Any, Dict, List, Optional

from .errors import Qcow2Error
from . import access, chain, printable
from .qemu_version import CHILD_NODES, LUKS_DETACHED_HEADER, NEWEST, QemuVersion
from .findings import Finding
from .names import BITMAP_FLAGS, FEATURE_BITS
from .image import Image, enum_name, open_image, refuse_as_qemu, text
from .qemu_style import (INDENT, SECTOR, InOrder, c_string, disk_size, dump_tree, size_to_str,
                         to_json)
from .snapshots import listing_header, listing_line, qemu_snapshot_info, read_snapshots

COMPAT = {2: "0.10", 3: "1.1"}
EXTRAS = "qcow2kit"
QEMU_BITMAP_FLAGS = BITMAP_FLAGS[:2]  # the flags qemu's Qcow2BitmapInfoFlags names
# Linux's FS_IOC_FSGETXATTR: _IOR('X', 31, struct fsxattr), the 28-byte struct whose
# second u32 is the extent size hint qemu reports for a file (XFS sets one)
FS_IOC_FSGETXATTR = 0x801C581F
FSXATTR = struct.Struct("=IIIII8x")


# --- the qcow2 image ----------------------------------------------------------------

def _feature_masks(image: Image) -> Dict[str, int]:
    h = image.header
    return {"incompatible": h.incompatible_features, "compatible": h.compatible_features,
            "autoclear": h.autoclear_features}


def _backing(image: Image, filename: str) -> Dict[str, Any]:
    backing = chain.backing_name(image)
    if not backing:
        return {}
    out = {"backing-filename": backing,
           "full-backing-filename": access.full_backing_filename(filename, backing)}
    backing_format = chain.backing_format(image)
    if backing_format:
        out["backing-filename-format"] = backing_format
    return out


def _cipher_alg(luks: Any, mode: str) -> str:
    key_bytes = luks.key_bytes // 2 if mode == "xts" else luks.key_bytes
    return f"{luks.cipher_name}-{key_bytes * 8}"


def _luks_slot(slot: Any) -> Dict[str, Any]:
    active = enum_name(slot.active) == "enabled"
    out: Dict[str, Any] = {"active": active}
    if active:
        out.update({"iters": slot.iterations, "stripes": slot.stripes})
    out["key-offset"] = slot.key_material_offset * SECTOR
    return out


def _luks(image: Image, qemu: QemuVersion) -> Dict[str, Any]:
    """The LUKS details qemu reports under encrypt (nothing without the extension)."""
    ext = image.extension("full_disk_encryption")
    if ext is None:
        return {}
    with image.parsing(ext.parsed, ext.offset + 8, "full_disk_encryption_extension"):
        luks = ext.parsed.encryption_header
    mode, _, ivgen = luks.cipher_mode.partition("-")
    ivgen_alg, _, ivgen_hash = ivgen.partition(":")
    out: Dict[str, Any] = {"cipher-alg": _cipher_alg(luks, mode), "cipher-mode": mode,
                           "ivgen-alg": ivgen_alg}
    if ivgen_alg == "essiv":
        out["ivgen-hash-alg"] = ivgen_hash
    out["hash-alg"] = luks.hash_spec
    if qemu.has(LUKS_DETACHED_HEADER):  # a qcow2 image holds its LUKS header
        out["detached-header"] = False
    out.update({"payload-offset": luks.payload_offset * SECTOR,
                "master-key-iters": luks.mk_digest_iterations, "uuid": luks.uuid,
                "slots": [_luks_slot(s) for s in luks.key_slots]})
    return out


def _encryption(image: Image, qemu: QemuVersion) -> Optional[Dict[str, Any]]:
    method = enum_name(image.qcow2.header.crypt_method)
    if method in (None, "none"):
        return None
    out: Dict[str, Any] = {"format": method}
    if method == "luks":
        out.update(_luks(image, qemu))
    return out


def _bitmaps(image: Image) -> List[Dict[str, Any]]:
    """Name, granularity and flags of each bitmap; qemu lists them only while the
    bitmaps auto-clear bit says the extension is consistent."""
    consistent = image.qcow2.header.autoclear_features.bitmaps
    if not consistent or image.extension("bitmaps") is None:
        return []
    return [{"name": c_string(b.name), "granularity": 1 << b.granularity_bits,
             "flags": [name for bit, name in enumerate(QEMU_BITMAP_FLAGS) if b.flags >> bit & 1]}
            for b in image.bitmap_directory()]


def _v3_features(image: Image) -> Dict[str, Any]:
    """The version 3 members before refcount-bits, in qemu's order."""
    q, features = image.qcow2, image.qcow2.header
    out: Dict[str, Any] = {}
    data_file = chain.data_file_name(image)
    if data_file is not None:
        out["data-file"] = data_file
    if q.has_external_data_file:
        out["data-file-raw"] = bool(features.autoclear_features.data_file_raw)
    out.update({"extended-l2": bool(q.is_extended_l2),
                "lazy-refcounts": bool(features.compatible_features.lazy_refcounts),
                "corrupt": bool(features.incompatible_features.corrupt)})
    return out


def format_data(image: Image, qemu: QemuVersion = NEWEST) -> Dict[str, Any]:
    """qemu's qcow2 format-specific data (ImageInfoSpecificQCow2)."""
    h = image.header
    v3 = h.version >= 3
    data: Dict[str, Any] = {"compat": COMPAT[h.version]}
    if v3:
        data.update(_v3_features(image))
    data["refcount-bits"] = 1 << h.refcount_order
    encrypt = _encryption(image, qemu)
    if encrypt is not None:
        data["encrypt"] = encrypt
    bitmaps = _bitmaps(image) if v3 else []
    if bitmaps:
        data["bitmaps"] = bitmaps
    compression = image.qcow2.header.compression_type_effective
    data["compression-type"] = enum_name(compression) or str(int(compression))
    return data


def _spec_name(kind: str, bit: int) -> Optional[str]:
    names = FEATURE_BITS[kind]
    return names[bit] if bit < len(names) else None


def feature_bits(image: Image) -> List[Dict[str, Any]]:
    """Every set feature bit: its name in the image's feature name table (None when
    the table has none), its name in the specification (None for a bit the
    specification does not define) and whether it is defined."""
    names = {(f.type, f.bit): f.name for f in image.feature_names}
    return [InOrder([("type", kind), ("bit", bit), ("name", names.get((t, bit))),
                     ("spec-name", _spec_name(kind, bit)),
                     ("known", _spec_name(kind, bit) is not None)])
            for t, (kind, mask) in enumerate(_feature_masks(image).items())
            for bit in range(64) if mask >> bit & 1]


def extension_list(image: Image) -> List[Dict[str, Any]]:
    """Every header extension: where, its type (None when unknown) and its length."""
    return [InOrder(offset=e.offset, magic=e.magic, type=e.kind, length=e.length,
                    known=e.kind is not None) for e in image.extensions]


def extras(image: Image) -> Dict[str, Any]:
    """What qemu-img info does not say (the file's length: before 8.0), the findings
    of what was read last."""
    return InOrder([("version", image.header.version),
                    ("file-length", image.stat().st_size),
                    ("feature-bits", feature_bits(image)),
                    ("extensions", extension_list(image)),
                    ("findings", [InOrder(structure=f.structure, offset=f.offset,
                                          problem=f.problem) for f in image.findings])])


def _sectors(size: int) -> int:
    """A file's length as qemu's block layer has it: in whole sectors, rounded up."""
    return -(-size // SECTOR) * SECTOR


def _extent_size_hint(fd: int) -> int:
    """The file's extent size hint (0: none, or the file system keeps none)."""
    try:
        answer = fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size))
    except OSError:
        return 0
    return FSXATTR.unpack(answer)[1]


def file_node(filename: str, fd: int) -> Dict[str, Any]:
    """qemu's BlockGraphInfo for the file (protocol) node under an image, from 8.0
    on: the file's length in whole sectors (rounded up) as its virtual size, its extent
    size hint when it has one."""
    st = os.fstat(fd)
    hint = _extent_size_hint(fd)
    return {"filename": filename, "format": "file", "dirty-flag": False,
            "actual-size": st.st_blocks * 512, "virtual-size": _sectors(st.st_size),
            "format-specific": {"type": "file",
                                "data": {"extent-size-hint": hint} if hint else {}},
            "children": []}


def _children(info: Dict[str, Any], fd: int, qemu: QemuVersion) -> None:
    """Add the image's child nodes (its file) when the release shows them."""
    if qemu.has(CHILD_NODES):
        info["children"] = [{"name": "file", "info": file_node(info["filename"], fd)}]


def qcow2_info(image: Image, filename: str, with_extras: bool = True,
               qemu: QemuVersion = NEWEST) -> Dict[str, Any]:
    """qemu's ImageInfo for an open qcow2 image named filename on the command line,
    as qemu release qemu gives it."""
    if not with_extras:  # qemu-img info opens no image qemu refuses
        refuse_as_qemu(image)
    h = image.header
    dirty = h.version >= 3 and bool(image.qcow2.header.incompatible_features.dirty)
    info: Dict[str, Any] = {
        "filename": filename, "format": "qcow2", "dirty-flag": dirty,
        "actual-size": image.allocated,
        "virtual-size": disk_size(h.size),
        "cluster-size": image.cluster_size}
    if h.crypt_method:
        info["encrypted"] = True
    info.update(_backing(image, filename))
    snapshots = read_snapshots(image)
    if snapshots:
        info["snapshots"] = [qemu_snapshot_info(s) for s in snapshots]
    info["format-specific"] = {"type": "qcow2", "data": format_data(image, qemu)}
    _children(info, image.fileno(), qemu)
    if with_extras:
        info[EXTRAS] = extras(image)
    return info


# --- files and chains -------------------------------------------------------------

def raw_info(path: str, role: str = access.IMAGE,
             qemu: QemuVersion = NEWEST) -> Dict[str, Any]:
    """qemu's ImageInfo for a raw image."""
    fd = access.open_input(path, role)
    try:
        st = os.fstat(fd)
        info = {"filename": path, "format": "raw", "dirty-flag": False,
                "actual-size": st.st_blocks * 512,
                "virtual-size": _sectors(st.st_size)}
        _children(info, fd, qemu)
    finally:
        os.close(fd)
    return info


def image_info(filename: str, with_extras: bool = True,
               qemu: QemuVersion = NEWEST) -> Dict[str, Any]:
    """qemu's ImageInfo for the qcow2 image named filename, plus the extras."""
    return backing_chain(filename, with_extras, qemu, follow=False)[0]


def backing_chain(filename: str, with_extras: bool = True, qemu: QemuVersion = NEWEST,
                  follow: bool = True) -> List[Dict[str, Any]]:
    """ImageInfo of the image and of each backing file in turn, as qemu-img info
    --backing-chain of release qemu follows them (qcow2 and raw backing files), under
    the chain policy of access (which vets the external data files too)."""
    files = chain.Chain(filename)
    link: Optional[chain.Link] = files.top
    infos = []
    while link is not None:
        if link.format == "raw":
            infos.append(raw_info(link.path, link.role, qemu))
            break
        with open_image(link.path, role=link.role) as image:
            infos.append(qcow2_info(image, link.path, with_extras, qemu))
            link = files.below(image, link) if follow else None
    return infos


# --- rendering -------------------------------------------------------------------------

def render_json(infos: List[Dict[str, Any]], chain: bool = False) -> str:
    """qemu-img info --output=json: one object, or a list for a backing chain."""
    return to_json(infos if chain else infos[0]) + "\n"


PROTOCOL_NAMES = ("filename", "protocol type", "file length")  # of a node without children
IMAGE_NAMES = ("image", "file format", "virtual size")


def _backing_lines(info: Dict[str, Any]) -> List[str]:
    backing, full = info["backing-filename"], info["full-backing-filename"]
    actual = "" if full == backing else f" (actual path: {full})"
    lines = [f"backing file: {backing}{actual}"]
    if "backing-filename-format" in info:
        lines.append(f"backing file format: {info['backing-filename-format']}")
    return lines


def _snapshot_lines(info: Dict[str, Any], qemu: QemuVersion) -> List[str]:
    return ["Snapshot list:", listing_header(qemu)] + [listing_line(s, qemu)
                                                      for s in info["snapshots"]]


def _node_text(info: Dict[str, Any], qemu: QemuVersion, indentation: int) -> str:
    """One node as qemu-img info prints it, indented; a child node without children
    of its own (a protocol node) with its own names for the first lines."""
    protocol = indentation > 0 and not info.get("children")
    image, fmt, size = PROTOCOL_NAMES if protocol else IMAGE_NAMES
    lines = [f"{image}: {info['filename']}", f"{fmt}: {info['format']}",
             f"{size}: {size_to_str(info['virtual-size'])} "
             f"({info['virtual-size']} bytes)",
             f"disk size: {size_to_str(info['actual-size'])}"]
    if info.get("encrypted"):
        lines.append("encrypted: yes")
    if "cluster-size" in info:
        lines.append(f"cluster_size: {info['cluster-size']}")
    if info["dirty-flag"]:
        lines.append("cleanly shut down: no")
    if "backing-filename" in info:
        lines += _backing_lines(info)
    if "snapshots" in info:
        lines += _snapshot_lines(info, qemu)
    text = "".join(f"{INDENT * indentation}{line}\n" for line in lines)
    data = info.get("format-specific", {}).get("data")
    # from 8.0, an empty dump (a file without extent size hint) prints no heading
    if data is not None and (data or not qemu.has(CHILD_NODES)):
        text += f"{INDENT * indentation}Format specific information:\n"
        text += dump_tree(data, indentation + 1)
    return text


def _graph_text(info: Dict[str, Any], qemu: QemuVersion, indentation: int = 0,
                path: str = "/") -> str:
    """A node, then each of its child nodes under a "Child node" line."""
    text = _node_text(info, qemu, indentation)
    for child in info.get("children", []):
        name = f"{path}{child['name']}"
        text += f"{INDENT * indentation}Child node '{name}':\n"
        text += _graph_text(child["info"], qemu, indentation + 1, f"{name}/")
    return text


def _feature_line(bit: Dict[str, Any]) -> str:
    """"type: name (bit n)", the name from the specification when the image's table
    has none, unknown bits flagged."""
    name, note = bit["name"], ""
    if not bit["known"]:
        name, note = name or "unnamed", ", unknown"
    elif name is None:
        name, note = bit["spec-name"], ", name from the specification"
    return f"    {bit['type']}: {printable.escape(name)} (bit {bit['bit']}{note})"


def _extension_line(ext: Dict[str, Any]) -> str:
    kind = ext["type"].replace("_", " ") if ext["known"] else "unknown extension"
    return (f"    {kind} ({ext['magic']:#010x}): {ext['length']} bytes "
            f"at offset {ext['offset']:#x}")


def _extras_text(extra: Dict[str, Any]) -> str:
    lines = []
    if extra["version"] >= 3:
        bits = [_feature_line(b) for b in extra["feature-bits"]]
        lines += ["Feature bits:"] + (bits or ["    none set"])
    exts = [_extension_line(e) for e in extra["extensions"]]
    lines += ["Header extensions:"] + (exts or ["    none"])
    if extra["findings"]:
        lines += ["Findings:"] + [f"    {Finding(**f)}" for f in extra["findings"]]
    if "secret" in extra:
        lines.append(f"Secret: {SECRET_WORDS[extra['secret']['opens']]}".format(
            **extra["secret"]))
    return "".join(f"{line}\n" for line in lines)


SECRET_WORDS = {"key-slot": "opens LUKS key slot {key-slot}",
                "unchecked": "legacy AES cannot check a secret: any one decrypts, a wrong "
                             "one to noise"}


def check_secret(info: Dict[str, Any], image: Image, secret: bytes,
                 key_slot: Optional[int] = None) -> None:
    """Record in info's extras what the secret opens (raises SecretRejected when it
    opens no key slot)."""
    from .crypto import open_decryptor

    decryptor = open_decryptor(image, secret, key_slot)
    if decryptor is None:
        raise Qcow2Error("header.crypt_method", None, "the image is not encrypted")
    info[EXTRAS]["secret"] = ({"opens": "key-slot", "key-slot": decryptor.slot}
                              if decryptor.slot is not None else {"opens": "unchecked"})


def render_text(infos: List[Dict[str, Any]], qemu: QemuVersion = NEWEST) -> str:
    """qemu-img info's human output (a blank line between the images of a chain) as
    release qemu prints it, each qcow2 image followed by its feature bits and header
    extensions when the extras are there."""
    blocks = [_graph_text(info, qemu) + (_extras_text(info[EXTRAS]) if EXTRAS in info else "")
              for info in infos]
    return "\n".join(blocks)
