"""qcow2kit get and set: any field of the spec by path.

set crafts qemu's classic corruptions; the same image crafted by writing bytes at
offsets computed here from the qcow2 specification (struct arithmetic, not qcow2kit)
must be byte-identical and get the same qemu-img check verdict. get returns, for
every field of every image kind, what a generic walk over the parsed objects holds,
and the JavaScript parser follows each resolved spec path to the same value and
offset. Refused paths and values exit 1 with one stderr line and change nothing.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import struct
import subprocess
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from kaitaistruct import KaitaiStream, KaitaiStruct

import imagekit
import live
from ourcmd import QCOW2KIT
from qcow2kit.generated.qcow2 import Qcow2
from test_js_parity import js_module, run_node  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parent.parent
PATHS_JS = REPO / "tests" / "js" / "paths.js"
U64 = struct.Struct(">Q")
OFFSET_BITS = 0x00FFFFFFFFFFFE00  # bits 9..55 of an L1, L2 or bitmap table entry


def qcow2kit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QCOW2KIT, *map(str, args)], capture_output=True, text=True,
                          check=False)


# --- hand-computed offsets, from qcow2.txt -------------------------------------------

class Layout:
    """Where things are in an image, computed with struct from the specification."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.cluster_bits, = struct.unpack_from(">I", self.data, 20)
        self.cluster_size = 1 << self.cluster_bits
        self.l1_offset, = struct.unpack_from(">Q", self.data, 40)
        self.rt_offset, = struct.unpack_from(">Q", self.data, 48)
        version, = struct.unpack_from(">I", self.data, 4)
        self.refcount_bits = 1 << (struct.unpack_from(">I", self.data, 96)[0]
                                   if version >= 3 else 4)
        incompatible, = struct.unpack_from(">Q", self.data, 72) if version >= 3 else (0,)
        self.l2_entry_size = 16 if incompatible & 16 else 8

    def u64(self, offset: int) -> int:
        return U64.unpack_from(self.data, offset)[0]

    def l1_entry(self, i: int) -> int:
        return self.l1_offset + 8 * i

    def l2_entry(self, i: int, j: int) -> int:
        return (self.u64(self.l1_entry(i)) & OFFSET_BITS) + self.l2_entry_size * j

    def refcount(self, cluster: int) -> Tuple[int, int]:
        """(byte offset, bit shift) of the refcount of a host cluster."""
        per_block = self.cluster_size * 8 // self.refcount_bits
        block = self.u64(self.rt_offset + 8 * (cluster // per_block)) & ~0x1FF
        bit = cluster % per_block * self.refcount_bits
        return block + bit // 8, bit % 8

    def data_cluster(self, i: int, j: int) -> int:
        """The host cluster number of L2 entry (i, j)."""
        return (self.u64(self.l2_entry(i, j)) & OFFSET_BITS) >> self.cluster_bits


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def poke_u64(path: Path, offset: int, value: int) -> None:
    poke(path, offset, U64.pack(value))


def poke_refcount(path: Path, lay: Layout, cluster: int, value: int) -> None:
    offset, shift = lay.refcount(cluster)
    width = lay.refcount_bits
    if width >= 8:
        poke(path, offset, value.to_bytes(width // 8, "big"))
    else:
        byte = lay.data[offset] & ~(((1 << width) - 1) << shift) | value << shift
        poke(path, offset, bytes([byte]))


# (image kind, set path and value from the layout, the same by hand)
Craft = Callable[[Layout], Tuple[str, str, Callable[[Path], None]]]


def _l2_into_header(lay: Layout):
    entry = lay.l2_entry(0, 1)
    new = lay.u64(entry) & ~OFFSET_BITS | 0x200
    return ("l1_table[0].l2_table[1].ofs_host_cluster", "0x200",
            lambda p: poke_u64(p, entry, new))


def _l1_onto_l1(lay: Layout):  # iotest 060's "L2 reference into L1"
    value = 1 << 63 | lay.l1_offset
    return "l1_table[0]", hex(value), lambda p: poke_u64(p, lay.l1_entry(0), value)


def _refcount_to(value: int) -> Craft:
    def craft(lay: Layout):
        cluster = lay.data_cluster(0, 1)
        return (f"refcounts[{cluster}]", str(value),
                lambda p: poke_refcount(p, lay, cluster, value))
    return craft


def _l2_copied_cleared(lay: Layout):
    entry = lay.l2_entry(0, 0)
    return ("l1_table[0].l2_table[0].copied", "0",
            lambda p: poke_u64(p, entry, lay.u64(entry) & ~(1 << 63)))


def _l2_copied_set_on_shared(lay: Layout):  # a cluster a snapshot shares: refcount 2
    entry = lay.l2_entry(0, 5)
    assert not lay.u64(entry) >> 63, "the snapshot shares guest cluster 5"
    return ("l1_table[0].l2_table[5].copied", "1",
            lambda p: poke_u64(p, entry, lay.u64(entry) | 1 << 63))


def _l2_compressed_set(lay: Layout):
    entry = lay.l2_entry(0, 1)
    return ("l1_table[0].l2_table[1].compressed", "true",
            lambda p: poke_u64(p, entry, lay.u64(entry) | 1 << 62))


def _l1_copied_cleared(lay: Layout):
    return ("l1_table[0].copied", "false",
            lambda p: poke_u64(p, lay.l1_entry(0), lay.u64(lay.l1_entry(0)) & ~(1 << 63)))


def _unaligned_l2(lay: Layout):
    entry = lay.l1_entry(0)
    l2 = (lay.u64(entry) & OFFSET_BITS) + 0x200
    return ("l1_table[0].ofs_l2_table", hex(l2),
            lambda p: poke_u64(p, entry, lay.u64(entry) & ~OFFSET_BITS | l2))


def _bitmap_entry_invalid(lay: Layout):
    b0 = next(e for e in imagekit.bitmap_directory(lay.path) if e["name"] == "b0")
    entry = b0["table_offset"]
    assert lay.u64(entry) & OFFSET_BITS, "b0's first table entry is allocated"
    return ('bitmaps["b0"].table[0].all_ones', "1",
            lambda p: poke_u64(p, entry, lay.u64(entry) | 1))


def _extended_alloc_and_zero(lay: Layout):
    entry = lay.l2_entry(0, 0)
    bitmap = (1 << 32 | 1)  # subcluster 0 both reads as zeros and is allocated
    value = lay.u64(entry) << 64 | bitmap
    return ("l1_table[0].l2_table[0]", hex(value),
            lambda p: poke(p, entry, value.to_bytes(16, "big")))


def _snapshot_l1_unaligned(lay: Layout):
    snap_table, = struct.unpack_from(">Q", lay.data, 64)
    offset = lay.u64(snap_table) + 0x200
    return ("snapshots[0].l1_table_offset", hex(offset),
            lambda p: poke_u64(p, snap_table, offset))


CORRUPTIONS: Dict[str, Tuple[str, Craft]] = {
    "l2_entry_into_header": ("v3", _l2_into_header),
    "l1_entry_onto_l1_table": ("v3", _l1_onto_l1),
    "refcount_0_on_used_cluster": ("v3", _refcount_to(0)),
    "l2_copied_flag_cleared": ("v3", _l2_copied_cleared),
    "l1_copied_flag_cleared": ("v2", _l1_copied_cleared),
    "l2_copied_flag_set_on_shared_cluster": ("refcount_2", _l2_copied_set_on_shared),
    "l2_compressed_flag_set": ("v3", _l2_compressed_set),
    "unaligned_l2_offset": ("v3", _unaligned_l2),
    "bitmap_table_entry_invalid": ("bitmaps", _bitmap_entry_invalid),
    "refcount_1_cleared": ("refcount_1", _refcount_to(0)),
    "refcount_2_leak": ("refcount_2", _refcount_to(3)),
    "refcount_4_zero": ("refcount_4", _refcount_to(0)),
    "refcount_4_leak": ("refcount_4", _refcount_to(15)),
    "refcount_64_leak": ("refcount_64", _refcount_to(7)),
    "extended_l2_alloc_and_zero": ("extended_l2", _extended_alloc_and_zero),
    "snapshot_l1_unaligned": ("snapshots", _snapshot_l1_unaligned),
}


def qemu_check(path: Path) -> Tuple[int, Any, str]:
    """qemu-img check's exit status, JSON report (or None) and stderr, file name out."""
    proc = subprocess.run(["qemu-img", "check", "--output=json", str(path)],
                          capture_output=True, text=True, check=False)
    report = json.loads(proc.stdout) if proc.stdout.strip() else None
    if isinstance(report, dict):
        report.pop("filename", None)
    return proc.returncode, report, proc.stderr.replace(str(path), "IMAGE")


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_set_crafts_the_classic_corruptions(images: Dict[str, Path], tmp_path: Path,
                                            case: str) -> None:
    kind, craft = CORRUPTIONS[case]
    ours, hand = tmp_path / "set.qcow2", tmp_path / "hand.qcow2"
    shutil.copyfile(images[kind], ours)
    shutil.copyfile(images[kind], hand)
    clean = qemu_check(ours)
    path, value, by_hand = craft(Layout(hand))
    by_hand(hand)
    proc = qcow2kit("set", ours, path, value)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""
    assert imagekit.file_sha256(ours) == imagekit.file_sha256(hand)
    verdict = qemu_check(ours)
    assert verdict == qemu_check(hand)
    assert verdict != clean and verdict[0] != 0, "the image is corrupt for qemu-img check"


def test_dry_run_prints_the_bytes_and_writes_nothing(images: Dict[str, Path],
                                                     tmp_path: Path) -> None:
    path = tmp_path / "v3.qcow2"
    shutil.copyfile(images["v3"], path)
    lay = Layout(path)
    entry = lay.l2_entry(0, 0)
    old = lay.data[entry:entry + 8]
    new = U64.pack(lay.u64(entry) & ~(1 << 63))
    before = imagekit.file_sha256(path)
    proc = qcow2kit("set", path, "l1_table[0].l2_table[0].copied", "0", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"l1_table[0].l2_table[0].copied: 8 bytes at {entry:#x}: "
                           f"{old.hex(' ')} -> {new.hex(' ')}\n")
    assert imagekit.file_sha256(path) == before


def test_sub_byte_refcount_leaves_its_byte_neighbours(images: Dict[str, Path],
                                                      tmp_path: Path) -> None:
    """Each 2-bit refcount of one byte set in turn: the others keep their value."""
    path = tmp_path / "r2.qcow2"
    shutil.copyfile(images["refcount_2"], path)
    for cluster, value in ((4, 2), (5, 0), (6, 3), (7, 1)):
        proc = qcow2kit("set", path, f"refcounts[{cluster}]", str(value))
        assert proc.returncode == 0, proc.stderr
    lay = Layout(path)
    offset, shift = lay.refcount(4)
    assert shift == 0 and lay.data[offset] == 2 | 0 << 2 | 3 << 4 | 1 << 6


@pytest.mark.parametrize("path, value, wrong_mask", [
    ("l1_table[0].l2_table[0].copied", "0", 1 << 63 | OFFSET_BITS),  # takes the offset along
    ("l1_table[0].l2_table[0].copied", "0", 1 << 62),  # misses the flag
    ("refcounts[4]", "0x102", None),  # a 16-bit refcount written one byte too far
])
def test_a_wrong_layout_is_caught_before_the_write(images: Dict[str, Path],
                                                   tmp_path: Path, monkeypatch,
                                                   path: str, value: str,
                                                   wrong_mask: Any) -> None:
    """The re-parse check holds set to the parser: were the bit table or an offset
    wrong, the change is refused and the file unchanged."""
    from qcow2kit import fieldwrite

    image = tmp_path / "v3.qcow2"
    shutil.copyfile(images["v3"], image)
    before = imagekit.file_sha256(image)
    if wrong_mask is not None:
        monkeypatch.setitem(fieldwrite.BITS, ("l2_entry", "copied"),
                            (fieldwrite.HALVES, lambda root: (wrong_mask, 0)))
    else:
        plan = fieldwrite.plan

        def shifted(*args: Any) -> Any:
            change = plan(*args)
            return fieldwrite.Change(change.path, change.offset + 1, change.old, change.new)
        monkeypatch.setattr(fieldwrite, "plan", shifted)
    with pytest.raises(fieldwrite.EditError, match="would"):
        fieldwrite.set_field(image, path, value)
    assert imagekit.file_sha256(image) == before


# --- refusals -------------------------------------------------------------------------

REFUSED = {  # kind, path, value (None: get), exit status, words the error line holds
    "unknown name": ("v3", "header.l1_offset", "1", 2, ["no field 'l1_offset'",
                                                        "l1_table_offset", "ofs_l1_table"]),
    "unknown name (get)": ("v3", "l1_table[0].l2_tabel", None, 2, ["l2_table", "copied"]),
    "name of a scalar": ("v3", "header.size.low", None, 2, ["has no field 'low'"]),
    "out of range": ("v3", "l1_table[1]", "0", 1, ["index 1 is out of range (1 entries)"]),
    "out of range (get)": ("snapshots", "snapshots[2].name", None, 1, ["out of range"]),
    "absent": ("v3", "snapshots[0].name", None, 1, ["absent in this image"]),
    "no such bitmap": ("bitmaps", 'bitmaps["nope"].table[0]', "0", 1, ["no entry named"]),
    "variable size": ("snapshots", "snapshots[0].name", "00", 1, ["variable size"]),
    "variable size extension": ("v3", "extensions[0].data", "00", 1, ["variable size"]),
    "too wide": ("v3", "header.cluster_bits", str(1 << 32), 1, ["does not fit 4 bytes"]),
    "too wide entry part": ("v3", "l1_table[0].l2_table[0].ofs_host_cluster", "0x10001", 1,
                            ["does not fit the bits 9..55"]),
    "too wide flag": ("v3", "l1_table[0].copied", "2", 1, ["does not fit the bits 63"]),
    "too wide sub-byte": ("refcount_2", "refcounts[3]", "4", 1, ["does not fit 2 bits"]),
    "negative": ("v3", "refcounts[3]", "-1", 1, ["does not fit"]),
    "computed value": ("v3", "cluster_size", "4096", 1, ["computed from other fields"]),
    "value the spec refuses": ("v3", "header.cluster_bits", "30", 1,
                               ["above the maximum 21"]),
    "not a number": ("v3", "header.size", "big", 2, ["not a number"]),
    "malformed path": ("v3", "l1_table[0", "0", 2, ["malformed path"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_one_line_and_no_change(images: Dict[str, Path], tmp_path: Path,
                                             case: str) -> None:
    kind, path, value, status, words = REFUSED[case]
    image = tmp_path / "image.qcow2"
    shutil.copyfile(images[kind], image)
    before = imagekit.file_sha256(image)
    args = ("get", image, path) if value is None else ("set", image, path, value)
    proc = qcow2kit(*args)
    assert proc.returncode == status
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"qcow2kit: {image}: "), proc.stderr
    for word in words:
        assert word in lines[0]
    assert imagekit.file_sha256(image) == before


def test_set_refused_on_an_image_qemu_writes_unless_forced(images: Dict[str, Path],
                                             tmp_path: Path) -> None:
    image = tmp_path / "v3.qcow2"
    shutil.copyfile(images["v3"], image)
    with live.served(image, tmp_path):
        before = imagekit.file_sha256(image)
        proc = qcow2kit("set", image, "l1_table[0].copied", "0")
        assert proc.returncode == 1
        assert "write\" lock" in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert imagekit.file_sha256(image) == before
        forced = qcow2kit("set", image, "l1_table[0].copied", "0", "--force")
        assert forced.returncode == 0, forced.stderr
        assert imagekit.file_sha256(image) != before


# --- get: a generic walk over the parsed objects ----------------------------------------

PIECED_ARRAYS = ("entries", *(f"refcounts_{w}" for w in (1, 2, 4, 8, 16, 32, 64)))


def _json(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bytes):
        return value.hex()
    return value


def _sample(n: int) -> List[int]:
    return sorted({i for i in (0, 1, n - 1) if 0 <= i < n})


def walk(obj: KaitaiStruct, spec: str, user: str, out: Dict[str, Tuple[str, Any]]) -> None:
    """Every attribute of every object reached (arrays sampled): out[spec path] =
    (user path, the value as get's JSON gives it), for values that are not objects."""
    pieces = getattr(obj, "pieces", None) if type(obj).__name__.endswith(
        ("Table", "Block")) else None
    for attr in type(obj).SEQ_FIELDS + [a for a in dir(type(obj))
                                        if isinstance(getattr(type(obj), a), property)]:
        try:
            value = getattr(obj, attr, None)
        except Exception:  # noqa: BLE001 (a value the parser cannot read here)
            continue
        s, u = f"{spec}.{attr}" if spec else attr, f"{user}.{attr}" if user else attr
        if isinstance(value, KaitaiStruct):
            walk(value, s, u, out)
        elif isinstance(value, list):
            if attr == "pieces" and pieces is not None:
                first = 0
                for k, piece in enumerate(value):
                    array = next(a for a in PIECED_ARRAYS if getattr(piece, a, None) is not None)
                    items = getattr(piece, array)
                    for j in _sample(len(items)):
                        _item(items[j], f"{s}[{k}].{array}[{j}]", f"{user}[{first + j}]", out)
                    first += len(items)
            else:
                for i in _sample(len(value)):
                    _item(value[i], f"{s}[{i}]", f"{u}[{i}]", out)
        else:
            out[s] = (u, _json(value))


def _item(value: Any, spec: str, user: str, out: Dict[str, Tuple[str, Any]]) -> None:
    if isinstance(value, KaitaiStruct):
        walk(value, spec, user, out)
    else:
        out[spec] = (user, _json(value))


def parsed(path: Path) -> Qcow2:
    root = Qcow2(KaitaiStream(open(path, "rb")))
    root._read()
    return root


def get_json(image: Path, paths: List[str]) -> List[dict]:
    proc = qcow2kit("get", image, "--json", *paths)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def walked(images: Dict[str, Path]) -> Dict[str, Tuple[Dict[str, Tuple[str, Any]], list]]:
    """Per image kind: the walk, and get's answers for its spec paths then its user
    paths."""
    out = {}
    for kind, image in images.items():
        found: Dict[str, Tuple[str, Any]] = {}
        walk(parsed(image), "", "", found)
        out[kind] = (found, get_json(image, [*found, *(u for u, _ in found.values())]))
    return out


@pytest.mark.parametrize("kind", list(imagekit.KINDS))
def test_get_gives_every_field_the_parser_holds(walked, kind: str) -> None:
    found, answers = walked[kind]
    assert len(found) > 100
    n = len(found)
    for (spec, (user, value)), by_spec, by_user in zip(found.items(), answers[:n],
                                                      answers[n:]):
        assert (by_spec["path"], by_spec["value"]) == (spec, value)
        assert (by_user["path"], by_user["spec_path"], by_user["value"]) == \
            (user, spec, value)
        assert by_user["offset"] == by_spec["offset"]
    assert any("l1_table[" in u for u, _ in found.values()) or kind == "luks"


def _js_plain(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, bytes):
        return value.hex()
    return value


def test_js_follows_the_same_spec_paths(walked, images: Dict[str, Path],
                                        js_module: Path, tmp_path: Path) -> None:  # noqa: F811
    """For every image kind, each spec path get resolves (user paths included) leads
    the JavaScript parser to the same value, and its debug info to the same offset."""
    request = {str(images[k]): [a["spec_path"] for a in walked[k][1]] for k in images}
    (tmp_path / "request.json").write_text(json.dumps(request))
    js = json.loads(run_node(str(PATHS_JS), str(js_module),
                             str(tmp_path / "request.json")).stdout)
    compared = 0
    for kind, image in images.items():
        root = parsed(image)
        answers = js[str(image)]
        for item in walked[kind][1]:
            got = answers[item["spec_path"]]
            expected = _python_value(root, item["spec_path"])
            assert got["value"] == _js_plain(expected), (kind, item["spec_path"])
            if item["offset"] is not None and "bits" not in item:
                assert got["offset"] == item["offset"], (kind, item["spec_path"])
                compared += 1
    assert compared > 1000


def _python_value(root: Qcow2, spec_path: str) -> Any:
    """The parser's value at a spec path, followed attribute by attribute."""
    obj: Any = root
    for name, index in _steps(spec_path):
        obj = getattr(obj, name, None) if name else obj[index]
    return None if isinstance(obj, (KaitaiStruct, list)) else obj


def _steps(spec_path: str):
    for m in re.finditer(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", spec_path):
        yield (m.group(1), None) if m.group(1) else (None, int(m.group(2)))


def test_get_prints_a_structure_with_offsets(images: Dict[str, Path]) -> None:
    lay = Layout(images["v3"])
    proc = qcow2kit("get", images["v3"], "l1_table[0]", "header.l1_table_offset")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"l1_table[0]: l1_entry at {lay.l1_offset:#x}, 8 bytes"
    hi = next(line.split() for line in lines if line.split()[0] == "hi")
    assert hi[1:3] == [hex(lay.l1_offset), "4"]
    assert lines[-1].split()[:4] == ["header.l1_table_offset", "0x28", "8",
                                     str(lay.l1_offset)]


def test_completion_lists_the_names_that_follow(images: Dict[str, Path]) -> None:
    env = {"_QCOW2KIT_COMPLETE": "bash_complete", "COMP_CWORD": "3",
           "COMP_WORDS": f"qcow2kit get {images['v3']} l1_table[0].co"}
    proc = subprocess.run(QCOW2KIT, capture_output=True, text=True, check=False,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["plain,l1_table[0].copied"]


# --- the README's examples --------------------------------------------------------------

README = (REPO / "README.md").read_text()
SECTION = README[README.index("### Any field by name"):README.index("### Image information")]
CRAFTED = re.findall(r"^    qcow2kit set disk\.qcow2 (.+?)\s+# [^:]+: exit (\d), \"(.+)\"$",
                     SECTION, re.M)
SESSIONS = re.findall(r"^    \$ qcow2kit (.+)\n((?:    [^$\n].*\n)+)", SECTION, re.M)


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's disk.qcow2: 64 MiB, data at 0 and 1 MiB, a bitmap b0."""
    path = imagekit.create(tmp_path_factory.mktemp("readme") / "disk.qcow2", "64M")
    imagekit.qemu_io(path, "write -P 0x11 0 128k")
    imagekit.run("qemu-img", "bitmap", "--add", str(path), "b0")
    imagekit.qemu_io(path, "write -P 0x22 1M 64k")
    return path


def test_readme_has_the_crafted_corruptions() -> None:
    assert len(CRAFTED) == 7 and len(SESSIONS) == 2


@pytest.mark.parametrize("args, status, message", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_readme_crafted_corruption(disk: Path, tmp_path: Path, args: str, status: str,
                                   message: str) -> None:
    image = tmp_path / "disk.qcow2"
    shutil.copyfile(disk, image)
    proc = subprocess.run([*QCOW2KIT, "set", str(image), *shlex.split(args)],
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run(["qemu-img", "check", "disk.qcow2"], capture_output=True,
                           text=True, check=False, cwd=tmp_path)
    assert check.returncode == int(status)
    assert message in check.stdout + check.stderr


@pytest.mark.parametrize("command, output", SESSIONS, ids=[s[0] for s in SESSIONS])
def test_readme_get_output(disk: Path, command: str, output: str) -> None:
    proc = subprocess.run([*QCOW2KIT, *shlex.split(command)], capture_output=True,
                          text=True, check=False, cwd=disk.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(line[4:] + "\n" for line in output.splitlines())


ALIASES = [  # kind, a path with qcow2.txt names and shortcuts, the spec path it is
    ("v3", "extensions[0].length", "header_extensions.extensions[0].len_data"),
    ("v3", "header.l1_size", "header.num_l1_entries"),
    ("snapshots", "snapshots[1].id_str", "snapshots[1].id"),
    ("snapshots", "snapshots[0].l1_table[0]", "snapshots[0].l1_table.pieces[0].entries[0]"),
    ("bitmaps", 'bitmaps["fine"].bitmap_table_size',
     "header_extensions.extensions[0].data.bitmap_directory.entries[1].num_bitmap_table"),
    ("bitmaps", "bitmaps['b0'].auto",
     "header_extensions.extensions[0].data.bitmap_directory.entries[0].is_auto"),
    ("bitmaps", "bitmaps[2].table[0].kind", "header_extensions.extensions[0].data"
     ".bitmap_directory.entries[2].bitmap_table.pieces[0].entries[0].kind"),
    ("refcount_4", "refcounts[3]",
     "refcount_table.pieces[0].entries[0].refcount_block.pieces[0].refcounts_4[3]"),
    ("cluster_2m", "l1_table[0].l2_table[9000]",
     "l1_table.pieces[0].entries[0].l2_table.pieces[1].entries[808]"),
    ("cluster_2m", "refcounts[1]",
     "refcount_table.pieces[0].entries[0].refcount_block.pieces[0].refcounts_16[1]"),
]


@pytest.mark.parametrize("kind, path, spec", ALIASES, ids=[a[1] for a in ALIASES])
def test_names_and_shortcuts_reach_the_spec_field(images: Dict[str, Path], kind: str,
                                                  path: str, spec: str) -> None:
    by_name, by_spec = get_json(images[kind], [path, spec])
    assert by_name["spec_path"] == by_spec["spec_path"] == spec
    assert (by_name["offset"], by_name["size"], by_name["value"]) == \
        (by_spec["offset"], by_spec["size"], by_spec["value"])
    assert by_name["value"] == _json(_python_value(parsed(images[kind]), spec)) \
        or isinstance(by_name["value"], dict)
