"""`qcow2kit metadata-copy`: qemu sees the copy as it sees the image, guest data aside.

For every image kind, and for damaged copies: qemu-img check (report, JSON, exit code),
info (but the allocated size), map (but the zero flag of data extents, which qemu reads
from the file's holes) and snapshot -l are equal on the copy and the original; the
guest data the image stores reads as zeros from the copy; the copy's allocation stays
within a file-system block or two of each metadata range.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
from pathlib import Path
from typing import List, Tuple

import pytest

import imagekit
from ourcmd import QCOW2KIT
from sidebyside import LUKS_OPTS

KINDS = sorted(imagekit.KINDS)
EXTERNAL_DATA = ("data_file", "data_file_raw")
COMPRESSED = ("zlib", "zlib_4k", "zstd")
BLOCK = 4096


def image_args(path: Path) -> List[str]:
    """How qemu-img is given the image (the LUKS image and its copy with the secret)."""
    if "luks" in path.name:
        return ["--object", imagekit.SECRET, "--image-opts", LUKS_OPTS.format(path.name)]
    return [path.name]


def qemu(path: Path, *args: str) -> Tuple[int, str, str]:
    """qemu-img ARGS on the image, run beside it, with the image's name as NAME."""
    image = image_args(path)
    proc = subprocess.run(["qemu-img", *args, *image], capture_output=True, text=True,
                          cwd=path.parent)
    def named(text: str) -> str:
        return text.replace(image[-1], "NAME").replace(path.name, "NAME")
    return proc.returncode, named(proc.stdout), named(proc.stderr)


def copy_of(path: Path) -> Path:
    out = path.with_name("copy-" + path.name)
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", path.name, out.name],
                          capture_output=True, text=True, cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return out


def info_but_allocation(text: str) -> dict:
    """qemu-img info's JSON without the allocation of the image and (from qemu 8.0) of
    its file node."""
    data = json.loads(text)
    data.pop("actual-size")
    for child in data.get("children", []):
        child["info"].pop("actual-size")
    return data


def map_but_data_zero_flag(text: str) -> List[dict]:
    """The extents without the zero flag of data extents, joined where they then
    continue each other (holes split what small clusters share a file block with)."""
    out: List[dict] = []
    for extent in json.loads(text):
        if extent["data"]:
            extent.pop("zero")
        last = out[-1] if out else None
        if last is not None and "offset" in extent and "offset" in last \
                and {**last, "start": 0, "length": 0, "offset": 0} \
                == {**extent, "start": 0, "length": 0, "offset": 0} \
                and last["start"] + last["length"] == extent["start"] \
                and last["offset"] + last["length"] == extent["offset"]:
            last["length"] += extent["length"]
        else:
            out.append(extent)
    return out


def assert_qemu_sees_the_same(original: Path, copy: Path) -> None:
    for args in (["check"], ["check", "--output=json"], ["snapshot", "-l"]):
        assert qemu(copy, *args) == qemu(original, *args), args
    rc, out, err = qemu(original, "info", "--output=json")
    got = qemu(copy, "info", "--output=json")
    assert (got[0], got[2]) == (rc, err)
    if rc == 0:
        assert info_but_allocation(got[1]) == info_but_allocation(out)
    rc, out, err = qemu(original, "map", "--output=json")
    got = qemu(copy, "map", "--output=json")
    assert (got[0], got[2]) == (rc, err)
    if rc == 0:
        assert map_but_data_zero_flag(got[1]) == map_but_data_zero_flag(out)


def metadata_ranges(stdout: str) -> int:
    return int(stdout.split(" in ")[1].split()[0])


