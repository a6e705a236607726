"""The names of the format's fields, feature bits and flags, in one place.

What the generated parser has as enums is taken from it (feature types, extension
kinds); the rest is written here once and tests/test_spec_names.py holds it to
qcow2.ksy: header fields by the spec's id and its `-orig-id` (qcow2.txt's name),
feature bits and bitmap flags by the spec's instances.
"""
from __future__ import annotations

from .generated.qcow2 import Qcow2

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

# Header fields: (qcow2.ksy id, qcow2.txt name, qcow2.py's name as dump prints it)
HEADER_FIELDS: Tuple[Tuple[str, str, str], ...] = (
    ("magic", "magic", "magic"),
    ("version", "version", "version"),
    ("ofs_backing_file_name", "backing_file_offset", "backing_file_offset"),
    ("len_backing_file_name", "backing_file_size", "backing_file_size"),
    ("cluster_bits", "cluster_bits", "cluster_bits"),
    ("size", "size", "size"),
    ("crypt_method", "crypt_method", "crypt_method"),
    ("num_l1_entries", "l1_size", "l1_size"),
    ("ofs_l1_table", "l1_table_offset", "l1_table_offset"),
    ("ofs_refcount_table", "refcount_table_offset", "refcount_table_offset"),
    ("num_refcount_table_clusters", "refcount_table_clusters", "refcount_table_clusters"),
    ("num_snapshots", "nb_snapshots", "nb_snapshots"),
    ("ofs_snapshot_table", "snapshots_offset", "snapshot_offset"),
    ("incompatible_features", "incompatible_features", "incompatible_features"),
    ("compatible_features", "compatible_features", "compatible_features"),
    ("autoclear_features", "autoclear_features", "autoclear_features"),
    ("refcount_order", "refcount_order", "refcount_order"),
    ("len_header", "header_length", "header_length"),
    ("compression_type", "compression_type", "compression_type"),
)
# qcow2.py's name (dump's, the Header model's) -> qcow2.ksy id
HEADER_FIELD_IDS: Dict[str, str] = {dump: spec for spec, _, dump in HEADER_FIELDS}
_ANY_NAME: Dict[str, str] = {name: dump for spec, txt, dump in HEADER_FIELDS
                             for name in (spec, txt, dump)}


def header_field(name: str) -> Optional[str]:
    """qcow2.py's name (as dump prints it) of a header field given by any of its
    names: the spec's id, qcow2.txt's or qcow2.py's; None for no field."""
    return _ANY_NAME.get(name)


def header_field_names() -> str:
    """Every header field as `id (its other names)`, for a message listing them."""
    def other(spec: str, txt: str, dump: str) -> str:
        names = ", ".join(dict.fromkeys(n for n in (txt, dump) if n != spec))
        return f"{spec} ({names})" if names else spec
    return ", ".join(other(*field) for field in HEADER_FIELDS)


FeatureType = Qcow2.FeatureType
FEATURE_GROUPS: Tuple[str, ...] = tuple(t.name for t in sorted(FeatureType))
INCOMPATIBLE = int(FeatureType.incompatible)  # the feature type of the incompatible bits
# The bits the specification defines, bit 0 first, under qcow2.ksy's names (its
# has_unknown_bits instances mark every other bit).
FEATURE_BITS: Dict[str, Tuple[str, ...]] = {
    "incompatible": ("dirty", "corrupt", "external_data_file", "compression_type",
                     "extended_l2"),
    "compatible": ("lazy_refcounts",),
    "autoclear": ("bitmaps", "data_file_raw"),
}
KNOWN_INCOMPATIBLE_BITS = (1 << len(FEATURE_BITS["incompatible"])) - 1
AUTOCLEAR_BITMAPS = 1 << FEATURE_BITS["autoclear"].index("bitmaps")

# Bitmap directory entry flags, bit 0 first, under qcow2.ksy's names (its -orig-id
# where it has one), as qemu spells them
BITMAP_FLAGS: Tuple[str, ...] = ("in-use", "auto", "extra-data-compatible")
KNOWN_BITMAP_FLAGS = (1 << len(BITMAP_FLAGS)) - 1
IN_USE, AUTO, EXTRA_DATA_COMPATIBLE = (1 << bit for bit in range(len(BITMAP_FLAGS)))
