"""The image model: the generated parser opened on a file, with derived facts."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Iterator, List, Optional, Tuple, Union

from kaitaistruct import KaitaiStream, KaitaiStruct

from .errors import PARSE_ERRORS, Qcow2Error, from_parse
from .generated.qcow2 import Qcow2

MAGIC = 0x514649FB
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21  # QEMU's limit: 2 MiB clusters

ExtensionType = Qcow2.HeaderExtensionType
ClusterType = Qcow2.ClusterType
BitmapTableEntryKind = Qcow2.BitmapTableEntryKind


def u64(halves: KaitaiStruct) -> int:
    """The 64-bit value of an entry or bitmask the spec reads as hi/lo halves."""
    return halves.hi << 32 | halves.lo


def enum_name(value: Any) -> Optional[str]:
    """The spec's name of an enum value, or None for a value the spec does not know."""
    return getattr(value, "name", None)


@dataclass(frozen=True)
class Header:
    """Header fields under the names of the qcow2 specification.

    Version 2 images get the implied values of the version 3 fields (no features,
    refcount_order 4, header_length 72, zlib).
    """

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshot_offset: int
    incompatible_features: int
    compatible_features: int
    autoclear_features: int
    refcount_order: int
    header_length: int
    compression_type: int
    additional_fields: bytes
    magic: int = MAGIC

    @classmethod
    def from_parsed(cls, h: Any) -> "Header":
        v3 = h.version >= 3
        return cls(
            version=h.version,
            backing_file_offset=h.ofs_backing_file_name,
            backing_file_size=h.len_backing_file_name,
            cluster_bits=h.cluster_bits,
            size=h.size,
            crypt_method=int(h.crypt_method),
            l1_size=h.num_l1_entries,
            l1_table_offset=h.ofs_l1_table,
            refcount_table_offset=h.ofs_refcount_table,
            refcount_table_clusters=h.num_refcount_table_clusters,
            nb_snapshots=h.num_snapshots,
            snapshot_offset=h.ofs_snapshot_table,
            incompatible_features=u64(h.incompatible_features) if v3 else 0,
            compatible_features=u64(h.compatible_features) if v3 else 0,
            autoclear_features=u64(h.autoclear_features) if v3 else 0,
            refcount_order=h.refcount_order_effective,
            header_length=h.len_header_effective,
            compression_type=int(h.compression_type_effective),
            additional_fields=h.additional_fields if v3 and h.len_header > 105 else b"",
        )


@dataclass(frozen=True)
class Extension:
    """One header extension (the end marker is not one)."""

    offset: int
    magic: int
    data: bytes
    padding: bytes
    parsed: Any

    @property
    def length(self) -> int:
        return len(self.data)

    @property
    def kind(self) -> Optional[str]:
        """The spec's name of the extension type; None for an unknown magic."""
        try:
            return ExtensionType(self.magic).name
        except ValueError:
            return None


@dataclass(frozen=True)
class FeatureName:
    type: int
    bit: int
    name: str


@dataclass(frozen=True)
class BitmapTableEntry:
    kind: str
    offset: int
    reserved: int


@dataclass(frozen=True)
class Bitmap:
    """A bitmap directory entry with its table classified."""

    offset: int
    name: str
    table_offset: int
    table_size: int
    flags: int
    type: int
    granularity_bits: int
    name_size: int
    extra_data_size: int
    extra_data: bytes
    table: List[BitmapTableEntry]


RESERVED_HI = 0xFF000000  # bitmap table entry bits 56..63, in the upper half
RESERVED_LO = 0x000001FE  # bits 1..8


