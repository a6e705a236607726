"""The JavaScript parser, run as the Kaitai Web IDE runs it, gives Python's values.

qcow2.ksy is compiled with --debug for JavaScript; tests/js/values.js parses each
image from memory and prints a values tree, which must equal the tree built here from
the generated Python parser. Numbers are compared as exact decimal strings, so a
double that lost precision in JavaScript shows up as a mismatch.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import subprocess
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence

import pytest
from kaitaistruct import KaitaiStream

import imagekit
from qcow2kit.generated.qcow2 import Qcow2

REPO = Path(__file__).resolve().parent.parent
VALUES_JS = REPO / "tests" / "js" / "values.js"

# The same field lists as tests/js/values.js, by .ksy id.
HEADER = ("magic", "version", "ofs_backing_file_name", "len_backing_file_name",
          "cluster_bits", "size", "crypt_method", "num_l1_entries", "ofs_l1_table",
          "ofs_refcount_table", "num_refcount_table_clusters", "num_snapshots",
          "ofs_snapshot_table", "refcount_order", "len_header", "compression_type",
          "additional_fields", "len_header_effective", "refcount_order_effective",
          "refcount_bits", "compression_type_effective")
INCOMPATIBLE = ("hi", "lo", "dirty", "corrupt", "external_data_file", "compression_type",
                "extended_l2", "has_unknown_bits")
COMPATIBLE = ("hi", "lo", "lazy_refcounts", "has_unknown_bits")
AUTOCLEAR = ("hi", "lo", "bitmaps", "data_file_raw", "has_unknown_bits")
ROOT = ("cluster_size", "ofs_extensions_limit", "ofs_extensions_end", "backing_file_name",
        "has_external_data_file", "is_extended_l2", "len_l2_entry", "num_l2_entries",
        "len_subcluster", "num_refcount_block_entries", "compressed_offset_bits",
        "compressed_hi_modulus")
EXTENSION = ("magic", "len_data", "padding")
FEATURE_NAME = ("type", "bit", "name")
BITMAPS = ("num_bitmaps", "reserved", "len_bitmap_directory", "ofs_bitmap_directory")
BITMAP_ENTRY = ("ofs_bitmap_table", "num_bitmap_table_entries", "flags", "type",
                "granularity_bits", "len_name", "len_extra_data", "extra_data", "name",
                "padding", "in_use", "auto", "extra_data_compatible", "has_reserved_flags",
                "granularity")
BITMAP_TABLE_ENTRY = ("hi", "lo", "ofs_data", "all_ones", "has_reserved_bits", "kind")
FDE = ("ofs_encryption_header", "len_encryption_header")
LUKS = ("magic", "version", "cipher_name", "cipher_mode", "hash_spec", "payload_offset",
        "key_bytes", "mk_digest", "mk_digest_salt", "mk_digest_iterations", "uuid")
KEY_SLOT = ("active", "iterations", "salt", "key_material_offset", "stripes")
L1_ENTRY = ("hi", "lo", "ofs_l2_table", "copied", "has_reserved_bits")
L2_ENTRY = ("hi", "lo", "subcluster_zero", "subcluster_alloc", "copied", "compressed",
            "zero", "ofs_host_cluster", "has_reserved_bits", "ofs_compressed_data",
            "num_additional_sectors", "len_compressed_data", "type")
REFCOUNT_ENTRY = ("hi", "lo", "ofs_refcount_block", "has_reserved_bits")
REFCOUNTS = tuple(f"refcounts_{w}" for w in (1, 2, 4, 8, 16, 32, 64))
SNAPSHOT = ("ofs_l1_table", "num_l1_entries", "len_id", "len_name", "date_sec", "date_nsec",
            "vm_clock_nsec", "vm_state_size", "len_extra_data", "id", "name", "padding")
SNAPSHOT_EXTRA = ("vm_state_size_large", "disk_size", "icount", "unknown")


# --- the values tree from the Python parser -------------------------------------

def plain(v: Any) -> Any:
    """A scalar, bytes or list in values.js's conventions (ints and enums as strings)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [plain(x) for x in v]
    raise TypeError(f"unexpected value {v!r}")


def pick(obj: Any, ids: Sequence[str]) -> Dict[str, Any]:
    """The named fields of a parsed object; absent optional fields are None."""
    return {i: plain(getattr(obj, i, None)) for i in ids}


def opt(v: Any, fn: Callable[[Any], Any]) -> Any:
    return None if v is None else fn(v)


def header(h: Qcow2.Header) -> Dict[str, Any]:
    return {
        **pick(h, HEADER),
        "incompatible_features": opt(getattr(h, "incompatible_features", None),
                                     lambda f: pick(f, INCOMPATIBLE)),
        "compatible_features": opt(getattr(h, "compatible_features", None),
                                   lambda f: pick(f, COMPATIBLE)),
        "autoclear_features": opt(getattr(h, "autoclear_features", None),
                                  lambda f: pick(f, AUTOCLEAR)),
    }


