#!/usr/bin/env node
// Every value the Kaitai Web IDE would show for qcow2 images, as JSON on stdout.
// Usage: NODE_PATH=node_modules node tests/js/values.js MODULE_DIR IMAGE...
// MODULE_DIR holds Qcow2.js compiled with --debug -t javascript; NODE_PATH lets it
// find the kaitai-struct runtime when MODULE_DIR is outside the repository.
// Output: {image path: values tree}. Numbers are exact decimal strings of the double
// JavaScript holds, byte arrays lowercase hex, enums their integer, absent fields null.
// tests/test_js_parity.py builds the same tree from the Python parser.
'use strict';
const fs = require('fs');
const path = require('path');
const { KaitaiStream } = require('kaitai-struct');

const HEADER = ['magic', 'version', 'ofs_backing_file_name', 'len_backing_file_name',
  'cluster_bits', 'size', 'crypt_method', 'num_l1_entries', 'ofs_l1_table',
  'ofs_refcount_table', 'num_refcount_table_clusters', 'num_snapshots',
  'ofs_snapshot_table', 'refcount_order', 'len_header', 'compression_type',
  'additional_fields', 'len_header_effective', 'refcount_order_effective',
  'refcount_bits', 'compression_type_effective'];
const INCOMPATIBLE = ['hi', 'lo', 'dirty', 'corrupt', 'external_data_file',
  'compression_type', 'extended_l2', 'has_unknown_bits'];
const COMPATIBLE = ['hi', 'lo', 'lazy_refcounts', 'has_unknown_bits'];
const AUTOCLEAR = ['hi', 'lo', 'bitmaps', 'data_file_raw', 'has_unknown_bits'];
const ROOT = ['cluster_size', 'ofs_extensions_limit', 'ofs_extensions_end',
  'backing_file_name', 'has_external_data_file', 'is_extended_l2', 'len_l2_entry',
  'num_l2_entries', 'len_subcluster', 'num_refcount_block_entries',
  'compressed_offset_bits', 'compressed_hi_modulus'];
const EXTENSION = ['magic', 'len_data', 'padding'];
const FEATURE_NAME = ['type', 'bit', 'name'];
const BITMAPS = ['num_bitmaps', 'reserved', 'len_bitmap_directory', 'ofs_bitmap_directory'];
const BITMAP_ENTRY = ['ofs_bitmap_table', 'num_bitmap_table_entries', 'flags', 'type',
  'granularity_bits', 'len_name', 'len_extra_data', 'extra_data', 'name', 'padding',
  'in_use', 'auto', 'extra_data_compatible', 'has_reserved_flags', 'granularity'];
const BITMAP_TABLE_ENTRY = ['hi', 'lo', 'ofs_data', 'all_ones', 'has_reserved_bits', 'kind'];
const FDE = ['ofs_encryption_header', 'len_encryption_header'];
const LUKS = ['magic', 'version', 'cipher_name', 'cipher_mode', 'hash_spec',
  'payload_offset', 'key_bytes', 'mk_digest', 'mk_digest_salt', 'mk_digest_iterations',
  'uuid'];
const KEY_SLOT = ['active', 'iterations', 'salt', 'key_material_offset', 'stripes'];
const L1_ENTRY = ['hi', 'lo', 'ofs_l2_table', 'copied', 'has_reserved_bits'];
const L2_ENTRY = ['hi', 'lo', 'subcluster_zero', 'subcluster_alloc', 'copied',
  'compressed', 'zero', 'ofs_host_cluster', 'has_reserved_bits', 'ofs_compressed_data',
  'num_additional_sectors', 'len_compressed_data', 'type'];
const REFCOUNT_ENTRY = ['hi', 'lo', 'ofs_refcount_block', 'has_reserved_bits'];
const REFCOUNTS = [1, 2, 4, 8, 16, 32, 64].map((w) => `refcounts_${w}`);
const SNAPSHOT = ['ofs_l1_table', 'num_l1_entries', 'len_id', 'len_name', 'date_sec',
  'date_nsec', 'vm_clock_nsec', 'vm_state_size', 'len_extra_data', 'id', 'name',
  'padding'];
const SNAPSHOT_EXTRA = ['vm_state_size_large', 'disk_size', 'icount', 'unknown'];

