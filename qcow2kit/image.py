"""The image model: the generated parser opened on a file, with derived facts; the only
door to the file (every other module reads it through Image)."""
from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
from pathlib import Path

from kaitaistruct import KaitaiStream, KaitaiStruct

from . import access
from .errors import PARSE_ERRORS, Qcow2Error, from_parse
from .findings import Findings
from .limits import (MAX_BACKING_NAME, MAX_BITMAP_DATA, MAX_BITMAP_DIRECTORY, MAX_BITMAP_TABLE,
                     MAX_BITMAPS, MAX_FILE)
from .generated.qcow2 import Qcow2
from .names import HEADER_FIELD_IDS, INCOMPATIBLE, KNOWN_INCOMPATIBLE_BITS
from .bits import bitmap_entries
from .records import BitmapTableEntry, Geometry, Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Iterator, List, Optional, Sequence, Tuple, Union


MAGIC = 0x514649FB
FEATURE_NAME_BYTES = 48  # one feature name table entry
TYPED_LENGTHS = {"bitmaps": 24, "full_disk_encryption": 16}  # extension data lengths
# Tables of up to this many entries are decoded without numpy (which costs more to
# import than such a table costs to decode entry by entry).
SMALL_TABLE_ENTRIES = 4096

ExtensionType = Qcow2.HeaderExtensionType
ClusterType = Qcow2.ClusterType
CryptMethod = Qcow2.CryptMethod
LUKS = int(CryptMethod.luks)
BitmapType = Qcow2.BitmapType


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


def text(raw: bytes) -> str:
    """A name the spec keeps as raw bytes, as text: bytes that are not UTF-8 are kept
    as surrogate escapes, so that the exact bytes can be printed back (as qemu-img
    prints them) or replaced (as its JSON does)."""
    return raw.decode("utf-8", "surrogateescape")


def enum_name(value: Any) -> Optional[str]:
    """The spec's name of an enum value, or None for a value the spec does not know."""
    return getattr(value, "name", None)


# the Header fields read as they are, every version having them (magic aside)
_VERSION_2_FIELDS = ("version", "backing_file_offset", "backing_file_size", "cluster_bits",
                     "size", "crypt_method", "l1_size", "l1_table_offset",
                     "refcount_table_offset", "refcount_table_clusters", "nb_snapshots",
                     "snapshot_offset")


class Header(Record):
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
            **{name: int(getattr(h, HEADER_FIELD_IDS[name])) for name in _VERSION_2_FIELDS},
            incompatible_features=u64(h.incompatible_features) if v3 else 0,
            compatible_features=u64(h.compatible_features) if v3 else 0,
            autoclear_features=u64(h.autoclear_features) if v3 else 0,
            refcount_order=h.refcount_order_effective,
            header_length=h.len_header_effective,
            compression_type=int(h.compression_type_effective),
            additional_fields=h.additional_fields if v3 and h.len_header > 105 else b"",
        )


class Extension(Record):
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


class FeatureName(Record):
    type: int
    bit: int
    name: str


class Bitmap(Record):
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


