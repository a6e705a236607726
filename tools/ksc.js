#!/usr/bin/env node
// Command line for the npm build of kaitai-struct-compiler, which ships only an API.
// Usage: node tools/ksc.js [--compiler PACKAGE] [--debug] [--werror]
//          -t TARGET[,TARGET...]|all -o OUTDIR SPEC.ksy
// PACKAGE is the npm package of the compiler (default kaitai-struct-compiler, the
// pinned 0.11.0); package.json also pins older releases under other names, which
// `make check-ks-version` uses to prove the spec's ks-version. --werror needs 0.10 or
// later.
'use strict';
const fs = require('fs');
const path = require('path');
const yaml = require('js-yaml');

const TARGETS = ['construct', 'cpp_stl', 'csharp', 'go', 'graphviz', 'html', 'java',
  'javascript', 'lua', 'nim', 'perl', 'php', 'python', 'ruby', 'rust'];

function usage(msg) {
  if (msg) console.error(`ksc: ${msg}`);
  console.error('usage: node tools/ksc.js [--compiler PACKAGE] [--debug] [--werror] '
    + '-t TARGET[,TARGET...]|all -o OUTDIR SPEC.ksy');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { compiler: 'kaitai-struct-compiler', debug: false, werror: false,
    targets: null, outDir: null, spec: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--compiler') opts.compiler = argv[++i];
    else if (a === '--debug') opts.debug = true;
    else if (a === '--werror') opts.werror = true;
    else if (a === '-t') opts.targets = argv[++i];
    else if (a === '-o') opts.outDir = argv[++i];
    else if (a.startsWith('-')) usage(`unknown option ${a}`);
    else if (opts.spec === null) opts.spec = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!opts.targets || !opts.outDir || !opts.spec) usage();
  opts.targets = opts.targets === 'all' ? TARGETS : opts.targets.split(',');
  for (const t of opts.targets) if (!TARGETS.includes(t)) usage(`unknown target ${t}`);
  return opts;
}

// The npm build checks the spec in yamlToSpecs, throws on the first error and drops
// every warning (style and encoding-name checks) without printing it. Load it with a
// hook at that one spot that hands each warning's message to `warnings`.
// Releases before 0.11 export a class to instantiate; 0.9 has no such spot and is
// loaded as it is (no --werror with it).
const warnings = [];
function loadCompiler(name, werror) {
  const file = require.resolve(name);
  const site = 'var problems = $as_sc_Iterable(problems$2);';
  const src = fs.readFileSync(file, 'utf8');
  if (src.split(site).length !== 2) {
    if (werror) {
      throw new Error(`${file}: no single place where the compiler checks problems (0.9 or older?)`);
    }
    const Compiler = require(name);
    return typeof Compiler.compile === 'function' ? Compiler : new Compiler();
  }
  const hook = `${site}
    for (const it = problems.iterator__sc_Iterator(); it.hasNext__Z();) {
      const p = it.next__O();
      if (p.severity__Lio_kaitai_struct_problems_ProblemSeverity()
          === $m_Lio_kaitai_struct_problems_ProblemSeverity$Warning$()) {
        warnings.push(p.message__T());
      }
    }`;
  const mod = { exports: {} };
  new Function('module', 'exports', 'warnings', src.replace(site, () => hook))(
    mod, mod.exports, warnings);
  const Compiler = mod.exports;
  return typeof Compiler.compile === 'function' ? Compiler : new Compiler();
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let spec;
  try {
    spec = yaml.load(fs.readFileSync(opts.spec, "utf8"));
  } catch (e) {
    console.error(`ksc: ${opts.spec}: ${e.message.split("\n")[0]}`);
    process.exit(1);
  }
  const ksc = loadCompiler(opts.compiler, opts.werror);
  const importer = { importYaml: () => Promise.reject(new Error('imports are not used')) };
  let failed = false;
  for (const target of opts.targets) {
    const dir = opts.targets.length > 1 ? path.join(opts.outDir, target) : opts.outDir;
    let files;
    warnings.length = 0;
    try {
      files = await ksc.compile(target, spec, importer, opts.debug);
    } catch (e) {
      const detail = Array.isArray(e) ? e.map(String).join('\n') : String(e && e.message || e);
      console.error(`ksc: ${target}: error: ${detail}`);
      failed = true;
      continue;
    }
    for (const w of warnings) console.error(`ksc: ${target}: ${w.trim().replace(/\s*\n\s*/g, ' ')}`);
    if (opts.werror && warnings.length) failed = true;
    fs.mkdirSync(dir, { recursive: true });
    for (const [name, source] of Object.entries(files)) {
      fs.writeFileSync(path.join(dir, name), source);
    }
  }
  process.exit(failed ? 1 : 0);
}

main();