def raw(path: Path, out: Path) -> bytes:
    proc = subprocess.run(["qemu-img", "convert", "-O", "raw", *image_args(path), str(out)],
                          capture_output=True, text=True, cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


def ours_on(path: Path, *args: str) -> Tuple[int, str, str]:
    proc = subprocess.run([*QCOW2KIT, *args, path.name], capture_output=True, text=True,
                          cwd=path.parent)
    return proc.returncode, proc.stdout.replace(path.name, "NAME"), \
        proc.stderr.replace(path.name, "NAME")


def assert_we_see_the_same(original: Path, copy: Path) -> None:
    """qcow2kit's own inspection commands agree on the copy, guest data aside."""
    for args in (["check", "--json"], ["snapshots", "--json"], ["bitmaps", "--json"],
                 ["dump"], ["whatis", "0", "0x10000", "0x30000", "0x50000"]):
        assert ours_on(copy, *args) == ours_on(original, *args), args
    rc, out, err = ours_on(original, "info", "--json")
    got = ours_on(copy, "info", "--json")
    assert (got[0], got[2]) == (rc, err)
    if rc == 0:
        assert info_but_allocation(got[1]) == info_but_allocation(out)


@pytest.mark.parametrize("kind", KINDS)
def test_qemu_sees_the_copy_as_the_image(kind: str, image_copy) -> None:
    path = image_copy(kind)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    copy = copy_of(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert copy.stat().st_size == path.stat().st_size
    assert_qemu_sees_the_same(path, copy)
    assert_we_see_the_same(path, copy)


# Guest data that is not in the image file (external data files), or does not read as
# zeros from zeroed clusters (LUKS: zeros decrypt to noise), is tested apart;
# bitmaps_crafted is an image qemu refuses.
PLAIN = sorted(set(KINDS) - set(EXTERNAL_DATA) - {"bitmaps_crafted", "luks"})


@pytest.mark.parametrize("kind", PLAIN)
def test_guest_data_stored_in_the_image_reads_as_zeros(kind: str, image_copy) -> None:
    """Every guest range the image itself maps (depth 0, data) reads as zeros from the
    copy; ranges the backing chain provides read as before."""
    path = image_copy(kind)
    copy = copy_of(path)
    rc, out, err = qemu(path, "map", "--output=json")
    assert rc == 0, err
    mine, theirs = raw(copy, path.parent / "copy.raw"), raw(path, path.parent / "orig.raw")
    assert len(mine) == len(theirs)
    stored = 0
    for extent in json.loads(out):
        lo, hi = extent["start"], extent["start"] + extent["length"]
        if extent["depth"] == 0 and extent["data"]:
            assert mine[lo:hi].count(0) == hi - lo, extent
            stored += hi - lo
        else:
            assert mine[lo:hi] == theirs[lo:hi], extent
    if kind in ("v3", "snapshots", "zlib", "zstd", "backing"):
        assert stored and theirs.count(0) < len(theirs)  # the copy really left data out


@pytest.mark.parametrize("kind", ["v3", "zlib", "snapshots", "bitmaps", "prealloc_metadata"])
def test_copy_allocates_about_the_metadata(kind: str, image_copy) -> None:
    path = image_copy(kind)
    copy = path.with_name("copy-" + path.name)
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", str(path), str(copy)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    metadata = int(proc.stdout.split(": ")[1].split()[0])
    ranges = metadata_ranges(proc.stdout)
    allocated = os.stat(copy).st_blocks * 512
    assert allocated <= metadata + 2 * BLOCK * ranges
    assert allocated < os.stat(path).st_blocks * 512 or kind == "prealloc_metadata"


def test_encrypted_guest_data_is_left_out(image_copy) -> None:
    """LUKS: every byte of the copy is the original's or zero, and qemu reads the
    zeroed clusters as noise, not as the data."""
    path = image_copy("luks")
    copy = copy_of(path)
    original, copied = path.read_bytes(), copy.read_bytes()
    assert len(original) == len(copied)
    kept = bytes(a if a == b else 0 for a, b in zip(original, copied))
    assert kept == copied
    assert raw(copy, path.parent / "copy.raw") != raw(path, path.parent / "orig.raw")


@pytest.mark.parametrize("kind", COMPRESSED)
def test_compressed_clusters_become_compressed_zeros(kind: str, image_copy) -> None:
    """Each compressed cluster's slot holds a compressed cluster of zeros: qemu-img
    check counts the same compressed clusters, convert reads zeros there."""
    path = image_copy(kind)
    copy = copy_of(path)
    stats = [json.loads(qemu(p, "check", "--output=json")[1]) for p in (path, copy)]
    assert stats[0]["compressed-clusters"] == stats[1]["compressed-clusters"] > 0
    data = raw(copy, path.parent / "copy.raw")
    assert data.count(0) == len(data)


def _l2_entry_offset(path: Path, guest: int) -> int:
    """The file offset of the L2 entry that maps guest offset (standard L2), by struct."""
    data = path.read_bytes()
    bits = struct.unpack_from(">I", data, 20)[0]
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    per_l2 = 1 << (bits - 3)
    l1 = struct.unpack_from(">Q", data, l1_offset + 8 * (guest >> bits >> (bits - 3)))[0]
    return (l1 & 0x00FFFFFFFFFFFE00) + 8 * ((guest >> bits) % per_l2)


def _damage_into_header(path: Path) -> None:
    """The first L2 entry points at cluster 0 (the header), copied flag kept."""
    at = _l2_entry_offset(path, 0)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(struct.pack(">Q", 1 << 63))


def _damage_leak(path: Path) -> None:
    """The header cluster's refcount raised to 2: a leak."""
    data = path.read_bytes()
    reftable = struct.unpack_from(">Q", data, 48)[0]
    block = struct.unpack_from(">Q", data, reftable)[0]
    with open(path, "r+b") as f:
        f.seek(block)
        f.write(struct.pack(">H", 2))


def _damage_truncate(path: Path) -> None:
    """The last data cluster cut off the end of the file."""
    os.truncate(path, path.stat().st_size - 65536)


@pytest.mark.parametrize("damage", [_damage_into_header, _damage_leak, _damage_truncate])
def test_a_damaged_image_copies_with_its_damage(damage, image_copy) -> None:
    path = image_copy("v3")
    damage(path)
    assert qemu(path, "check")[0] != 0  # damaged, as qemu sees it
    assert_qemu_sees_the_same(path, copy_of(path))


def test_the_image_is_never_the_output(image_copy) -> None:
    """The image itself, through its name, a symlink or a hard link: refused, exit 4,
    the image byte-identical; another existing file is overwritten."""
    path = image_copy("v3")
    before = path.read_bytes()
    (path.parent / "link").symlink_to(path.name)
    os.link(path, path.parent / "hard")
    for target in (path, path.parent / "link", path.parent / "hard"):
        proc = subprocess.run([*QCOW2KIT, "metadata-copy", str(path), str(target)],
                              capture_output=True, text=True)
        assert proc.returncode == 4
        assert proc.stderr == f"qcow2kit: {target}: refused: it is the same file as the " \
            f"image {path}, an input\n"
        assert path.read_bytes() == before
    other = path.with_name("other")
    other.write_bytes(b"old content")
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", str(path), str(other)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert other.stat().st_size == len(before)


SECRETS = {"snapshot": "secret-snap-alpha", "bitmap": "secret-bitmap-beta",
           "backing": "secret-base-gamma.qcow2", "data": "secret-data-delta.raw"}


def test_scrubbed_names_leave_no_trace(tmp_path: Path) -> None:
    """Every name a user gave is replaced by a neutral one of the same length: the
    copy holds none of the original names' bytes, and qemu reads the rest as before."""
    base = imagekit.create(tmp_path / SECRETS["backing"], "16M")
    top = imagekit.create(tmp_path / "top.qcow2", "16M", backing=base.name)
    imagekit.qemu_io(top, "write -P 0x11 0 64k")
    subprocess.run(["qemu-img", "snapshot", "-c", SECRETS["snapshot"], str(top)], check=True)
    subprocess.run(["qemu-img", "snapshot", "-c", SECRETS["snapshot"] + "2", str(top)],
                   check=True)
    subprocess.run(["qemu-img", "bitmap", "--add", str(top), SECRETS["bitmap"]], check=True)
    data = imagekit.create(tmp_path / "data.qcow2", "16M", data_file=SECRETS["data"])
    for image, names in ((top, ("snapshot", "bitmap", "backing")), (data, ("data",))):
        copy = image.with_name("copy-" + image.name)
        proc = subprocess.run([*QCOW2KIT, "metadata-copy", "--scrub-names", image.name,
                               copy.name], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.endswith(f", {len(names) + (names[0] == 'snapshot')} names "
                                    "scrubbed\n")
        content = copy.read_bytes()
        assert all(SECRETS[n].encode() not in content for n in names)
        assert all(SECRETS[n].encode() in image.read_bytes() for n in names)
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "copy-top.qcow2"], capture_output=True,
        text=True, cwd=tmp_path, check=True).stdout)
    assert len(info["backing-filename"]) == len(SECRETS["backing"])
    listed = [s["name"] for s in info["snapshots"]]
    assert [len(n) for n in listed] == [len(SECRETS["snapshot"]), len(SECRETS["snapshot"]) + 1]
    assert len(set(listed)) == 2
    bitmap = info["format-specific"]["data"]["bitmaps"][0]["name"]
    assert len(bitmap) == len(SECRETS["bitmap"]) and bitmap != SECRETS["bitmap"]
    proc = subprocess.run([*QCOW2KIT, "dump", "copy-data.qcow2"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "secret" not in proc.stdout


@pytest.mark.parametrize("suffix", [".tar.xz", ".tar.gz", ".tar.zst"])
def test_archive_holds_the_copy_as_a_sparse_member(suffix: str, image_copy) -> None:
    path = image_copy("snapshots")
    plain = copy_of(path)
    archive = path.with_name("shared" + suffix)
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", path.name, archive.name],
                          capture_output=True, text=True, cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    assert archive.stat().st_size < 64 << 10
    out = path.parent / "extracted"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(out)], check=True)
    extracted = out / path.name
    assert [p.name for p in out.iterdir()] == [path.name]
    assert extracted.read_bytes() == plain.read_bytes()
    assert os.stat(extracted).st_blocks <= os.stat(plain).st_blocks + 16
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