class ZeroPadded(io.RawIOBase):
    """A file read as QEMU reads it: its bytes, then zeros at any offset past its end.

    The parser on it never meets the end of the file; whoever reads a structure that
    runs past it notes a finding (Image.findings). Its size is that of the largest
    file QEMU reads (2^63 bytes), so that nothing the parser sizes by the stream is cut
    by the file's end. One read gives at most MAX_ZEROS bytes of zeros: a larger one
    (sized by a field not yet checked) is an EOFError, not an allocation.
    """

    SIZE = MAX_FILE
    MAX_ZEROS = 64 << 20  # the largest structure QEMU reads at once: a bitmap directory
    BLOCK = 4096  # a small read brings the block of the file it starts in, and what
    # follows it in that block is served from memory: the parser reads field by field

    def __init__(self, fd: int, file_size: int) -> None:
        super().__init__()
        self._fd, self._file_size, self._pos = fd, file_size, 0
        self._block, self._block_start = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.SIZE}[whence]
        if base + pos < 0:
            raise ValueError(f"negative seek position {base + pos}")
        self._pos = base + pos
        return self._pos

    def read(self, n: Optional[int] = -1) -> bytes:
        if n is None or n < 0:
            raise ValueError("the zero-padded file has no end to read to")
        if self._pos + n - max(self._pos, self._file_size) > self.MAX_ZEROS:
            raise EOFError(f"{n} bytes at {self._pos:#x} run far past the end of the file")
        data = self._from_block(n) if n <= self.BLOCK else None
        if data is None:
            data = read_padded(self._fd, self._file_size, self._pos, n)
        self._pos += n
        return data

    def _from_block(self, n: int) -> Optional[bytes]:
        """n bytes at the position from the block held, read first if they are not in
        it; None where the file ends before them."""
        pos = self._pos
        at = pos - self._block_start
        if not 0 <= at <= len(self._block) - n:
            start = pos - pos % self.BLOCK
            end = -(-(pos + n) // self.BLOCK) * self.BLOCK
            self._block = os.pread(self._fd, min(end, self._file_size) - start, start) \
                if start < self._file_size else b""
            self._block_start, at = start, pos - start
        return self._block[at:at + n] if at + n <= len(self._block) else None

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def read_padded(fd: int, file_size: int, offset: int, size: int) -> bytes:
    """size bytes of the file at offset, zeros past its end; ValueError beyond 2^63,
    where no file can reach (QEMU fails such a read)."""
    if offset < 0 or offset + size > ZeroPadded.SIZE:
        raise ValueError(f"{size} bytes at {offset:#x} lie beyond any file")
    inside = max(0, min(size, file_size - offset))
    data = os.pread(fd, inside, offset) if inside else b""
    return data + bytes(size - len(data))


def file_runs(fd: int, start: int, end: int) -> Iterator[Tuple[int, int, bool]]:
    """(start, end, is_data) runs of a file region, from SEEK_DATA/SEEK_HOLE."""
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            data = end
        if data > pos:
            yield pos, min(data, end), False
            pos = min(data, end)
            continue
        hole = os.lseek(fd, pos, os.SEEK_HOLE)
        if hole <= pos:  # a device tells no holes (/dev/null answers 0): data to the end
            hole = end
        yield pos, min(hole, end), True
        pos = min(hole, end)


class Image:
    """A qcow2 image opened read-only (or read-write for editors).

    Read as QEMU reads it: zeros past the end of the file. What does not lie in the
    file (a structure cut short by a truncation, say) is noted in findings. The
    geometry and the extensions are read once.
    Read-only, it is opened as access.open_input opens a file in the given role,
    with qemu's shared read lock unless lock is off.
    """

    def __init__(self, path: Union[str, Path], writable: bool = False,
                 role: str = access.IMAGE, lock: bool = True) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "r+b") if writable else \
            os.fdopen(access.open_input(str(path), role, lock=lock), "rb")
        self.findings = Findings()
        try:
            self.file_size = os.fstat(self._file.fileno()).st_size
            self.qcow2 = Qcow2(KaitaiStream(ZeroPadded(self._file.fileno(), self.file_size)))
            read_header(self.qcow2)
            with self.parsing():
                self.qcow2._read()
        except BaseException:
            self._file.close()
            raise
        self.header = Header.from_parsed(self.qcow2.header)
        h = self.header
        self.past_end("header", 0, h.header_length)
        self._note_first_cluster()
        # what QEMU reads on opening an image
        self.past_end("L1 table", h.l1_table_offset, 8 * h.l1_size)
        self.past_end("refcount table", h.refcount_table_offset,
                      h.refcount_table_clusters * self.cluster_size)

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

    def _note_first_cluster(self) -> None:
        """Findings for the header extensions and backing file name past the end."""
        area = getattr(self.qcow2, "header_extensions", None)
        if area is not None:
            base = self.qcow2._debug["header_extensions"]["start"]
            for i, ext in enumerate(area.extensions):
                span = area._debug["extensions"]["arr"][i]
                name = enum_name(ext.magic) or f"{int(ext.magic):#x}"
                self.past_end(f"header extension {name}", base + span["start"],
                              span["end"] - span["start"])
        h = self.header
        if h.backing_file_offset:
            self.past_end("backing file name", h.backing_file_offset, h.backing_file_size)

    def read(self, offset: int, size: int, what: Optional[str] = None) -> bytes:
        """size bytes of the file at offset, zeros past its end (as QEMU reads it);
        with what (the structure read), a finding when it runs past the end."""
        if what is not None:
            self.past_end(what, offset, size)
        try:
            return read_padded(self._file.fileno(), self.file_size, offset, size)
        except ValueError as exc:
            raise Qcow2Error("file", offset, str(exc)) from None

    def read_stored(self, offset: int, size: int) -> bytes:
        """The bytes the file holds at offset, up to size: short at its end."""
        return os.pread(self._file.fileno(), size, offset)

    def fileno(self) -> int:
        """The file's descriptor, for bulk guest data reads (preadv); metadata is
        read with read()."""
        return self._file.fileno()

    def stat(self) -> os.stat_result:
        """The open file's status (its identity, its blocks)."""
        return os.fstat(self._file.fileno())

    @property
    def allocated(self) -> int:
        """Bytes the file occupies on disk, as qemu reports it."""
        return self.stat().st_blocks * 512

    def data_runs(self, start: int, end: int) -> Iterator[Tuple[int, int, bool]]:
        """(start, end, is_data) runs of [start, end) of the file: its holes read as
        zeros and take no space."""
        return file_runs(self._file.fileno(), start, end)

    def past_end(self, structure: str, offset: int, size: int) -> bool:
        """Note a finding when the structure runs past the end of the file; whether it does."""
        return self.findings.past_end(structure, offset, size, self.file_size)

    @property
    def cluster_size(self) -> int:
        return self.qcow2.cluster_size

    @functools.cached_property
    def geometry(self) -> Geometry:
        """The numbers that shape the image's tables."""
        return Geometry.of(self)

    @functools.cached_property
    def extensions(self) -> List[Extension]:
        """Header extensions in file order, the end marker left out (read once)."""
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
        """The extension of a known kind (spec enum name), if present; of several, the
        last, which QEMU keeps. One whose length is not that of its fields (the spec
        keeps it raw) is refused, as QEMU refuses the image."""
        ext = next((e for e in reversed(self.extensions) if e.kind == kind), None)
        if ext is not None and ext.parsed is None and kind in TYPED_LENGTHS:
            raise Qcow2Error(f"header extension {kind}", ext.offset,
                             f"{ext.length} bytes, not the {TYPED_LENGTHS[kind]} bytes of "
                             "its fields (QEMU refuses the image)")
        return ext

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
            name = self.qcow2.backing_file_name
        return None if name is None else text(name)

    @property
    def feature_names(self) -> List[FeatureName]:
        """The feature name table; of several, the last, which QEMU keeps."""
        ext = next((e for e in reversed(self.extensions) if e.kind == "feature_name_table"),
                   None)
        if ext is None:
            return []
        table = ext.parsed
        with self.parsing(table, ext.offset + 8, "feature_name_table"):
            entries = list(table.entries)
            if table.partial_entry:  # QEMU zero-pads a table cut inside an entry
                padded = table.partial_entry.ljust(FEATURE_NAME_BYTES, b"\0")
                entries.append(Qcow2.FeatureName(KaitaiStream(io.BytesIO(padded)), table,
                                                 self.qcow2))
                entries[-1]._read()
            return [FeatureName(int(e.type), e.bit, text(e.name)) for e in entries]

    def _bitmap_entries(self) -> List[Tuple[int, Any, int]]:
        """Each parsed bitmap directory entry with its offset in the file, and the
        offset its parsed positions are relative to (the directory's)."""
        ext = self.extension("bitmaps")
        if ext is None:
            return []
        bx = ext.parsed
        self._check_bitmaps_extension(bx, ext.offset + 8)
        try:
            with self.parsing(bx, ext.offset + 8, "bitmaps_extension"):
                directory = bx.bitmap_directory
        except Qcow2Error as exc:
            if bx.ofs_bitmap_directory + bx.len_bitmap_directory <= self.file_size:
                raise
            raise Qcow2Error(exc.structure, exc.offset, f"{exc.problem} (read as zeros: the "
                             "bitmap directory runs past the end of the file)") from None
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
        self.past_end("bitmap directory", offset, size)

    def bitmap_directory(self) -> List[Bitmap]:
        """The bitmap directory entries, their tables not read (table is empty)."""
        return [Bitmap(
            offset=start, name=text(e.name), table_offset=e.ofs_bitmap_table,
            table_size=e.num_bitmap_table, flags=e.flags, type=int(e.type),
            granularity_bits=e.granularity_bits, name_size=e.len_name,
            extra_data_size=e.len_extra_data, extra_data=e.extra_data, table=[],
            name_offset=base + e._debug["name"]["start"])
            for start, e, base in self._bitmap_entries()]

    def bitmap_table(self, index: int) -> Sequence[BitmapTableEntry]:
        """The table of directory entry index, every entry classified.

        A table beyond QEMU's limits (2^27 entries, 512 MiB of bitmap data) is refused
        before any of it is read; one past the end of the file is a finding.
        """
        start, e, _ = self._bitmap_entries()[index]
        path = f"bitmap_directory.entries[{index}]"
        count = e.num_bitmap_table
        if count > MAX_BITMAP_TABLE or count * self.cluster_size > MAX_BITMAP_DATA:
            raise Qcow2Error(f"{path}.bitmap_table_size",
                             start + _field_offset(e, "num_bitmap_table")
                             - _field_offset(e, "ofs_bitmap_table"),
                             f"{count} entries exceed QEMU's limits ({MAX_BITMAP_TABLE} "
                             f"entries, {MAX_BITMAP_DATA >> 20} MiB of bitmap data)")
        self.past_end(f"bitmap {text(e.name)!r} table", e.ofs_bitmap_table, 8 * count)
        data = self.read(e.ofs_bitmap_table, 8 * count)
        if count <= SMALL_TABLE_ENTRIES:
            return bitmap_entries(data)
        from .tables import BitmapTable  # numpy: for big tables only
        return BitmapTable.decode(data)

    @property
    def bitmaps(self) -> List[Bitmap]:
        """The bitmap directory, each bitmap with its table classified."""
        return [bitmap._replace(table=self.bitmap_table(i))
                for i, bitmap in enumerate(self.bitmap_directory())]


