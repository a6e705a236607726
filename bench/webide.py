"""Time and memory of opening the largest tables of qcow2 images in the Web IDE's
JavaScript parser (qcow2.ksy compiled with --debug, run by node as the IDE runs it).

The images have the largest tables of each kind that QEMU makes: a refcount block of
16,777,216 one-bit refcounts (2 MiB clusters, refcount_bits=1), full L2 tables at
2 MiB clusters (262,144 standard entries; 131,072 extended entries), QEMU's largest
L1 table (32 MiB, 512-byte clusters, 128 GiB), its largest refcount table
(8 MiB), snapshot tables of QEMU's 65536 snapshots, short and filling QEMU's
64 MiB limit, and a bitmap directory of QEMU's 65535 bitmaps filling its 64 MiB.
Tables are filled in by hand where QEMU would need terabytes of data to fill them; the values do not change what parsing costs. bench/webide.js opens each
table in a fresh node process; this prints, per image, every table and the worst.

    python3 bench/webide.py [SPEC.ksy] [WORKDIR]
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def create(d: Path, name: str, size: str, opts: str, *writes: str) -> Path:
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, name, size, cwd=d)
    for w in writes:
        run("qemu-io", "-f", "qcow2", "-c", w, name, cwd=d)
    return d / name


def fill_l2(path: Path, extended: bool) -> Path:
    """Every entry of the first L2 table allocated (offsets need not exist)."""
    with open(path, "r+b") as f:
        head = f.read(64)
        cluster = 1 << struct.unpack_from(">I", head, 20)[0]
        l1, = struct.unpack_from(">Q", head, 40)
        f.seek(l1)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FF_FFFF_FFFF_FE00
        width = 16 if extended else 8
        table = bytearray()
        for i in range(cluster // width):
            table += struct.pack(">Q", 1 << 63 | (i + 8) * cluster)
            if extended:
                table += struct.pack(">Q", 0xFFFF_FFFF)
        f.seek(l2)
        f.write(table)
    return path


def grow_refcount_table(path: Path, size: int) -> Path:
    """The refcount table moved to the end of the file and grown to size bytes."""
    with open(path, "r+b") as f:
        head = f.read(64)
        cluster = 1 << struct.unpack_from(">I", head, 20)[0]
        old, = struct.unpack_from(">Q", head, 48)
        clusters, = struct.unpack_from(">I", head, 56)
        f.seek(old)
        entries = f.read(clusters * cluster)
        end = -(-f.seek(0, os.SEEK_END) // cluster) * cluster
        f.seek(end)
        f.write(entries.ljust(size, b"\0"))
        f.seek(48)
        f.write(struct.pack(">Q", end))
        f.seek(56)
        f.write(struct.pack(">I", size // cluster))
    return path


def many_snapshots(path: Path, count: int) -> Path:
    """The image's one snapshot table entry repeated count times in a new table."""
    with open(path, "r+b") as f:
        head = f.read(72)
        cluster = 1 << struct.unpack_from(">I", head, 20)[0]
        table, = struct.unpack_from(">Q", head, 64)
        f.seek(table)
        fixed = f.read(40)
        extra, = struct.unpack_from(">I", fixed, 36)
        id_size, name_size = struct.unpack_from(">HH", fixed, 12)
        size = -(-(40 + extra + id_size + name_size) // 8) * 8
        f.seek(table)
        entry = f.read(size).ljust(size, b"\0")  # QEMU pads no last entry at the end
        end = -(-f.seek(0, os.SEEK_END) // cluster) * cluster
        f.seek(end)
        f.write(entry * count)
        f.seek(60)
        f.write(struct.pack(">IQ", count, end))
    return path


def long_snapshots(path: Path, count: int, size: int) -> Path:
    """A snapshot table of count entries of size bytes each, names filling them."""
    with open(path, "r+b") as f:
        head = f.read(72)
        cluster = 1 << struct.unpack_from(">I", head, 20)[0]
        end = -(-f.seek(0, os.SEEK_END) // cluster) * cluster
        table = bytearray()
        for i in range(count):
            ident = str(i + 1).encode()
            name = (b"snapshot-%d-" % i).ljust(size - 40 - 16 - len(ident), b"x")
            table += struct.pack(">QIHHIIIIII", 0, 0, len(ident), len(name), 0, 0,
                                 0, 0, 0, 16) + bytes(16) + ident + name
        f.seek(end)
        f.write(table)
        f.seek(60)
        f.write(struct.pack(">IQ", count, end))
    return path


def many_bitmaps(path: Path, count: int, size: int) -> Path:
    """The bitmap directory replaced by count entries of size bytes each, names
    filling them; every entry keeps the image's one bitmap table."""
    with open(path, "r+b") as f:
        data = f.read(1 << 16)
        cluster = 1 << struct.unpack_from(">I", data, 20)[0]
        ext = data.index(struct.pack(">I", 0x23852875))
        num, _, _, ofs = struct.unpack_from(">IIQQ", data, ext + 8)
        f.seek(ofs)
        first = f.read(24)
        end = -(-f.seek(0, os.SEEK_END) // cluster) * cluster
        table = bytearray()
        for i in range(count):
            name = (b"bitmap-%d-" % i).ljust(size - 24, b"x")
            table += first[:18] + struct.pack(">HI", len(name), 0) + name
        f.seek(end)
        f.write(table)
        f.seek(ext + 8)
        f.write(struct.pack(">IIQQ", count, 0, len(table), end))
    return path


def images(d: Path) -> list:
    snapshots = create(d, "snapshots_65536.qcow2", "1G", "cluster_size=65536",
                       "write -P 1 0 64k")
    run("qemu-img", "snapshot", "-c", "s1", snapshots.name, cwd=d)
    bitmaps = create(d, "bitmaps_65535.qcow2", "1G", "cluster_size=65536",
                     "write -P 1 0 64k")
    run("qemu-img", "bitmap", "--add", bitmaps.name, "b0", cwd=d)
    return [
        create(d, "refcount1_2m.qcow2", "1G", "cluster_size=2M,refcount_bits=1",
               "write -P 1 0 4M"),
        fill_l2(create(d, "l2_full_2m.qcow2", "512G", "cluster_size=2M",
                       "write -P 1 0 2M"), extended=False),
        fill_l2(create(d, "l2_extended_full_2m.qcow2", "256G",
                       "cluster_size=2M,extended_l2=on", "write -P 1 0 2M"), extended=True),
        create(d, "l1_max_512.qcow2", "128G", "cluster_size=512"),
        grow_refcount_table(create(d, "reftable_8m.qcow2", "1G", "cluster_size=65536",
                                   "write -P 1 0 64k"), 8 << 20),
        many_snapshots(snapshots, 65536),
        long_snapshots(create(d, "snapshots_64m.qcow2", "1G", "cluster_size=65536"),
                       65536, 1024),
        many_bitmaps(bitmaps, 65535, 1024),
    ]


def main() -> None:
    spec = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO / "qcow2.ksy"
    work = Path(sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="webide-"))
    work.mkdir(parents=True, exist_ok=True)
    module = work / "js"
    run("node", str(REPO / "tools/ksc.js"), "--debug", "-t", "javascript", "-o",
        str(module), str(spec), cwd=REPO)
    env = {**os.environ, "NODE_PATH": str(REPO / "node_modules")}
    for image in images(work):
        out = subprocess.run(["node", "--max-old-space-size=8192", str(REPO / "bench/webide.js"),
                              str(spec), str(module), str(image)], env=env, check=True,
                             capture_output=True, text=True).stdout
        rows = [json.loads(line) for line in out.splitlines()]
        for r in rows:
            print(f"{image.name:28} {r['table']:60} {r['seconds']:8.3f} s {r['mb']:8.1f} MB")
        worst = max(rows, key=lambda r: (r["seconds"], r["mb"]))
        print(f"{image.name:28} worst: {worst['table']} {worst['seconds']:.3f} s, "
              f"{max(r['mb'] for r in rows):.1f} MB at most\n")


if __name__ == "__main__":
    main()
