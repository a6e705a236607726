#!/usr/bin/env node
// Every value the Kaitai Web IDE can show for qcow2 images, as JSON on stdout.
// Usage: NODE_PATH=node_modules node tests/js/values.js SPEC.ksy MODULE_DIR IMAGE...
// MODULE_DIR holds Qcow2.js compiled from SPEC.ksy with --debug -t javascript (the
// Web IDE's settings); NODE_PATH lets it find the kaitai-struct runtime when
// MODULE_DIR is outside the repository.
// Output: {image path: values tree}. For each parsed object the tree holds every seq
// field and every instance its type declares in SPEC.ksy, evaluated as the IDE does
// when the user expands it, objects and arrays of objects recursively. Numbers are
// exact decimal strings of the double JavaScript holds, byte arrays lowercase hex,
// enums their integer, absent fields null, a value whose evaluation throws "<error>".
// tests/test_js_parity.py builds the same tree from the Python parser.
'use strict';
const fs = require('fs');
const path = require('path');
const yaml = require('js-yaml');
const { KaitaiStream } = require('kaitai-struct');

const ERROR = '<error>';

/** The class name the compiler gives a .ksy type id (upper camel case). */
function className(id) {
  return id.split('_').map((p) => p[0].toUpperCase() + p.slice(1)).join('');
}

/** The property name the compiler gives a .ksy attribute id (lower camel case). */
function propertyName(id) {
  return id.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

/** The attribute ids (seq, then instances) of every type of the spec, by class name. */
function attributes(spec) {
  const types = { [spec.meta.id]: spec, ...spec.types };
  const out = {};
  for (const [id, type] of Object.entries(types)) {
    out[className(id)] = [...(type.seq || []).map((a) => a.id),
      ...Object.keys(type.instances || {})];
  }
  return out;
}

/** A number as the exact decimal value of the double (no exponent, no rounding). */
function num(n) {
  return Number.isInteger(n) ? BigInt(n).toString() : String(n);
}

/** The values tree of a parsed value. */
function tree(v, attrs) {
  if (v === undefined || v === null) return null;
  if (typeof v === 'number') return num(v);
  if (typeof v === 'boolean' || typeof v === 'string') return v;
  if (v instanceof Uint8Array) {
    return Buffer.from(v.buffer, v.byteOffset, v.length).toString('hex');
  }
  if (Array.isArray(v)) return v.map((x) => tree(x, attrs));
  const ids = attrs[v.constructor.name];
  if (ids === undefined) throw new TypeError(`no type in the spec for ${v.constructor.name}`);
  const out = {};
  for (const id of ids) {
    let value;
    try {
      value = v[propertyName(id)];
    } catch (e) {
      out[id] = ERROR;
      continue;
    }
    out[id] = tree(value, attrs);
  }
  return out;
}

/** Parse one image held in memory, as the Web IDE does, and collect its values. */
function values(Root, attrs, file) {
  const buf = fs.readFileSync(file);
  const root = new Root(new KaitaiStream(buf.buffer.slice(buf.byteOffset,
    buf.byteOffset + buf.length)));
  root._read(); // debug mode: the constructor does not parse
  return tree(root, attrs);
}

function main(argv) {
  if (argv.length < 3) {
    console.error('usage: node tests/js/values.js SPEC.ksy MODULE_DIR IMAGE...');
    process.exit(2);
  }
  const spec = yaml.load(fs.readFileSync(argv[0], 'utf8'));
  const name = className(spec.meta.id);
  // Releases before 0.11 export the class itself, later ones an object holding it.
  const mod = require(path.resolve(argv[1], `${name}.js`));
  const Root = mod[name] || mod;
  const attrs = attributes(spec);
  const out = {};
  for (const file of argv.slice(2)) out[file] = values(Root, attrs, file);
  process.stdout.write(JSON.stringify(out));
}

main(process.argv.slice(2));
