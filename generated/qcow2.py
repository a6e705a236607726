# This is a generated file! Please edit source .ksy file and use kaitai-struct-compiler to rebuild
# type: ignore

import kaitaistruct
from kaitaistruct import KaitaiStruct, KaitaiStream, BytesIO
from enum import IntEnum
import collections


if getattr(kaitaistruct, 'API_VERSION', (0, 9)) < (0, 11):
    raise Exception("Incompatible Kaitai Struct Python API: 0.11 or later is required, but you have %s" % (kaitaistruct.__version__))

class Qcow2(KaitaiStruct):
    """qcow2 is the native disk image format of QEMU. The file is divided into host
    clusters of `1 << cluster_bits` bytes; the first one holds the header, the
    header extensions and the backing file name. Guest clusters are mapped to host
    clusters through a two-level table (L1, L2); with extended L2 entries a guest
    cluster is divided into 32 subclusters that are allocated one by one. Host
    clusters are reference counted through another two-level table (refcount
    table, refcount blocks). Internal snapshots keep their own L1 tables, and
    persistent dirty bitmaps have a directory and a one-level table of their own.
    A guest cluster that the image does not allocate reads from the backing file,
    or as zeros without one.
    
    Tables are instances, read when they are first used, and each is read in
    pieces of at most 64 KiB (`len_table_piece`), themselves read when first used:
    the header of a 1 TiB image costs what an empty one's does, and the largest
    table QEMU makes (a 32 MiB L1 table, a refcount block of 16,777,216 one-bit
    refcounts) is opened one piece at a time.
    
    The 64-bit table entries are read as two 32-bit halves (`hi`, `lo`), and
    offsets and flags are computed from them with arithmetic, so that every target
    language, including those whose numbers are doubles or whose bitwise operators
    work on 32 bits, computes the same values.
    
    .. seealso::
       Source - https://www.qemu.org/docs/master/interop/qcow2.html
    """

    class BitmapTableEntryKind(IntEnum):
        all_zeroes = 0
        all_ones = 1
        serialized = 2
        invalid = 3

    class BitmapType(IntEnum):
        dirty_tracking = 1

    class ClusterType(IntEnum):
        unallocated = 0
        zero_plain = 1
        zero_alloc = 2
        normal = 3
        compressed = 4

    class CompressionType(IntEnum):
        zlib = 0
        zstd = 1

    class CryptMethod(IntEnum):
        none = 0
        aes = 1
        luks = 2

    class FeatureType(IntEnum):
        incompatible = 0
        compatible = 1
        autoclear = 2

    class HeaderExtensionType(IntEnum):
        end_of_extensions = 0
        full_disk_encryption = 87539319
        bitmaps = 595929205
        external_data_file = 1145132097
        feature_name_table = 1745090647
        backing_file_format = 3799591626

    class LuksKeySlotState(IntEnum):
        disabled = 57005
        enabled = 11301363

    class SubclusterReads(IntEnum):
        unallocated = 0
        backing = 1
        zeros = 2
        data = 3
        compressed = 4
        invalid = 5

    class SubclusterType(IntEnum):
        unallocated_plain = 0
        unallocated_alloc = 1
        zero_plain = 2
        zero_alloc = 3
        normal = 4
        compressed = 5
        invalid = 6
    SEQ_FIELDS = ["header", "header_extensions"]
    def __init__(self, _io, _parent=None, _root=None):
        super(Qcow2, self).__init__(_io)
        self._parent = _parent
        self._root = _root or self
        self._debug = collections.defaultdict(dict)

    def _read(self):
        self._debug['header']['start'] = self._io.pos()
        self.header = Qcow2.Header(self._io, self, self._root)
        self.header._read()
        self._debug['header']['end'] = self._io.pos()
        if self.ofs_extensions_end > self.header.len_header_effective:
            pass
            self._debug['header_extensions']['start'] = self._io.pos()
            self._raw_header_extensions = self._io.read_bytes(self.ofs_extensions_end - self.header.len_header_effective)
            _io__raw_header_extensions = KaitaiStream(BytesIO(self._raw_header_extensions))
            self.header_extensions = Qcow2.HeaderExtensionArea(_io__raw_header_extensions, self, self._root)
            self.header_extensions._read()
            self._debug['header_extensions']['end'] = self._io.pos()



    def _fetch_instances(self):
        pass
        self.header._fetch_instances()
        if self.ofs_extensions_end > self.header.len_header_effective:
            pass
            self.header_extensions._fetch_instances()

        _ = self.backing_file_name
        if hasattr(self, '_m_backing_file_name'):
            pass

        _ = self.l1_table
        if hasattr(self, '_m_l1_table'):
            pass
            self._m_l1_table._fetch_instances()

        _ = self.refcount_table
        if hasattr(self, '_m_refcount_table'):
            pass
            self._m_refcount_table._fetch_instances()

        _ = self.snapshots
        if hasattr(self, '_m_snapshots'):
            pass
            for i in range(len(self._m_snapshots)):
                pass
                self._m_snapshots[i]._fetch_instances()



    class AutoclearFeatures(KaitaiStruct):
        """Auto-clear feature bits, read as two big-endian 32-bit halves.
        
        .. seealso::
           Header - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["hi", "lo"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.AutoclearFeatures, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['hi']['start'] = self._io.pos()
            self.hi = self._io.read_u4be()
            self._debug['hi']['end'] = self._io.pos()
            self._debug['lo']['start'] = self._io.pos()
            self.lo = self._io.read_u4be()
            self._debug['lo']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass

        @property
        def bitmaps(self):
            """Bit 0: the bitmaps extension data is consistent. If the extension is
            present and this bit is clear, its data must be considered
            inconsistent.
            """
            if hasattr(self, '_m_bitmaps'):
                return self._m_bitmaps

            self._m_bitmaps = self.lo % 2 == 1
            return getattr(self, '_m_bitmaps', None)

        @property
        def data_file_raw(self):
            """Bit 1: the external data file is a consistent standalone raw image.
            Only valid with the external data file bit.
            """
            if hasattr(self, '_m_data_file_raw'):
                return self._m_data_file_raw

            self._m_data_file_raw = (self.lo // 2) % 2 == 1
            return getattr(self, '_m_data_file_raw', None)

        @property
        def has_unknown_bits(self):
            """Bits 2..63 are reserved."""
            if hasattr(self, '_m_has_unknown_bits'):
                return self._m_has_unknown_bits

            self._m_has_unknown_bits =  ((self.hi != 0) or (self.lo >= 4)) 
            return getattr(self, '_m_has_unknown_bits', None)


    class BitmapDirectory(KaitaiStruct):
        """The bitmap directory, `bitmap_directory_size` bytes.
        
        .. seealso::
           Bitmap directory - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["entries"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.BitmapDirectory, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['entries']['start'] = self._io.pos()
            self._debug['entries']['arr'] = []
            self.entries = []
            for i in range(self._parent.num_bitmaps):
                self._debug['entries']['arr'].append({'start': self._io.pos()})
                _t_entries = Qcow2.BitmapDirectoryEntry(self._io, self, self._root)
                try:
                    _t_entries._read()
                finally:
                    self.entries.append(_t_entries)
                self._debug['entries']['arr'][i]['end'] = self._io.pos()

            self._debug['entries']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            for i in range(len(self.entries)):
                pass
                self.entries[i]._fetch_instances()



    class BitmapDirectoryEntry(KaitaiStruct):
        """One stored bitmap; entries are padded to a multiple of 8 bytes.
        
        .. seealso::
           Bitmap directory - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["ofs_bitmap_table", "num_bitmap_table", "flags", "type", "granularity_bits", "len_name", "len_extra_data", "extra_data", "name", "padding"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.BitmapDirectoryEntry, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['ofs_bitmap_table']['start'] = self._io.pos()
            self.ofs_bitmap_table = self._io.read_u8be()
            self._debug['ofs_bitmap_table']['end'] = self._io.pos()
            self._debug['num_bitmap_table']['start'] = self._io.pos()
            self.num_bitmap_table = self._io.read_u4be()
            self._debug['num_bitmap_table']['end'] = self._io.pos()
            self._debug['flags']['start'] = self._io.pos()
            self.flags = self._io.read_u4be()
            self._debug['flags']['end'] = self._io.pos()
            self._debug['type']['start'] = self._io.pos()
            self.type = KaitaiStream.resolve_enum(Qcow2.BitmapType, self._io.read_u1())
            self._debug['type']['end'] = self._io.pos()
            self._debug['granularity_bits']['start'] = self._io.pos()
            self.granularity_bits = self._io.read_u1()
            self._debug['granularity_bits']['end'] = self._io.pos()
            if not self.granularity_bits <= 63:
                raise kaitaistruct.ValidationGreaterThanError(63, self.granularity_bits, self._io, u"/types/bitmap_directory_entry/seq/4")
            self._debug['len_name']['start'] = self._io.pos()
            self.len_name = self._io.read_u2be()
            self._debug['len_name']['end'] = self._io.pos()
            if not self.len_name >= 1:
                raise kaitaistruct.ValidationLessThanError(1, self.len_name, self._io, u"/types/bitmap_directory_entry/seq/5")
            self._debug['len_extra_data']['start'] = self._io.pos()
            self.len_extra_data = self._io.read_u4be()
            self._debug['len_extra_data']['end'] = self._io.pos()
            self._debug['extra_data']['start'] = self._io.pos()
            self.extra_data = self._io.read_bytes(self.len_extra_data)
            self._debug['extra_data']['end'] = self._io.pos()
            self._debug['name']['start'] = self._io.pos()
            self.name = self._io.read_bytes(self.len_name)
            self._debug['name']['end'] = self._io.pos()
            self._debug['padding']['start'] = self._io.pos()
            self.padding = self._io.read_bytes((8 - ((24 + self.len_extra_data) + self.len_name) % 8) % 8)
            self._debug['padding']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            _ = self.bitmap_table
            if hasattr(self, '_m_bitmap_table'):
                pass
                self._m_bitmap_table._fetch_instances()


        @property
        def bitmap_table(self):
            """The bitmap table, one entry per cluster of bitmap data."""
            if hasattr(self, '_m_bitmap_table'):
                return self._m_bitmap_table

            io = self._root._io
            _pos = io.pos()
            io.seek(self.ofs_bitmap_table)
            self._debug['_m_bitmap_table']['start'] = io.pos()
            self._raw__m_bitmap_table = io.read_bytes(self.num_bitmap_table * 8)
            _io__raw__m_bitmap_table = KaitaiStream(BytesIO(self._raw__m_bitmap_table))
            self._m_bitmap_table = Qcow2.BitmapTable(_io__raw__m_bitmap_table, self, self._root)
            self._m_bitmap_table._read()
            self._debug['_m_bitmap_table']['end'] = io.pos()
            io.seek(_pos)
            return getattr(self, '_m_bitmap_table', None)

        @property
        def extra_data_compatible(self):
            """Unknown extra data may be ignored (else the bitmap must not be used).
            """
            if hasattr(self, '_m_extra_data_compatible'):
                return self._m_extra_data_compatible

            self._m_extra_data_compatible = (self.flags // 4) % 2 == 1
            return getattr(self, '_m_extra_data_compatible', None)

        @property
        def granularity(self):
            """Bytes of the virtual disk per bit of the bitmap,
            `1 << granularity_bits`, computed as a product of three shifts of at
            most 23 bits each.
            """
            if hasattr(self, '_m_granularity'):
                return self._m_granularity

            self._m_granularity = (((1 << self.granularity_bits // 3) * (1 << self.granularity_bits // 3)) * (1 << self.granularity_bits - (self.granularity_bits // 3) * 2))
            return getattr(self, '_m_granularity', None)

        @property
        def has_reserved_flags(self):
            """Any of the reserved flag bits 3..31 is set."""
            if hasattr(self, '_m_has_reserved_flags'):
                return self._m_has_reserved_flags

            self._m_has_reserved_flags = self.flags >= 8
            return getattr(self, '_m_has_reserved_flags', None)

        @property
        def in_use(self):
            """The bitmap was not saved correctly and may be inconsistent."""
            if hasattr(self, '_m_in_use'):
                return self._m_in_use

            self._m_in_use = self.flags % 2 == 1
            return getattr(self, '_m_in_use', None)

        @property
        def is_auto(self):
            """The bitmap is enabled and tracks every write to the virtual disk."""
            if hasattr(self, '_m_is_auto'):
                return self._m_is_auto

            self._m_is_auto = (self.flags // 2) % 2 == 1
            return getattr(self, '_m_is_auto', None)


    class BitmapTable(KaitaiStruct):
        """A bitmap table, in pieces of up to 8192 entries.
        
        .. seealso::
           Bitmap table - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["pieces"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.BitmapTable, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['pieces']['start'] = self._io.pos()
            self._debug['pieces']['arr'] = []
            self._raw_pieces = []
            self.pieces = []
            i = 0
            while not self._io.is_eof():
                self._debug['pieces']['arr'].append({'start': self._io.pos()})
                self._raw_pieces.append(self._io.read_bytes((self._io.size() - self._io.pos() if self._io.size() - self._io.pos() < self._root.len_table_piece else self._root.len_table_piece)))
                _io__raw_pieces = KaitaiStream(BytesIO(self._raw_pieces[-1]))
                _t_pieces = Qcow2.BitmapTablePiece(_io__raw_pieces, self, self._root)
                try:
                    _t_pieces._read()
                finally:
                    self.pieces.append(_t_pieces)
                self._debug['pieces']['arr'][len(self.pieces) - 1]['end'] = self._io.pos()
                i += 1

            self._debug['pieces']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            for i in range(len(self.pieces)):
                pass
                self.pieces[i]._fetch_instances()



    class BitmapTableEntry(KaitaiStruct):
        """Where one cluster of bitmap data is, or what it reads as.
        
        .. seealso::
           Bitmap table - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["hi", "lo"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.BitmapTableEntry, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['hi']['start'] = self._io.pos()
            self.hi = self._io.read_u4be()
            self._debug['hi']['end'] = self._io.pos()
            self._debug['lo']['start'] = self._io.pos()
            self.lo = self._io.read_u4be()
            self._debug['lo']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass

        @property
        def all_ones(self):
            """Bit 0; for an unallocated entry, the cluster reads as all ones."""
            if hasattr(self, '_m_all_ones'):
                return self._m_all_ones

            self._m_all_ones = self.lo % 2 == 1
            return getattr(self, '_m_all_ones', None)

        @property
        def has_reserved_bits(self):
            """Any of the reserved bits 1..8 and 56..63 is set."""
            if hasattr(self, '_m_has_reserved_bits'):
                return self._m_has_reserved_bits

            self._m_has_reserved_bits =  ((self.hi >= 16777216) or (self.lo % 512 >= 2)) 
            return getattr(self, '_m_has_reserved_bits', None)

        @property
        def kind(self):
            """How the bitmap data cluster reads."""
            if hasattr(self, '_m_kind'):
                return self._m_kind

            self._m_kind = KaitaiStream.resolve_enum(Qcow2.BitmapTableEntryKind, ((3 if self.all_ones else 2) if self.ofs_data != 0 else (1 if self.all_ones else 0)))
            return getattr(self, '_m_kind', None)

        @property
        def ofs_data(self):
            """Bits 9..55, the host offset of the data cluster; 0 if not allocated.
            """
            if hasattr(self, '_m_ofs_data'):
                return self._m_ofs_data

            self._m_ofs_data = ((self.hi % 16777216) * 4294967296 + (self.lo - self.lo % 512))
            return getattr(self, '_m_ofs_data', None)


    class BitmapTablePiece(KaitaiStruct):
        """A piece of a bitmap table."""
        SEQ_FIELDS = []
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.BitmapTablePiece, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            pass


        def _fetch_instances(self):
            pass
            _ = self.entries
            if hasattr(self, '_m_entries'):
                pass
                for i in range(len(self._m_entries)):
                    pass
                    self._m_entries[i]._fetch_instances()



        @property
        def entries(self):
            """The entries of the piece, in table order."""
            if hasattr(self, '_m_entries'):
                return self._m_entries

            _pos = self._io.pos()
            self._io.seek(0)
            self._debug['_m_entries']['start'] = self._io.pos()
            self._debug['_m_entries']['arr'] = []
            self._m_entries = []
            i = 0
            while not self._io.is_eof():
                self._debug['_m_entries']['arr'].append({'start': self._io.pos()})
                _t__m_entries = Qcow2.BitmapTableEntry(self._io, self, self._root)
                try:
                    _t__m_entries._read()
                finally:
                    self._m_entries.append(_t__m_entries)
                self._debug['_m_entries']['arr'][len(self._m_entries) - 1]['end'] = self._io.pos()
                i += 1

            self._debug['_m_entries']['end'] = self._io.pos()
            self._io.seek(_pos)
            return getattr(self, '_m_entries', None)


    class BitmapsExtension(KaitaiStruct):
        """Where the bitmap directory is. Its data is consistent only while the
        bitmaps auto-clear bit is set.
        
        .. seealso::
           Bitmaps extension - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["num_bitmaps", "reserved", "len_bitmap_directory", "ofs_bitmap_directory"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.BitmapsExtension, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['num_bitmaps']['start'] = self._io.pos()
            self.num_bitmaps = self._io.read_u4be()
            self._debug['num_bitmaps']['end'] = self._io.pos()
            if not self.num_bitmaps >= 1:
                raise kaitaistruct.ValidationLessThanError(1, self.num_bitmaps, self._io, u"/types/bitmaps_extension/seq/0")
            self._debug['reserved']['start'] = self._io.pos()
            self.reserved = self._io.read_u4be()
            self._debug['reserved']['end'] = self._io.pos()
            self._debug['len_bitmap_directory']['start'] = self._io.pos()
            self.len_bitmap_directory = self._io.read_u8be()
            self._debug['len_bitmap_directory']['end'] = self._io.pos()
            self._debug['ofs_bitmap_directory']['start'] = self._io.pos()
            self.ofs_bitmap_directory = self._io.read_u8be()
            self._debug['ofs_bitmap_directory']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            _ = self.bitmap_directory
            if hasattr(self, '_m_bitmap_directory'):
                pass
                self._m_bitmap_directory._fetch_instances()


        @property
        def bitmap_directory(self):
            """The bitmap directory."""
            if hasattr(self, '_m_bitmap_directory'):
                return self._m_bitmap_directory

            io = self._root._io
            _pos = io.pos()
            io.seek(self.ofs_bitmap_directory)
            self._debug['_m_bitmap_directory']['start'] = io.pos()
            self._raw__m_bitmap_directory = io.read_bytes(self.len_bitmap_directory)
            _io__raw__m_bitmap_directory = KaitaiStream(BytesIO(self._raw__m_bitmap_directory))
            self._m_bitmap_directory = Qcow2.BitmapDirectory(_io__raw__m_bitmap_directory, self, self._root)
            self._m_bitmap_directory._read()
            self._debug['_m_bitmap_directory']['end'] = io.pos()
            io.seek(_pos)
            return getattr(self, '_m_bitmap_directory', None)


    class CompatibleFeatures(KaitaiStruct):
        """Compatible feature bits, read as two big-endian 32-bit halves.
        
        .. seealso::
           Header - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["hi", "lo"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.CompatibleFeatures, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['hi']['start'] = self._io.pos()
            self.hi = self._io.read_u4be()
            self._debug['hi']['end'] = self._io.pos()
            self._debug['lo']['start'] = self._io.pos()
            self.lo = self._io.read_u4be()
            self._debug['lo']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass

        @property
        def has_unknown_bits(self):
            """Bits 1..63 are reserved."""
            if hasattr(self, '_m_has_unknown_bits'):
                return self._m_has_unknown_bits

            self._m_has_unknown_bits =  ((self.hi != 0) or (self.lo >= 2)) 
            return getattr(self, '_m_has_unknown_bits', None)

        @property
        def lazy_refcounts(self):
            """Bit 0: lazy refcount updates may be used: the image is marked dirty
            and refcount updates are postponed.
            """
            if hasattr(self, '_m_lazy_refcounts'):
                return self._m_lazy_refcounts

            self._m_lazy_refcounts = self.lo % 2 == 1
            return getattr(self, '_m_lazy_refcounts', None)


    class FeatureName(KaitaiStruct):
        """The name of one feature bit.
        
        .. seealso::
           Feature name table - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["type", "bit", "name"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.FeatureName, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['type']['start'] = self._io.pos()
            self.type = KaitaiStream.resolve_enum(Qcow2.FeatureType, self._io.read_u1())
            self._debug['type']['end'] = self._io.pos()
            self._debug['bit']['start'] = self._io.pos()
            self.bit = self._io.read_u1()
            self._debug['bit']['end'] = self._io.pos()
            self._debug['name']['start'] = self._io.pos()
            self.name = KaitaiStream.bytes_terminate(self._io.read_bytes(46), 0, False)
            self._debug['name']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass


    class FeatureNameTable(KaitaiStruct):
        """Names of feature bits, for tools that do not know them.
        
        .. seealso::
           Feature name table - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["entries", "partial_entry"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.FeatureNameTable, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['entries']['start'] = self._io.pos()
            self._debug['entries']['arr'] = []
            self.entries = []
            for i in range(self._io.size() // 48):
                self._debug['entries']['arr'].append({'start': self._io.pos()})
                _t_entries = Qcow2.FeatureName(self._io, self, self._root)
                try:
                    _t_entries._read()
                finally:
                    self.entries.append(_t_entries)
                self._debug['entries']['arr'][i]['end'] = self._io.pos()

            self._debug['entries']['end'] = self._io.pos()
            self._debug['partial_entry']['start'] = self._io.pos()
            self.partial_entry = self._io.read_bytes_full()
            self._debug['partial_entry']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            for i in range(len(self.entries)):
                pass
                self.entries[i]._fetch_instances()



    class FullDiskEncryptionExtension(KaitaiStruct):
        """Where the encryption header is; present exactly when the crypt method
        needs one (LUKS).
        
        .. seealso::
           Full disk encryption header pointer - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["ofs_encryption_header", "len_encryption_header"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.FullDiskEncryptionExtension, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['ofs_encryption_header']['start'] = self._io.pos()
            self.ofs_encryption_header = self._io.read_u8be()
            self._debug['ofs_encryption_header']['end'] = self._io.pos()
            self._debug['len_encryption_header']['start'] = self._io.pos()
            self.len_encryption_header = self._io.read_u8be()
            self._debug['len_encryption_header']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            _ = self.encryption_header
            if hasattr(self, '_m_encryption_header'):
                pass
                self._m_encryption_header._fetch_instances()


        @property
        def encryption_header(self):
            """The encryption header as a LUKS partition header followed by the key
            material its key slots point at.
            """
            if hasattr(self, '_m_encryption_header'):
                return self._m_encryption_header

            if self._root.header.crypt_method == Qcow2.CryptMethod.luks:
                pass
                io = self._root._io
                _pos = io.pos()
                io.seek(self.ofs_encryption_header)
                self._debug['_m_encryption_header']['start'] = io.pos()
                self._raw__m_encryption_header = io.read_bytes(self.len_encryption_header)
                _io__raw__m_encryption_header = KaitaiStream(BytesIO(self._raw__m_encryption_header))
                self._m_encryption_header = Qcow2.LuksHeader(_io__raw__m_encryption_header, self, self._root)
                self._m_encryption_header._read()
                self._debug['_m_encryption_header']['end'] = io.pos()
                io.seek(_pos)

            return getattr(self, '_m_encryption_header', None)


    class Header(KaitaiStruct):
        """The image header at offset 0: 72 bytes in version 2, `header_length` bytes
        (at least 104) in version 3.
        
        .. seealso::
           Header - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["magic", "version", "ofs_backing_file_name", "len_backing_file_name", "cluster_bits", "size", "crypt_method", "num_l1_entries", "ofs_l1_table", "ofs_refcount_table", "num_refcount_table_clusters", "num_snapshots", "ofs_snapshot_table", "incompatible_features", "compatible_features", "autoclear_features", "refcount_order", "len_header", "compression_type", "additional_fields"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.Header, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['magic']['start'] = self._io.pos()
            self.magic = self._io.read_bytes(4)
            self._debug['magic']['end'] = self._io.pos()
            if not self.magic == b"\x51\x46\x49\xFB":
                raise kaitaistruct.ValidationNotEqualError(b"\x51\x46\x49\xFB", self.magic, self._io, u"/types/header/seq/0")
            self._debug['version']['start'] = self._io.pos()
            self.version = self._io.read_u4be()
            self._debug['version']['end'] = self._io.pos()
            if not  ((self.version == 2) or (self.version == 3)) :
                raise kaitaistruct.ValidationNotAnyOfError(self.version, self._io, u"/types/header/seq/1")
            self._debug['ofs_backing_file_name']['start'] = self._io.pos()
            self.ofs_backing_file_name = self._io.read_u8be()
            self._debug['ofs_backing_file_name']['end'] = self._io.pos()
            self._debug['len_backing_file_name']['start'] = self._io.pos()
            self.len_backing_file_name = self._io.read_u4be()
            self._debug['len_backing_file_name']['end'] = self._io.pos()
            self._debug['cluster_bits']['start'] = self._io.pos()
            self.cluster_bits = self._io.read_u4be()
            self._debug['cluster_bits']['end'] = self._io.pos()
            if not self.cluster_bits >= 9:
                raise kaitaistruct.ValidationLessThanError(9, self.cluster_bits, self._io, u"/types/header/seq/4")
            if not self.cluster_bits <= 21:
                raise kaitaistruct.ValidationGreaterThanError(21, self.cluster_bits, self._io, u"/types/header/seq/4")
            self._debug['size']['start'] = self._io.pos()
            self.size = self._io.read_u8be()
            self._debug['size']['end'] = self._io.pos()
            self._debug['crypt_method']['start'] = self._io.pos()
            self.crypt_method = KaitaiStream.resolve_enum(Qcow2.CryptMethod, self._io.read_u4be())
            self._debug['crypt_method']['end'] = self._io.pos()
            self._debug['num_l1_entries']['start'] = self._io.pos()
            self.num_l1_entries = self._io.read_u4be()
            self._debug['num_l1_entries']['end'] = self._io.pos()
            self._debug['ofs_l1_table']['start'] = self._io.pos()
            self.ofs_l1_table = self._io.read_u8be()
            self._debug['ofs_l1_table']['end'] = self._io.pos()
            self._debug['ofs_refcount_table']['start'] = self._io.pos()
            self.ofs_refcount_table = self._io.read_u8be()
            self._debug['ofs_refcount_table']['end'] = self._io.pos()
            self._debug['num_refcount_table_clusters']['start'] = self._io.pos()
            self.num_refcount_table_clusters = self._io.read_u4be()
            self._debug['num_refcount_table_clusters']['end'] = self._io.pos()
            self._debug['num_snapshots']['start'] = self._io.pos()
            self.num_snapshots = self._io.read_u4be()
            self._debug['num_snapshots']['end'] = self._io.pos()
            self._debug['ofs_snapshot_table']['start'] = self._io.pos()
            self.ofs_snapshot_table = self._io.read_u8be()
            self._debug['ofs_snapshot_table']['end'] = self._io.pos()
            if self.version >= 3:
                pass
                self._debug['incompatible_features']['start'] = self._io.pos()
                self.incompatible_features = Qcow2.IncompatibleFeatures(self._io, self, self._root)
                self.incompatible_features._read()
                self._debug['incompatible_features']['end'] = self._io.pos()

            if self.version >= 3:
                pass
                self._debug['compatible_features']['start'] = self._io.pos()
                self.compatible_features = Qcow2.CompatibleFeatures(self._io, self, self._root)
                self.compatible_features._read()
                self._debug['compatible_features']['end'] = self._io.pos()

            if self.version >= 3:
                pass
                self._debug['autoclear_features']['start'] = self._io.pos()
                self.autoclear_features = Qcow2.AutoclearFeatures(self._io, self, self._root)
                self.autoclear_features._read()
                self._debug['autoclear_features']['end'] = self._io.pos()

            if self.version >= 3:
                pass
                self._debug['refcount_order']['start'] = self._io.pos()
                self.refcount_order = self._io.read_u4be()
                self._debug['refcount_order']['end'] = self._io.pos()
                if not self.refcount_order <= 6:
                    raise kaitaistruct.ValidationGreaterThanError(6, self.refcount_order, self._io, u"/types/header/seq/16")

            if self.version >= 3:
                pass
                self._debug['len_header']['start'] = self._io.pos()
                self.len_header = self._io.read_u4be()
                self._debug['len_header']['end'] = self._io.pos()
                if not self.len_header >= 104:
                    raise kaitaistruct.ValidationLessThanError(104, self.len_header, self._io, u"/types/header/seq/17")

            if  ((self.version >= 3) and (self.len_header > 104)) :
                pass
                self._debug['compression_type']['start'] = self._io.pos()
                self.compression_type = KaitaiStream.resolve_enum(Qcow2.CompressionType, self._io.read_u1())
                self._debug['compression_type']['end'] = self._io.pos()

            if  ((self.version >= 3) and (self.len_header > 105)) :
                pass
                self._debug['additional_fields']['start'] = self._io.pos()
                self.additional_fields = self._io.read_bytes(self.len_header - 105)
                self._debug['additional_fields']['end'] = self._io.pos()



        def _fetch_instances(self):
            pass
            if self.version >= 3:
                pass
                self.incompatible_features._fetch_instances()

            if self.version >= 3:
                pass
                self.compatible_features._fetch_instances()

            if self.version >= 3:
                pass
                self.autoclear_features._fetch_instances()

            if self.version >= 3:
                pass

            if self.version >= 3:
                pass

            if  ((self.version >= 3) and (self.len_header > 104)) :
                pass

            if  ((self.version >= 3) and (self.len_header > 105)) :
                pass


        @property
        def compression_type_effective(self):
            """Compression type, zlib when the field is absent."""
            if hasattr(self, '_m_compression_type_effective'):
                return self._m_compression_type_effective

            self._m_compression_type_effective = KaitaiStream.resolve_enum(Qcow2.CompressionType, (int(self.compression_type) if  ((self.version >= 3) and (self.len_header > 104))  else 0))
            return getattr(self, '_m_compression_type_effective', None)

        @property
        def len_header_effective(self):
            """Length of the header, the 72 bytes implied for version 2 included."""
            if hasattr(self, '_m_len_header_effective'):
                return self._m_len_header_effective

            self._m_len_header_effective = (self.len_header if self.version >= 3 else 72)
            return getattr(self, '_m_len_header_effective', None)

        @property
        def refcount_bits(self):
            """Width of a refcount in bits."""
            if hasattr(self, '_m_refcount_bits'):
                return self._m_refcount_bits

            self._m_refcount_bits = 1 << self.refcount_order_effective
            return getattr(self, '_m_refcount_bits', None)

        @property
        def refcount_order_effective(self):
            """refcount_order, the 4 implied for version 2 included."""
            if hasattr(self, '_m_refcount_order_effective'):
                return self._m_refcount_order_effective

            self._m_refcount_order_effective = (self.refcount_order if self.version >= 3 else 4)
            return getattr(self, '_m_refcount_order_effective', None)


    class HeaderExtension(KaitaiStruct):
        """One header extension. Unknown types are legal and kept as raw bytes; each
        known type appears at most once.
        
        .. seealso::
           Header extensions - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["magic", "len_data", "data", "padding"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.HeaderExtension, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['magic']['start'] = self._io.pos()
            self.magic = KaitaiStream.resolve_enum(Qcow2.HeaderExtensionType, self._io.read_u4be())
            self._debug['magic']['end'] = self._io.pos()
            self._debug['len_data']['start'] = self._io.pos()
            self.len_data = self._io.read_u4be()
            self._debug['len_data']['end'] = self._io.pos()
            self._debug['data']['start'] = self._io.pos()
            _on = (self.magic if self.has_typed_length else Qcow2.HeaderExtensionType.end_of_extensions)
            if _on == Qcow2.HeaderExtensionType.backing_file_format:
                pass
                self._raw_data = self._io.read_bytes(self.len_data)
                _io__raw_data = KaitaiStream(BytesIO(self._raw_data))
                self.data = Qcow2.StringExtension(_io__raw_data, self, self._root)
                self.data._read()
            elif _on == Qcow2.HeaderExtensionType.bitmaps:
                pass
                self._raw_data = self._io.read_bytes(self.len_data)
                _io__raw_data = KaitaiStream(BytesIO(self._raw_data))
                self.data = Qcow2.BitmapsExtension(_io__raw_data, self, self._root)
                self.data._read()
            elif _on == Qcow2.HeaderExtensionType.external_data_file:
                pass
                self._raw_data = self._io.read_bytes(self.len_data)
                _io__raw_data = KaitaiStream(BytesIO(self._raw_data))
                self.data = Qcow2.StringExtension(_io__raw_data, self, self._root)
                self.data._read()
            elif _on == Qcow2.HeaderExtensionType.feature_name_table:
                pass
                self._raw_data = self._io.read_bytes(self.len_data)
                _io__raw_data = KaitaiStream(BytesIO(self._raw_data))
                self.data = Qcow2.FeatureNameTable(_io__raw_data, self, self._root)
                self.data._read()
            elif _on == Qcow2.HeaderExtensionType.full_disk_encryption:
                pass
                self._raw_data = self._io.read_bytes(self.len_data)
                _io__raw_data = KaitaiStream(BytesIO(self._raw_data))
                self.data = Qcow2.FullDiskEncryptionExtension(_io__raw_data, self, self._root)
                self.data._read()
            else:
                pass
                self.data = self._io.read_bytes(self.len_data)
            self._debug['data']['end'] = self._io.pos()
            self._debug['padding']['start'] = self._io.pos()
            self.padding = self._io.read_bytes(((8 - self.len_data % 8) % 8 if (8 - self.len_data % 8) % 8 <= self._io.size() - self._io.pos() else self._io.size() - self._io.pos()))
            self._debug['padding']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            _on = (self.magic if self.has_typed_length else Qcow2.HeaderExtensionType.end_of_extensions)
            if _on == Qcow2.HeaderExtensionType.backing_file_format:
                pass
                self.data._fetch_instances()
            elif _on == Qcow2.HeaderExtensionType.bitmaps:
                pass
                self.data._fetch_instances()
            elif _on == Qcow2.HeaderExtensionType.external_data_file:
                pass
                self.data._fetch_instances()
            elif _on == Qcow2.HeaderExtensionType.feature_name_table:
                pass
                self.data._fetch_instances()
            elif _on == Qcow2.HeaderExtensionType.full_disk_encryption:
                pass
                self.data._fetch_instances()
            else:
                pass

        @property
        def has_typed_length(self):
            """The length is that of the extension's fields (24 bytes for bitmaps,
            16 for the encryption header pointer); otherwise the data is kept as
            raw bytes.
            """
            if hasattr(self, '_m_has_typed_length'):
                return self._m_has_typed_length

            self._m_has_typed_length =  (( ((self.magic != Qcow2.HeaderExtensionType.bitmaps) or (self.len_data == 24)) ) and ( ((self.magic != Qcow2.HeaderExtensionType.full_disk_encryption) or (self.len_data == 16)) )) 
            return getattr(self, '_m_has_typed_length', None)


    class HeaderExtensionArea(KaitaiStruct):
        """The header extensions, each padded to a multiple of 8 bytes, up to the end
        marker (type 0) or the end of the area.
        
        .. seealso::
           Header extensions - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["extensions"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.HeaderExtensionArea, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['extensions']['start'] = self._io.pos()
            self._debug['extensions']['arr'] = []
            self.extensions = []
            i = 0
            while True:
                self._debug['extensions']['arr'].append({'start': self._io.pos()})
                _t_extensions = Qcow2.HeaderExtension(self._io, self, self._root)
                try:
                    _t_extensions._read()
                finally:
                    _ = _t_extensions
                    self.extensions.append(_)
                self._debug['extensions']['arr'][len(self.extensions) - 1]['end'] = self._io.pos()
                if  ((_.magic == Qcow2.HeaderExtensionType.end_of_extensions) or (self._io.is_eof())) :
                    break
                i += 1
            self._debug['extensions']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            for i in range(len(self.extensions)):
                pass
                self.extensions[i]._fetch_instances()



    class IncompatibleFeatures(KaitaiStruct):
        """Incompatible feature bits, read as two big-endian 32-bit halves so that
        every target can test each bit.
        
        .. seealso::
           Header - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["hi", "lo"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.IncompatibleFeatures, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['hi']['start'] = self._io.pos()
            self.hi = self._io.read_u4be()
            self._debug['hi']['end'] = self._io.pos()
            self._debug['lo']['start'] = self._io.pos()
            self.lo = self._io.read_u4be()
            self._debug['lo']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass

        @property
        def compression_type(self):
            """Bit 3, compression_type is present and not zero (not zlib)."""
            if hasattr(self, '_m_compression_type'):
                return self._m_compression_type

            self._m_compression_type = (self.lo // 8) % 2 == 1
            return getattr(self, '_m_compression_type', None)

        @property
        def corrupt(self):
            """Bit 1, any structure may be corrupt; the image must not be written to.
            """
            if hasattr(self, '_m_corrupt'):
                return self._m_corrupt

            self._m_corrupt = (self.lo // 2) % 2 == 1
            return getattr(self, '_m_corrupt', None)

        @property
        def dirty(self):
            """Bit 0: refcounts may be inconsistent; scan the L1/L2 tables to repair
            them before accessing the image.
            """
            if hasattr(self, '_m_dirty'):
                return self._m_dirty

            self._m_dirty = self.lo % 2 == 1
            return getattr(self, '_m_dirty', None)

        @property
        def extended_l2(self):
            """Bit 4, L2 entries use the extended 128-bit format with subclusters."""
            if hasattr(self, '_m_extended_l2'):
                return self._m_extended_l2

            self._m_extended_l2 = (self.lo // 16) % 2 == 1
            return getattr(self, '_m_extended_l2', None)

        @property
        def external_data_file(self):
            """Bit 2: guest clusters are stored in an external data file at their
            guest offset; those clusters are not refcounted, and compressed
            clusters and internal snapshots are not supported.
            """
            if hasattr(self, '_m_external_data_file'):
                return self._m_external_data_file

            self._m_external_data_file = (self.lo // 4) % 2 == 1
            return getattr(self, '_m_external_data_file', None)

        @property
        def has_unknown_bits(self):
            """Bits 5..63 are reserved; QEMU refuses images with any of them set."""
            if hasattr(self, '_m_has_unknown_bits'):
                return self._m_has_unknown_bits

            self._m_has_unknown_bits =  ((self.hi != 0) or (self.lo >= 32)) 
            return getattr(self, '_m_has_unknown_bits', None)


    class L1Entry(KaitaiStruct):
        """One L1 table entry, pointing at an L2 table.
        
        .. seealso::
           Cluster mapping - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["hi", "lo"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.L1Entry, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['hi']['start'] = self._io.pos()
            self.hi = self._io.read_u4be()
            self._debug['hi']['end'] = self._io.pos()
            self._debug['lo']['start'] = self._io.pos()
            self.lo = self._io.read_u4be()
            self._debug['lo']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            _ = self.l2_table
            if hasattr(self, '_m_l2_table'):
                pass
                self._m_l2_table._fetch_instances()


        @property
        def copied(self):
            """Bit 63: the L2 table's refcount is exactly one (accurate in the active
            L1 table only).
            """
            if hasattr(self, '_m_copied'):
                return self._m_copied

            self._m_copied = self.hi >= 2147483648
            return getattr(self, '_m_copied', None)

        @property
        def has_reserved_bits(self):
            """Any of the reserved bits 0..8 and 56..62 is set."""
            if hasattr(self, '_m_has_reserved_bits'):
                return self._m_has_reserved_bits

            self._m_has_reserved_bits =  ((self.lo % 512 != 0) or ((self.hi // 16777216) % 128 != 0)) 
            return getattr(self, '_m_has_reserved_bits', None)

        @property
        def l2_table(self):
            """The L2 table this entry points at."""
            if hasattr(self, '_m_l2_table'):
                return self._m_l2_table

            if self.ofs_l2_table != 0:
                pass
                io = self._root._io
                _pos = io.pos()
                io.seek(self.ofs_l2_table)
                self._debug['_m_l2_table']['start'] = io.pos()
                self._raw__m_l2_table = io.read_bytes(self._root.cluster_size)
                _io__raw__m_l2_table = KaitaiStream(BytesIO(self._raw__m_l2_table))
                self._m_l2_table = Qcow2.L2Table(_io__raw__m_l2_table, self, self._root)
                self._m_l2_table._read()
                self._debug['_m_l2_table']['end'] = io.pos()
                io.seek(_pos)

            return getattr(self, '_m_l2_table', None)

        @property
        def ofs_l2_table(self):
            """Bits 9..55, the offset of the L2 table; 0 if it is not allocated."""
            if hasattr(self, '_m_ofs_l2_table'):
                return self._m_ofs_l2_table

            self._m_ofs_l2_table = ((self.hi % 16777216) * 4294967296 + (self.lo - self.lo % 512))
            return getattr(self, '_m_ofs_l2_table', None)


    class L1Table(KaitaiStruct):
        """An L1 table (the active one or a snapshot's), in pieces of up to 8192
        entries.
        
        .. seealso::
           Cluster mapping - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["pieces"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.L1Table, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['pieces']['start'] = self._io.pos()
            self._debug['pieces']['arr'] = []
            self._raw_pieces = []
            self.pieces = []
            i = 0
            while not self._io.is_eof():
                self._debug['pieces']['arr'].append({'start': self._io.pos()})
                self._raw_pieces.append(self._io.read_bytes((self._io.size() - self._io.pos() if self._io.size() - self._io.pos() < self._root.len_table_piece else self._root.len_table_piece)))
                _io__raw_pieces = KaitaiStream(BytesIO(self._raw_pieces[-1]))
                _t_pieces = Qcow2.L1TablePiece(_io__raw_pieces, self, self._root)
                try:
                    _t_pieces._read()
                finally:
                    self.pieces.append(_t_pieces)
                self._debug['pieces']['arr'][len(self.pieces) - 1]['end'] = self._io.pos()
                i += 1

            self._debug['pieces']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            for i in range(len(self.pieces)):
                pass
                self.pieces[i]._fetch_instances()



    class L1TablePiece(KaitaiStruct):
        """A piece of an L1 table."""
        SEQ_FIELDS = []
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.L1TablePiece, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            pass


        def _fetch_instances(self):
            pass
            _ = self.entries
            if hasattr(self, '_m_entries'):
                pass
                for i in range(len(self._m_entries)):
                    pass
                    self._m_entries[i]._fetch_instances()



        @property
        def entries(self):
            """The entries of the piece, in table order."""
            if hasattr(self, '_m_entries'):
                return self._m_entries

            _pos = self._io.pos()
            self._io.seek(0)
            self._debug['_m_entries']['start'] = self._io.pos()
            self._debug['_m_entries']['arr'] = []
            self._m_entries = []
            i = 0
            while not self._io.is_eof():
                self._debug['_m_entries']['arr'].append({'start': self._io.pos()})
                _t__m_entries = Qcow2.L1Entry(self._io, self, self._root)
                try:
                    _t__m_entries._read()
                finally:
                    self._m_entries.append(_t__m_entries)
                self._debug['_m_entries']['arr'][len(self._m_entries) - 1]['end'] = self._io.pos()
                i += 1

            self._debug['_m_entries']['end'] = self._io.pos()
            self._io.seek(_pos)
            return getattr(self, '_m_entries', None)


    class L2Entry(KaitaiStruct):
        """One L2 table entry: a standard or compressed cluster descriptor, and with
        extended L2 entries a subcluster bitmap.
        
        .. seealso::
           Cluster mapping - https://www.qemu.org/docs/master/interop/qcow2.html
        
        
        .. seealso::
           Extended L2 Entries - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["hi", "lo", "subcluster_zero", "subcluster_alloc"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.L2Entry, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['hi']['start'] = self._io.pos()
            self.hi = self._io.read_u4be()
            self._debug['hi']['end'] = self._io.pos()
            self._debug['lo']['start'] = self._io.pos()
            self.lo = self._io.read_u4be()
            self._debug['lo']['end'] = self._io.pos()
            if self._root.is_extended_l2:
                pass
                self._debug['subcluster_zero']['start'] = self._io.pos()
                self.subcluster_zero = self._io.read_u4be()
                self._debug['subcluster_zero']['end'] = self._io.pos()

            if self._root.is_extended_l2:
                pass
                self._debug['subcluster_alloc']['start'] = self._io.pos()
                self.subcluster_alloc = self._io.read_u4be()
                self._debug['subcluster_alloc']['end'] = self._io.pos()



        def _fetch_instances(self):
            pass
            if self._root.is_extended_l2:
                pass

            if self._root.is_extended_l2:
                pass

            _ = self.subclusters
            if hasattr(self, '_m_subclusters'):
                pass
                for i in range(len(self._m_subclusters)):
                    pass
                    self._m_subclusters[i]._fetch_instances()



        @property
        def cluster_type(self):
            """The type of the cluster descriptor as QEMU classifies it. Without
            extended L2 entries it is how the whole cluster reads; with them,
            `subclusters` says how each subcluster reads.
            """
            if hasattr(self, '_m_cluster_type'):
                return self._m_cluster_type

            self._m_cluster_type = KaitaiStream.resolve_enum(Qcow2.ClusterType, (4 if self.compressed else ((2 if self.ofs_host_cluster != 0 else 1) if self.zero else (3 if self.ofs_host_cluster != 0 else (3 if  ((self._root.has_external_data_file) and (self.copied))  else 0)))))
            return getattr(self, '_m_cluster_type', None)

        @property
        def compressed(self):
            """Bit 62, a compressed cluster."""
            if hasattr(self, '_m_compressed'):
                return self._m_compressed

            self._m_compressed = (self.hi // 1073741824) % 2 == 1
            return getattr(self, '_m_compressed', None)

        @property
        def copied(self):
            """Bit 63: a standard cluster whose refcount is exactly one (accurate in
            L2 tables reachable from the active L1 table). Must be 0 in a
            compressed descriptor.
            """
            if hasattr(self, '_m_copied'):
                return self._m_copied

            self._m_copied = self.hi >= 2147483648
            return getattr(self, '_m_copied', None)

        @property
        def has_reserved_bits(self):
            """Any bit the specification reserves is set. In a standard descriptor:
            bits 1..8 and 56..61, and bit 0 with extended L2 entries. In a
            compressed descriptor: bit 63, the offset bits above 55 (clusters
            below 16 KiB), and with extended L2 entries any bit of the subcluster
            bitmap.
            """
            if hasattr(self, '_m_has_reserved_bits'):
                return self._m_has_reserved_bits

            self._m_has_reserved_bits = ( ((self.copied) or ((self.hi // 16777216) % self._root.compressed_reserved_modulus != 0) or ( ((self._root.is_extended_l2) and ( ((self.subcluster_zero != 0) or (self.subcluster_alloc != 0)) )) ))  if self.compressed else  ((self.lo % 512 >= 2) or ((self.hi // 16777216) % 64 != 0) or ( ((self._root.is_extended_l2) and (self.lo % 2 == 1)) )) )
            return getattr(self, '_m_has_reserved_bits', None)

        @property
        def len_compressed_data(self):
            """Bytes from the offset to the end of the last sector; the compressed
            stream may end before that.
            """
            if hasattr(self, '_m_len_compressed_data'):
                return self._m_len_compressed_data

            self._m_len_compressed_data = ((self.num_additional_sectors + 1) * 512 - self.lo % 512 if self.compressed else 0)
            return getattr(self, '_m_len_compressed_data', None)

        @property
        def num_additional_sectors(self):
            """Compressed descriptor bits x..61: 512-byte sectors used beyond the one
            that holds the offset.
            """
            if hasattr(self, '_m_num_additional_sectors'):
                return self._m_num_additional_sectors

            self._m_num_additional_sectors = ((self.hi % 1073741824) // self._root.compressed_hi_modulus if self.compressed else 0)
            return getattr(self, '_m_num_additional_sectors', None)

        @property
        def ofs_compressed_data(self):
            """Compressed descriptor bits 0..x-1: host offset of the compressed data,
            not aligned to a cluster or sector.
            """
            if hasattr(self, '_m_ofs_compressed_data'):
                return self._m_ofs_compressed_data

            self._m_ofs_compressed_data = ((self.hi % self._root.compressed_hi_modulus) * 4294967296 + self.lo if self.compressed else 0)
            return getattr(self, '_m_ofs_compressed_data', None)

        @property
        def ofs_data(self):
            """Where the guest cluster's data is: the host cluster or the compressed
            data, 0 for none (with an external data file: the offset in that
            file).
            """
            if hasattr(self, '_m_ofs_data'):
                return self._m_ofs_data

            self._m_ofs_data = (self.ofs_compressed_data if self.compressed else self.ofs_host_cluster)
            return getattr(self, '_m_ofs_data', None)

        @property
        def ofs_host_cluster(self):
            """Standard descriptor bits 9..55: the host cluster offset (0 for
            compressed clusters).
            """
            if hasattr(self, '_m_ofs_host_cluster'):
                return self._m_ofs_host_cluster

            self._m_ofs_host_cluster = (0 if self.compressed else (self.hi % 16777216) * 4294967296 + (self.lo - self.lo % 512))
            return getattr(self, '_m_ofs_host_cluster', None)

        @property
        def subclusters(self):
            """How each subcluster of the guest cluster reads: 32 with extended L2
            entries, else one for the whole cluster. Computed from the entry
            alone; reads no bytes.
            """
            if hasattr(self, '_m_subclusters'):
                return self._m_subclusters

            _pos = self._io.pos()
            self._io.seek(0)
            self._debug['_m_subclusters']['start'] = self._io.pos()
            self._debug['_m_subclusters']['arr'] = []
            self._m_subclusters = []
            for i in range(self._root.num_subclusters):
                self._debug['_m_subclusters']['arr'].append({'start': self._io.pos()})
                _t__m_subclusters = Qcow2.L2Subcluster(i, self._io, self, self._root)
                try:
                    _t__m_subclusters._read()
                finally:
                    self._m_subclusters.append(_t__m_subclusters)
                self._debug['_m_subclusters']['arr'][i]['end'] = self._io.pos()

            self._debug['_m_subclusters']['end'] = self._io.pos()
            self._io.seek(_pos)
            return getattr(self, '_m_subclusters', None)

        @property
        def zero(self):
            """Bit 0 of a standard descriptor: the cluster reads as zeros. The bit
            has this meaning only without extended L2 entries, where the
            subcluster bitmap says which subclusters read as zeros instead.
            """
            if hasattr(self, '_m_zero'):
                return self._m_zero

            self._m_zero =  (((not (self.compressed))) and ((not (self._root.is_extended_l2))) and (self.lo % 2 == 1)) 
            return getattr(self, '_m_zero', None)


    class L2Subcluster(KaitaiStruct):
        """How one subcluster of a guest cluster reads (the whole cluster without
        extended L2 entries), as QEMU classifies it and as `qemu-img map`
        reports it.
        
        .. seealso::
           Extended L2 Entries - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = []
        def __init__(self, index, _io, _parent=None, _root=None):
            super(Qcow2.L2Subcluster, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self.index = index
            self._debug = collections.defaultdict(dict)

        def _read(self):
            pass


        def _fetch_instances(self):
            pass

        @property
        def has_ofs_host(self):
            """`qemu-img map` reports a host offset for the subcluster: data or
            zeros in an allocated host cluster of an unencrypted image, and an
            allocated but unwritten subcluster when no backing file answers for
            it.
            """
            if hasattr(self, '_m_has_ofs_host'):
                return self._m_has_ofs_host

            self._m_has_ofs_host =  ((self._root.header.crypt_method == Qcow2.CryptMethod.none) and ( ((self.subcluster_type == Qcow2.SubclusterType.normal) or (self.subcluster_type == Qcow2.SubclusterType.zero_alloc) or ( ((self.subcluster_type == Qcow2.SubclusterType.unallocated_alloc) and ((not (self._root.has_backing_file)))) )) )) 
            return getattr(self, '_m_has_ofs_host', None)

        @property
        def is_alloc_bit_set(self):
            """The subcluster's bit in the allocation half of the bitmap."""
            if hasattr(self, '_m_is_alloc_bit_set'):
                return self._m_is_alloc_bit_set

            self._m_is_alloc_bit_set =  ((self._root.is_extended_l2) and ((self._parent.subcluster_alloc // self.weight) % 2 == 1)) 
            return getattr(self, '_m_is_alloc_bit_set', None)

        @property
        def is_zero_bit_set(self):
            """The subcluster's bit in the "reads as zeros" half of the bitmap."""
            if hasattr(self, '_m_is_zero_bit_set'):
                return self._m_is_zero_bit_set

            self._m_is_zero_bit_set =  ((self._root.is_extended_l2) and ((self._parent.subcluster_zero // self.weight) % 2 == 1)) 
            return getattr(self, '_m_is_zero_bit_set', None)

        @property
        def ofs_host(self):
            """The host offset `qemu-img map` reports for the subcluster (in the
            external data file when there is one); 0 when it reports none.
            """
            if hasattr(self, '_m_ofs_host'):
                return self._m_ofs_host

            self._m_ofs_host = (self._parent.ofs_host_cluster + self.index * self._root.len_subcluster if self.has_ofs_host else 0)
            return getattr(self, '_m_ofs_host', None)

        @property
        def reads_as(self):
            """How a guest read of the subcluster is answered."""
            if hasattr(self, '_m_reads_as'):
                return self._m_reads_as

            self._m_reads_as = KaitaiStream.resolve_enum(Qcow2.SubclusterReads, (5 if self.subcluster_type == Qcow2.SubclusterType.invalid else (4 if self.subcluster_type == Qcow2.SubclusterType.compressed else (3 if self.subcluster_type == Qcow2.SubclusterType.normal else (2 if  ((self.subcluster_type == Qcow2.SubclusterType.zero_plain) or (self.subcluster_type == Qcow2.SubclusterType.zero_alloc))  else (1 if self._root.has_backing_file else 0))))))
            return getattr(self, '_m_reads_as', None)

        @property
        def subcluster_type(self):
            """The subcluster's type as QEMU classifies it."""
            if hasattr(self, '_m_subcluster_type'):
                return self._m_subcluster_type

            self._m_subcluster_type = KaitaiStream.resolve_enum(Qcow2.SubclusterType, (5 if self._parent.cluster_type == Qcow2.ClusterType.compressed else ((4 if self._parent.cluster_type == Qcow2.ClusterType.normal else (3 if self._parent.cluster_type == Qcow2.ClusterType.zero_alloc else (2 if self._parent.cluster_type == Qcow2.ClusterType.zero_plain else 0))) if (not (self._root.is_extended_l2)) else ((6 if self._parent.subcluster_zero & self._parent.subcluster_alloc != 0 else (3 if self.is_zero_bit_set else (4 if self.is_alloc_bit_set else 1))) if self._parent.cluster_type == Qcow2.ClusterType.normal else (6 if self._parent.subcluster_alloc != 0 else (2 if self.is_zero_bit_set else 0))))))
            return getattr(self, '_m_subcluster_type', None)

        @property
        def weight(self):
            """2^index, the weight of the subcluster's bit in either half of the
            bitmap (computed from two shifts below 16 bits).
            """
            if hasattr(self, '_m_weight'):
                return self._m_weight

            self._m_weight = (1 << self.index // 2) * (1 << self.index - self.index // 2)
            return getattr(self, '_m_weight', None)


    class L2Table(KaitaiStruct):
        """An L2 table, exactly one cluster, in pieces of up to 8192 standard or
        4096 extended entries.
        
        .. seealso::
           Cluster mapping - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["pieces"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.L2Table, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['pieces']['start'] = self._io.pos()
            self._debug['pieces']['arr'] = []
            self._raw_pieces = []
            self.pieces = []
            i = 0
            while not self._io.is_eof():
                self._debug['pieces']['arr'].append({'start': self._io.pos()})
                self._raw_pieces.append(self._io.read_bytes((self._io.size() - self._io.pos() if self._io.size() - self._io.pos() < self._root.len_table_piece else self._root.len_table_piece)))
                _io__raw_pieces = KaitaiStream(BytesIO(self._raw_pieces[-1]))
                _t_pieces = Qcow2.L2TablePiece(_io__raw_pieces, self, self._root)
                try:
                    _t_pieces._read()
                finally:
                    self.pieces.append(_t_pieces)
                self._debug['pieces']['arr'][len(self.pieces) - 1]['end'] = self._io.pos()
                i += 1

            self._debug['pieces']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            for i in range(len(self.pieces)):
                pass
                self.pieces[i]._fetch_instances()



    class L2TablePiece(KaitaiStruct):
        """A piece of an L2 table."""
        SEQ_FIELDS = []
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.L2TablePiece, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            pass


        def _fetch_instances(self):
            pass
            _ = self.entries
            if hasattr(self, '_m_entries'):
                pass
                for i in range(len(self._m_entries)):
                    pass
                    self._m_entries[i]._fetch_instances()



        @property
        def entries(self):
            """The entries of the piece, one per guest cluster, in table order.
            """
            if hasattr(self, '_m_entries'):
                return self._m_entries

            _pos = self._io.pos()
            self._io.seek(0)
            self._debug['_m_entries']['start'] = self._io.pos()
            self._debug['_m_entries']['arr'] = []
            self._m_entries = []
            i = 0
            while not self._io.is_eof():
                self._debug['_m_entries']['arr'].append({'start': self._io.pos()})
                _t__m_entries = Qcow2.L2Entry(self._io, self, self._root)
                try:
                    _t__m_entries._read()
                finally:
                    self._m_entries.append(_t__m_entries)
                self._debug['_m_entries']['arr'][len(self._m_entries) - 1]['end'] = self._io.pos()
                i += 1

            self._debug['_m_entries']['end'] = self._io.pos()
            self._io.seek(_pos)
            return getattr(self, '_m_entries', None)


    class LuksHeader(KaitaiStruct):
        """LUKS version 1 partition header (592 bytes). Key material offsets are
        relative to the start of the encryption header clusters, not to the qcow2
        file.
        
        .. seealso::
           Full disk encryption header pointer - https://www.qemu.org/docs/master/interop/qcow2.html
        
        
        .. seealso::
           LUKS1 - https://gitlab.com/cryptsetup/cryptsetup/-/wikis/Specification
        """
        SEQ_FIELDS = ["magic", "version", "cipher_name", "cipher_mode", "hash_spec", "payload_offset", "key_bytes", "mk_digest", "mk_digest_salt", "mk_digest_iterations", "uuid", "key_slots"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.LuksHeader, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['magic']['start'] = self._io.pos()
            self.magic = self._io.read_bytes(6)
            self._debug['magic']['end'] = self._io.pos()
            if not self.magic == b"\x4C\x55\x4B\x53\xBA\xBE":
                raise kaitaistruct.ValidationNotEqualError(b"\x4C\x55\x4B\x53\xBA\xBE", self.magic, self._io, u"/types/luks_header/seq/0")
            self._debug['version']['start'] = self._io.pos()
            self.version = self._io.read_u2be()
            self._debug['version']['end'] = self._io.pos()
            self._debug['cipher_name']['start'] = self._io.pos()
            self.cipher_name = (KaitaiStream.bytes_terminate(self._io.read_bytes(32), 0, False)).decode(u"UTF-8")
            self._debug['cipher_name']['end'] = self._io.pos()
            self._debug['cipher_mode']['start'] = self._io.pos()
            self.cipher_mode = (KaitaiStream.bytes_terminate(self._io.read_bytes(32), 0, False)).decode(u"UTF-8")
            self._debug['cipher_mode']['end'] = self._io.pos()
            self._debug['hash_spec']['start'] = self._io.pos()
            self.hash_spec = (KaitaiStream.bytes_terminate(self._io.read_bytes(32), 0, False)).decode(u"UTF-8")
            self._debug['hash_spec']['end'] = self._io.pos()
            self._debug['payload_offset']['start'] = self._io.pos()
            self.payload_offset = self._io.read_u4be()
            self._debug['payload_offset']['end'] = self._io.pos()
            self._debug['key_bytes']['start'] = self._io.pos()
            self.key_bytes = self._io.read_u4be()
            self._debug['key_bytes']['end'] = self._io.pos()
            self._debug['mk_digest']['start'] = self._io.pos()
            self.mk_digest = self._io.read_bytes(20)
            self._debug['mk_digest']['end'] = self._io.pos()
            self._debug['mk_digest_salt']['start'] = self._io.pos()
            self.mk_digest_salt = self._io.read_bytes(32)
            self._debug['mk_digest_salt']['end'] = self._io.pos()
            self._debug['mk_digest_iterations']['start'] = self._io.pos()
            self.mk_digest_iterations = self._io.read_u4be()
            self._debug['mk_digest_iterations']['end'] = self._io.pos()
            self._debug['uuid']['start'] = self._io.pos()
            self.uuid = (KaitaiStream.bytes_terminate(self._io.read_bytes(40), 0, False)).decode(u"UTF-8")
            self._debug['uuid']['end'] = self._io.pos()
            self._debug['key_slots']['start'] = self._io.pos()
            self._debug['key_slots']['arr'] = []
            self.key_slots = []
            for i in range(8):
                self._debug['key_slots']['arr'].append({'start': self._io.pos()})
                _t_key_slots = Qcow2.LuksKeySlot(self._io, self, self._root)
                try:
                    _t_key_slots._read()
                finally:
                    self.key_slots.append(_t_key_slots)
                self._debug['key_slots']['arr'][i]['end'] = self._io.pos()

            self._debug['key_slots']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            for i in range(len(self.key_slots)):
                pass
                self.key_slots[i]._fetch_instances()



    class LuksKeySlot(KaitaiStruct):
        """One LUKS key slot.
        
        .. seealso::
           LUKS1 - https://gitlab.com/cryptsetup/cryptsetup/-/wikis/Specification
        """
        SEQ_FIELDS = ["active", "iterations", "salt", "key_material_offset", "stripes"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.LuksKeySlot, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['active']['start'] = self._io.pos()
            self.active = KaitaiStream.resolve_enum(Qcow2.LuksKeySlotState, self._io.read_u4be())
            self._debug['active']['end'] = self._io.pos()
            self._debug['iterations']['start'] = self._io.pos()
            self.iterations = self._io.read_u4be()
            self._debug['iterations']['end'] = self._io.pos()
            self._debug['salt']['start'] = self._io.pos()
            self.salt = self._io.read_bytes(32)
            self._debug['salt']['end'] = self._io.pos()
            self._debug['key_material_offset']['start'] = self._io.pos()
            self.key_material_offset = self._io.read_u4be()
            self._debug['key_material_offset']['end'] = self._io.pos()
            self._debug['stripes']['start'] = self._io.pos()
            self.stripes = self._io.read_u4be()
            self._debug['stripes']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            _ = self.key_material
            if hasattr(self, '_m_key_material'):
                pass


        @property
        def key_material(self):
            """The key material of an enabled slot: the master key split into
            `stripes` anti-forensic stripes, encrypted with the key derived from
            the passphrase; `key_bytes * stripes` bytes.
            """
            if hasattr(self, '_m_key_material'):
                return self._m_key_material

            if self.active == Qcow2.LuksKeySlotState.enabled:
                pass
                _pos = self._io.pos()
                self._io.seek(self.key_material_offset * 512)
                self._debug['_m_key_material']['start'] = self._io.pos()
                self._m_key_material = self._io.read_bytes(self._parent.key_bytes * self.stripes)
                self._debug['_m_key_material']['end'] = self._io.pos()
                self._io.seek(_pos)

            return getattr(self, '_m_key_material', None)


    class RefcountBlock(KaitaiStruct):
        """A refcount block, exactly one cluster of `1 << refcount_order`-bit
        refcounts, in pieces of `len_table_piece` bytes.
        
        .. seealso::
           Host cluster management - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["pieces"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.RefcountBlock, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['pieces']['start'] = self._io.pos()
            self._debug['pieces']['arr'] = []
            self._raw_pieces = []
            self.pieces = []
            i = 0
            while not self._io.is_eof():
                self._debug['pieces']['arr'].append({'start': self._io.pos()})
                self._raw_pieces.append(self._io.read_bytes((self._io.size() - self._io.pos() if self._io.size() - self._io.pos() < self._root.len_table_piece else self._root.len_table_piece)))
                _io__raw_pieces = KaitaiStream(BytesIO(self._raw_pieces[-1]))
                _t_pieces = Qcow2.RefcountBlockPiece(_io__raw_pieces, self, self._root)
                try:
                    _t_pieces._read()
                finally:
                    self.pieces.append(_t_pieces)
                self._debug['pieces']['arr'][len(self.pieces) - 1]['end'] = self._io.pos()
                i += 1

            self._debug['pieces']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            for i in range(len(self.pieces)):
                pass
                self.pieces[i]._fetch_instances()



    class RefcountBlockPiece(KaitaiStruct):
        """A piece of a refcount block. Sub-byte refcounts are packed least
        significant bit first; wider ones are big-endian integers. Exactly one
        of the arrays is present, the one of the image's refcount width. A
        1-bit refcount reads as a boolean (true for a refcount of 1).
        """
        SEQ_FIELDS = []
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.RefcountBlockPiece, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            pass


        def _fetch_instances(self):
            pass
            _ = self.refcounts_1
            if hasattr(self, '_m_refcounts_1'):
                pass
                for i in range(len(self._m_refcounts_1)):
                    pass


            _ = self.refcounts_16
            if hasattr(self, '_m_refcounts_16'):
                pass
                for i in range(len(self._m_refcounts_16)):
                    pass


            _ = self.refcounts_2
            if hasattr(self, '_m_refcounts_2'):
                pass
                for i in range(len(self._m_refcounts_2)):
                    pass


            _ = self.refcounts_32
            if hasattr(self, '_m_refcounts_32'):
                pass
                for i in range(len(self._m_refcounts_32)):
                    pass


            _ = self.refcounts_4
            if hasattr(self, '_m_refcounts_4'):
                pass
                for i in range(len(self._m_refcounts_4)):
                    pass


            _ = self.refcounts_64
            if hasattr(self, '_m_refcounts_64'):
                pass
                for i in range(len(self._m_refcounts_64)):
                    pass


            _ = self.refcounts_8
            if hasattr(self, '_m_refcounts_8'):
                pass
                for i in range(len(self._m_refcounts_8)):
                    pass



        @property
        def refcounts_1(self):
            """1-bit refcounts (refcount_order 0)."""
            if hasattr(self, '_m_refcounts_1'):
                return self._m_refcounts_1

            if self._root.header.refcount_order_effective == 0:
                pass
                _pos = self._io.pos()
                self._io.seek(0)
                self._debug['_m_refcounts_1']['start'] = self._io.pos()
                self._debug['_m_refcounts_1']['arr'] = []
                self._m_refcounts_1 = []
                for i in range(self._io.size() * 8):
                    self._debug['_m_refcounts_1']['arr'].append({'start': self._io.pos()})
                    self._m_refcounts_1.append(self._io.read_bits_int_le(1) != 0)
                    self._debug['_m_refcounts_1']['arr'][i]['end'] = self._io.pos()

                self._debug['_m_refcounts_1']['end'] = self._io.pos()
                self._io.seek(_pos)

            return getattr(self, '_m_refcounts_1', None)

        @property
        def refcounts_16(self):
            """16-bit refcounts (refcount_order 4, the only width of version 2)."""
            if hasattr(self, '_m_refcounts_16'):
                return self._m_refcounts_16

            if self._root.header.refcount_order_effective == 4:
                pass
                _pos = self._io.pos()
                self._io.seek(0)
                self._debug['_m_refcounts_16']['start'] = self._io.pos()
                self._debug['_m_refcounts_16']['arr'] = []
                self._m_refcounts_16 = []
                for i in range(self._io.size() // 2):
                    self._debug['_m_refcounts_16']['arr'].append({'start': self._io.pos()})
                    self._m_refcounts_16.append(self._io.read_u2be())
                    self._debug['_m_refcounts_16']['arr'][i]['end'] = self._io.pos()

                self._debug['_m_refcounts_16']['end'] = self._io.pos()
                self._io.seek(_pos)

            return getattr(self, '_m_refcounts_16', None)

        @property
        def refcounts_2(self):
            """2-bit refcounts (refcount_order 1)."""
            if hasattr(self, '_m_refcounts_2'):
                return self._m_refcounts_2

            if self._root.header.refcount_order_effective == 1:
                pass
                _pos = self._io.pos()
                self._io.seek(0)
                self._debug['_m_refcounts_2']['start'] = self._io.pos()
                self._debug['_m_refcounts_2']['arr'] = []
                self._m_refcounts_2 = []
                for i in range(self._io.size() * 4):
                    self._debug['_m_refcounts_2']['arr'].append({'start': self._io.pos()})
                    self._m_refcounts_2.append(self._io.read_bits_int_le(2))
                    self._debug['_m_refcounts_2']['arr'][i]['end'] = self._io.pos()

                self._debug['_m_refcounts_2']['end'] = self._io.pos()
                self._io.seek(_pos)

            return getattr(self, '_m_refcounts_2', None)

        @property
        def refcounts_32(self):
            """32-bit refcounts (refcount_order 5)."""
            if hasattr(self, '_m_refcounts_32'):
                return self._m_refcounts_32

            if self._root.header.refcount_order_effective == 5:
                pass
                _pos = self._io.pos()
                self._io.seek(0)
                self._debug['_m_refcounts_32']['start'] = self._io.pos()
                self._debug['_m_refcounts_32']['arr'] = []
                self._m_refcounts_32 = []
                for i in range(self._io.size() // 4):
                    self._debug['_m_refcounts_32']['arr'].append({'start': self._io.pos()})
                    self._m_refcounts_32.append(self._io.read_u4be())
                    self._debug['_m_refcounts_32']['arr'][i]['end'] = self._io.pos()

                self._debug['_m_refcounts_32']['end'] = self._io.pos()
                self._io.seek(_pos)

            return getattr(self, '_m_refcounts_32', None)

        @property
        def refcounts_4(self):
            """4-bit refcounts (refcount_order 2)."""
            if hasattr(self, '_m_refcounts_4'):
                return self._m_refcounts_4

            if self._root.header.refcount_order_effective == 2:
                pass
                _pos = self._io.pos()
                self._io.seek(0)
                self._debug['_m_refcounts_4']['start'] = self._io.pos()
                self._debug['_m_refcounts_4']['arr'] = []
                self._m_refcounts_4 = []
                for i in range(self._io.size() * 2):
                    self._debug['_m_refcounts_4']['arr'].append({'start': self._io.pos()})
                    self._m_refcounts_4.append(self._io.read_bits_int_le(4))
                    self._debug['_m_refcounts_4']['arr'][i]['end'] = self._io.pos()

                self._debug['_m_refcounts_4']['end'] = self._io.pos()
                self._io.seek(_pos)

            return getattr(self, '_m_refcounts_4', None)

        @property
        def refcounts_64(self):
            """64-bit refcounts (refcount_order 6)."""
            if hasattr(self, '_m_refcounts_64'):
                return self._m_refcounts_64

            if self._root.header.refcount_order_effective == 6:
                pass
                _pos = self._io.pos()
                self._io.seek(0)
                self._debug['_m_refcounts_64']['start'] = self._io.pos()
                self._debug['_m_refcounts_64']['arr'] = []
                self._m_refcounts_64 = []
                for i in range(self._io.size() // 8):
                    self._debug['_m_refcounts_64']['arr'].append({'start': self._io.pos()})
                    self._m_refcounts_64.append(self._io.read_u8be())
                    self._debug['_m_refcounts_64']['arr'][i]['end'] = self._io.pos()

                self._debug['_m_refcounts_64']['end'] = self._io.pos()
                self._io.seek(_pos)

            return getattr(self, '_m_refcounts_64', None)

        @property
        def refcounts_8(self):
            """8-bit refcounts (refcount_order 3)."""
            if hasattr(self, '_m_refcounts_8'):
                return self._m_refcounts_8

            if self._root.header.refcount_order_effective == 3:
                pass
                _pos = self._io.pos()
                self._io.seek(0)
                self._debug['_m_refcounts_8']['start'] = self._io.pos()
                self._debug['_m_refcounts_8']['arr'] = []
                self._m_refcounts_8 = []
                for i in range(self._io.size()):
                    self._debug['_m_refcounts_8']['arr'].append({'start': self._io.pos()})
                    self._m_refcounts_8.append(self._io.read_u1())
                    self._debug['_m_refcounts_8']['arr'][i]['end'] = self._io.pos()

                self._debug['_m_refcounts_8']['end'] = self._io.pos()
                self._io.seek(_pos)

            return getattr(self, '_m_refcounts_8', None)


    class RefcountTable(KaitaiStruct):
        """The refcount table, in pieces of up to 8192 entries.
        
        .. seealso::
           Host cluster management - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["pieces"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.RefcountTable, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['pieces']['start'] = self._io.pos()
            self._debug['pieces']['arr'] = []
            self._raw_pieces = []
            self.pieces = []
            i = 0
            while not self._io.is_eof():
                self._debug['pieces']['arr'].append({'start': self._io.pos()})
                self._raw_pieces.append(self._io.read_bytes((self._io.size() - self._io.pos() if self._io.size() - self._io.pos() < self._root.len_table_piece else self._root.len_table_piece)))
                _io__raw_pieces = KaitaiStream(BytesIO(self._raw_pieces[-1]))
                _t_pieces = Qcow2.RefcountTablePiece(_io__raw_pieces, self, self._root)
                try:
                    _t_pieces._read()
                finally:
                    self.pieces.append(_t_pieces)
                self._debug['pieces']['arr'][len(self.pieces) - 1]['end'] = self._io.pos()
                i += 1

            self._debug['pieces']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            for i in range(len(self.pieces)):
                pass
                self.pieces[i]._fetch_instances()



    class RefcountTableEntry(KaitaiStruct):
        """One refcount table entry, pointing at a refcount block.
        
        .. seealso::
           Host cluster management - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["hi", "lo"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.RefcountTableEntry, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['hi']['start'] = self._io.pos()
            self.hi = self._io.read_u4be()
            self._debug['hi']['end'] = self._io.pos()
            self._debug['lo']['start'] = self._io.pos()
            self.lo = self._io.read_u4be()
            self._debug['lo']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            _ = self.refcount_block
            if hasattr(self, '_m_refcount_block'):
                pass
                self._m_refcount_block._fetch_instances()


        @property
        def has_reserved_bits(self):
            """Any of the reserved bits 0..8 is set."""
            if hasattr(self, '_m_has_reserved_bits'):
                return self._m_has_reserved_bits

            self._m_has_reserved_bits = self.lo % 512 != 0
            return getattr(self, '_m_has_reserved_bits', None)

        @property
        def ofs_refcount_block(self):
            """Bits 9..63, the offset of the refcount block; 0 if it is not
            allocated.
            """
            if hasattr(self, '_m_ofs_refcount_block'):
                return self._m_ofs_refcount_block

            self._m_ofs_refcount_block = (self.hi * 4294967296 + (self.lo - self.lo % 512))
            return getattr(self, '_m_ofs_refcount_block', None)

        @property
        def refcount_block(self):
            """The refcount block this entry points at."""
            if hasattr(self, '_m_refcount_block'):
                return self._m_refcount_block

            if self.ofs_refcount_block != 0:
                pass
                io = self._root._io
                _pos = io.pos()
                io.seek(self.ofs_refcount_block)
                self._debug['_m_refcount_block']['start'] = io.pos()
                self._raw__m_refcount_block = io.read_bytes(self._root.cluster_size)
                _io__raw__m_refcount_block = KaitaiStream(BytesIO(self._raw__m_refcount_block))
                self._m_refcount_block = Qcow2.RefcountBlock(_io__raw__m_refcount_block, self, self._root)
                self._m_refcount_block._read()
                self._debug['_m_refcount_block']['end'] = io.pos()
                io.seek(_pos)

            return getattr(self, '_m_refcount_block', None)


    class RefcountTablePiece(KaitaiStruct):
        """A piece of the refcount table."""
        SEQ_FIELDS = []
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.RefcountTablePiece, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            pass


        def _fetch_instances(self):
            pass
            _ = self.entries
            if hasattr(self, '_m_entries'):
                pass
                for i in range(len(self._m_entries)):
                    pass
                    self._m_entries[i]._fetch_instances()



        @property
        def entries(self):
            """The entries of the piece, in table order."""
            if hasattr(self, '_m_entries'):
                return self._m_entries

            _pos = self._io.pos()
            self._io.seek(0)
            self._debug['_m_entries']['start'] = self._io.pos()
            self._debug['_m_entries']['arr'] = []
            self._m_entries = []
            i = 0
            while not self._io.is_eof():
                self._debug['_m_entries']['arr'].append({'start': self._io.pos()})
                _t__m_entries = Qcow2.RefcountTableEntry(self._io, self, self._root)
                try:
                    _t__m_entries._read()
                finally:
                    self._m_entries.append(_t__m_entries)
                self._debug['_m_entries']['arr'][len(self._m_entries) - 1]['end'] = self._io.pos()
                i += 1

            self._debug['_m_entries']['end'] = self._io.pos()
            self._io.seek(_pos)
            return getattr(self, '_m_entries', None)


    class Snapshot(KaitaiStruct):
        """One snapshot table entry; entries are padded to a multiple of 8 bytes.
        
        .. seealso::
           Snapshots - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["ofs_l1_table", "num_l1_table", "len_id", "len_name", "date_sec", "date_nsec", "vm_clock_nsec_hi", "vm_clock_nsec_lo", "vm_state_size", "len_extra_data", "extra_data", "id", "name", "padding"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.Snapshot, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['ofs_l1_table']['start'] = self._io.pos()
            self.ofs_l1_table = self._io.read_u8be()
            self._debug['ofs_l1_table']['end'] = self._io.pos()
            self._debug['num_l1_table']['start'] = self._io.pos()
            self.num_l1_table = self._io.read_u4be()
            self._debug['num_l1_table']['end'] = self._io.pos()
            self._debug['len_id']['start'] = self._io.pos()
            self.len_id = self._io.read_u2be()
            self._debug['len_id']['end'] = self._io.pos()
            self._debug['len_name']['start'] = self._io.pos()
            self.len_name = self._io.read_u2be()
            self._debug['len_name']['end'] = self._io.pos()
            self._debug['date_sec']['start'] = self._io.pos()
            self.date_sec = self._io.read_u4be()
            self._debug['date_sec']['end'] = self._io.pos()
            self._debug['date_nsec']['start'] = self._io.pos()
            self.date_nsec = self._io.read_u4be()
            self._debug['date_nsec']['end'] = self._io.pos()
            self._debug['vm_clock_nsec_hi']['start'] = self._io.pos()
            self.vm_clock_nsec_hi = self._io.read_u4be()
            self._debug['vm_clock_nsec_hi']['end'] = self._io.pos()
            self._debug['vm_clock_nsec_lo']['start'] = self._io.pos()
            self.vm_clock_nsec_lo = self._io.read_u4be()
            self._debug['vm_clock_nsec_lo']['end'] = self._io.pos()
            self._debug['vm_state_size']['start'] = self._io.pos()
            self.vm_state_size = self._io.read_u4be()
            self._debug['vm_state_size']['end'] = self._io.pos()
            self._debug['len_extra_data']['start'] = self._io.pos()
            self.len_extra_data = self._io.read_u4be()
            self._debug['len_extra_data']['end'] = self._io.pos()
            self._debug['extra_data']['start'] = self._io.pos()
            self._raw_extra_data = self._io.read_bytes(self.len_extra_data)
            _io__raw_extra_data = KaitaiStream(BytesIO(self._raw_extra_data))
            self.extra_data = Qcow2.SnapshotExtraData(_io__raw_extra_data, self, self._root)
            self.extra_data._read()
            self._debug['extra_data']['end'] = self._io.pos()
            self._debug['id']['start'] = self._io.pos()
            self.id = self._io.read_bytes(self.len_id)
            self._debug['id']['end'] = self._io.pos()
            self._debug['name']['start'] = self._io.pos()
            self.name = self._io.read_bytes(self.len_name)
            self._debug['name']['end'] = self._io.pos()
            self._debug['padding']['start'] = self._io.pos()
            self.padding = self._io.read_bytes(((8 - (((40 + self.len_extra_data) + self.len_id) + self.len_name) % 8) % 8 if (8 - (((40 + self.len_extra_data) + self.len_id) + self.len_name) % 8) % 8 <= self._io.size() - self._io.pos() else self._io.size() - self._io.pos()))
            self._debug['padding']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            self.extra_data._fetch_instances()
            _ = self.l1_table
            if hasattr(self, '_m_l1_table'):
                pass
                self._m_l1_table._fetch_instances()


        @property
        def l1_table(self):
            """The snapshot's L1 table (copied flags are not accurate here)."""
            if hasattr(self, '_m_l1_table'):
                return self._m_l1_table

            io = self._root._io
            _pos = io.pos()
            io.seek(self.ofs_l1_table)
            self._debug['_m_l1_table']['start'] = io.pos()
            self._raw__m_l1_table = io.read_bytes(self.num_l1_table * 8)
            _io__raw__m_l1_table = KaitaiStream(BytesIO(self._raw__m_l1_table))
            self._m_l1_table = Qcow2.L1Table(_io__raw__m_l1_table, self, self._root)
            self._m_l1_table._read()
            self._debug['_m_l1_table']['end'] = io.pos()
            io.seek(_pos)
            return getattr(self, '_m_l1_table', None)

        @property
        def vm_clock_nsec(self):
            """Time the guest had been running when the snapshot was taken, in
            nanoseconds; also given as `vm_clock_sec` and `vm_clock_subsec_nsec`.
            """
            if hasattr(self, '_m_vm_clock_nsec'):
                return self._m_vm_clock_nsec

            self._m_vm_clock_nsec = (self.vm_clock_nsec_hi * 4294967296 + self.vm_clock_nsec_lo)
            return getattr(self, '_m_vm_clock_nsec', None)

        @property
        def vm_clock_sec(self):
            """Whole seconds of `vm_clock_nsec`. As 10^9 = 512 * 1953125, the clock
            divided by 512, hi * 2^23 + lo / 512, is divided by 1953125 half by
            half: no intermediate value exceeds 2^45, and remainders are taken by
            subtraction, not `%`, which some runtimes compute on 32-bit ints.
            """
            if hasattr(self, '_m_vm_clock_sec'):
                return self._m_vm_clock_sec

            self._m_vm_clock_sec = ((self.vm_clock_nsec_hi // 1953125) * 8388608 + ((self.vm_clock_nsec_hi - (self.vm_clock_nsec_hi // 1953125) * 1953125) * 8388608 + (self.vm_clock_nsec_lo // 512)) // 1953125)
            return getattr(self, '_m_vm_clock_sec', None)

        @property
        def vm_clock_subsec_nsec(self):
            """Nanoseconds of `vm_clock_nsec` beyond `vm_clock_sec`, below 10^9: the
            remainder of the second division, times 512, plus lo % 512.
            """
            if hasattr(self, '_m_vm_clock_subsec_nsec'):
                return self._m_vm_clock_subsec_nsec

            self._m_vm_clock_subsec_nsec = ((((self.vm_clock_nsec_hi - (self.vm_clock_nsec_hi // 1953125) * 1953125) * 8388608 + (self.vm_clock_nsec_lo // 512)) - (self.vm_clock_sec - (self.vm_clock_nsec_hi // 1953125) * 8388608) * 1953125) * 512 + (self.vm_clock_nsec_lo % 512))
            return getattr(self, '_m_vm_clock_subsec_nsec', None)


    class SnapshotExtraData(KaitaiStruct):
        """Extra data of a snapshot entry; fields present as far as its size reaches,
        unknown fields after them kept.
        
        .. seealso::
           Snapshots - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["vm_state_size_large", "disk_size", "icount_hi", "icount_lo", "unknown"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.SnapshotExtraData, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            if self._io.size() >= 8:
                pass
                self._debug['vm_state_size_large']['start'] = self._io.pos()
                self.vm_state_size_large = self._io.read_u8be()
                self._debug['vm_state_size_large']['end'] = self._io.pos()

            if self._io.size() >= 16:
                pass
                self._debug['disk_size']['start'] = self._io.pos()
                self.disk_size = self._io.read_u8be()
                self._debug['disk_size']['end'] = self._io.pos()

            if self._io.size() >= 24:
                pass
                self._debug['icount_hi']['start'] = self._io.pos()
                self.icount_hi = self._io.read_u4be()
                self._debug['icount_hi']['end'] = self._io.pos()

            if self._io.size() >= 24:
                pass
                self._debug['icount_lo']['start'] = self._io.pos()
                self.icount_lo = self._io.read_u4be()
                self._debug['icount_lo']['end'] = self._io.pos()

            self._debug['unknown']['start'] = self._io.pos()
            self.unknown = self._io.read_bytes_full()
            self._debug['unknown']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass
            if self._io.size() >= 8:
                pass

            if self._io.size() >= 16:
                pass

            if self._io.size() >= 24:
                pass

            if self._io.size() >= 24:
                pass


        @property
        def icount(self):
            """Guest instructions executed (record/replay icount), a signed 64-bit
            number: -1 if not recorded.
            """
            if hasattr(self, '_m_icount'):
                return self._m_icount

            if self._io.size() >= 24:
                pass
                self._m_icount = ((self.icount_hi - (4294967296 if self.icount_hi >= 2147483648 else 0)) * 4294967296 + self.icount_lo)

            return getattr(self, '_m_icount', None)


    class StringExtension(KaitaiStruct):
        """An extension that is one string (backing file format, external data file
        name): not null terminated, its length is the extension length.
        
        .. seealso::
           String header extensions - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        SEQ_FIELDS = ["value"]
        def __init__(self, _io, _parent=None, _root=None):
            super(Qcow2.StringExtension, self).__init__(_io)
            self._parent = _parent
            self._root = _root
            self._debug = collections.defaultdict(dict)

        def _read(self):
            self._debug['value']['start'] = self._io.pos()
            self.value = self._io.read_bytes_full()
            self._debug['value']['end'] = self._io.pos()


        def _fetch_instances(self):
            pass


    @property
    def backing_file_name(self):
        """Name of the backing file (not null terminated), as raw bytes: any bytes
        are kept, and every target gives the same value. QEMU reads it as a C
        string.
        """
        if hasattr(self, '_m_backing_file_name'):
            return self._m_backing_file_name

        if self.header.ofs_backing_file_name != 0:
            pass
            _pos = self._io.pos()
            self._io.seek(self.header.ofs_backing_file_name)
            self._debug['_m_backing_file_name']['start'] = self._io.pos()
            self._m_backing_file_name = self._io.read_bytes(self.header.len_backing_file_name)
            self._debug['_m_backing_file_name']['end'] = self._io.pos()
            self._io.seek(_pos)

        return getattr(self, '_m_backing_file_name', None)

    @property
    def cluster_size(self):
        """Size of a host and guest cluster in bytes."""
        if hasattr(self, '_m_cluster_size'):
            return self._m_cluster_size

        self._m_cluster_size = 1 << self.header.cluster_bits
        return getattr(self, '_m_cluster_size', None)

    @property
    def compressed_hi_modulus(self):
        """2^(x-32): splits the upper 32-bit half of a compressed descriptor into the
        top bits of the host offset (remainder) and the sector count (quotient).
        """
        if hasattr(self, '_m_compressed_hi_modulus'):
            return self._m_compressed_hi_modulus

        self._m_compressed_hi_modulus = 1 << self.compressed_offset_bits - 32
        return getattr(self, '_m_compressed_hi_modulus', None)

    @property
    def compressed_offset_bits(self):
        """x in the compressed cluster descriptor: bits 0..x-1 hold the host offset,
        bits x..61 the number of additional 512-byte sectors. From 49 (2 MiB
        clusters) to 61 (512-byte clusters).
        """
        if hasattr(self, '_m_compressed_offset_bits'):
            return self._m_compressed_offset_bits

        self._m_compressed_offset_bits = 62 - (self.header.cluster_bits - 8)
        return getattr(self, '_m_compressed_offset_bits', None)

    @property
    def compressed_reserved_modulus(self):
        """2^(x-56) when the offset field of a compressed descriptor reaches beyond
        bit 55 (clusters below 16 KiB), else 1: the remainder of bits 56..63 by it
        is the offset bits above 55, which must be 0.
        """
        if hasattr(self, '_m_compressed_reserved_modulus'):
            return self._m_compressed_reserved_modulus

        self._m_compressed_reserved_modulus = (1 << self.compressed_offset_bits - 56 if self.compressed_offset_bits > 56 else 1)
        return getattr(self, '_m_compressed_reserved_modulus', None)

    @property
    def has_backing_file(self):
        """The image has a backing file: unallocated guest clusters read from it
        (else as zeros).
        """
        if hasattr(self, '_m_has_backing_file'):
            return self._m_has_backing_file

        self._m_has_backing_file = self.header.ofs_backing_file_name != 0
        return getattr(self, '_m_has_backing_file', None)

    @property
    def has_external_data_file(self):
        """Guest clusters are stored in an external data file, at the offsets their
        descriptors give.
        """
        if hasattr(self, '_m_has_external_data_file'):
            return self._m_has_external_data_file

        self._m_has_external_data_file =  ((self.header.version >= 3) and (self.header.incompatible_features.external_data_file)) 
        return getattr(self, '_m_has_external_data_file', None)

    @property
    def is_extended_l2(self):
        """L2 entries are 128 bits wide, with a bitmap of 32 subclusters each."""
        if hasattr(self, '_m_is_extended_l2'):
            return self._m_is_extended_l2

        self._m_is_extended_l2 =  ((self.header.version >= 3) and (self.header.incompatible_features.extended_l2)) 
        return getattr(self, '_m_is_extended_l2', None)

    @property
    def l1_table(self):
        """The active L1 table.
        
        .. seealso::
           Cluster mapping - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        if hasattr(self, '_m_l1_table'):
            return self._m_l1_table

        io = self._root._io
        _pos = io.pos()
        io.seek(self.header.ofs_l1_table)
        self._debug['_m_l1_table']['start'] = io.pos()
        self._raw__m_l1_table = io.read_bytes(self.header.num_l1_entries * 8)
        _io__raw__m_l1_table = KaitaiStream(BytesIO(self._raw__m_l1_table))
        self._m_l1_table = Qcow2.L1Table(_io__raw__m_l1_table, self, self._root)
        self._m_l1_table._read()
        self._debug['_m_l1_table']['end'] = io.pos()
        io.seek(_pos)
        return getattr(self, '_m_l1_table', None)

    @property
    def len_l2_entry(self):
        """Size of one L2 table entry in bytes."""
        if hasattr(self, '_m_len_l2_entry'):
            return self._m_len_l2_entry

        self._m_len_l2_entry = (16 if self.is_extended_l2 else 8)
        return getattr(self, '_m_len_l2_entry', None)

    @property
    def len_subcluster(self):
        """Size of a subcluster in bytes (the cluster size without extended L2)."""
        if hasattr(self, '_m_len_subcluster'):
            return self._m_len_subcluster

        self._m_len_subcluster = self.cluster_size // self.num_subclusters
        return getattr(self, '_m_len_subcluster', None)

    @property
    def len_table_piece(self):
        """Tables are read in pieces of this many bytes (the last piece of a table
        may be shorter): 8192 64-bit entries, 4096 extended L2 entries, or 524,288
        one-bit refcounts.
        """
        if hasattr(self, '_m_len_table_piece'):
            return self._m_len_table_piece

        self._m_len_table_piece = 65536
        return getattr(self, '_m_len_table_piece', None)

    @property
    def num_l2_entries(self):
        """Number of entries in one L2 table (an L2 table is exactly one cluster)."""
        if hasattr(self, '_m_num_l2_entries'):
            return self._m_num_l2_entries

        self._m_num_l2_entries = self.cluster_size // self.len_l2_entry
        return getattr(self, '_m_num_l2_entries', None)

    @property
    def num_refcount_block_entries(self):
        """Number of refcounts in one refcount block (one cluster)."""
        if hasattr(self, '_m_num_refcount_block_entries'):
            return self._m_num_refcount_block_entries

        self._m_num_refcount_block_entries = (self.cluster_size * 8) // self.header.refcount_bits
        return getattr(self, '_m_num_refcount_block_entries', None)

    @property
    def num_subclusters(self):
        """Number of subclusters in a guest cluster: 32 with extended L2 entries,
        else 1 (the cluster itself).
        """
        if hasattr(self, '_m_num_subclusters'):
            return self._m_num_subclusters

        self._m_num_subclusters = (32 if self.is_extended_l2 else 1)
        return getattr(self, '_m_num_subclusters', None)

    @property
    def ofs_extensions_end(self):
        """End of the header extension area as read: the limit, or the end of the
        file if that comes first (QEMU reads zeros, an end marker, past it).
        """
        if hasattr(self, '_m_ofs_extensions_end'):
            return self._m_ofs_extensions_end

        self._m_ofs_extensions_end = (self.ofs_extensions_limit if self.ofs_extensions_limit < self._io.size() else self._io.size())
        return getattr(self, '_m_ofs_extensions_end', None)

    @property
    def ofs_extensions_limit(self):
        """Where the header extension area must end: at the backing file name when
        there is one in the first cluster, else at the end of the first cluster.
        """
        if hasattr(self, '_m_ofs_extensions_limit'):
            return self._m_ofs_extensions_limit

        self._m_ofs_extensions_limit = (self.header.ofs_backing_file_name if  ((self.header.ofs_backing_file_name != 0) and (self.header.ofs_backing_file_name < self.cluster_size))  else self.cluster_size)
        return getattr(self, '_m_ofs_extensions_limit', None)

    @property
    def refcount_table(self):
        """The refcount table; it occupies `refcount_table_clusters` whole clusters.
        
        .. seealso::
           Host cluster management - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        if hasattr(self, '_m_refcount_table'):
            return self._m_refcount_table

        io = self._root._io
        _pos = io.pos()
        io.seek(self.header.ofs_refcount_table)
        self._debug['_m_refcount_table']['start'] = io.pos()
        self._raw__m_refcount_table = io.read_bytes(self.header.num_refcount_table_clusters * self.cluster_size)
        _io__raw__m_refcount_table = KaitaiStream(BytesIO(self._raw__m_refcount_table))
        self._m_refcount_table = Qcow2.RefcountTable(_io__raw__m_refcount_table, self, self._root)
        self._m_refcount_table._read()
        self._debug['_m_refcount_table']['end'] = io.pos()
        io.seek(_pos)
        return getattr(self, '_m_refcount_table', None)

    @property
    def snapshots(self):
        """The snapshot table, one variable-length entry per internal snapshot.
        
        .. seealso::
           Snapshots - https://www.qemu.org/docs/master/interop/qcow2.html
        """
        if hasattr(self, '_m_snapshots'):
            return self._m_snapshots

        if self.header.num_snapshots != 0:
            pass
            io = self._root._io
            _pos = io.pos()
            io.seek(self.header.ofs_snapshot_table)
            self._debug['_m_snapshots']['start'] = io.pos()
            self._debug['_m_snapshots']['arr'] = []
            self._m_snapshots = []
            for i in range(self.header.num_snapshots):
                self._debug['_m_snapshots']['arr'].append({'start': io.pos()})
                _t__m_snapshots = Qcow2.Snapshot(io, self, self._root)
                try:
                    _t__m_snapshots._read()
                finally:
                    self._m_snapshots.append(_t__m_snapshots)
                self._debug['_m_snapshots']['arr'][i]['end'] = io.pos()

            self._debug['_m_snapshots']['end'] = io.pos()
            io.seek(_pos)

        return getattr(self, '_m_snapshots', None)