/** The JavaScript name the compiler gives a .ksy id (lower camel case). */
function camel(id) {
  return id.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

/** A number as the exact decimal value of the double (no exponent, no rounding). */
function num(n) {
  return Number.isInteger(n) ? BigInt(n).toString() : String(n);
}

/** A scalar, byte array or array of scalars in the JSON conventions above. */
function plain(v) {
  if (v === undefined || v === null) return null;
  if (typeof v === 'number') return num(v);
  if (typeof v === 'boolean' || typeof v === 'string') return v;
  if (v instanceof Uint8Array) {
    return Buffer.from(v.buffer, v.byteOffset, v.length).toString('hex');
  }
  if (Array.isArray(v)) return v.map(plain);
  throw new TypeError(`unexpected value ${Object.prototype.toString.call(v)}`);
}

/** The named fields (snake_case ids) of a parsed object, converted by plain(). */
function pick(obj, ids) {
  const out = {};
  for (const id of ids) out[id] = plain(obj[camel(id)]);
  return out;
}

/** Apply fn to a value that may be absent. */
function opt(v, fn) {
  return v === undefined || v === null ? null : fn(v);
}

function header(h) {
  return {
    ...pick(h, HEADER),
    incompatible_features: opt(h.incompatibleFeatures, (f) => pick(f, INCOMPATIBLE)),
    compatible_features: opt(h.compatibleFeatures, (f) => pick(f, COMPATIBLE)),
    autoclear_features: opt(h.autoclearFeatures, (f) => pick(f, AUTOCLEAR)),
  };
}

function bitmapDirectoryEntry(e) {
  return {
    ...pick(e, BITMAP_ENTRY),
    bitmap_table: e.bitmapTable.map((t) => pick(t, BITMAP_TABLE_ENTRY)),
  };
}

function luksHeader(l) {
  return { ...pick(l, LUKS), key_slots: l.keySlots.map((s) => pick(s, KEY_SLOT)) };
}

/** Extension data by the type the parser chose for it; unknown types are bytes. */
function extensionData(Qcow2, d) {
  if (d instanceof Qcow2.StringExtension) return { value: plain(d.value) };
  if (d instanceof Qcow2.FeatureNameTable) {
    return { entries: d.entries.map((e) => pick(e, FEATURE_NAME)) };
  }
  if (d instanceof Qcow2.BitmapsExtension) {
    return {
      ...pick(d, BITMAPS),
      bitmap_directory: d.bitmapDirectory.entries.map(bitmapDirectoryEntry),
    };
  }
  if (d instanceof Qcow2.FullDiskEncryptionExtension) {
    return { ...pick(d, FDE), luks_header: opt(d.luksHeader, luksHeader) };
  }
  return plain(d);
}

function l1Table(entries, withL2) {
  return entries.map((e) => {
    const out = pick(e, L1_ENTRY);
    if (withL2) {
      out.l2_table = opt(e.l2Table, (t) => t.entries.map((x) => pick(x, L2_ENTRY)));
    }
    return out;
  });
}

function refcountTable(entries) {
  return entries.map((e) => ({
    ...pick(e, REFCOUNT_ENTRY),
    refcount_block: opt(e.refcountBlock, (b) => pick(b, REFCOUNTS)),
  }));
}

function snapshot(s) {
  return {
    ...pick(s, SNAPSHOT),
    extra_data: pick(s.extraData, SNAPSHOT_EXTRA),
    l1_table: l1Table(s.l1Table, false),
  };
}

/** Parse one image held in memory, as the Web IDE does, and collect its values. */
function values(Qcow2, file) {
  const buf = fs.readFileSync(file);
  const arrayBuffer = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);
  const q = new Qcow2(new KaitaiStream(arrayBuffer));
  q._read(); // debug mode: the constructor does not parse
  return {
    header: header(q.header),
    root: pick(q, ROOT),
    header_extensions: opt(q.headerExtensions, (a) => a.extensions.map((x) => ({
      ...pick(x, EXTENSION),
      data: extensionData(Qcow2, x.data),
    }))),
    l1_table: l1Table(q.l1Table, true),
    refcount_table: refcountTable(q.refcountTable),
    snapshots: opt(q.snapshots, (s) => s.map(snapshot)),
  };
}

function main(argv) {
  if (argv.length < 2) {
    console.error('usage: node tests/js/values.js MODULE_DIR IMAGE...');
    process.exit(2);
  }
  const { Qcow2 } = require(path.resolve(argv[0], 'Qcow2.js'));
  const out = {};
  for (const file of argv.slice(1)) out[file] = values(Qcow2, file);
  process.stdout.write(JSON.stringify(out));
}

main(process.argv.slice(2));
