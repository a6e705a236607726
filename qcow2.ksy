meta:
  id: qcow2
  title: QEMU copy-on-write disk image, version 2 and 3 (qcow2)
  application: QEMU
  file-extension: qcow2
  xref:
    forensicswiki: QCOW_Image_Format
    justsolve: Qcow
    mime: application/x-qemu-disk
    wikidata: Q1052000
  tags:
    - filesystem
  license: CC0-1.0
  ks-version: '0.9'
  encoding: UTF-8
  endian: be
doc: |
  qcow2 is the native disk image format of QEMU. The file is divided into host
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
doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html
seq:
  - id: header
    type: header
    doc: The image header, at the start of the first cluster.
  - id: header_extensions
    size: ofs_extensions_end - header.len_header_effective
    type: header_extension_area
    if: ofs_extensions_end > header.len_header_effective
    doc: |
      Header extensions, from the end of the header (`header_length`, not byte
      104) up to the backing file name or the end of the first cluster.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Header extensions
instances:
  cluster_size:
    value: 1 << header.cluster_bits
    doc: Size of a host and guest cluster in bytes.
  ofs_extensions_limit:
    value: |
      header.ofs_backing_file_name != 0
        and header.ofs_backing_file_name < cluster_size
        ? header.ofs_backing_file_name
        : cluster_size
    doc: |
      Where the header extension area must end: at the backing file name when
      there is one in the first cluster, else at the end of the first cluster.
  ofs_extensions_end:
    value: 'ofs_extensions_limit < _io.size ? ofs_extensions_limit : _io.size'
    doc: |
      End of the header extension area as read: the limit, or the end of the
      file if that comes first (QEMU reads zeros, an end marker, past it).
  backing_file_name:
    pos: header.ofs_backing_file_name
    size: header.len_backing_file_name
    if: header.ofs_backing_file_name != 0
    doc: |
      Name of the backing file (not null terminated), as raw bytes: any bytes
      are kept, and every target gives the same value. QEMU reads it as a C
      string.
  has_backing_file:
    value: header.ofs_backing_file_name != 0
    doc: |
      The image has a backing file: unallocated guest clusters read from it
      (else as zeros).
  has_external_data_file:
    value: |
      header.version >= 3
        and header.incompatible_features.external_data_file
    doc: |
      Guest clusters are stored in an external data file, at the offsets their
      descriptors give.
  is_extended_l2:
    value: header.version >= 3 and header.incompatible_features.extended_l2
    doc: L2 entries are 128 bits wide, with a bitmap of 32 subclusters each.
  len_l2_entry:
    value: 'is_extended_l2 ? 16 : 8'
    doc: Size of one L2 table entry in bytes.
  num_l2_entries:
    value: cluster_size / len_l2_entry
    doc: Number of entries in one L2 table (an L2 table is exactly one cluster).
  num_subclusters:
    value: 'is_extended_l2 ? 32 : 1'
    doc: |
      Number of subclusters in a guest cluster: 32 with extended L2 entries,
      else 1 (the cluster itself).
  len_subcluster:
    value: cluster_size / num_subclusters
    doc: Size of a subcluster in bytes (the cluster size without extended L2).
  num_refcount_block_entries:
    value: cluster_size * 8 / header.refcount_bits
    doc: Number of refcounts in one refcount block (one cluster).
  len_table_piece:
    value: 65536
    doc: |
      Tables are read in pieces of this many bytes (the last piece of a table
      may be shorter): 8192 64-bit entries, 4096 extended L2 entries, or 524,288
      one-bit refcounts.
  compressed_offset_bits:
    value: 62 - (header.cluster_bits - 8)
    doc: |
      x in the compressed cluster descriptor: bits 0..x-1 hold the host offset,
      bits x..61 the number of additional 512-byte sectors. From 49 (2 MiB
      clusters) to 61 (512-byte clusters).
  compressed_hi_modulus:
    value: 1 << (compressed_offset_bits - 32)
    doc: |
      2^(x-32): splits the upper 32-bit half of a compressed descriptor into the
      top bits of the host offset (remainder) and the sector count (quotient).
  compressed_reserved_modulus:
    value: |
      compressed_offset_bits > 56 ? 1 << (compressed_offset_bits - 56) : 1
    doc: |
      2^(x-56) when the offset field of a compressed descriptor reaches beyond
      bit 55 (clusters below 16 KiB), else 1: the remainder of bits 56..63 by it
      is the offset bits above 55, which must be 0.
  l1_table:
    io: _root._io
    pos: header.ofs_l1_table
    size: header.num_l1_entries.as<u8> * 8
    type: l1_table
    doc: The active L1 table.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Cluster mapping
  refcount_table:
    io: _root._io
    pos: header.ofs_refcount_table
    size: header.num_refcount_table_clusters.as<u8> * cluster_size
    type: refcount_table
    doc: |
      The refcount table; it occupies `refcount_table_clusters` whole clusters.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html
      Host cluster management
  snapshots:
    io: _root._io
    pos: header.ofs_snapshot_table
    type: snapshot
    repeat: expr
    repeat-expr: header.num_snapshots
    if: header.num_snapshots != 0
    doc: The snapshot table, one variable-length entry per internal snapshot.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Snapshots
