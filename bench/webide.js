#!/usr/bin/env node
// Time and memory of opening each table of an image as the Kaitai Web IDE does.
// Usage: NODE_PATH=node_modules node --expose-gc bench/webide.js SPEC.ksy MODULE_DIR IMAGE
// MODULE_DIR holds Qcow2.js compiled from SPEC.ksy with --debug -t javascript. The
// image is parsed from memory (`_read()`, as the IDE does); then every parse instance
// reachable through the first 16 elements of each array is found, once per shape, and each is opened in a
// fresh node process: the instance evaluated, then what the IDE draws under it (the
// seq fields and value instances of the objects it holds, one level of arrays and
// objects deep). Prints one JSON line per table: its path, the seconds the opening
// took and the resident memory it added, at its peak, in MB.
'use strict';
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const yaml = require('js-yaml');
const { KaitaiStream } = require('kaitai-struct');

function className(id) {
  return id.split('_').map((p) => p[0].toUpperCase() + p.slice(1)).join('');
}

function propertyName(id) {
  return id.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

/** Per class name: the attributes the IDE draws (seq, value instances) and the
 * parse instances (read when the user expands them). */
function kinds(spec) {
  const types = { [spec.meta.id]: spec, ...spec.types };
  const out = {};
  for (const [id, type] of Object.entries(types)) {
    const inst = Object.entries(type.instances || {});
    out[className(id)] = {
      drawn: [...(type.seq || []).map((a) => a.id),
        ...inst.filter(([, v]) => 'value' in v).map(([k]) => k)].map(propertyName),
      opened: inst.filter(([, v]) => !('value' in v)).map(([k]) => propertyName(k)),
    };
  }
  return out;
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !(v instanceof Uint8Array) && !Array.isArray(v);
}

/** Evaluate what the IDE shows of v: its drawn attributes, and those of the objects
 * and arrays of objects they hold (depth levels). */
function draw(v, k, depth) {
  if (Array.isArray(v)) {
    for (const x of v) draw(x, k, depth);
    return;
  }
  if (!isObject(v) || depth < 0) return;
  for (const name of k[v.constructor.name].drawn) {
    let x;
    try { x = v[name]; } catch (e) { continue; }
    draw(x, k, depth - 1);
  }
}

function root(spec, moduleDir, file) {
  const name = className(spec.meta.id);
  const mod = require(path.resolve(moduleDir, `${name}.js`));
  const Root = mod[name] || mod; // releases before 0.11 export the class itself
  const buf = fs.readFileSync(file);
  const r = new Root(new KaitaiStream(buf.buffer.slice(buf.byteOffset,
    buf.byteOffset + buf.length)));
  r._read();
  return r;
}

function follow(r, steps) {
  let v = r;
  for (const s of steps) v = v[s];
  return v;
}

/** Paths (lists of property names and indexes) of every parse instance reached
 * through objects and the first 16 elements of each array, one path per shape (the
 * path with its indexes left out): extensions of different kinds sit in one array. */
function tables(v, k, steps, out, seen = new Set()) {
  if (Array.isArray(v)) {
    v.slice(0, 16).forEach((x, i) => tables(x, k, [...steps, i], out, seen));
    return;
  }
  if (!isObject(v)) return;
  const ks = k[v.constructor.name];
  for (const name of ks.drawn) {
    let x;
    try { x = v[name]; } catch (e) { continue; }
    tables(x, k, [...steps, name], out, seen);
  }
  for (const name of ks.opened) {
    let x;
    try { x = v[name]; } catch (e) { continue; }
    if (x === null || x === undefined) continue;
    const shape = [...steps, name].filter((s) => typeof s !== 'number').join('.');
    if (seen.has(shape)) continue;
    seen.add(shape);
    out.push([...steps, name]);
    tables(x, k, [...steps, name], out, seen);
  }
  return out;
}

function measure(spec, moduleDir, file, steps) {
  const k = kinds(spec);
  const r = root(spec, moduleDir, file);
  const parent = follow(r, steps.slice(0, -1));
  global.gc();
  const rss0 = process.memoryUsage().rss;
  const peak0 = process.resourceUsage().maxRSS * 1024;
  const t0 = process.hrtime.bigint();
  const v = parent[steps[steps.length - 1]];
  draw(v, k, 1);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  // The peak of the opening itself when it set a new peak, else what it added.
  const peak = process.resourceUsage().maxRSS * 1024;
  const top = peak > peak0 ? peak : process.memoryUsage().rss;
  return { seconds, mb: Math.max(0, top - rss0) / 1e6 };
}

function main(argv) {
  const [specFile, moduleDir, file, child] = argv;
  const spec = yaml.load(fs.readFileSync(specFile, 'utf8'));
  if (child !== undefined) {
    process.stdout.write(JSON.stringify(measure(spec, moduleDir, file, JSON.parse(child))));
    return;
  }
  const found = tables(root(spec, moduleDir, file), kinds(spec), [], []);
  for (const steps of found) {
    const out = execFileSync(process.execPath, ['--expose-gc', '--max-old-space-size=8192',
      __filename, specFile, moduleDir, file, JSON.stringify(steps)], { encoding: 'utf8' });
    const { seconds, mb } = JSON.parse(out);
    const where = steps.map((s) => (typeof s === 'number' ? `[${s}]` : `.${s}`)).join('');
    console.log(JSON.stringify({ table: where, seconds: +seconds.toFixed(3), mb: +mb.toFixed(1) }));
  }
}

main(process.argv.slice(2));
