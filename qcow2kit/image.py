"""The image model: the generated parser opened on a file, with derived facts."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, List, Optional, Sequence, Tuple, Union

from kaitaistruct import KaitaiStream, KaitaiStruct

from . import access
from .errors import PARSE_ERRORS, Qcow2Error, from_parse
from .generated.qcow2 import Qcow2

if TYPE_CHECKING:
    from .tables import BitmapTable

MAGIC = 0x514649FB
MAX_BACKING_NAME = 1023
MAX_BITMAPS = 65535
MAX_BITMAP_DIRECTORY = 1024 * MAX_BITMAPS
MAX_BITMAP_TABLE = 0x8000000  # entries
MAX_BITMAP_DATA = 512 << 20  # bytes of data clusters one bitmap table may point at

ExtensionType = Qcow2.HeaderExtensionType
ClusterType = Qcow2.ClusterType
BitmapTableEntryKind = Qcow2.BitmapTableEntryKind


def u64(halves: KaitaiStruct) -> int:
    """The 64-bit value of an entry or bitmask the spec reads as hi/lo halves."""
    return halves.hi << 32 | halves.lo


def _field_offset(obj: KaitaiStruct, field: str) -> int:
    return obj._debug[field]["start"]


def check_header(h: Any) -> None:
    """Refuse the header values that size the rest of the parse, beyond QEMU's limits
    (qcow2.ksy itself holds cluster_bits to QEMU's 9..21)."""
    cluster_size = 1 << h.cluster_bits
    if h.version >= 3 and h.len_header > cluster_size:
        raise Qcow2Error("header.header_length", _field_offset(h, "len_header"),
                         f"{h.len_header} is larger than the cluster ({cluster_size})")


def read_header(root: Qcow2) -> None:
    """Read and check root's header alone, so that no header value sizes what is read
    before it is checked; root is then ready for _read(). Raises Qcow2Error."""
    header = Qcow2.Header(root._io, root, root)
    try:
        header._read()
    except PARSE_ERRORS as exc:
        err = from_parse(root, exc, header, 0, "header")
        if err.structure == "header.magic":
            raise Qcow2Error("header.magic", 0, "not a qcow2 image (no QFI\\xfb magic)") from None
        raise err from None
    check_header(header)
    root._io.seek(0)


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
    data_offset: int  # where data starts in the file

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
    table: Sequence[BitmapTableEntry]
    name_offset: int  # where the name starts in the file


class Image:
    """A qcow2 image opened read-only (or read-write for editors).

    Read-only, it is opened as access.open_input opens a file in the given role,
    with qemu's shared read lock unless lock is off.
    """

    def __init__(self, path: Union[str, Path], writable: bool = False,
                 role: str = access.IMAGE, lock: bool = True) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "r+b") if writable else \
            os.fdopen(access.open_input(str(path), role, lock=lock), "rb")
        try:
            self.qcow2 = Qcow2(KaitaiStream(self._file))
            read_header(self.qcow2)
            with self.parsing():
                self.qcow2._read()
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
            raise from_parse(self.qcow2, exc, start, base, path) from None

    # --- derived facts -------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes:
        """Raw bytes of the file (fewer at its end, none past it)."""
        size = min(size, self.file_size - offset)
        return os.pread(self._file.fileno(), size, offset) if size > 0 else b""

    @property
    def cluster_size(self) -> int:
        return self.qcow2.cluster_size

    @property
    def file_size(self) -> int:
        return self.qcow2._io.size()

    @property
    def extensions(self) -> List[Extension]:
        """Header extensions in file order, the end marker left out."""
        area = getattr(self.qcow2, "header_extensions", None)  # absent: no room for any
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
            out.append(Extension(start, int(ext.magic), raw, ext.padding, parsed,
                                 base + ext._debug["data"]["start"]))
        return out

    def extension(self, kind: str) -> Optional[Extension]:
        """The first extension of a known kind (spec enum name), if present."""
        return next((e for e in self.extensions if e.kind == kind), None)

    @property
    def backing_file(self) -> Optional[str]:
        """The backing file name, or None without a backing file.

        As QEMU requires, the name must be in the first cluster and at most 1023 bytes
        long; it is not read otherwise.
        """
        h = self.qcow2.header
        offset, size = h.ofs_backing_file_name, h.len_backing_file_name
        if offset > self.cluster_size:
            raise Qcow2Error("header.backing_file_offset", _field_offset(h, "ofs_backing_file_name"),
                             f"{offset:#x} is past the first cluster ({self.cluster_size} bytes)")
        if offset and size > min(MAX_BACKING_NAME, self.cluster_size - offset):
            raise Qcow2Error("header.backing_file_size", _field_offset(h, "len_backing_file_name"),
                             f"a backing file name of {size} bytes at {offset:#x} is longer than "
                             f"QEMU's limit of {MAX_BACKING_NAME} or runs past the first cluster")
        with self.parsing():
            return self.qcow2.backing_file_name

    @property
    def feature_names(self) -> List[FeatureName]:
        ext = self.extension("feature_name_table")
        if ext is None:
            return []
        with self.parsing(ext.parsed, ext.offset + 8, "feature_name_table"):
            return [FeatureName(int(e.type), e.bit, e.name) for e in ext.parsed.entries]

    def _bitmap_entries(self) -> List[Tuple[int, Any, int]]:
        """Each parsed bitmap directory entry with its offset in the file, and the
        offset its parsed positions are relative to (the directory's)."""
        ext = self.extension("bitmaps")
        if ext is None:
            return []
        bx = ext.parsed
        self._check_bitmaps_extension(bx, ext.offset + 8)
        with self.parsing(bx, ext.offset + 8, "bitmaps_extension"):
            directory = bx.bitmap_directory
        starts = directory._debug["entries"]["arr"]
        base = bx.ofs_bitmap_directory
        return [(base + starts[i]["start"], e, base) for i, e in enumerate(directory.entries)]

    def _check_bitmaps_extension(self, bx: Any, base: int) -> None:
        """QEMU's limits on the bitmap count and directory, before it is read."""
        if bx.num_bitmaps > MAX_BITMAPS:
            raise Qcow2Error("bitmaps_extension.nb_bitmaps", base + _field_offset(bx, "num_bitmaps"),
                             f"{bx.num_bitmaps} bitmaps exceed QEMU's limit of {MAX_BITMAPS}")
        size, offset = bx.len_bitmap_directory, bx.ofs_bitmap_directory
        if size > MAX_BITMAP_DIRECTORY:
            raise Qcow2Error("bitmaps_extension.bitmap_directory_size",
                             base + _field_offset(bx, "len_bitmap_directory"),
                             f"{size} bytes exceed QEMU's limit of {MAX_BITMAP_DIRECTORY}")
        if offset + size > self.file_size:
            raise Qcow2Error("bitmaps_extension.bitmap_directory", offset,
                             "runs past the end of the file")

    def bitmap_directory(self) -> List[Bitmap]:
        """The bitmap directory entries, their tables not read (table is empty)."""
        return [Bitmap(
            offset=start, name=e.name, table_offset=e.ofs_bitmap_table,
            table_size=e.num_bitmap_table, flags=e.flags, type=int(e.type),
            granularity_bits=e.granularity_bits, name_size=e.len_name,
            extra_data_size=e.len_extra_data, extra_data=e.extra_data, table=[],
            name_offset=base + e._debug["name"]["start"])
            for start, e, base in self._bitmap_entries()]

    def bitmap_table(self, index: int) -> BitmapTable:
        """The table of directory entry index, every entry classified.

        A table past the end of the file or beyond QEMU's limits (2^27 entries, 512 MiB
        of bitmap data) is refused before any of it is read.
        """
        start, e, _ = self._bitmap_entries()[index]
        path = f"bitmap_directory.entries[{index}]"
        count = e.num_bitmap_table
        if e.ofs_bitmap_table + 8 * count > self.file_size:
            raise Qcow2Error(f"{path}.bitmap_table", e.ofs_bitmap_table,
                             f"{count} entries run past the end of "
                             f"the file ({self.file_size} bytes)")
        if count > MAX_BITMAP_TABLE or count * self.cluster_size > MAX_BITMAP_DATA:
            raise Qcow2Error(f"{path}.bitmap_table_size",
                             start + _field_offset(e, "num_bitmap_table"),
                             f"{count} entries exceed QEMU's limits ({MAX_BITMAP_TABLE} "
                             f"entries, {MAX_BITMAP_DATA >> 20} MiB of bitmap data)")
        from .tables import BitmapTable  # numpy: loaded for images with bitmaps only
        return BitmapTable.decode(self.read(e.ofs_bitmap_table, 8 * count))

    @property
    def bitmaps(self) -> List[Bitmap]:
        """The bitmap directory, each bitmap with its table classified."""
        return [replace(bitmap, table=self.bitmap_table(i))
                for i, bitmap in enumerate(self.bitmap_directory())]


def open_image(path: Union[str, Path], writable: bool = False,
               role: str = access.IMAGE) -> Image:
    """Open and parse a qcow2 image (or a file of a chain, by role); read-only unless
    writable is set."""
    return Image(path, writable, role)


def probe_format(path: str, role: str = access.IMAGE) -> str:
    """qcow2 or raw, by the magic, as qemu probes a backing file without a format."""
    fd = access.open_input(path, role, lock=False)
    try:
        return "qcow2" if os.pread(fd, 4, 0) == MAGIC.to_bytes(4, "big") else "raw"
    finally:
        os.close(fd)
