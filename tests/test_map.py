"""`qcow2kit map` prints what `qemu-img map` prints, on every image kind."""
from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

import imagekit
from ourcmd import QCOW2KIT

KINDS = sorted(k for k in imagekit.KINDS if k != "bitmaps_crafted")


def qemu_map(kind: str, path: Path, *args: str) -> subprocess.CompletedProcess:
    """qemu-img map run beside the image (qemu opens relative data file names from there)."""
    image: List[str] = [path.name]
    if kind == "luks":
        image = ["--object", imagekit.SECRET, "--image-opts",
                 f"driver=qcow2,file.filename={path.name},encrypt.key-secret=sec0"]
    return subprocess.run(["qemu-img", "map", *args, *image], capture_output=True, text=True,
                          cwd=path.parent)


def ours(path: Path, *args: str, name: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*QCOW2KIT, "map", *args, name or path.name], capture_output=True,
                          text=True, cwd=path.parent)


@pytest.mark.parametrize("kind", KINDS)
def test_json_equals_qemu(images: Dict[str, Path], kind: str) -> None:
    expected = qemu_map(kind, images[kind], "--output=json")
    assert expected.returncode == 0, expected.stderr
    got = ours(images[kind], "--json")
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_human_output_equals_qemu(images: Dict[str, Path], kind: str) -> None:
    expected = qemu_map(kind, images[kind])
    got = ours(images[kind])
    assert got.stdout == expected.stdout
    assert got.returncode == expected.returncode
    # qemu's error line, named with the image and the command as every error is
    assert got.stderr == expected.stderr.replace(
        "qemu-img: ", f"qcow2kit: {images[kind].name}: map: ")


def test_maps_what_qemu_refuses(images: Dict[str, Path]) -> None:
    """qemu will not open an image with an invalid bitmap table entry; its guest data
    is mapped all the same (the same as the image it was crafted from)."""
    crafted, source = images["bitmaps_crafted"], images["bitmaps"]
    assert qemu_map("bitmaps_crafted", crafted, "--output=json").returncode != 0
    got = ours(crafted, "--json")
    assert got.returncode == 0, got.stderr
    assert got.stdout == qemu_map("bitmaps", source, "--output=json").stdout
    expected = qemu_map("bitmaps", source).stdout.replace(source.name, crafted.name)
    got = ours(crafted)
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected


@pytest.mark.parametrize("backing", [False, True], ids=["alone", "over-a-backing-file"])
def test_subclusters_within_allocated_clusters(tmp_path: Path, backing: bool) -> None:
    """Extended L2: zeroed and never-written subclusters inside allocated clusters, which
    read as zeros and from the backing file (qemu-img map tells them apart)."""
    opts = {}
    if backing:
        base = imagekit.create(tmp_path / "base.qcow2", "1M")
        imagekit.qemu_io(base, "write -P 0x01 0 1M")
        opts = dict(backing="base.qcow2", backing_fmt="qcow2")
    path = imagekit.create(tmp_path / "sub.qcow2", "1M", extended_l2="on",
                           cluster_size="65536", **opts)
    imagekit.qemu_io(path, "write -P 0x22 0 64k", "write -z 8k 8k", "write -P 0x33 64k 4k",
                     "write -z 72k 2k", "write -P 0x44 200k 2k")
    for args in (["--output=json"], []):
        expected = qemu_map("sub", path, *args)
        assert expected.returncode == 0, expected.stderr
        got = ours(path, *[a.replace("--output=json", "--json") for a in args])
        assert got.returncode == 0, got.stderr
        assert got.stdout == expected.stdout


@pytest.mark.parametrize("kind", ["backing", "backing_chain", "data_file"])
def test_file_names_follow_the_name_given(images: Dict[str, Path], kind: str) -> None:
    """Backing file names resolve against the directory of the name given, as in qemu."""
    path = images[kind]
    expected = subprocess.run(["qemu-img", "map", str(path)], capture_output=True, text=True,
                              cwd=path.parent)
    assert expected.returncode == 0, expected.stderr
    got = ours(path, name=str(path))
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected.stdout


def test_missing_backing_file(image_copy) -> None:
    path = image_copy("backing")
    (path.parent / "backing_base.qcow2").unlink()
    got = ours(path, "--json")
    assert got.returncode == 1
    assert got.stderr.count("\n") == 1 and "backing_base.qcow2" in got.stderr
    assert "No such file or directory" in got.stderr


def test_backing_loop_terminates(image_copy) -> None:
    path = image_copy("v3")
    assert subprocess.run([*QCOW2KIT, "add-header-ext", str(path), "0xe2792aca", "qcow2"],
                          capture_output=True).returncode == 0
    with open(path, "r+b") as f:  # backing file name: the image itself, after the header
        name = path.name.encode()
        f.seek(0x1000)
        f.write(name)
        f.seek(8)
        f.write((0x1000).to_bytes(8, "big") + len(name).to_bytes(4, "big"))
    got = ours(path, "--json")
    assert got.returncode == 1
    assert "backing chain" in got.stderr and "creates an infinite loop" in got.stderr