def test_archive_without_tar_fails_and_leaves_nothing(image_copy) -> None:
    path = image_copy("v3")
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", path.name, "out.tar.xz"],
                          capture_output=True, text=True, cwd=path.parent,
                          env={"PATH": "/nonexistent"})
    assert proc.returncode == 4
    assert proc.stderr == "qcow2kit: out.tar.xz: cannot run GNU tar: No such file or directory\n"
    assert not (path.parent / "out.tar.xz").exists()


def _three_layers(folder: Path) -> Path:
    """raw base <- qcow2 mid <- qcow2 top with an external data file, with data in
    each layer."""
    folder.mkdir()
    base = folder / "base.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(base), "8M"], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 1 0 1M", str(base)], check=True,
                   capture_output=True)
    mid = imagekit.create(folder / "mid.qcow2", "8M", backing=base.name, backing_fmt="raw")
    imagekit.qemu_io(mid, "write -P 2 1M 1M")
    top = imagekit.create(folder / "top.qcow2", "8M", backing=mid.name,
                          data_file="top.data")
    imagekit.qemu_io(top, "write -P 3 2M 1M")
    return top


def test_chain_copies_every_layer(tmp_path: Path) -> None:
    top = _three_layers(tmp_path / "orig")
    out = tmp_path / "shared"
    out.mkdir()
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", "--chain", "top.qcow2",
                           str(out / "top.qcow2")], capture_output=True, text=True,
                          cwd=top.parent)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == \
        [str(out / n) for n in ("top.qcow2", "top.data", "mid.qcow2", "base.raw")]
    assert sorted(p.name for p in out.iterdir()) == ["base.raw", "mid.qcow2", "top.data",
                                                     "top.qcow2"]
    for name in ("top.qcow2", "mid.qcow2"):  # qemu opens the data file from cwd
        original, copy = top.parent / name, out / name
        assert qemu(copy, "check", "--output=json") == qemu(original, "check", "--output=json")
        infos = [qemu(p, "info", "--backing-chain", "--output=json") for p in (copy, original)]
        assert infos[0][0] == infos[1][0] == 0
        assert [info_but_allocation(json.dumps(i)) for i in json.loads(infos[0][1])] == \
            [info_but_allocation(json.dumps(i)) for i in json.loads(infos[1][1])]
        rc, theirs, _ = qemu(original, "map", "--output=json")
        got = qemu(copy, "map", "--output=json")
        assert rc == got[0] == 0

        def but_raw_data(text: str) -> List[dict]:
            """The raw base is all a hole in the copy: its extents lose their flags."""
            raw_depth = 2 if name == "top.qcow2" else 1
            return [{k: v for k, v in e.items() if e["depth"] != raw_depth
                     or k not in ("zero", "data")} for e in map_but_data_zero_flag(text)]
        assert but_raw_data(got[1]) == but_raw_data(theirs)
    for name in ("base.raw", "top.data"):
        assert os.stat(out / name).st_blocks == 0
        assert (out / name).stat().st_size == (top.parent / name).stat().st_size


