"""Guest data: convert, cat and the reader give exactly what qemu-img convert gives."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

import imagekit
from qcow2kit import Qcow2Error, ahead, guest, tables
from qcow2kit.guest import GuestDisk, convert
from qcow2kit.mapping import select_snapshot
from qcow2kit import open_image
from ourcmd import QCOW2KIT
from test_outputs import holes

READABLE = sorted(k for k in imagekit.KINDS if k not in ("luks", "bitmaps_crafted"))
WITH_SNAPSHOTS = ["snapshots", "refcount_2", "refcount_64"]


def qemu_raw(path: Path, out: Path, *args: str) -> Path:
    """qemu-img convert -O raw, run beside the image."""
    subprocess.run(["qemu-img", "convert", "-O", "raw", *args, path.name, str(out)],
                   check=True, capture_output=True, cwd=path.parent)
    return out


sha256 = imagekit.file_sha256


@pytest.fixture(scope="module")
def raws(images: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """qemu-img's raw export of every readable kind."""
    out = tmp_path_factory.mktemp("raw")
    return {k: qemu_raw(images[k], out / f"{k}.raw") for k in READABLE}


@pytest.mark.parametrize("kind", READABLE)
def test_convert_equals_qemu(images: Dict[str, Path], raws: Dict[str, Path], tmp_path: Path,
                             kind: str) -> None:
    out = tmp_path / "out.raw"
    cwd = os.getcwd()
    os.chdir(images[kind].parent)  # qemu opens relative data file names from here
    try:
        convert(images[kind].name, out)
    finally:
        os.chdir(cwd)
    assert out.stat().st_size == raws[kind].stat().st_size
    assert sha256(out) == sha256(raws[kind])


def test_reads_what_qemu_refuses(images: Dict[str, Path], raws: Dict[str, Path],
                                 tmp_path: Path) -> None:
    """qemu will not open an image with an invalid bitmap table entry; its guest data
    reads all the same (as in the image it was crafted from)."""
    out = tmp_path / "crafted.raw"
    convert(images["bitmaps_crafted"], out)
    assert sha256(out) == sha256(raws["bitmaps"])


@pytest.mark.parametrize("kind", WITH_SNAPSHOTS)
def test_snapshot_convert_equals_qemu(images: Dict[str, Path], tmp_path: Path,
                                      kind: str) -> None:
    path = images[kind]
    with open_image(path) as image:
        snaps = [(s.id.decode(), s.name.decode()) for s in image.qcow2.snapshots]
    assert snaps
    for snap_id, name in snaps:
        expected = qemu_raw(path, tmp_path / "qemu.raw", "-l", f"snapshot.name={name}")
        for key in (snap_id, name):
            out = tmp_path / "ours.raw"
            proc = subprocess.run([*QCOW2KIT, "convert", "--snapshot", key, path.name, str(out)],
                                  capture_output=True, text=True, cwd=path.parent)
            assert proc.returncode == 0, proc.stderr
            assert sha256(out) == sha256(expected), (kind, key)


@pytest.mark.parametrize("kind", ["extended_l2", "zlib_4k", "zstd", "backing_chain",
                                  "backing_short", "snapshots", "cluster_512", "v2"])
def test_random_reads_equal_raw(images: Dict[str, Path], raws: Dict[str, Path],
                                kind: str) -> None:
    data = raws[kind].read_bytes()
    rng = random.Random(kind)
    with GuestDisk(images[kind]) as disk:
        assert disk.size == len(data)
        for _ in range(300):
            start = rng.randrange(len(data))
            length = rng.choice([1, 511, 4096, 65537, 300000])
            disk.seek(start)
            assert disk.read(length) == data[start:start + length], (start, length)
        disk.seek(-100, os.SEEK_END)
        assert disk.read() == data[-100:]
        assert disk.read(10) == b""


def test_stdout_and_cat(images: Dict[str, Path], raws: Dict[str, Path]) -> None:
    path, data = images["backing_chain"], raws["backing_chain"].read_bytes()
    proc = subprocess.run([*QCOW2KIT, "convert", str(path), "-"], capture_output=True)
    assert proc.returncode == 0 and proc.stdout == data
    proc = subprocess.run([*QCOW2KIT, "cat", str(path), "--offset", "0x17f000",
                           "--length", "8192"], capture_output=True)
    assert proc.stdout == data[0x17F000:0x17F000 + 8192]


