"""QEMU's limits on the structures a field path makes the parser read, checked on
the fields that size them before they are read: no path allocates or parses more
than QEMU would for a structure (a header claiming 2^32 snapshots is refused, not
read as 2^32 entries of zeros). The limits are limits.py's; the rules say which field
sizes what."""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

from kaitaistruct import KaitaiStruct

from .errors import Qcow2Error
from .limits import (MAX_BACKING_NAME, MAX_BITMAP_DIRECTORY, MAX_BITMAP_TABLE, MAX_BITMAPS,
                     MAX_L1_ENTRIES, MAX_REFTABLE_BYTES, MAX_SNAPSHOTS)

# (type, attribute read) -> (sizing field, its value from the object, the limit)...
Rule = Tuple[str, Callable[[Any], int], int]
RULES: Dict[Tuple[str, str], Tuple[Rule, ...]] = {
    ("qcow2", "l1_table"): (("header.l1_size", lambda o: o.header.num_l1_entries,
                             MAX_L1_ENTRIES),),
    ("qcow2", "refcount_table"): ((
        "header.refcount_table_clusters",
        lambda o: o.header.num_refcount_table_clusters * o.cluster_size, MAX_REFTABLE_BYTES),),
    ("qcow2", "snapshots"): (("header.nb_snapshots", lambda o: o.header.num_snapshots,
                              MAX_SNAPSHOTS),),
    ("qcow2", "backing_file_name"): (("header.backing_file_size",
                                      lambda o: o.header.len_backing_file_name,
                                      MAX_BACKING_NAME),),
    ("snapshot", "l1_table"): (("l1_size", lambda o: o.num_l1_table, MAX_L1_ENTRIES),),
    ("bitmaps_extension", "bitmap_directory"): (
        ("bitmap_directory_size", lambda o: o.len_bitmap_directory, MAX_BITMAP_DIRECTORY),
        ("nb_bitmaps", lambda o: o.num_bitmaps, MAX_BITMAPS)),
    ("bitmap_directory_entry", "bitmap_table"): (
        ("bitmap_table_size", lambda o: o.num_bitmap_table, MAX_BITMAP_TABLE),),
}


def check(obj: KaitaiStruct, type_id: str, attr: str) -> None:
    """Refuse to read attr of obj when a field that sizes it exceeds QEMU's limit."""
    for field, value, limit in RULES.get((type_id, attr), ()):
        if value(obj) > limit:
            raise Qcow2Error(field, None, f"{value(obj)} exceeds QEMU's limit of {limit}: "
                             f"{attr} is not read")
