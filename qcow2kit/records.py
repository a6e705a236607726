"""Plain records the image model and the table decoder share (so that neither imports
the other for them): an image's geometry and its bitmap table entries."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .image import Image


@dataclass(frozen=True)
class BitmapTableEntry:
    """A bitmap table entry: its kind (all-zeroes, all-ones, serialized, invalid),
    data offset and reserved bits."""

    kind: str
    offset: int
    reserved: int


@dataclass(frozen=True)
class Geometry:
    """The numbers that shape an image's tables, from the generated parser."""

    cluster_bits: int
    cluster_size: int
    extended_l2: bool
    l2_entries: int
    refcount_order: int
    refcount_block_entries: int
    compressed_offset_bits: int
    external_data_file: bool
    file_size: int

    @classmethod
    def of(cls, image: Image) -> "Geometry":
        """The geometry of an open image (Image.geometry keeps it)."""
        q = image.qcow2
        return cls(
            cluster_bits=q.header.cluster_bits, cluster_size=q.cluster_size,
            extended_l2=bool(q.is_extended_l2), l2_entries=q.num_l2_entries,
            refcount_order=q.header.refcount_order_effective,
            refcount_block_entries=q.num_refcount_block_entries,
            compressed_offset_bits=q.compressed_offset_bits,
            external_data_file=bool(q.has_external_data_file), file_size=image.file_size)

    @property
    def file_clusters(self) -> int:
        return -(-self.file_size // self.cluster_size)