def test_cat_range_at_the_end_of_the_disk(images: Dict[str, Path],
                                          raws: Dict[str, Path]) -> None:
    """A range crossing the end is cut there, as reading a file is; an offset past
    the end is an error that states the disk size."""
    path, data = images["backing_chain"], raws["backing_chain"].read_bytes()

    def cat(offset: int, length: str = None) -> subprocess.CompletedProcess:
        more = [] if length is None else ["--length", length]
        return subprocess.run([*QCOW2KIT, "cat", str(path), "--offset", str(offset), *more],
                              capture_output=True)
    proc = cat(len(data) - 100, "1000")
    assert proc.returncode == 0 and proc.stdout == data[-100:]
    for offset in (len(data), len(data) - 1):
        proc = cat(offset, "1")
        assert proc.returncode == 0 and proc.stdout == data[offset:offset + 1]
    expected = (f"qcow2kit: {path}: guest disk: offset {len(data) + 1} is past the end of "
                f"the disk ({len(data)} bytes)\n").encode()
    for length in ("1", None):  # without a length, none is computed (it was negative)
        proc = cat(len(data) + 1, length)
        assert (proc.returncode, proc.stdout, proc.stderr) == (1, b"", expected)
    proc = subprocess.run([*QCOW2KIT, "cat", str(path), "--length", "-5"], capture_output=True)
    assert proc.returncode == 2 and b"-5 is negative" in proc.stderr