class QemuRefuses(Qcow2Error):
    """What QEMU refuses to open an image for; problem is QEMU's message."""


class Unsupported(QemuRefuses):
    """Incompatible feature bits QEMU does not know."""


def refuse_as_qemu(image: Image) -> None:
    """Raise QemuRefuses, with QEMU's message, for what QEMU refuses to open: unknown
    incompatible feature bits; a bitmaps extension of another length than its
    fields; an encryption header pointer without LUKS encryption or of another
    length."""
    unsupported_features(image)
    for ext in image.extensions:
        if ext.kind == "bitmaps" and ext.length != TYPED_LENGTHS["bitmaps"]:
            problem = "bitmaps_ext: Invalid extension length"
        elif ext.kind == "full_disk_encryption" and image.header.crypt_method != LUKS:
            problem = "CRYPTO header extension only expected with LUKS encryption method"
        elif ext.kind == "full_disk_encryption" and ext.parsed is None:
            problem = (f"CRYPTO header extension size {ext.length}, but expected size "
                       f"{TYPED_LENGTHS['full_disk_encryption']}")
        else:
            continue
        raise QemuRefuses(f"header extension {ext.kind}", ext.offset, problem)


def unsupported_features(image: Image) -> None:
    """Raise Unsupported with QEMU's message when unknown incompatible bits are set:
    the names the image's feature table gives them, up to its first unnamed entry,
    then the hex mask of the bits left unnamed."""
    mask = image.header.incompatible_features & ~KNOWN_INCOMPATIBLE_BITS
    if not mask:
        return
    names = []
    for f in image.feature_names:
        if not f.name:
            break
        if f.type == INCOMPATIBLE and f.bit < 64 and mask >> f.bit & 1:
            names.append(f.name)
            mask &= ~(1 << f.bit)
    if mask:
        names.append(f"Unknown incompatible feature: {mask:x}")
    raise Unsupported("header.incompatible_features",
                      _field_offset(image.qcow2.header, "incompatible_features"),
                      f"Unsupported qcow2 feature(s): {', '.join(names)}")


def open_image(path: Union[str, Path], writable: bool = False,
               role: str = access.IMAGE) -> Image:
    """Open and parse a qcow2 image (or a file of a chain, by role); read-only unless
    writable is set."""
    return Image(path, writable, role)