def bitmap_directory_entry(e: Qcow2.BitmapDirectoryEntry) -> Dict[str, Any]:
    return {**pick(e, BITMAP_ENTRY),
            "bitmap_table": [pick(t, BITMAP_TABLE_ENTRY) for t in e.bitmap_table]}


def luks_header(h: Qcow2.LuksHeader) -> Dict[str, Any]:
    return {**pick(h, LUKS), "key_slots": [pick(s, KEY_SLOT) for s in h.key_slots]}


def extension_data(d: Any) -> Any:
    """Extension data by the type the parser chose for it; unknown types are bytes."""
    if isinstance(d, Qcow2.StringExtension):
        return {"value": d.value}
    if isinstance(d, Qcow2.FeatureNameTable):
        return {"entries": [pick(e, FEATURE_NAME) for e in d.entries]}
    if isinstance(d, Qcow2.BitmapsExtension):
        return {**pick(d, BITMAPS), "bitmap_directory": [
            bitmap_directory_entry(e) for e in d.bitmap_directory.entries]}
    if isinstance(d, Qcow2.FullDiskEncryptionExtension):
        return {**pick(d, FDE), "luks_header": opt(d.luks_header, luks_header)}
    return plain(d)


def l1_table(entries: List[Qcow2.L1Entry], with_l2: bool) -> List[Dict[str, Any]]:
    out = []
    for e in entries:
        row = pick(e, L1_ENTRY)
        if with_l2:
            row["l2_table"] = opt(e.l2_table,
                                  lambda t: [pick(x, L2_ENTRY) for x in t.entries])
        out.append(row)
    return out


def snapshot(s: Qcow2.Snapshot) -> Dict[str, Any]:
    return {**pick(s, SNAPSHOT), "extra_data": pick(s.extra_data, SNAPSHOT_EXTRA),
            "l1_table": l1_table(s.l1_table, with_l2=False)}


def python_values(path: Path) -> Dict[str, Any]:
    """The values tree of values.js, from the generated Python parser."""
    q = Qcow2(KaitaiStream(BytesIO(path.read_bytes())))
    q._read()
    exts = getattr(q, "header_extensions", None)
    return {
        "header": header(q.header),
        "root": pick(q, ROOT),
        "header_extensions": opt(exts, lambda a: [
            {**pick(x, EXTENSION), "data": extension_data(x.data)} for x in a.extensions]),
        "l1_table": l1_table(q.l1_table, with_l2=True),
        "refcount_table": [
            {**pick(e, REFCOUNT_ENTRY),
             "refcount_block": opt(e.refcount_block, lambda b: pick(b, REFCOUNTS))}
            for e in q.refcount_table],
        "snapshots": opt(q.snapshots, lambda s: [snapshot(x) for x in s]),
    }


# --- the values tree from JavaScript --------------------------------------------

def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.fail("node is not installed; the JavaScript parity tests need it "
                    "(`make deps` installs nodejs)", pytrace=False)
    return exe


def run_node(*args: str) -> str:
    proc = subprocess.run([node(), *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "NODE_PATH": str(REPO / "node_modules")},
                          check=False)
    if proc.returncode != 0:
        pytest.fail(f"node {Path(args[0]).name} failed ({proc.returncode}):\n"
                    f"{proc.stderr.strip()}", pytrace=False)
    return proc.stdout


def js_values(module: Path, paths: Sequence[Path]) -> Dict[str, Any]:
    """values.js's trees for the images, parsed in one node process, by path."""
    return json.loads(run_node(str(VALUES_JS), str(module), *map(str, paths)))


@pytest.fixture(scope="session")
def js_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """qcow2.ksy compiled in debug mode for JavaScript (the Web IDE's settings)."""
    out = tmp_path_factory.mktemp("qcow2_js")
    run_node("tools/ksc.js", "--debug", "-t", "javascript", "-o", str(out), "qcow2.ksy")
    return out


@pytest.fixture(scope="session")
def js_image_values(js_module: Path, images: Dict[str, Path]) -> Dict[str, Any]:
    """values.js's tree of every image kind, by kind."""
    trees = js_values(js_module, list(images.values()))
    return {kind: trees[str(path)] for kind, path in images.items()}


# --- comparison -----------------------------------------------------------------