def test_output_is_sparse(images: Dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sparse.raw"
    convert(images["prealloc_metadata"], out)
    assert out.stat().st_size == 64 << 20
    assert out.stat().st_blocks * 512 < 1 << 20


def test_encrypted_image_needs_its_secret(images: Dict[str, Path], tmp_path: Path) -> None:
    """Without a secret (and off a terminal) an encrypted image is refused, and no
    output is left; with it, convert gives qemu-img convert's bytes."""
    proc = subprocess.run([*QCOW2KIT, "convert", str(images["luks"]), str(tmp_path / "x")],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("the image is encrypted: give its secret with "
                                        "--password-file FILE or --object "
                                        "secret,id=ID,file=FILE (or run on a terminal)")
    assert not (tmp_path / "x").exists()
    (tmp_path / "pw").write_text(imagekit.SECRET.split("data=")[1])
    proc = subprocess.run([*QCOW2KIT, "convert", "--password-file", str(tmp_path / "pw"),
                           str(images["luks"]), str(tmp_path / "x")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    subprocess.run(["qemu-img", "convert", "--object", imagekit.SECRET, "--image-opts",
                    f"driver=qcow2,file.filename={images['luks']},encrypt.key-secret=sec0",
                    "-O", "raw", str(tmp_path / "q")], check=True)
    assert (tmp_path / "x").read_bytes() == (tmp_path / "q").read_bytes()


def test_zstd_without_the_package(images: Dict[str, Path], monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.setitem(sys.modules, "compression.zstd", None)  # Python 3.14+
    with GuestDisk(images["zstd"]) as disk:
        with pytest.raises(Qcow2Error) as err:
            disk.read()
    assert "pip install zstandard" in str(err.value)


def test_corrupt_compressed_cluster(image_copy) -> None:
    path = image_copy("zlib_4k")
    with GuestDisk(path) as disk:
        layer = disk.chain.top
        run = next(r for r in layer.runs(0, disk.size) if r.kind == "compressed")
    offset, _ = tables.compressed_extents(np.array([run.entries[0]]), layer.geometry)
    with open(path, "r+b") as f:  # garbage where the first compressed cluster starts
        f.seek(int(offset[0]))
        f.write(b"\xff" * 64)
    proc = subprocess.run([*QCOW2KIT, "convert", str(path), "-"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "compressed cluster at offset" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_snapshot(images: Dict[str, Path]) -> None:
    with open_image(images["snapshots"]) as image:
        with pytest.raises(Qcow2Error) as err:
            select_snapshot(image, "no-such")
    assert "no snapshot with the id or name 'no-such'" in str(err.value)


def test_missing_data_file(image_copy) -> None:
    path = image_copy("data_file")
    (path.parent / "data_file.data").unlink()
    proc = subprocess.run([*QCOW2KIT, "convert", path.name, "-"], capture_output=True,
                          text=True, cwd=path.parent)
    assert proc.returncode == 1
    assert "external data file" in proc.stderr and "No such file" in proc.stderr


def test_snapshot_table_at_end_of_file(tmp_path: Path) -> None:
    """qemu writes no padding after the last snapshot entry when it ends the file."""
    path = tmp_path / "last.qcow2"
    imagekit.create(path, "1M")
    imagekit.qemu_io(path, "write -P 0x42 0 64k")
    imagekit.run("qemu-img", "snapshot", "-c", "s1", str(path))
    expected = qemu_raw(path, tmp_path / "qemu.raw", "-l", "snapshot.name=s1")
    out = tmp_path / "ours.raw"
    convert(path, out, snapshot="s1")
    assert sha256(out) == sha256(expected)


# --- compressed clusters decompressed on a thread pool ----------------------------------

COMPRESSED_KINDS = ["zlib", "zlib_4k", "zstd"]


@pytest.mark.parametrize("kind", COMPRESSED_KINDS)
@pytest.mark.parametrize("workers,batch,ahead_bytes", [(1, 1 << 20, 16 << 20),
                                                       (4, 1, 1), (3, 3 << 16, 1 << 20)])
def test_parallel_decompression_equals_qemu(images: Dict[str, Path], raws: Dict[str, Path],
                                            tmp_path: Path, monkeypatch, kind: str,
                                            workers: int, batch: int,
                                            ahead_bytes: int) -> None:
    """Whatever the number of threads, clusters per job and data held ahead: qemu's
    bytes, in order, and every 4 KiB block of zeros a hole, none of data."""
    monkeypatch.setattr(ahead, "cores", lambda: workers)
    monkeypatch.setattr(guest, "BATCH_BYTES", batch)
    monkeypatch.setattr(guest, "AHEAD_BYTES", ahead_bytes)
    out = tmp_path / "out.raw"
    convert(images[kind], out)
    assert sha256(out) == sha256(raws[kind])
    data = raws[kind].read_bytes()
    assert holes(out) == [not any(data[i:i + 4096]) for i in range(0, len(data), 4096)]
    with GuestDisk(images[kind]) as disk:
        assert disk.chain.pool.workers == workers
        for start in range(0, len(data), 40000):  # reads across and within clusters
            assert disk.read(40000) == data[start:start + 40000]


@pytest.mark.parametrize("ctype", ["zlib", "zstd"])
@pytest.mark.parametrize("layout", ["scattered", "reversed"])
def test_compressed_clusters_anywhere_in_the_file(tmp_path: Path, ctype: str,
                                                  layout: str) -> None:
    """A job's compressed clusters read one by one when they lie apart in the file
    (each written by its own qemu-io, which starts a new host cluster) and at once
    when they lie together in the reverse order: qemu's bytes, holes alike, and
    reads within clusters alike."""
    path = tmp_path / "c.qcow2"
    imagekit.create(path, "2M", compression_type=ctype)
    order = range(12) if layout == "scattered" else range(11, -1, -1)
    writes = [f"write -c -P {0x30 + i} {i * 64}k 64k" for i in order]
    if layout == "scattered":
        for write in writes:
            imagekit.qemu_io(path, write)
    else:
        imagekit.qemu_io(path, *writes)
    expected = qemu_raw(path, tmp_path / "qemu.raw")
    out = tmp_path / "out.raw"
    convert(path, out)
    assert sha256(out) == sha256(expected)
    data = expected.read_bytes()
    assert holes(out) == [not any(data[i:i + 4096]) for i in range(0, len(data), 4096)]
    with GuestDisk(path) as disk:
        for start in range(0, len(data), 5000):
            assert disk.read(5000) == data[start:start + 5000]


def test_in_order_holds_at_most_limit_items_ahead() -> None:
    """Items come out in order, a job's failure at its own place; no more than limit
    items are taken from the source before the first is handed out."""
    pool = ahead.Pool(3)
    taken = []

    def source():
        for i in range(100):
            taken.append(i)
            if i % 7 == 0:
                yield i
            else:
                yield ahead.Later(pool.submit(lambda x: x * 10, i), lambda r: r // 10)
    try:
        seen = []
        for item in ahead.in_order(source(), 5):
            assert len(taken) - len(seen) <= 6  # the limit, and the one being handed out
            seen.append(item)
        assert seen == list(range(100))

        def fails() -> None:
            raise Qcow2Error("compressed cluster", 0, "does not decompress")
        items = [1, ahead.Later(pool.submit(fails), lambda r: r), 3]
        out = ahead.in_order(iter(items), 5)
        assert next(out) == 1
        with pytest.raises(Qcow2Error):
            next(out)
    finally:
        pool.close()


def test_in_order_releases_a_value_once_the_next_is_asked_for() -> None:
    """A Later's release runs with its job's result after the consumer has asked for
    the next item (or the end), never before: its buffers may then be used again."""
    pool = ahead.Pool(2)
    released = []
    try:
        items = [ahead.Later(pool.submit(lambda x: x, i), lambda r: r, released.append)
                 for i in range(5)]
        out = ahead.in_order(iter(items), 2)
        for i in range(5):
            assert next(out) == i
            assert released == list(range(i))
        assert list(out) == []
        assert released == list(range(5))
    finally:
        pool.close()
