"""`qcow2kit diff`: two copies of an image, one of them changed by a real qemu
operation; the diff names exactly the changes qemu made, checked against what qemu
itself reports (qemu-img map, check, snapshot -l, info), and nothing else."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Dict, Set, Tuple


import imagekit
from ourcmd import QCOW2KIT

MiB = 1 << 20


def ours(a: Path, b: Path, *args: str) -> Tuple[int, dict]:
    proc = subprocess.run([*QCOW2KIT, "diff", "--json", *args, str(a), str(b)],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == ""
    return proc.returncode, json.loads(proc.stdout)


def qemu_json(*args: str) -> object:
    proc = subprocess.run(["qemu-img", *args, "--output=json"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def data_ranges(path: Path) -> Dict[str, Set[Tuple[int, int]]]:
    """Guest ranges of the image itself by what qemu-img map says they are, split per
    cluster of 64 KiB."""
    out: Dict[str, Set[Tuple[int, int]]] = {"data": set(), "zero": set()}
    for extent in qemu_json("map", str(path)):
        if extent["depth"] != 0:
            continue
        kind = "data" if extent["data"] else \
            "zero" if extent["zero"] and extent["present"] else None
        if kind:
            for at in range(extent["start"], extent["start"] + extent["length"], 65536):
                out[kind].add((at, 65536))
    return out


def mapping_ranges(changes: dict, change: str) -> Set[Tuple[int, int]]:
    """The guest clusters the diff says changed this way."""
    out = set()
    for c in changes["mapping"]:
        if c["change"] == change:
            for at in range(c["guest_start"], c["guest_start"] + c["guest_length"], 65536):
                out.add((at, 65536))
    return out


def only(changes: dict, *sections: str) -> None:
    """Every section not named is empty."""
    assert {k for k, v in changes.items() if v} <= set(sections), changes


def pair(tmp_path: Path, size: str = "64M", **opts: str) -> Tuple[Path, Path]:
    a = imagekit.create(tmp_path / "a.qcow2", size, **opts)
    imagekit.qemu_io(a, "write -P 0x11 0 1M", "write -P 0x22 4M 512k")
    b = tmp_path / "b.qcow2"
    shutil.copy(a, b)
    return a, b


def test_identical_images_have_no_diff(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    rc, changes = ours(a, b, "--data")
    assert rc == 0 and not any(changes.values())
    proc = subprocess.run([*QCOW2KIT, "diff", str(a), str(b)], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_write_allocates_what_qemu_maps(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    imagekit.qemu_io(b, "write -P 0x33 8M 192k", "write -P 0x44 40M 64k")
    rc, changes = ours(a, b)
    assert rc == 1
    only(changes, "mapping", "refcounts")
    new_data = data_ranges(b)["data"] - data_ranges(a)["data"]
    assert mapping_ranges(changes, "allocated") == new_data
    assert {c["change"] for c in changes["mapping"]} == {"allocated"}
    grown = qemu_json("check", str(b))["allocated-clusters"] - \
        qemu_json("check", str(a))["allocated-clusters"]
    went_up = sum(c["host_length"] // 65536 for c in changes["refcounts"]
                  if (c["old"], c["new"]) == (0, 1))
    assert went_up == grown == 4  # each new data cluster's refcount went 0 -> 1
    assert all((c["old"], c["new"]) == (0, 1) for c in changes["refcounts"])
    proc = subprocess.run([*QCOW2KIT, "diff", str(a), str(b)], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == "mapping: 2 allocated"
    assert lines[1].startswith("  l2[guest 0x800000..0x830000]: allocated unallocated -> normal at ")
    assert lines[3] == "refcounts: " + f"{len(changes['refcounts'])} changed"


def test_write_zeroes(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    imagekit.qemu_io(b, "write -z 0 128k", "write -z 20M 64k")
    rc, changes = ours(a, b)
    assert rc == 1
    zeroed = data_ranges(b)["zero"] - data_ranges(a)["zero"]
    assert mapping_ranges(changes, "zeroed") == zeroed
    assert {c["change"] for c in changes["mapping"]} == {"zeroed"}
    # without unmap qemu keeps the zeroed data clusters allocated: no refcount changes
    only(changes, "mapping")
    kept = [c for c in changes["mapping"] if c["old"]["type"] == "normal"]
    assert [(c["guest_start"], c["new"]) for c in kept] == \
        [(0, {"type": "zero_alloc", "host": kept[0]["old"]["host"]})]


def test_discard_on_v2_frees(tmp_path: Path) -> None:
    a, b = pair(tmp_path, compat="0.10")
    imagekit.qemu_io(b, "discard 0 256k")
    rc, changes = ours(a, b)
    assert rc == 1
    only(changes, "mapping", "refcounts")
    gone = data_ranges(a)["data"] - data_ranges(b)["data"]
    assert mapping_ranges(changes, "freed") == gone and len(gone) == 4
    assert {c["change"] for c in changes["mapping"]} == {"freed"}


def test_snapshot_create_and_delete(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    subprocess.run(["qemu-img", "snapshot", "-c", "before", str(b)], check=True)
    rc, changes = ours(a, b)
    assert rc == 1
    only(changes, "header", "mapping", "refcounts", "snapshots")
    assert [(c["path"], c["change"], c["new"]) for c in changes["snapshots"]] == \
        [("snapshots[id 1]", "added", "before")]
    assert {c["path"] for c in changes["header"]} == {"header.nb_snapshots",
                                                       "header.snapshot_offset"}
    # every data cluster is shared with the snapshot now: copied flags cleared
    assert mapping_ranges(changes, "copied-cleared") == data_ranges(a)["data"]
    c = shutil.copy(b, tmp_path / "c.qcow2")
    subprocess.run(["qemu-img", "snapshot", "-d", "before", str(c)], check=True)
    rc, changes = ours(b, Path(c))
    assert [(c["path"], c["change"], c["old"]) for c in changes["snapshots"]] == \
        [("snapshots[id 1]", "removed", "before")]


def test_bitmaps_add_merge_clear(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    subprocess.run(["qemu-img", "bitmap", "--add", str(b), "b0"], check=True)
    rc, changes = ours(a, b)
    assert rc == 1
    only(changes, "header", "extensions", "refcounts", "bitmaps")
    assert [(c["path"], c["change"]) for c in changes["bitmaps"]] == [("bitmaps['b0']", "added")]
    assert [(c["path"], c["set"]) for c in changes["header"]] == \
        [("header.autoclear_features", ["bitmaps"])]
    assert [(c["path"], c["change"]) for c in changes["extensions"]] == \
        [("extensions[0x23852875]", "added")]
    # b0 records writes from now on; a merge into b1 and a clear of b0
    imagekit.qemu_io(b, "write -P 0x55 8M 128k")
    c = Path(shutil.copy(b, tmp_path / "c.qcow2"))
    subprocess.run(["qemu-img", "bitmap", "--add", str(c), "b1"], check=True)
    subprocess.run(["qemu-img", "bitmap", "--merge", "b0", str(c), "b1"], check=True)
    subprocess.run(["qemu-img", "bitmap", "--clear", str(c), "b0"], check=True)
    rc, changes = ours(b, c)
    bitmaps = {(x["path"], x["change"]): x for x in changes["bitmaps"]}
    assert set(bitmaps) == {("bitmaps['b1']", "added"), ("bitmaps['b0'].dirty", "cleaned")}
    assert bitmaps[("bitmaps['b0'].dirty", "cleaned")]["ranges"] == [[8 * MiB, 128 << 10]]
    d = Path(shutil.copy(c, tmp_path / "d.qcow2"))
    imagekit.qemu_io(d, "write -P 0x66 12M 64k")
    rc, changes = ours(c, d)
    dirtied = {x["path"]: x["ranges"] for x in changes["bitmaps"] if x["change"] == "dirtied"}
    assert dirtied == {"bitmaps['b0'].dirty": [[12 * MiB, 64 << 10]],
                       "bitmaps['b1'].dirty": [[12 * MiB, 64 << 10]]}


def test_resize(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    subprocess.run(["qemu-img", "resize", "-q", str(b), "+1G"], check=True)
    rc, changes = ours(a, b, "--data")
    assert rc == 1
    sizes = {c["path"]: (c["old"], c["new"]) for c in changes["header"]}
    assert sizes["header.size"] == (64 * MiB, 64 * MiB + (1 << 30))
    assert changes["data"] == []  # the new space reads as zeros, as a's missing end does
    assert set(sizes) <= {"header.size", "header.l1_size", "header.l1_table_offset"}


def test_data_names_the_changed_sectors(tmp_path: Path) -> None:
    a, b = pair(tmp_path)
    imagekit.qemu_io(b, "write -P 0x11 4M 512", "write -P 0x77 4195840 1024")
    rc, changes = ours(a, b, "--data")
    assert [(c["guest_start"], c["guest_length"]) for c in changes["data"]] == \
        [(4 * MiB, 512), (4 * MiB + 1536, 1024)]
    proc = subprocess.run(["qemu-img", "compare", str(a), str(b)], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and f"offset {4 * MiB}!" in proc.stdout


def test_unreadable_table_is_a_change_and_the_rest_is_compared(tmp_path: Path) -> None:
    """B's L1 table is larger than qemu reads (its size over QEMU's limit): the table is
    an `unreadable` change, and the header and refcounts are still compared."""
    a, b = pair(tmp_path)
    data = bytearray(b.read_bytes())
    struct.pack_into(">I", data, 36, 1 << 24)  # l1_size: 128 MiB of entries
    struct.pack_into(">Q", data, 24, 128 * MiB)  # and a new size
    b.write_bytes(bytes(data))
    rc, changes = ours(a, b)
    assert rc == 1
    assert [(c["path"], c["change"]) for c in changes["mapping"]] == \
        [("l1_table", "unreadable")]
    assert changes["mapping"][0]["old"] is None
    assert "exceed QEMU's limit" in changes["mapping"][0]["new"]
    assert [c["path"] for c in changes["header"]] == ["header.size", "header.l1_size"]


def test_table_past_the_end_reads_as_zeros(tmp_path: Path) -> None:
    """An L1 entry pointing far past the end of the file: qemu reads that L2 table as
    zeros, so its clusters are freed."""
    a, b = pair(tmp_path)
    data = bytearray(b.read_bytes())
    l1 = struct.unpack_from(">Q", data, 40)[0]
    struct.pack_into(">Q", data, l1, (1 << 63) | (1 << 40))
    b.write_bytes(bytes(data))
    rc, changes = ours(a, b)
    assert rc == 1
    assert mapping_ranges(changes, "freed") == data_ranges(a)["data"]


def test_an_image_that_cannot_be_opened_is_trouble(tmp_path: Path) -> None:
    a, _ = pair(tmp_path)
    proc = subprocess.run([*QCOW2KIT, "diff", str(a), str(tmp_path / "missing")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == f"qcow2kit: {tmp_path / 'missing'}: No such file or directory\n"