class Image:
    """A qcow2 image opened read-only (or read-write for editors)."""

    def __init__(self, path: Union[str, Path], writable: bool = False) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "r+b" if writable else "rb")
        try:
            self.qcow2 = Qcow2(KaitaiStream(self._file))
            with self.parsing():
                self.qcow2._read()
            self._check_limits()
        except BaseException:
            self._file.close()
            raise
        self.header = Header.from_parsed(self.qcow2.header)

    # --- plumbing ------------------------------------------------------------

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @contextlib.contextmanager
    def parsing(self, start: Optional[KaitaiStruct] = None, base: int = 0,
                path: str = "") -> Iterator[None]:
        """Turn a parser failure below start into a Qcow2Error naming where it was."""
        try:
            yield
        except PARSE_ERRORS as exc:
            err = from_parse(self.qcow2, exc, start, base, path)
            if err.structure == "header.magic":
                raise Qcow2Error("header.magic", 0, "not a qcow2 image (no QFI\\xfb magic)") from None
            raise err from None

    def _field_offset(self, obj: KaitaiStruct, field: str, base: int = 0) -> int:
        return base + obj._debug[field]["start"]

    def _check_limits(self) -> None:
        h = self.qcow2.header
        if not MIN_CLUSTER_BITS <= h.cluster_bits <= MAX_CLUSTER_BITS:
            raise Qcow2Error("header.cluster_bits", self._field_offset(h, "cluster_bits"),
                             f"{h.cluster_bits} is outside {MIN_CLUSTER_BITS}..{MAX_CLUSTER_BITS}")
        if h.version >= 3 and h.len_header > self.cluster_size:
            raise Qcow2Error("header.header_length", self._field_offset(h, "len_header"),
                             f"{h.len_header} is larger than the cluster ({self.cluster_size})")

    # --- derived facts -------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        """Raw bytes of the file (fewer at its end)."""
        self._file.seek(offset)
        return self._file.read(size)

    @property
    def cluster_size(self) -> int:
        return self.qcow2.cluster_size

    @property
    def file_size(self) -> int:
        return self.qcow2._io.size()

    @property
    def extensions(self) -> List[Extension]:
        """Header extensions in file order, the end marker left out."""
        area = self.qcow2.header_extensions
        if area is None:
            return []
        base = self.qcow2._debug["header_extensions"]["start"]
        out = []
        for i, ext in enumerate(area.extensions):
            if ext.magic == ExtensionType.end_of_extensions:
                break
            start = base + area._debug["extensions"]["arr"][i]["start"]
            parsed = ext.data if isinstance(ext.data, KaitaiStruct) else None
            raw = ext._raw_data if parsed is not None else ext.data
            out.append(Extension(start, int(ext.magic), raw, ext.padding, parsed))
        return out

    def extension(self, kind: str) -> Optional[Extension]:
        """The first extension of a known kind (spec enum name), if present."""
        return next((e for e in self.extensions if e.kind == kind), None)

    @property
    def backing_file(self) -> Optional[str]:
        """The backing file name, or None without a backing file."""
        with self.parsing():
            return self.qcow2.backing_file_name

    @property
    def feature_names(self) -> List[FeatureName]:
        ext = self.extension("feature_name_table")
        if ext is None:
            return []
        with self.parsing(ext.parsed, ext.offset + 8, "feature_name_table"):
            return [FeatureName(int(e.type), e.bit, e.name) for e in ext.parsed.entries]

    def _bitmap_entries(self) -> List[Tuple[int, Any]]:
        """Each parsed bitmap directory entry with its offset in the file."""
        ext = self.extension("bitmaps")
        if ext is None:
            return []
        bx = ext.parsed
        with self.parsing(bx, ext.offset + 8, "bitmaps_extension"):
            directory = bx.bitmap_directory
        starts = directory._debug["entries"]["arr"]
        return [(bx.ofs_bitmap_directory + starts[i]["start"], e)
                for i, e in enumerate(directory.entries)]

    def bitmap_directory(self) -> List[Bitmap]:
        """The bitmap directory entries, their tables not read (table is empty)."""
        return [Bitmap(
            offset=start, name=e.name, table_offset=e.ofs_bitmap_table,
            table_size=e.num_bitmap_table_entries, flags=e.flags, type=int(e.type),
            granularity_bits=e.granularity_bits, name_size=e.len_name,
            extra_data_size=e.len_extra_data, extra_data=e.extra_data, table=[])
            for start, e in self._bitmap_entries()]

    def bitmap_table(self, index: int) -> List[BitmapTableEntry]:
        """The table of directory entry index, every entry classified.

        A table that would run past the end of the file is refused before the
        parser reads any of it.
        """
        start, e = self._bitmap_entries()[index]
        path = f"bitmap_directory.entries[{index}]"
        end = e.ofs_bitmap_table + 8 * e.num_bitmap_table_entries
        if end > self.file_size:
            raise Qcow2Error(f"{path}.bitmap_table", e.ofs_bitmap_table,
                             f"{e.num_bitmap_table_entries} entries run past the end of "
                             f"the file ({self.file_size} bytes)")
        with self.parsing(e, start, path):
            return [BitmapTableEntry(
                kind=t.kind.name.replace("_", "-"), offset=t.ofs_data,
                reserved=(t.hi & RESERVED_HI) << 32 | (t.lo & RESERVED_LO))
                for t in e.bitmap_table]

    @property
    def bitmaps(self) -> List[Bitmap]:
        """The bitmap directory, each bitmap with its table classified."""
        return [replace(bitmap, table=self.bitmap_table(i))
                for i, bitmap in enumerate(self.bitmap_directory())]


def open_image(path: Union[str, Path], writable: bool = False) -> Image:
    """Open and parse a qcow2 image; read-only unless writable is set."""
    return Image(path, writable)
