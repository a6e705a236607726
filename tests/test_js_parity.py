"""The JavaScript parser, run as the Kaitai Web IDE runs it, gives Python's values.

qcow2.ksy is compiled with --debug for JavaScript; tests/js/values.js parses each
image from memory and evaluates every seq field and every instance of every object
it reaches (L2 tables, refcount blocks, snapshot L1 and L2 tables, bitmap tables, the
LUKS header), as a user expanding the whole tree in the IDE would. The tree must equal
the one built here from the generated Python parser, attribute lists from the same
.ksy. Numbers are compared as exact decimal strings, so a double that lost precision
in JavaScript shows up as a mismatch.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
from enum import Enum
from io import BytesIO
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence

import pytest
import kaitaistruct
import yaml
from kaitaistruct import KaitaiStream, KaitaiStruct, KaitaiStructError

import imagekit
import subclusters
from qcow2kit.generated.qcow2 import Qcow2
from sidebyside import strict_zip

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "qcow2.ksy"
VALUES_JS = REPO / "tests" / "js" / "values.js"
KSY = yaml.safe_load(SPEC.read_text())
TYPES = {KSY["meta"]["id"]: KSY, **KSY["types"]}
ERROR = "<error>"  # a value whose evaluation throws, as values.js writes it


def class_name(type_id: str) -> str:
    return "".join(part.capitalize() for part in type_id.split("_"))


# The attribute ids (seq, then instances) of every type, by generated class name.
ATTRIBUTES = {class_name(t): [a["id"] for a in spec.get("seq", [])]
              + list(spec.get("instances", {})) for t, spec in TYPES.items()}


# --- the values tree from the Python parser -------------------------------------

def tree(v: Any) -> Any:
    """values.js's tree of a parsed value: ints and enums as decimal strings, bytes
    as hex, every attribute of an object's type, absent ones None."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, Enum):  # the Python of releases before 0.11: not IntEnum
        return str(int(v.value))
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [tree(x) for x in v]
    if isinstance(v, KaitaiStruct):
        out = {}
        for attr in ATTRIBUTES[type(v).__name__]:
            try:
                value = getattr(v, attr, None)
            except (EOFError, KaitaiStructError, OverflowError):  # seek beyond 2^63
                out[attr] = ERROR
                continue
            out[attr] = tree(value)
        return out
    raise TypeError(f"unexpected value {v!r}")


def python_values(path: Path, root: type = Qcow2) -> Dict[str, Any]:
    q = root(KaitaiStream(BytesIO(path.read_bytes())))
    q._read()
    return tree(q)


def errors(t: Any, where: str = "$") -> Iterator[str]:
    """Paths of the values whose evaluation failed."""
    if t == ERROR:
        yield where
    elif isinstance(t, dict):
        for k, v in t.items():
            yield from errors(v, f"{where}.{k}")
    elif isinstance(t, list):
        for i, v in enumerate(t):
            yield from errors(v, f"{where}[{i}]")


# --- the values tree from JavaScript --------------------------------------------

def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.fail("node is not installed; the JavaScript parity tests need it "
                    "(`make deps` installs nodejs)", pytrace=False)
    return exe