def _l2_table_past_the_end(path: Path) -> None:
    """L1 entry 0 points at a cluster past the end of the file."""
    end = -(-path.stat().st_size // 65536) * 65536
    imagekit.set_u64(path, _l1_offset(path), 1 << 63 | end + 65536)


def _l1_table_cut(path: Path) -> None:
    """The file ends in the middle of the L1 table."""
    with open(path, "r+b") as f:
        f.truncate(_l1_offset(path) + 4)


def _l1_offset(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[40:48], "big")


def _size_not_in_sectors(path: Path) -> None:
    """A virtual size 6 bytes short of 4 MiB: qemu's disk is 4 MiB - 512 bytes."""
    imagekit.set_u64(path, 24, (4 << 20) - 6)


@pytest.mark.parametrize("damage", [_l2_table_past_the_end, _l1_table_cut,
                                    _size_not_in_sectors],
                         ids=["l2-table-past-the-end", "l1-table-cut", "size-not-in-sectors"])
def test_found_by_differential_fuzzing(image_copy, damage) -> None:
    """map and convert equal qemu's where they did not: qemu reads table entries past
    the end of the file as zeros (unallocated), and its disk is the header's size in
    whole sectors."""
    path = image_copy("v3")
    damage(path)
    expected = qemu_map("v3", path, "--output=json")
    assert expected.returncode == 0, expected.stderr
    got = ours(path, "--json")
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected.stdout
    _converts_as_qemu(path, "-f", "qcow2")


def test_invalid_subcluster_bitmap_past_the_disk_is_not_read(image_copy) -> None:
    """Found by differential fuzzing: an invalid subcluster bitmap in an L2 entry that
    maps no part of the disk made map fail; qemu never reads that entry."""
    path = image_copy("extended_l2")
    l2 = int.from_bytes(path.read_bytes()[_l1_offset(path):][:8], "big") & 0xFFFFFFFFFE00
    entries_on_disk = 4 << 20 >> 16
    imagekit.set_u64(path, l2 + 16 * (entries_on_disk + 36) + 8, 1 << 32 | 1)
    expected = qemu_map("extended_l2", path, "--output=json")
    assert expected.returncode == 0, expected.stderr
    got = ours(path, "--json")
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected.stdout


def test_data_file_that_is_a_device(image_copy) -> None:
    """Found by differential fuzzing: with /dev/null as its raw data file (SEEK_HOLE
    answers 0 there), convert never ended; qemu reads zeros from it. A device is
    refused unless --allow-special (untrusted images), then read as qemu reads it."""
    path = image_copy("data_file_raw")
    offset, _, length = next(e for e in imagekit.extensions(path) if e[1] == 0x44415441)
    name = b"/dev/" + b"/" * (length - 9) + b"null"
    with open(path, "r+b") as f:
        f.seek(offset + 8)
        f.write(name)
    expected = qemu_map("data_file_raw", path, "--output=json")
    assert expected.returncode == 0, expected.stderr
    refused = ours(path, "--json")
    assert refused.returncode == 1 and "a character device" in refused.stderr
    got = ours(path, "--json", "--allow-special")
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected.stdout
    out = path.with_name("out.raw")
    proc = subprocess.run([*QCOW2KIT, "convert", "--allow-special", path.name, out.name],
                          capture_output=True, text=True, cwd=path.parent, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == bytes(4 << 20)


def _scattered(path: Path, seed: int, writes: int) -> Path:
    """A qcow2 image with 4 KiB clusters, qemu-img convert of a sparse 1 GiB raw file
    with writes scattered 4 KiB blocks of data: hundreds of L2 tables and tens of
    thousands of extents, more than map renders or merges at a time."""
    raw = path.with_suffix(".raw")
    rng = random.Random(seed)
    with open(raw, "wb") as f:
        f.truncate(1 << 30)
        for _ in range(writes):
            f.seek(rng.randrange(1 << 18) << 12)
            f.write(rng.randbytes(4096))
    imagekit.run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096",
                 str(raw), str(path))
    raw.unlink()
    return path


@pytest.mark.parametrize("backing", [False, True], ids=["alone", "over-a-backing-file"])
def test_fragmented_image(tmp_path: Path, backing: bool) -> None:
    """Extents found, merged and printed in blocks equal qemu-img's on an image with
    tens of thousands of them: the whole disk and a range inside it, JSON and text."""
    path = _scattered(tmp_path / "frag.qcow2", 22, 12000)
    if backing:
        base = path.rename(tmp_path / "base.qcow2")
        path = _scattered(tmp_path / "frag.qcow2", 23, 3000)
        imagekit.run("qemu-img", "rebase", "-u", "-F", "qcow2", "-b", base.name, path.name,
                     cwd=tmp_path)
        imagekit.qemu_io(path, "write -z 0 64k", "write -z 300M 1M")
    whole, inside = [], ["--start-offset", "123456789", "--max-length", "300M"]
    for args, json_args, lines in ((whole, ["--output=json"], 20000), (whole, [], 10000),
                                   (inside, ["--output=json"], 6000), (inside, [], 3000)):
        expected = qemu_map("frag", path, *json_args, *args)
        assert expected.returncode == 0, expected.stderr
        assert expected.stdout.count("\n") > lines
        got = ours(path, *[a.replace("--output=json", "--json") for a in json_args], *args)
        assert got.returncode == 0, got.stderr
        assert got.stdout == expected.stdout


def _over_a_shorter_backing_file(d: Path, backing_format: str) -> Path:
    """Extended L2 over a backing file that ends inside a subcluster (2 MiB + 37.5 KiB),
    with data, zeros (allocated or not), a discarded cluster and allocated clusters'
    never-written subclusters before, across and past that end; the qcow2 backing file
    is itself one over a shorter file (1.5 MiB), with subclusters past its end. The raw
    backing file is 475 bytes shorter still: qemu gives it a size of whole sectors
    (the same), its last 475 bytes zeros of its own."""
    short = 2 * 1024 * 1024 + 37 * 1024 + 512
    if backing_format == "raw":
        with open(d / "mid.raw", "wb") as f:
            f.truncate(short - 475)
            f.seek(1984 * 1024)
            f.write(b"\x11" * (short - 475 - 1984 * 1024))
        backing = "mid.raw"
    else:
        imagekit.create(d / "base.qcow2", "1536k")
        imagekit.qemu_io(d / "base.qcow2", "write -P 0x10 1M 512k")
        mid = imagekit.create(d / "mid.qcow2", str(short), extended_l2="on",
                              cluster_size="65536", backing="base.qcow2", backing_fmt="qcow2")
        imagekit.qemu_io(mid, f"write -P 0x11 1984k {short - 1984 * 1024}",
                         "write -P 0x12 1468k 2k", "write -P 0x13 1544k 2k",
                         "write -z 1552k 2k")
        backing = "mid.qcow2"
    top = imagekit.create(d / "top.qcow2", str(4 * 1024 * 1024 + 512), extended_l2="on",
                          cluster_size="65536", backing=backing, backing_fmt=backing_format)
    imagekit.qemu_io(top, "write -P 0x21 1986k 2k", "write -z 1994k 2k",
                     "write -P 0x22 2056k 4k", "write -z 2064k 2k", "write -z 2088k 4k",
                     "write -P 0x23 2104k 2k", "write -z 2126k 4k", "write -z -u 2180k 2k",
                     "write -P 0x24 2240k 64k", "discard 2240k 64k",
                     "write -P 0x25 2304k 64k", "write -z -u 2304k 64k",
                     "write -z 2368k 64k", "write -P 0x26 3074k 2k", "write -P 0x27 4M 512")
    return top


@pytest.mark.parametrize("backing_format", ["qcow2", "raw"])
def test_subclusters_past_the_end_of_a_shorter_backing_file(tmp_path: Path,
                                                            backing_format: str) -> None:
    """Past the end of the backing file, never-written subclusters of an allocated
    cluster read as zeros of the image's own, and keep their offset (qemu reports them
    as it does without a backing file): JSON and text as qemu-img's, over ranges that
    start and end around that end, and guest data as qemu-img convert's."""
    path = _over_a_shorter_backing_file(tmp_path, backing_format)
    short = 2 * 1024 * 1024 + 37 * 1024 + 512
    ranges = [[], ["--start-offset", str(short - 512), "--max-length", "1024"],
              ["--start-offset", str(short - 3000), "--max-length", str(64 * 1024)],
              ["--start-offset", str(short), "--max-length", str(300 * 1024)],
              ["--start-offset", "2M", "--max-length", "1M"],
              ["--start-offset", str(1536 * 1024 + 4096), "--max-length", "2M"],
              ["--start-offset", "3073k"]]
    for args in ranges:
        for json_args in (["--output=json"], []):
            expected = qemu_map("top", path, *json_args, *args)
            assert expected.returncode == 0, expected.stderr
            got = ours(path, *[a.replace("--output=json", "--json") for a in json_args],
                       *args)
            assert got.returncode == 0, got.stderr
            assert got.stdout == expected.stdout, args
    _converts_as_qemu(path)


def _converts_as_qemu(path: Path, *qemu_args: str) -> None:
    """qcow2kit convert writes the raw disk qemu-img convert writes (run in the image's
    folder, so that relative backing names resolve alike)."""
    raw = {}
    for tool, argv in (("qemu", ["qemu-img", "convert", *qemu_args, "-O", "raw"]),
                       ("ours", [*QCOW2KIT, "convert"])):
        out = path.with_name(f"{tool}.raw")
        proc = subprocess.run([*argv, path.name, out.name], capture_output=True, text=True,
                              cwd=path.parent)
        assert proc.returncode == 0, proc.stderr
        raw[tool] = out.read_bytes()
    assert raw["ours"] == raw["qemu"]
