#!/usr/bin/env node
// Follow spec paths (qcow2kit get's spec_path: l1_table.pieces[0].entries[3].copied)
// on the JavaScript parser, as a Web IDE user expanding the tree would.
// Usage: NODE_PATH=node_modules node tests/js/paths.js MODULE_DIR REQUEST.json
// MODULE_DIR holds Qcow2.js compiled with --debug -t javascript; REQUEST.json is
// {image path: [spec path, ...]}. Output: {image path: {spec path: {value, offset}}}:
// the value as values.js writes it (numbers as exact decimal strings, bytes as hex,
// objects as null), and the absolute offset the debug info records (the stream's
// ioOffset plus the field's start), null for a computed value.
'use strict';
const fs = require('fs');
const path = require('path');
const { KaitaiStream } = require('kaitai-struct');

/** The property name the compiler gives a .ksy attribute id (lower camel case). */
function propertyName(id) {
  return id.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

function steps(specPath) {
  const out = [];
  const re = /\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]/g;
  let m;
  while ((m = re.exec(specPath)) !== null) {
    out.push(m[1] !== undefined ? { name: m[1] } : { index: Number(m[2]) });
  }
  return out;
}

function plain(v) {
  if (v === undefined || v === null) return null;
  if (typeof v === 'number') return Number.isInteger(v) ? BigInt(v).toString() : String(v);
  if (typeof v === 'boolean' || typeof v === 'string') return v;
  if (v instanceof Uint8Array) {
    return Buffer.from(v.buffer, v.byteOffset, v.length).toString('hex');
  }
  return null;
}

function follow(root, specPath) {
  let obj = root;
  let debug = null;
  for (const step of steps(specPath)) {
    if (step.name !== undefined) {
      const prop = propertyName(step.name);
      const parent = obj;
      obj = parent[prop];
      debug = parent._debug[prop] || parent._debug[`_m_${prop}`] || null;
    } else {
      obj = obj[step.index];
      debug = debug && debug.arr ? debug.arr[step.index] : null;
    }
  }
  const offset = debug && debug.start !== undefined ? debug.ioOffset + debug.start : null;
  return { value: plain(obj), offset };
}

function main(argv) {
  const mod = require(path.resolve(argv[0], 'Qcow2.js'));
  const Root = mod.Qcow2 || mod;
  const request = JSON.parse(fs.readFileSync(argv[1], 'utf8'));
  const out = {};
  for (const [file, paths] of Object.entries(request)) {
    const buf = fs.readFileSync(file);
    const root = new Root(new KaitaiStream(buf.buffer.slice(buf.byteOffset,
      buf.byteOffset + buf.length)));
    root._read();
    out[file] = {};
    for (const p of paths) out[file][p] = follow(root, p);
  }
  process.stdout.write(JSON.stringify(out));
}

main(process.argv.slice(2));