types:
  header:
    doc: |
      The image header at offset 0: 72 bytes in version 2, `header_length` bytes
      (at least 104) in version 3.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Header
    -webide-representation: >-
      v{version:dec} size={size:dec} cluster_bits={cluster_bits:dec}
    seq:
      - id: magic
        contents: [QFI, 0xfb]
      - id: version
        type: u4
        valid:
          any-of: [2, 3]
        doc: |
          Format version; version 3 adds the feature bitmaps and header_length.
      - id: ofs_backing_file_name
        -orig-id: backing_file_offset
        type: u8
        doc: |
          Offset of the backing file name, which is not null terminated; 0 if
          the image has no backing file. Backing files are incompatible with raw
          external data files.
      - id: len_backing_file_name
        -orig-id: backing_file_size
        type: u4
        doc: |
          Length of the backing file name in bytes, at most 1023. Undefined if
          the image has no backing file (so not checked here: QEMU ignores it
          then).
      - id: cluster_bits
        type: u4
        valid:
          min: 9
          max: 21
        doc: |
          Number of bits of an offset within a cluster: the cluster size is
          `1 << cluster_bits`. The specification requires at least 9 (512-byte
          clusters) and QEMU opens images up to 21 (2 MiB clusters), the range
          accepted here; extended L2 entries need at least 14.
      - id: size
        type: u8
        doc: |
          Virtual disk size in bytes. L1 and L2 tables limit what can be mapped
          to 2^61 bytes with 2 MiB clusters.
      - id: crypt_method
        type: u4
        enum: crypt_method
        doc: Encryption of guest data.
      - id: num_l1_entries
        -orig-id: l1_size
        type: u4
        doc: Number of entries in the active L1 table.
      - id: ofs_l1_table
        -orig-id: l1_table_offset
        type: u8
        doc: Offset of the active L1 table; cluster aligned.
      - id: ofs_refcount_table
        -orig-id: refcount_table_offset
        type: u8
        doc: Offset of the refcount table; cluster aligned.
      - id: num_refcount_table_clusters
        -orig-id: refcount_table_clusters
        type: u4
        doc: Number of clusters the refcount table occupies.
      - id: num_snapshots
        -orig-id: nb_snapshots
        type: u4
        doc: Number of internal snapshots in the snapshot table.
      - id: ofs_snapshot_table
        -orig-id: snapshots_offset
        type: u8
        doc: Offset of the snapshot table; cluster aligned.
      - id: incompatible_features
        type: incompatible_features
        if: version >= 3
        doc: |
          An implementation must refuse to open an image with an unknown bit
          set.
      - id: compatible_features
        type: compatible_features
        if: version >= 3
        doc: Unknown bits may be ignored safely.
      - id: autoclear_features
        type: autoclear_features
        if: version >= 3
        doc: |
          Bits that a writer which does not know them must clear before it
          writes to the image.
      - id: refcount_order
        type: u4
        valid:
          max: 6
        if: version >= 3
        doc: |
          Width of a refcount block entry:
          `refcount_bits = 1 << refcount_order`, from 1 to 64 bits. Version 2
          images always use 4 (16 bits).
      - id: len_header
        -orig-id: header_length
        type: u4
        valid:
          min: 104
        if: version >= 3
        doc: |
          Length of the header in bytes: at least 104 and a multiple of 8.
          Header extensions start here. Version 2 headers are always 72 bytes.
      - id: compression_type
        type: u1
        enum: compression_type
        if: version >= 3 and len_header > 104
        doc: |
          Compression method of all compressed clusters; present when
          header_length is above 104. Must be non-zero exactly when the
          compression type incompatible bit is set.
      - id: additional_fields
        size: len_header - 105
        if: version >= 3 and len_header > 105
        doc: |
          The rest of the header up to header_length: zero padding on images
          that current QEMU writes, or additional fields of later versions,
          which a rewriter must keep.
        doc-ref:
          https://www.qemu.org/docs/master/interop/qcow2.html
          Additional fields (version 3 and higher)
    instances:
      len_header_effective:
        value: 'version >= 3 ? len_header : 72'
        doc: Length of the header, the 72 bytes implied for version 2 included.
      refcount_order_effective:
        value: 'version >= 3 ? refcount_order : 4'
        doc: refcount_order, the 4 implied for version 2 included.
      refcount_bits:
        value: 1 << refcount_order_effective
        doc: Width of a refcount in bits.
      compression_type_effective:
        value: 'version >= 3 and len_header > 104 ? compression_type.to_i : 0'
        enum: compression_type
        doc: Compression type, zlib when the field is absent.
  incompatible_features:
    doc: |
      Incompatible feature bits, read as two big-endian 32-bit halves so that
      every target can test each bit.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Header
    -webide-representation: '{this:flags}'
    seq:
      - id: hi
        type: u4
        doc: Bits 63..32.
      - id: lo
        type: u4
        doc: Bits 31..0.
    instances:
      dirty:
        value: lo % 2 == 1
        doc: |
          Bit 0: refcounts may be inconsistent; scan the L1/L2 tables to repair
          them before accessing the image.
      corrupt:
        value: lo / 2 % 2 == 1
        doc: |
          Bit 1, any structure may be corrupt; the image must not be written to.
      external_data_file:
        value: lo / 4 % 2 == 1
        doc: |
          Bit 2: guest clusters are stored in an external data file at their
          guest offset; those clusters are not refcounted, and compressed
          clusters and internal snapshots are not supported.
      compression_type:
        value: lo / 8 % 2 == 1
        doc: Bit 3, compression_type is present and not zero (not zlib).
      extended_l2:
        value: lo / 16 % 2 == 1
        doc: Bit 4, L2 entries use the extended 128-bit format with subclusters.
      has_unknown_bits:
        value: hi != 0 or lo >= 32
        doc: Bits 5..63 are reserved; QEMU refuses images with any of them set.
  compatible_features:
    doc: Compatible feature bits, read as two big-endian 32-bit halves.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Header
    -webide-representation: '{this:flags}'
    seq:
      - id: hi
        type: u4
        doc: Bits 63..32.
      - id: lo
        type: u4
        doc: Bits 31..0.
    instances:
      lazy_refcounts:
        value: lo % 2 == 1
        doc: |
          Bit 0: lazy refcount updates may be used: the image is marked dirty
          and refcount updates are postponed.
      has_unknown_bits:
        value: hi != 0 or lo >= 2
        doc: Bits 1..63 are reserved.
  autoclear_features:
    doc: Auto-clear feature bits, read as two big-endian 32-bit halves.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Header
    -webide-representation: '{this:flags}'
    seq:
      - id: hi
        type: u4
        doc: Bits 63..32.
      - id: lo
        type: u4
        doc: Bits 31..0.
    instances:
      bitmaps:
        value: lo % 2 == 1
        doc: |
          Bit 0: the bitmaps extension data is consistent. If the extension is
          present and this bit is clear, its data must be considered
          inconsistent.
      data_file_raw:
        value: lo / 2 % 2 == 1
        doc: |
          Bit 1: the external data file is a consistent standalone raw image.
          Only valid with the external data file bit.
      has_unknown_bits:
        value: hi != 0 or lo >= 4
        doc: Bits 2..63 are reserved.
  header_extension_area:
    doc: |
      The header extensions, each padded to a multiple of 8 bytes, up to the end
      marker (type 0) or the end of the area.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Header extensions
    seq:
      - id: extensions
        type: header_extension
        repeat: until
        repeat-until: |
          _.magic == header_extension_type::end_of_extensions or _io.eof
        doc: The extensions in file order, the end marker included when present.
  header_extension:
    doc: |
      One header extension. Unknown types are legal and kept as raw bytes; each
      known type appears at most once.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Header extensions
    -webide-representation: '{magic} ({len_data:dec} bytes)'
    seq:
      - id: magic
        type: u4
        enum: header_extension_type
        doc: |
          Header extension type; any value not in the enum is an unknown
          extension.
      - id: len_data
        -orig-id: length
        type: u4
        doc: Length of the extension data, padding excluded.
      - id: data
        size: len_data
        type:
          switch-on: >-
            has_typed_length ? magic
            : header_extension_type::end_of_extensions
          cases:
            header_extension_type::backing_file_format: string_extension
            header_extension_type::feature_name_table: feature_name_table
            header_extension_type::bitmaps: bitmaps_extension
            header_extension_type::full_disk_encryption: >-
              full_disk_encryption_extension
            header_extension_type::external_data_file: string_extension
        doc: |
          The extension data; raw bytes for unknown types, the end marker, and
          a bitmaps or encryption header pointer extension of another length
          than its fields (which QEMU refuses).
      - id: padding
        size: |
          (8 - len_data % 8) % 8 <= _io.size - _io.pos
            ? (8 - len_data % 8) % 8
            : _io.size - _io.pos
        doc: |
          Padding to the next multiple of 8 (cut short where the area ends, as
          QEMU tolerates).
    instances:
      has_typed_length:
        value: |
          (magic != header_extension_type::bitmaps or len_data == 24)
            and (magic != header_extension_type::full_disk_encryption
              or len_data == 16)
        doc: |
          The length is that of the extension's fields (24 bytes for bitmaps,
          16 for the encryption header pointer); otherwise the data is kept as
          raw bytes.
  string_extension:
    doc: |
      An extension that is one string (backing file format, external data file
      name): not null terminated, its length is the extension length.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html
      String header extensions
    -webide-representation: '{value}'
    seq:
      - id: value
        size-eos: true
        doc: |
          The format name or the file name, as raw bytes (any bytes, a NUL
          included, are kept; QEMU reads it as a C string).
  feature_name_table:
    doc: Names of feature bits, for tools that do not know them.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Feature name table
    seq:
      - id: entries
        type: feature_name
        repeat: expr
        repeat-expr: _io.size / 48
        doc: |
          One entry per named feature bit, as many complete entries as the
          extension length holds.
      - id: partial_entry
        size-eos: true
        doc: |
          The bytes after the last complete entry, when the length is not a
          multiple of 48 (qcow2.py writes such tables); QEMU reads them as one
          more entry, zero-padded to 48 bytes.
  feature_name:
    doc: The name of one feature bit.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Feature name table
    -webide-representation: '{type}:{bit:dec} {name}'
    seq:
      - id: type
        type: u1
        enum: feature_type
        doc: The feature bitmap the bit belongs to.
      - id: bit
        type: u1
        doc: Bit number within the selected bitmap; 0..63 names a bit.
      - id: name
        size: 46
        terminator: 0
        doc: |
          Feature name as raw bytes, up to the first zero byte; not null
          terminated when 46 bytes long.
  bitmaps_extension:
    doc: |
      Where the bitmap directory is. Its data is consistent only while the
      bitmaps auto-clear bit is set.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Bitmaps extension
    -webide-representation: '{num_bitmaps:dec} bitmaps'
    seq:
      - id: num_bitmaps
        -orig-id: nb_bitmaps
        type: u4
        valid:
          min: 1
        doc: |
          Number of bitmaps in the image, at least 1 (QEMU supports up to
          65535).
      - id: reserved
        -orig-id: reserved32
        type: u4
        doc: Reserved, must be zero.
      - id: len_bitmap_directory
        -orig-id: bitmap_directory_size
        type: u8
        doc: Size of the bitmap directory in bytes, all entries together.
      - id: ofs_bitmap_directory
        -orig-id: bitmap_directory_offset
        type: u8
        doc: Offset of the bitmap directory; cluster aligned.
    instances:
      bitmap_directory:
        io: _root._io
        pos: ofs_bitmap_directory
        size: len_bitmap_directory
        type: bitmap_directory
        doc: The bitmap directory.
  bitmap_directory:
    doc: The bitmap directory, `bitmap_directory_size` bytes.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Bitmap directory
    seq:
      - id: entries
        type: bitmap_directory_entry
        repeat: expr
        repeat-expr: _parent.num_bitmaps
        doc: One entry per bitmap, `nb_bitmaps` of them.
  bitmap_directory_entry:
    doc: One stored bitmap; entries are padded to a multiple of 8 bytes.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Bitmap directory
    -webide-representation: '{name} granularity={granularity:dec}'
    seq:
      - id: ofs_bitmap_table
        -orig-id: bitmap_table_offset
        type: u8
        doc: Offset of the bitmap table; cluster aligned.
      - id: num_bitmap_table
        -orig-id: bitmap_table_size
        type: u4
        doc: Number of entries in the bitmap table.
      - id: flags
        type: u4
        doc: |
          Bit 0 in_use, bit 1 auto, bit 2 extra_data_compatible; bits 3..31
          reserved.
      - id: type
        type: u1
        enum: bitmap_type
        doc: Kind of bitmap; 1 is the only defined value.
      - id: granularity_bits
        type: u1
        valid:
          max: 63
        doc: |
          Each bit of the bitmap covers `1 << granularity_bits` bytes of the
          virtual disk (QEMU supports 9..31).
      - id: len_name
        -orig-id: name_size
        type: u2
        valid:
          min: 1
        doc: Size of the name, non-zero (QEMU supports up to 1023).
      - id: len_extra_data
        -orig-id: extra_data_size
        type: u4
        doc: Size of type-specific extra data; none is defined yet.
      - id: extra_data
        size: len_extra_data
        doc: |
          Extra data; kept as is, used only with the extra_data_compatible flag.
      - id: name
        size: len_name
        doc: Bitmap name as raw bytes, unique in the image, not null terminated.
      - id: padding
        size: (8 - (24 + len_extra_data + len_name) % 8) % 8
        doc: Zero padding to the next multiple of 8.
    instances:
      in_use:
        value: flags % 2 == 1
        doc: The bitmap was not saved correctly and may be inconsistent.
      is_auto:
        -orig-id: auto
        value: flags / 2 % 2 == 1
        doc: The bitmap is enabled and tracks every write to the virtual disk.
      extra_data_compatible:
        value: flags / 4 % 2 == 1
        doc: |
          Unknown extra data may be ignored (else the bitmap must not be used).
      has_reserved_flags:
        value: flags >= 8
        doc: Any of the reserved flag bits 3..31 is set.
      granularity:
        value: |
          ((1 << (granularity_bits / 3)).as<u8>
            * (1 << (granularity_bits / 3))
            * (1 << (granularity_bits - granularity_bits / 3 * 2))).as<u8>
        doc: |
          Bytes of the virtual disk per bit of the bitmap,
          `1 << granularity_bits`, computed as a product of three shifts of at
          most 23 bits each.
      bitmap_table:
        io: _root._io
        pos: ofs_bitmap_table
        size: num_bitmap_table.as<u8> * 8
        type: bitmap_table
        doc: The bitmap table, one entry per cluster of bitmap data.
  bitmap_table:
    doc: A bitmap table, in pieces of up to 8192 entries.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Bitmap table
    seq:
      - id: pieces
        size: |
          _io.size - _io.pos < _root.len_table_piece
            ? _io.size - _io.pos : _root.len_table_piece
        type: bitmap_table_piece
        repeat: eos
        doc: Consecutive pieces of `len_table_piece` bytes.
  bitmap_table_piece:
    doc: A piece of a bitmap table.
    instances:
      entries:
        pos: 0
        type: bitmap_table_entry
        repeat: eos
        doc: The entries of the piece, in table order.
  bitmap_table_entry:
    doc: Where one cluster of bitmap data is, or what it reads as.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Bitmap table
    -webide-representation: '{kind} {ofs_data:hex}'
    seq:
      - id: hi
        type: u4
        doc: Bits 63..32 of the entry.
      - id: lo
        type: u4
        doc: Bits 31..0 of the entry.
    instances:
      ofs_data:
        value: |
          ((hi % 0x1000000).as<u8> * 0x100000000
            + (lo - lo % 512).as<u8>).as<u8>
        doc: |
          Bits 9..55, the host offset of the data cluster; 0 if not allocated.
      all_ones:
        value: lo % 2 == 1
        doc: Bit 0; for an unallocated entry, the cluster reads as all ones.
      has_reserved_bits:
        value: hi >= 0x1000000 or lo % 512 >= 2
        doc: Any of the reserved bits 1..8 and 56..63 is set.
      kind:
        value: 'ofs_data != 0 ? (all_ones ? 3 : 2) : (all_ones ? 1 : 0)'
        enum: bitmap_table_entry_kind
        doc: How the bitmap data cluster reads.
  full_disk_encryption_extension:
    doc: |
      Where the encryption header is; present exactly when the crypt method
      needs one (LUKS).
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html
      Full disk encryption header pointer
    -webide-representation: >-
      {ofs_encryption_header:hex} ({len_encryption_header:dec} bytes)
    seq:
      - id: ofs_encryption_header
        type: u8
        doc: Offset of the encryption header; cluster aligned.
      - id: len_encryption_header
        type: u8
        doc: |
          Length of the written header; the allocation is rounded up to
          clusters.
    instances:
      encryption_header:
        io: _root._io
        pos: ofs_encryption_header
        size: len_encryption_header
        type: luks_header
        if: _root.header.crypt_method == crypt_method::luks
        doc: |
          The encryption header as a LUKS partition header followed by the key
          material its key slots point at.
  luks_header:
    doc: |
      LUKS version 1 partition header (592 bytes). Key material offsets are
      relative to the start of the encryption header clusters, not to the qcow2
      file.
    doc-ref:
      - https://www.qemu.org/docs/master/interop/qcow2.html
        Full disk encryption header pointer
      - https://gitlab.com/cryptsetup/cryptsetup/-/wikis/Specification LUKS1
    -webide-representation: '{cipher_name}-{cipher_mode} {hash_spec}'
    seq:
      - id: magic
        contents: [LUKS, 0xba, 0xbe]
      - id: version
        type: u2
        doc: LUKS header version (1).
      - id: cipher_name
        size: 32
        type: strz
        doc: Cipher name, e.g. aes.
      - id: cipher_mode
        size: 32
        type: strz
        doc: Cipher mode, e.g. xts-plain64.
      - id: hash_spec
        size: 32
        type: strz
        doc: Hash used by PBKDF2 and the anti-forensic splitter.
      - id: payload_offset
        type: u4
        doc: Start of the payload in 512-byte sectors; unused inside qcow2.
      - id: key_bytes
        type: u4
        doc: Master key length in bytes.
      - id: mk_digest
        size: 20
        doc: PBKDF2 digest of the master key.
      - id: mk_digest_salt
        size: 32
        doc: Salt of the master key digest.
      - id: mk_digest_iterations
        -orig-id: mk-digest-iter
        type: u4
        doc: PBKDF2 iterations of the master key digest.
      - id: uuid
        size: 40
        type: strz
        doc: Partition UUID.
      - id: key_slots
        type: luks_key_slot
        repeat: expr
        repeat-expr: 8
        doc: The eight key slots, each able to unlock the master key.
  luks_key_slot:
    doc: One LUKS key slot.
    doc-ref:
      https://gitlab.com/cryptsetup/cryptsetup/-/wikis/Specification LUKS1
    -webide-representation: '{active}'
    seq:
      - id: active
        type: u4
        enum: luks_key_slot_state
        doc: Whether the slot holds a key.
      - id: iterations
        type: u4
        doc: PBKDF2 iterations of the passphrase.
      - id: salt
        size: 32
        doc: PBKDF2 salt of the passphrase.
      - id: key_material_offset
        type: u4
        doc: Start of the key material in 512-byte sectors.
      - id: stripes
        type: u4
        doc: Anti-forensic stripes of the key material.
    instances:
      key_material:
        pos: key_material_offset.as<u8> * 512
        size: _parent.key_bytes.as<u8> * stripes
        if: active == luks_key_slot_state::enabled
        doc: |
          The key material of an enabled slot: the master key split into
          `stripes` anti-forensic stripes, encrypted with the key derived from
          the passphrase; `key_bytes * stripes` bytes.
  l1_table:
    doc: |
      An L1 table (the active one or a snapshot's), in pieces of up to 8192
      entries.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Cluster mapping
    seq:
      - id: pieces
        size: |
          _io.size - _io.pos < _root.len_table_piece
            ? _io.size - _io.pos : _root.len_table_piece
        type: l1_table_piece
        repeat: eos
        doc: |
          Consecutive pieces of `len_table_piece` bytes, the last one shorter
          when the table ends before.
  l1_table_piece:
    doc: A piece of an L1 table.
    instances:
      entries:
        pos: 0
        type: l1_entry
        repeat: eos
        doc: The entries of the piece, in table order.
  l1_entry:
    doc: One L1 table entry, pointing at an L2 table.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Cluster mapping
    -webide-representation: '{ofs_l2_table:hex} copied={copied}'
    seq:
      - id: hi
        type: u4
        doc: Bits 63..32 of the entry.
      - id: lo
        type: u4
        doc: Bits 31..0 of the entry.
    instances:
      ofs_l2_table:
        value: |
          ((hi % 0x1000000).as<u8> * 0x100000000
            + (lo - lo % 512).as<u8>).as<u8>
        doc: Bits 9..55, the offset of the L2 table; 0 if it is not allocated.
      copied:
        value: hi >= 0x80000000
        doc: |
          Bit 63: the L2 table's refcount is exactly one (accurate in the active
          L1 table only).
      has_reserved_bits:
        value: lo % 512 != 0 or hi / 0x1000000 % 0x80 != 0
        doc: Any of the reserved bits 0..8 and 56..62 is set.
      l2_table:
        io: _root._io
        pos: ofs_l2_table
        size: _root.cluster_size
        type: l2_table
        if: ofs_l2_table != 0
        doc: The L2 table this entry points at.
  l2_table:
    doc: |
      An L2 table, exactly one cluster, in pieces of up to 8192 standard or
      4096 extended entries.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Cluster mapping
    seq:
      - id: pieces
        size: |
          _io.size - _io.pos < _root.len_table_piece
            ? _io.size - _io.pos : _root.len_table_piece
        type: l2_table_piece
        repeat: eos
        doc: Consecutive pieces of `len_table_piece` bytes.
  l2_table_piece:
    doc: A piece of an L2 table.
    instances:
      entries:
        pos: 0
        type: l2_entry
        repeat: eos
        doc: |
          The entries of the piece, one per guest cluster, in table order.
  l2_entry:
    doc: |
      One L2 table entry: a standard or compressed cluster descriptor, and with
      extended L2 entries a subcluster bitmap.
    doc-ref:
      - https://www.qemu.org/docs/master/interop/qcow2.html Cluster mapping
      - https://www.qemu.org/docs/master/interop/qcow2.html Extended L2 Entries
    -webide-representation: '{cluster_type} {ofs_data:hex} copied={copied}'
    seq:
      - id: hi
        type: u4
        doc: Bits 63..32 of the entry.
      - id: lo
        type: u4
        doc: Bits 31..0 of the entry.
      - id: subcluster_zero
        type: u4
        if: _root.is_extended_l2
        doc: |
          Extended L2 only, bits 63..32 of the bitmap: bit x set means
          subcluster x reads as zeros.
      - id: subcluster_alloc
        type: u4
        if: _root.is_extended_l2
        doc: |
          Extended L2 only, bits 31..0 of the bitmap: bit x set means
          subcluster x is allocated.
    instances:
      copied:
        value: hi >= 0x80000000
        doc: |
          Bit 63: a standard cluster whose refcount is exactly one (accurate in
          L2 tables reachable from the active L1 table). Must be 0 in a
          compressed descriptor.
      compressed:
        value: hi / 0x40000000 % 2 == 1
        doc: Bit 62, a compressed cluster.
      zero:
        value: not compressed and not _root.is_extended_l2 and lo % 2 == 1
        doc: |
          Bit 0 of a standard descriptor: the cluster reads as zeros. The bit
          has this meaning only without extended L2 entries, where the
          subcluster bitmap says which subclusters read as zeros instead.
      ofs_host_cluster:
        value: |
          (compressed ? 0 : (hi % 0x1000000).as<u8> * 0x100000000
            + (lo - lo % 512).as<u8>).as<u8>
        doc: |
          Standard descriptor bits 9..55: the host cluster offset (0 for
          compressed clusters).
      ofs_compressed_data:
        value: |
          (compressed ? (hi % _root.compressed_hi_modulus).as<u8> * 0x100000000
            + lo.as<u8> : 0).as<u8>
        doc: |
          Compressed descriptor bits 0..x-1: host offset of the compressed data,
          not aligned to a cluster or sector.
      num_additional_sectors:
        value: 'compressed ? hi % 0x40000000 / _root.compressed_hi_modulus : 0'
        doc: |
          Compressed descriptor bits x..61: 512-byte sectors used beyond the one
          that holds the offset.
      ofs_data:
        value: 'compressed ? ofs_compressed_data : ofs_host_cluster'
        doc: |
          Where the guest cluster's data is: the host cluster or the compressed
          data, 0 for none (with an external data file: the offset in that
          file).
      len_compressed_data:
        value: |
          compressed ? (num_additional_sectors + 1) * 512 - lo % 512 : 0
        doc: |
          Bytes from the offset to the end of the last sector; the compressed
          stream may end before that.
      has_reserved_bits:
        value: |
          compressed
            ? copied
              or hi / 0x1000000 % _root.compressed_reserved_modulus != 0
              or (_root.is_extended_l2
                and (subcluster_zero != 0 or subcluster_alloc != 0))
            : lo % 512 >= 2 or hi / 0x1000000 % 0x40 != 0
              or (_root.is_extended_l2 and lo % 2 == 1)
        doc: |
          Any bit the specification reserves is set. In a standard descriptor:
          bits 1..8 and 56..61, and bit 0 with extended L2 entries. In a
          compressed descriptor: bit 63, the offset bits above 55 (clusters
          below 16 KiB), and with extended L2 entries any bit of the subcluster
          bitmap.
      cluster_type:
        value: |
          compressed ? 4
            : zero ? (ofs_host_cluster != 0 ? 2 : 1)
            : ofs_host_cluster != 0 ? 3
            : (_root.has_external_data_file and copied) ? 3
            : 0
        enum: cluster_type
        doc: |
          The type of the cluster descriptor as QEMU classifies it. Without
          extended L2 entries it is how the whole cluster reads; with them,
          `subclusters` says how each subcluster reads.
      subclusters:
        pos: 0
        type: l2_subcluster(_index)
        repeat: expr
        repeat-expr: _root.num_subclusters
        doc: |
          How each subcluster of the guest cluster reads: 32 with extended L2
          entries, else one for the whole cluster. Computed from the entry
          alone; reads no bytes.
  l2_subcluster:
    doc: |
      How one subcluster of a guest cluster reads (the whole cluster without
      extended L2 entries), as QEMU classifies it and as `qemu-img map`
      reports it.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html Extended L2 Entries
    -webide-representation: '{subcluster_type} {reads_as} {ofs_host:hex}'
    params:
      - id: index
        type: u1
        doc: Number of the subcluster in its cluster, from 0.
    instances:
      weight:
        value: (1 << (index / 2)).as<u8> * (1 << (index - index / 2))
        doc: |
          2^index, the weight of the subcluster's bit in either half of the
          bitmap (computed from two shifts below 16 bits).
      is_zero_bit_set:
        value: |
          _root.is_extended_l2
            and _parent.subcluster_zero / weight % 2 == 1
        doc: The subcluster's bit in the "reads as zeros" half of the bitmap.
      is_alloc_bit_set:
        value: |
          _root.is_extended_l2
            and _parent.subcluster_alloc / weight % 2 == 1
        doc: The subcluster's bit in the allocation half of the bitmap.
      subcluster_type:
        value: |
          _parent.cluster_type == cluster_type::compressed ? 5
            : not _root.is_extended_l2
              ? (_parent.cluster_type == cluster_type::normal ? 4
                : _parent.cluster_type == cluster_type::zero_alloc ? 3
                : _parent.cluster_type == cluster_type::zero_plain ? 2
                : 0)
            : _parent.cluster_type == cluster_type::normal
              ? ((_parent.subcluster_zero & _parent.subcluster_alloc) != 0 ? 6
                : is_zero_bit_set ? 3
                : is_alloc_bit_set ? 4
                : 1)
            : _parent.subcluster_alloc != 0 ? 6
            : is_zero_bit_set ? 2
            : 0
        enum: subcluster_type
        doc: The subcluster's type as QEMU classifies it.
      reads_as:
        value: |
          subcluster_type == subcluster_type::invalid ? 5
            : subcluster_type == subcluster_type::compressed ? 4
            : subcluster_type == subcluster_type::normal ? 3
            : subcluster_type == subcluster_type::zero_plain
              or subcluster_type == subcluster_type::zero_alloc ? 2
            : _root.has_backing_file ? 1
            : 0
        enum: subcluster_reads
        doc: How a guest read of the subcluster is answered.
      has_ofs_host:
        value: |
          _root.header.crypt_method == crypt_method::none
            and (subcluster_type == subcluster_type::normal
              or subcluster_type == subcluster_type::zero_alloc
              or (subcluster_type == subcluster_type::unallocated_alloc
                and not _root.has_backing_file))
        doc: |
          `qemu-img map` reports a host offset for the subcluster: data or
          zeros in an allocated host cluster of an unencrypted image, and an
          allocated but unwritten subcluster when no backing file answers for
          it.
      ofs_host:
        value: |
          has_ofs_host
            ? _parent.ofs_host_cluster + index * _root.len_subcluster : 0
        doc: |
          The host offset `qemu-img map` reports for the subcluster (in the
          external data file when there is one); 0 when it reports none.
  refcount_table:
    doc: The refcount table, in pieces of up to 8192 entries.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html
      Host cluster management
    seq:
      - id: pieces
        size: |
          _io.size - _io.pos < _root.len_table_piece
            ? _io.size - _io.pos : _root.len_table_piece
        type: refcount_table_piece
        repeat: eos
        doc: Consecutive pieces of `len_table_piece` bytes.
  refcount_table_piece:
    doc: A piece of the refcount table.
    instances:
      entries:
        pos: 0
        type: refcount_table_entry
        repeat: eos
        doc: The entries of the piece, in table order.
  refcount_table_entry:
    doc: One refcount table entry, pointing at a refcount block.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html
      Host cluster management
    -webide-representation: '{ofs_refcount_block:hex}'
    seq:
      - id: hi
        type: u4
        doc: Bits 63..32 of the entry.
      - id: lo
        type: u4
        doc: Bits 31..0 of the entry.
    instances:
      ofs_refcount_block:
        value: (hi.as<u8> * 0x100000000 + (lo - lo % 512).as<u8>).as<u8>
        doc: |
          Bits 9..63, the offset of the refcount block; 0 if it is not
          allocated.
      has_reserved_bits:
        value: lo % 512 != 0
        doc: Any of the reserved bits 0..8 is set.
      refcount_block:
        io: _root._io
        pos: ofs_refcount_block
        size: _root.cluster_size
        type: refcount_block
        if: ofs_refcount_block != 0
        doc: The refcount block this entry points at.
  refcount_block:
    doc: |
      A refcount block, exactly one cluster of `1 << refcount_order`-bit
      refcounts, in pieces of `len_table_piece` bytes.
    doc-ref:
      https://www.qemu.org/docs/master/interop/qcow2.html
      Host cluster management
    seq:
      - id: pieces
        size: |
          _io.size - _io.pos < _root.len_table_piece
            ? _io.size - _io.pos : _root.len_table_piece
        type: refcount_block_piece
        repeat: eos
        doc: Consecutive pieces of `len_table_piece` bytes.
  refcount_block_piece:
    meta:
      bit-endian: le
    doc: |
      A piece of a refcount block. Sub-byte refcounts are packed least
      significant bit first; wider ones are big-endian integers. Exactly one
      of the arrays is present, the one of the image's refcount width. A
      1-bit refcount reads as a boolean (true for a refcount of 1).
    instances:
      refcounts_1:
        pos: 0
        type: b1
        repeat: expr
        repeat-expr: _io.size * 8
        if: _root.header.refcount_order_effective == 0
        doc: 1-bit refcounts (refcount_order 0).
      refcounts_2:
        pos: 0
        type: b2
        repeat: expr
        repeat-expr: _io.size * 4
        if: _root.header.refcount_order_effective == 1
        doc: 2-bit refcounts (refcount_order 1).
      refcounts_4:
        pos: 0
        type: b4
        repeat: expr
        repeat-expr: _io.size * 2
        if: _root.header.refcount_order_effective == 2
        doc: 4-bit refcounts (refcount_order 2).
      refcounts_8:
        pos: 0
        type: u1
        repeat: expr
        repeat-expr: _io.size
        if: _root.header.refcount_order_effective == 3
        doc: 8-bit refcounts (refcount_order 3).
      refcounts_16:
        pos: 0
        type: u2
        repeat: expr
        repeat-expr: _io.size / 2
        if: _root.header.refcount_order_effective == 4
        doc: 16-bit refcounts (refcount_order 4, the only width of version 2).
      refcounts_32:
        pos: 0
        type: u4
        repeat: expr
        repeat-expr: _io.size / 4
        if: _root.header.refcount_order_effective == 5
        doc: 32-bit refcounts (refcount_order 5).
      refcounts_64:
        pos: 0
        type: u8
        repeat: expr
        repeat-expr: _io.size / 8
        if: _root.header.refcount_order_effective == 6
        doc: 64-bit refcounts (refcount_order 6).
  snapshot:
    doc: One snapshot table entry; entries are padded to a multiple of 8 bytes.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Snapshots
    -webide-representation: '{id} {name}'
    seq:
      - id: ofs_l1_table
        -orig-id: l1_table_offset
        type: u8
        doc: Offset of the snapshot's L1 table; cluster aligned.
      - id: num_l1_table
        -orig-id: l1_size
        type: u4
        doc: Number of entries in the snapshot's L1 table.
      - id: len_id
        -orig-id: id_str_size
        type: u2
        doc: Length of the unique ID string.
      - id: len_name
        -orig-id: name_size
        type: u2
        doc: Length of the snapshot name.
      - id: date_sec
        type: u4
        doc: Time the snapshot was taken, seconds since the Epoch.
      - id: date_nsec
        type: u4
        doc: Subsecond part of that time in nanoseconds.
      - id: vm_clock_nsec_hi
        type: u4
        doc: Bits 63..32 of `vm_clock_nsec`.
      - id: vm_clock_nsec_lo
        type: u4
        doc: Bits 31..0 of `vm_clock_nsec`.
      - id: vm_state_size
        type: u4
        doc: |
          Size of the saved VM state in bytes; ignored when the extra data has
          the 64-bit size.
      - id: len_extra_data
        -orig-id: extra_data_size
        type: u4
        doc: Size of the extra data; version 3 images have at least 16 bytes.
      - id: extra_data
        size: len_extra_data
        type: snapshot_extra_data
        doc: Fields added to the entry by later versions of the format.
      - id: id
        -orig-id: id_str
        size: len_id
        doc: Unique ID string of the snapshot as raw bytes, not null terminated.
      - id: name
        size: len_name
        doc: Name of the snapshot as raw bytes, not null terminated.
      - id: padding
        size: |
          (8 - (40 + len_extra_data + len_id + len_name) % 8) % 8
            <= _io.size - _io.pos
            ? (8 - (40 + len_extra_data + len_id + len_name) % 8) % 8
            : _io.size - _io.pos
        doc: |
          Padding to the next multiple of 8; cut short by the end of the file,
          where QEMU writes none after the last entry.
    instances:
      vm_clock_nsec:
        value: |
          (vm_clock_nsec_hi.as<u8> * 0x100000000
            + vm_clock_nsec_lo.as<u8>).as<u8>
        doc: |
          Time the guest had been running when the snapshot was taken, in
          nanoseconds; also given as `vm_clock_sec` and `vm_clock_subsec_nsec`.
      vm_clock_sec:
        value: |
          ((vm_clock_nsec_hi / 1953125).as<u8> * 0x800000
            + ((vm_clock_nsec_hi - vm_clock_nsec_hi / 1953125 * 1953125).as<u8>
              * 0x800000
              + (vm_clock_nsec_lo / 512).as<u8>) / 1953125).as<u8>
        doc: |
          Whole seconds of `vm_clock_nsec`. As 10^9 = 512 * 1953125, the clock
          divided by 512, hi * 2^23 + lo / 512, is divided by 1953125 half by
          half: no intermediate value exceeds 2^45, and remainders are taken by
          subtraction, not `%`, which some runtimes compute on 32-bit ints.
      vm_clock_subsec_nsec:
        value: |
          (((vm_clock_nsec_hi - vm_clock_nsec_hi / 1953125 * 1953125).as<u8>
              * 0x800000
            + (vm_clock_nsec_lo / 512).as<u8>
            - (vm_clock_sec - (vm_clock_nsec_hi / 1953125).as<u8> * 0x800000)
              * 1953125)
            * 512 + (vm_clock_nsec_lo % 512).as<u8>).as<u4>
        doc: |
          Nanoseconds of `vm_clock_nsec` beyond `vm_clock_sec`, below 10^9: the
          remainder of the second division, times 512, plus lo % 512.
      l1_table:
        io: _root._io
        pos: ofs_l1_table
        size: num_l1_table.as<u8> * 8
        type: l1_table
        doc: The snapshot's L1 table (copied flags are not accurate here).
  snapshot_extra_data:
    doc: |
      Extra data of a snapshot entry; fields present as far as its size reaches,
      unknown fields after them kept.
    doc-ref: https://www.qemu.org/docs/master/interop/qcow2.html Snapshots
    seq:
      - id: vm_state_size_large
        type: u8
        if: _io.size >= 8
        doc: |
          Size of the VM state in bytes; overrides the 32-bit field.
      - id: disk_size
        type: u8
        if: _io.size >= 16
        doc: Virtual disk size of the snapshot in bytes.
      - id: icount_hi
        type: u4
        if: _io.size >= 24
        doc: Bits 63..32 of `icount`.
      - id: icount_lo
        type: u4
        if: _io.size >= 24
        doc: Bits 31..0 of `icount`.
      - id: unknown
        size-eos: true
        doc: Extra data defined by later versions.
    instances:
      icount:
        value: |
          ((icount_hi.as<s8> - (icount_hi >= 0x80000000 ? 0x100000000 : 0))
            * 0x100000000
            + icount_lo).as<s8>
        if: _io.size >= 24
        doc: |
          Guest instructions executed (record/replay icount), a signed 64-bit
          number: -1 if not recorded.