def run_node(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([node(), *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "NODE_PATH": str(REPO / "node_modules")},
                          check=False)
    if ok and proc.returncode != 0:
        pytest.fail(f"node {Path(args[0]).name} failed ({proc.returncode}):\n"
                    f"{proc.stderr.strip()}", pytrace=False)
    return proc


def js_values(module: Path, paths: Sequence[Path]) -> Dict[str, Any]:
    """values.js's trees for the images, parsed in one node process, by path."""
    return json.loads(run_node(str(VALUES_JS), str(SPEC), str(module),
                               *map(str, paths)).stdout)


@pytest.fixture(scope="session")
def js_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """qcow2.ksy compiled in debug mode for JavaScript (the Web IDE's settings)."""
    out = tmp_path_factory.mktemp("qcow2_js")
    run_node("tools/ksc.js", "--debug", "-t", "javascript", "-o", str(out), str(SPEC))
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
    py = python_values(images[kind])
    assert list(errors(py)) == []
    assert_same(py, js_image_values[kind])


@pytest.mark.parametrize("cluster_bits", [8, 22, 31])
def test_cluster_bits_outside_qemus_range_refused_by_both(cluster_bits: int,
                                                          images: Dict[str, Path],
                                                          js_module: Path,
                                                          tmp_path: Path) -> None:
    """cluster_bits outside 9..21 (from 31 on, 32-bit shifts overflow in JavaScript):
    both parsers refuse the header, with the same validation error."""
    path = craft(images["v3"], tmp_path / "bits.qcow2", {20: struct.pack(">I", cluster_bits)})
    error = "ValidationLessThanError" if cluster_bits < 9 else "ValidationGreaterThanError"
    with pytest.raises(getattr(kaitaistruct, error)):
        python_values(path)
    proc = run_node(str(VALUES_JS), str(SPEC), str(js_module), str(path), ok=False)
    assert proc.returncode != 0 and error in proc.stderr


def test_js_matches_python_on_subcluster_states(js_module: Path, tmp_path: Path) -> None:
    """Extended L2 entries in every subcluster state (tests/subclusters.py), crafted
    reserved bits and invalid bitmaps included."""
    paths = list(subclusters.build(tmp_path).values())
    trees = js_values(js_module, paths)
    for path in paths:
        py = python_values(path)
        assert list(errors(py)) == []
        assert_same(py, trees[str(path)])


def test_js_matches_python_on_2m_clusters_with_1_bit_refcounts(js_module: Path,
                                                               tmp_path: Path) -> None:
    """The largest refcount block QEMU makes: 16,777,216 one-bit refcounts in 32
    pieces, with a full-size L2 table of 262,144 entries."""
    path = imagekit.create(tmp_path / "refcount_1_2m.qcow2", "64M", cluster_size="2M",
                           refcount_bits="1")
    imagekit.qemu_io(path, "write -P 0x11 0 4M", "write -z 8M 2M")
    py = python_values(path)
    assert list(errors(py)) == []
    blocks = [e["refcount_block"] for e in flat(py["refcount_table"]) if e["refcount_block"]]
    assert [len(p["refcounts_1"]) for p in blocks[0]["pieces"]] == [524288] * 32
    assert_same(py, js_values(js_module, [path])[str(path)])


# --- the compiler release meta/ks-version names -----------------------------------

KS_VERSION = KSY["meta"]["ks-version"]


def test_ks_version_compiler_gives_the_same_values(images: Dict[str, Path],
                                                   js_image_values: Dict[str, Any],
                                                   tmp_path: Path) -> None:
    """The release meta/ks-version names (pinned in package-lock.json) compiles the
    spec for Python and JavaScript in debug mode, and both parsers give every test
    image the values the pinned current compiler's JavaScript parser gives (itself
    equal to the committed Python parser's, above)."""
    run_node("tools/ksc.js", "--compiler", f"kaitai-struct-compiler-{KS_VERSION}",
             "--debug", "-t", "python,javascript", "-o", str(tmp_path), str(SPEC))
    spec = importlib.util.spec_from_file_location("qcow2_ks_version",
                                                  tmp_path / "python" / "qcow2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old_js = js_values(tmp_path / "javascript", list(images.values()))
    for kind, path in images.items():
        assert_same(js_image_values[kind], python_values(path, module.Qcow2))
        assert_same(js_image_values[kind], old_js[str(path)])


# --- 64-bit values crafted into copies of qemu-made images ----------------------

def expect(entry: Dict[str, Any], **fields: Any) -> None:
    """The named fields of a values-tree entry equal these Python values."""
    assert {k: entry[k] for k in fields} == {k: tree(v) for k, v in fields.items()}


def flat(table: Dict[str, Any]) -> list:
    """The entries of a table the spec reads in pieces, from a values tree."""
    return [e for piece in table["pieces"] for e in piece["entries"]]


def craft(src: Path, dst: Path, patches: Dict[int, bytes]) -> Path:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        for offset, data in patches.items():
            f.seek(offset)
            f.write(data)
    return dst


def u64(value: int) -> bytes:
    return struct.pack(">Q", value % (1 << 64))


def test_js_matches_python_on_wide_entries(images: Dict[str, Path], js_module: Path,
                                           tmp_path: Path) -> None:
    """L1, L2 and refcount table entries with flags in bits 62/63 and offsets above
    4 GiB, in a copy of the v3 image; entries pointing past the end of the file give
    an error for their table on both sides, as the IDE shows it."""
    data = images["v3"].read_bytes()
    cluster_bits, = struct.unpack_from(">I", data, 20)
    l1, = struct.unpack_from(">Q", data, 40)
    refcount_table, = struct.unpack_from(">Q", data, 48)
    l2 = struct.unpack_from(">Q", data, l1)[0] % (1 << 56)
    refcount_entry_0, = struct.unpack_from(">Q", data, refcount_table)
    assert cluster_bits == 16 and refcount_entry_0 % 512 == 0 and refcount_entry_0 != 0
    x = 62 - (16 - 8)                               # compressed descriptor split: 54

    size = (1 << 62) - 512                          # largest multiple of 512 below 2^62
    standard = 1 << 63 | 0x0000_0123_4567_0000      # copied, host cluster above 4 GiB
    compressed = 1 << 62 | 5 << x | 0xAB_CDEF_1234  # offset above 4 GiB, 5 more sectors
    compressed_max = 1 << 62 | 0xFF << x | (1 << 53) - 1  # all sector bits, offset 2^53-1
    all_but_62 = 0xBFFF_FFFF_FFFF_FFFF              # every offset, flag and reserved bit
    l1_far = 1 << 63 | 0x0000_0123_4567_0000        # copied, L2 table above 4 GiB
    l1_reserved = 0x7F00_0000_0000_01FF             # reserved bits 0..8 and 56..62 only
    path = craft(images["v3"], tmp_path / "wide.qcow2", {
        24: u64(size), 36: struct.pack(">I", 3),
        l1 + 8: u64(l1_far), l1 + 16: u64(l1_reserved),
        l2 + 8 * 100: u64(standard), l2 + 8 * 101: u64(compressed),
        l2 + 8 * 102: u64(compressed_max), l2 + 8 * 103: u64(all_but_62),
        refcount_table: u64(refcount_entry_0 | 1),  # reserved bit 0, block still read
        refcount_table + 8: u64(0x1FF),             # reserved bits 0..8, no block
        refcount_table + 16: u64(0x0000_0123_4567_0000),
        refcount_table + 24: u64(size),
        refcount_table + 32: u64(1 << 63)})

    py = python_values(path)
    assert_same(py, js_values(js_module, [path])[str(path)])
    assert list(errors(py)) == ["$.l1_table.pieces[0].entries[1].l2_table",
                                "$.refcount_table.pieces[0].entries[2].refcount_block",
                                "$.refcount_table.pieces[0].entries[3].refcount_block",
                                "$.refcount_table.pieces[0].entries[4].refcount_block"]

    assert py["header"]["size"] == str(size)
    l1_table = flat(py["l1_table"])
    expect(l1_table[0], copied=True, has_reserved_bits=False)
    expect(l1_table[1], hi=0x8000_0123, lo=0x4567_0000, ofs_l2_table=0x123_4567_0000,
           copied=True, has_reserved_bits=False)
    expect(l1_table[2], ofs_l2_table=0, copied=False, has_reserved_bits=True, l2_table=None)
    entries = flat(l1_table[0]["l2_table"])
    expect(entries[100], hi=0x8000_0123, lo=0x4567_0000, copied=True, compressed=False,
           zero=False, ofs_host_cluster=0x123_4567_0000, has_reserved_bits=False,
           ofs_compressed_data=0, num_additional_sectors=0, ofs_data=0x123_4567_0000,
           len_compressed_data=0, cluster_type=Qcow2.ClusterType.normal)
    expect(entries[101], hi=0x4140_00AB, lo=0xCDEF_1234, copied=False, compressed=True,
           zero=False, ofs_host_cluster=0, has_reserved_bits=False,
           ofs_compressed_data=0xAB_CDEF_1234, num_additional_sectors=5,
           ofs_data=0xAB_CDEF_1234, len_compressed_data=6 * 512 - 0x34,
           cluster_type=Qcow2.ClusterType.compressed)
    expect(entries[102], hi=0x7FDF_FFFF, lo=0xFFFF_FFFF, compressed=True,
           ofs_compressed_data=(1 << 53) - 1, num_additional_sectors=255,
           len_compressed_data=256 * 512 - 511, cluster_type=Qcow2.ClusterType.compressed)
    expect(entries[103], copied=True, compressed=False, zero=True,
           ofs_host_cluster=0xFF_FFFF_FFFF_FE00, has_reserved_bits=True,
           cluster_type=Qcow2.ClusterType.zero_alloc)
    refcounts = flat(py["refcount_table"])
    expect(refcounts[0], ofs_refcount_block=refcount_entry_0, has_reserved_bits=True)
    assert refcounts[0]["refcount_block"]["pieces"][0]["refcounts_16"] is not None
    expect(refcounts[1], ofs_refcount_block=0, has_reserved_bits=True,
           refcount_block=None)
    expect(refcounts[2], hi=0x123, ofs_refcount_block=0x123_4567_0000)
    expect(refcounts[3], ofs_refcount_block=size, has_reserved_bits=False)
    expect(refcounts[4], hi=0x8000_0000, lo=0, ofs_refcount_block=1 << 63)


def test_js_matches_python_on_wide_bitmap_entries(images: Dict[str, Path],
                                                  js_module: Path, tmp_path: Path) -> None:
    """Bitmap table entries above 4 GiB and with reserved high bits, and the largest
    granularities (2^31 is QEMU's own limit), in a copy of the bitmaps image."""
    directory = {e["name"]: e for e in imagekit.bitmap_directory(images["bitmaps"])}
    fine, b0, disabled = directory["fine"], directory["b0"], directory["disabled"]
    assert fine["table_size"] >= 3
    table = fine["table_offset"]
    granularity_bits = {e["name"]: e["name_offset"] - 24 + 17 for e in (b0, disabled)}
    path = craft(images["bitmaps"], tmp_path / "wide_bitmaps.qcow2", {
        table: u64(0x0000_0123_4567_0000),          # serialized above 4 GiB
        table + 8: u64(0x00FF_FFFF_FFFF_FE01),      # largest offset with bit 0: invalid
        table + 16: u64(0xFF00_0000_0000_0001),     # reserved bits 56..63, all ones
        granularity_bits["b0"]: bytes([31]),
        granularity_bits["disabled"]: bytes([63])})

    py = python_values(path)
    assert_same(py, js_values(js_module, [path])[str(path)])
    bitmaps = next(x["data"] for x in py["header_extensions"]["extensions"]
                   if x["magic"] == tree(Qcow2.HeaderExtensionType.bitmaps))
    # names are raw bytes, hex in the tree
    by_name = {bytes.fromhex(e["name"]).decode(): e
               for e in bitmaps["bitmap_directory"]["entries"]}
    expect(by_name["b0"], granularity_bits=31, granularity=1 << 31)
    expect(by_name["disabled"], granularity_bits=63, granularity=1 << 63)
    entries = flat(by_name["fine"]["bitmap_table"])
    expect(entries[0], hi=0x123, lo=0x4567_0000, ofs_data=0x123_4567_0000,
           all_ones=False, has_reserved_bits=False,
           kind=Qcow2.BitmapTableEntryKind.serialized)
    expect(entries[1], ofs_data=0xFF_FFFF_FFFF_FE00, all_ones=True,
           has_reserved_bits=False, kind=Qcow2.BitmapTableEntryKind.invalid)
    expect(entries[2], ofs_data=0, all_ones=True, has_reserved_bits=True,
           kind=Qcow2.BitmapTableEntryKind.all_ones)


# (vm_clock_nsec, icount) pairs: both beyond 2^53, a guest clock of 105 days, the
# extremes of both, a clock 1 ns short of a second whose nearest double is not, and
# an icount of exactly 2^32.
SNAPSHOT_COUNTERS = [((1 << 53) + 1, (1 << 53) + 1),
                     (105 * 86400 * 10**9 + 123_456_789, -2),
                     ((1 << 64) - 1, -(1 << 63)),
                     (18_446_744_072 * 10**9 - 1, (1 << 63) - 1),
                     (999_999_999, 1 << 32)]


def test_js_matches_python_on_wide_snapshot_counters(images: Dict[str, Path],
                                                     js_module: Path,
                                                     tmp_path: Path) -> None:
    """Snapshot guest clocks and icounts beyond 2^53 in copies of the snapshots image.
    vm_clock_sec, vm_clock_subsec_nsec and the halves are exact in JavaScript; the
    full vm_clock_nsec and icount are the nearest doubles there, as documented."""
    data = images["snapshots"].read_bytes()
    entry, = struct.unpack_from(">Q", data, 64)     # the first snapshot table entry
    extra_size, = struct.unpack_from(">I", data, entry + 36)
    assert extra_size >= 24                         # qemu writes the icount
    paths = [craft(images["snapshots"], tmp_path / f"counters_{i}.qcow2",
                   {entry + 24: u64(clock), entry + 56: u64(icount)})
             for i, (clock, icount) in enumerate(SNAPSHOT_COUNTERS)]
    trees = js_values(js_module, paths)

    for path, (clock, icount) in strict_zip(paths, SNAPSHOT_COUNTERS):
        py, js = python_values(path), trees[str(path)]
        py_snap, js_snap = py["snapshots"][0], js["snapshots"][0]
        expect(py_snap, vm_clock_nsec_hi=clock >> 32, vm_clock_nsec_lo=clock % (1 << 32),
               vm_clock_nsec=clock, vm_clock_sec=clock // 10**9,
               vm_clock_subsec_nsec=clock % 10**9)
        expect(py_snap["extra_data"], icount_hi=icount % (1 << 64) >> 32,
               icount_lo=icount % (1 << 32), icount=icount)
        for t, key in ((py_snap, "vm_clock_nsec"), (py_snap["extra_data"], "icount")):
            js_t = js_snap if t is py_snap else js_snap["extra_data"]
            assert js_t[key] == str(int(float(int(t[key])))), key
            js_t[key] = t[key]                      # the rest must be exact
        assert_same(py, js)


# --- the Web IDE's object tree --------------------------------------------------

def test_representations_show_fields_and_value_instances() -> None:
    """-webide-representation may only name what the IDE has evaluated when it draws
    the node: the type's seq fields, params and value instances (parse instances are
    read only when expanded), or `this` with the flags format."""
    for type_id, spec in TYPES.items():
        template = spec.get("-webide-representation")
        if template is None:
            continue
        shown = {a["id"] for a in spec.get("seq", []) + spec.get("params", [])} | {
            k for k, v in spec.get("instances", {}).items() if "value" in v}
        for ref in re.findall(r"\{(.*?)\}", template):
            name, _, fmt = ref.partition(":")
            assert name in shown or (name, fmt) == ("this", "flags"), (type_id, ref)
            assert fmt in ("", "dec", "hex", "str", "flags"), (type_id, ref)


# --- the compiler wrapper -------------------------------------------------------

def test_werror_fails_on_a_compiler_warning(tmp_path: Path) -> None:
    """The npm compiler drops warnings; tools/ksc.js must still see and fail on them.
    A non-canonical encoding name is one (the style checks are others)."""
    spec = tmp_path / "qcow2.ksy"
    text = SPEC.read_text()
    assert "  encoding: UTF-8\n" in text
    spec.write_text(text.replace("  encoding: UTF-8\n", "  encoding: utf-8\n"))
    args = ("tools/ksc.js", "-t", "python", "-o", str(tmp_path / "out"), str(spec))
    warned = run_node(args[0], "--werror", *args[1:], ok=False)
    assert warned.returncode == 1
    assert "warning: use canonical encoding name `UTF-8`" in warned.stderr
    assert run_node(*args, ok=False).returncode == 0