def test_chain_scrubbed_names_stay_distinct(tmp_path: Path) -> None:
    """Neutral names are distinct across the chain, and the copies open as a chain."""
    top = _three_layers(tmp_path / "orig")
    out = tmp_path / "shared"
    out.mkdir()
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", "--chain", "--scrub-names",
                           "top.qcow2", str(out / "t.qcow2")], capture_output=True, text=True,
                          cwd=top.parent)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 4 and not {"base.raw", "mid.qcow2", "top.data"} & set(names)
    chain = subprocess.run(["qemu-img", "info", "--backing-chain", "--output=json",
                            "t.qcow2"], capture_output=True, text=True, cwd=out)
    assert chain.returncode == 0, chain.stderr
    assert [i["format"] for i in json.loads(chain.stdout)] == ["qcow2", "qcow2", "raw"]


def test_chain_never_overwrites_its_own_layers(tmp_path: Path) -> None:
    """Copying beside the original would put the backing file's copy on the backing
    file itself: refused (exit 4), every original byte-identical."""
    top = _three_layers(tmp_path / "orig")
    before = {p.name: p.read_bytes() for p in top.parent.iterdir()}
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", "--chain", "top.qcow2", "copy.qcow2"],
                          capture_output=True, text=True, cwd=top.parent)
    assert proc.returncode == 4
    assert "refused: it is the same file as the external data file top.data" in proc.stderr
    assert {p.name: p.read_bytes() for p in top.parent.iterdir()
            if p.name in before} == before


def test_chain_refuses_names_it_cannot_place(tmp_path: Path) -> None:
    folder = tmp_path / "orig"
    folder.mkdir()
    base = imagekit.create(folder / "base.qcow2", "1M")
    top = imagekit.create(folder / "top.qcow2", "1M", backing=str(base))  # absolute
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", "--chain", str(top),
                           str(out / "top.qcow2")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.endswith(f"backing file: '{base}' is not a plain relative name, so "
                                "its copy cannot go beside the image's (--scrub-names gives "
                                "one)\n")
    proc = subprocess.run([*QCOW2KIT, "metadata-copy", "--chain", "--scrub-names", str(top),
                           str(out / "top.qcow2")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