enums:
  crypt_method:
    0:
      id: none
      doc: Not encrypted.
    1:
      id: aes
      doc: |
        AES-256-CBC with plain64 IVs; obsolete and insecure, kept for data
        liberation.
    2:
      id: luks
      doc: |
        LUKS; a full disk encryption header extension points at the LUKS
        header.
  compression_type:
    0:
      id: zlib
      doc: Raw deflate (zlib without header), the default.
    1:
      id: zstd
      doc: Zstandard.
  header_extension_type:
    0x00000000:
      id: end_of_extensions
      doc: End of the header extension area.
    0xe2792aca:
      id: backing_file_format
      doc: Backing file format name string.
    0x6803f857:
      id: feature_name_table
      doc: Feature name table.
    0x23852875:
      id: bitmaps
      doc: Bitmaps extension.
    0x0537be77:
      id: full_disk_encryption
      doc: Full disk encryption header pointer.
    0x44415441:
      id: external_data_file
      doc: External data file name string.
  feature_type:
    0:
      id: incompatible
      doc: A bit of incompatible_features.
    1:
      id: compatible
      doc: A bit of compatible_features.
    2:
      id: autoclear
      doc: A bit of autoclear_features.
  bitmap_type:
    1:
      id: dirty_tracking
      doc: Dirty tracking bitmap; values 0 and 2..255 are reserved.
  bitmap_table_entry_kind:
    0:
      id: all_zeroes
      doc: Unallocated, bit 0 clear; the cluster reads as all zeros.
    1:
      id: all_ones
      doc: Unallocated, bit 0 set; the cluster reads as all ones.
    2:
      id: serialized
      doc: Allocated; the bitmap data is stored at the offset.
    3:
      id: invalid
      doc: Allocated with bit 0 set, which the specification forbids.
  cluster_type:
    0:
      id: unallocated
      doc: |
        No host cluster: reads from the backing file, or zeros without one
        (with extended L2 entries, subclusters may read as zeros).
    1:
      id: zero_plain
      doc: Reads as zeros; no host cluster.
    2:
      id: zero_alloc
      doc: Reads as zeros; a preallocated host cluster.
    3:
      id: normal
      doc: |
        A host cluster at the offset, which holds the data (with extended L2
        entries, of the subclusters allocated in the bitmap).
    4:
      id: compressed
      doc: Compressed data at the descriptor's offset.
  subcluster_type:
    0:
      id: unallocated_plain
      doc: |
        Not allocated: reads from the backing file, or as zeros without one.
    1:
      id: unallocated_alloc
      doc: |
        Not allocated in an allocated host cluster (extended L2): reads from the
        backing file, or as zeros without one.
    2:
      id: zero_plain
      doc: Reads as zeros; no host cluster.
    3:
      id: zero_alloc
      doc: Reads as zeros; the host cluster is allocated.
    4:
      id: normal
      doc: Data at its offset in the host cluster.
    5:
      id: compressed
      doc: Part of a compressed cluster.
    6:
      id: invalid
      doc: |
        The subcluster bitmap contradicts the descriptor (a subcluster both
        allocated and zero, or allocated without a host cluster): QEMU refuses
        to read the cluster.
  subcluster_reads:
    0:
      id: unallocated
      doc: |
        Not allocated and no backing file: reads as zeros (`qemu-img map`:
        present false, zero true).
    1:
      id: backing
      doc: |
        Not allocated: reads from the backing file, as zeros past its end
        (`qemu-img map`: the backing file's entry, depth 1 or more).
    2:
      id: zeros
      doc: "Reads as zeros (`qemu-img map`: present, zero)."
    3:
      id: data
      doc: |
        Data stored in the image at the host offset (`qemu-img map`: present,
        data, with the offset unless the image is encrypted).
    4:
      id: compressed
      doc: |
        Compressed data, decompressed on reading (`qemu-img map`: present,
        data, no offset).
    5:
      id: invalid
      doc: QEMU refuses to read it; `qemu-img map` fails.
  luks_key_slot_state:
    0x0000dead:
      id: disabled
      doc: The key slot is empty.
    0x00ac71f3:
      id: enabled
      doc: The key slot holds a key.
