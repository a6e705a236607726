"""Plain records of decoded entries, shared by the image model and the table decoder
(so that neither imports the other for them)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BitmapTableEntry:
    """A bitmap table entry: its kind (all-zeroes, all-ones, serialized, invalid),
    data offset and reserved bits."""

    kind: str
    offset: int
    reserved: int