def differences(py: Any, js: Any, where: str = "$") -> Iterator[str]:
    """Paths where the two trees differ, depth first in key order."""
    if isinstance(py, dict) and isinstance(js, dict):
        for key in [*py, *(k for k in js if k not in py)]:
            if key not in js or key not in py:
                yield f"{where}.{key}: only in {'python' if key in py else 'js'}"
            else:
                yield from differences(py[key], js[key], f"{where}.{key}")
    elif isinstance(py, list) and isinstance(js, list):
        for i, (a, b) in enumerate(zip(py, js)):
            yield from differences(a, b, f"{where}[{i}]")
        if len(py) != len(js):
            yield f"{where}: python has {len(py)} items, js {len(js)}"
    elif py != js or type(py) is not type(js):
        yield f"{where}: python {py!r} != js {js!r}"


def assert_same(py: Dict[str, Any], js: Dict[str, Any]) -> None:
    # pytest's own assertion diff of trees this size takes minutes: report paths.
    if py != js:
        first = list(itertools.islice(differences(py, js), 10))
        pytest.fail("JavaScript and Python values differ (first 10):\n  "
                    + "\n  ".join(first), pytrace=False)


@pytest.mark.parametrize("kind", list(imagekit.KINDS))
def test_js_matches_python(kind: str, images: Dict[str, Path],
                           js_image_values: Dict[str, Any]) -> None:
    assert_same(python_values(images[kind]), js_image_values[kind])


# --- 64-bit entries crafted into a copy of the v3 image -------------------------

def expect(entry: Dict[str, Any], **fields: Any) -> None:
    """The named fields of a values-tree entry equal these Python values."""
    assert {k: entry[k] for k in fields} == {k: plain(v) for k, v in fields.items()}


def test_js_matches_python_on_wide_entries(images: Dict[str, Path], js_module: Path,
                                           tmp_path: Path) -> None:
    path = tmp_path / "wide.qcow2"
    shutil.copyfile(images["v3"], path)
    q = Qcow2(KaitaiStream(BytesIO(path.read_bytes())))
    q._read()
    assert q.header.cluster_bits == 16
    x = 62 - (16 - 8)                               # compressed descriptor split: 54
    l2 = q.l1_table[0].ofs_l2_table
    refcount_table = q.header.ofs_refcount_table
    refcount_entry_0 = struct.unpack_from(">Q", path.read_bytes(), refcount_table)[0]
    assert refcount_entry_0 % 512 == 0 and refcount_entry_0 != 0

    standard = 1 << 63 | 0x0000_0123_4567_0000      # copied, host cluster above 4 GiB
    compressed = 1 << 62 | 5 << x | 0xAB_CDEF_1234  # offset above 4 GiB, 5 more sectors
    compressed_max = 1 << 62 | 0xFF << x | (1 << 53) - 1  # all sector bits, offset 2^53-1
    all_but_62 = 0xBFFF_FFFF_FFFF_FFFF              # every offset, flag and reserved bit
    patches = {l2 + 8 * 100: standard, l2 + 8 * 101: compressed,
               l2 + 8 * 102: compressed_max, l2 + 8 * 103: all_but_62,
               refcount_table: refcount_entry_0 | 1,   # reserved bit 0, block still read
               refcount_table + 8: 0x1FF}              # reserved bits 0..8, no block
    with open(path, "r+b") as f:
        for offset, value in patches.items():
            f.seek(offset)
            f.write(struct.pack(">Q", value))

    py = python_values(path)
    assert_same(py, js_values(js_module, [path])[str(path)])

    entries = py["l1_table"][0]["l2_table"]
    expect(entries[100], hi=0x8000_0123, lo=0x4567_0000, copied=True, compressed=False,
           zero=False, ofs_host_cluster=0x123_4567_0000, has_reserved_bits=False,
           ofs_compressed_data=0, num_additional_sectors=0, len_compressed_data=0,
           type=Qcow2.ClusterType.normal)
    expect(entries[101], hi=0x4140_00AB, lo=0xCDEF_1234, copied=False, compressed=True,
           zero=False, ofs_host_cluster=0, has_reserved_bits=False,
           ofs_compressed_data=0xAB_CDEF_1234, num_additional_sectors=5,
           len_compressed_data=6 * 512 - 0x34, type=Qcow2.ClusterType.compressed)
    expect(entries[102], hi=0x7FDF_FFFF, lo=0xFFFF_FFFF, compressed=True,
           ofs_compressed_data=(1 << 53) - 1, num_additional_sectors=255,
           len_compressed_data=256 * 512 - 511, type=Qcow2.ClusterType.compressed)
    expect(entries[103], copied=True, compressed=False, zero=True,
           ofs_host_cluster=0xFF_FFFF_FFFF_FE00, has_reserved_bits=True,
           type=Qcow2.ClusterType.zero_alloc)
    refcounts = py["refcount_table"]
    expect(refcounts[0], ofs_refcount_block=refcount_entry_0, has_reserved_bits=True)
    assert refcounts[0]["refcount_block"]["refcounts_16"] is not None
    expect(refcounts[1], ofs_refcount_block=0, has_reserved_bits=True,
           refcount_block=None)
