"""Every bit and mask of a table entry (qcow2.txt "Cluster mapping", "Refcounts",
"Bitmap table"), written once as Python ints, and the classification of bitmap table
entries, without numpy: the image model decodes small tables with them, and the
table layer (tables.py) builds its array masks from them."""
from __future__ import annotations

import struct

from .generated.qcow2 import Qcow2
from .records import BitmapTableEntry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List

OFFSET = 0x00FFFFFFFFFFFE00  # bits 9..55: L1, standard L2 and bitmap table entry offsets
REFT_OFFSET = 0xFFFFFFFFFFFFFE00  # refcount table entry: bits 9..63
REFT_RESERVED = 0x1FF
L1_RESERVED = 0x7F000000000001FF
L2_RESERVED = 0x3F000000000001FE  # standard cluster descriptor
COPIED = 1 << 63  # L1 and L2 entries: refcount exactly one
COMPRESSED = 1 << 62  # L2 entry: a compressed cluster
ZERO = 1  # standard L2 entry: reads as zeros
SUBCLUSTERS = 32  # per cluster, with extended L2 entries
ALL_ALLOC = (1 << SUBCLUSTERS) - 1  # extended L2 bitmap: the allocation half
ALL_ZERO = ALL_ALLOC << SUBCLUSTERS  # extended L2 bitmap: the "reads as zeros" half
BITMAP_RESERVED = 0xFF000000000001FE  # bitmap table entry: bits 1..8 and 56..63
BITMAP_ALL_ONES = 1  # bitmap table entry without data: every bit set

BITMAP_KINDS = [k.name.replace("_", "-") for k in sorted(Qcow2.BitmapTableEntryKind,
                                                         key=lambda k: k.value)]


def bitmap_kind(raw: int) -> int:
    """The spec's bitmap_table_entry.kind of a raw entry: 0 all-zeroes, 1 all-ones,
    2 serialized, 3 invalid (an offset with bit 0 set)."""
    return 2 * ((raw & OFFSET) != 0) + (raw & BITMAP_ALL_ONES)


def bitmap_entries(data: bytes) -> List[BitmapTableEntry]:
    """A small bitmap table's big-endian entries, each classified, decoded entry by
    entry (numpy costs more to import than such a table costs to decode)."""
    return [BitmapTableEntry(BITMAP_KINDS[bitmap_kind(raw)], raw & OFFSET, raw & BITMAP_RESERVED)
            for (raw,) in struct.iter_unpack(">Q", data)]
