"""Time the dirty-extent decoding of a worst-case bitmap: 1 TiB at 64 KiB granularity.

The bitmap has 2^24 bits, 2 MiB of data in 32 clusters of 64 KiB. qemu writes 2 MiB
of random bytes to the guest, then every bitmap table entry is pointed at one of
those host clusters, so every cluster is serialized and about every other bit
starts or ends a run. Prints the time of one bitmap_report() call, wall clock and
CPU (the CPU time is the steadier figure on a busy machine).

    python3 bench/bitmaps.py [WORKDIR]
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qcow2kit import open_image
from qcow2kit.bitmaps import bitmap_report

CLUSTER = 64 << 10
DATA = 2 << 20  # 2^40 / 2^16 bits / 8


def run(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def build(work: Path) -> Path:
    image = work / "tib.qcow2"
    (work / "random.bin").write_bytes(os.urandom(DATA))
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={CLUSTER}",
        image.name, "1T", cwd=work)
    run("qemu-io", "-f", "qcow2", "-c", f"write -s random.bin 0 {DATA}", image.name, cwd=work)
    run("qemu-img", "bitmap", "--add", "-g", "65536", image.name, "b", cwd=work)
    run("qemu-io", "-f", "qcow2", "-c", "write 4M 64k", "-c", "write 300G 1M",
        "-c", "write 1023G 64k", image.name, cwd=work)
    point_table_at_random_clusters(image)
    return image


def point_table_at_random_clusters(image: Path) -> None:
    mapping = json.loads(run("qemu-img", "map", "--output=json", image.name,
                             cwd=image.parent))
    hosts = [m["offset"] + pos for m in mapping if m["data"] and m["start"] < DATA
             for pos in range(0, m["length"], CLUSTER)][:DATA // CLUSTER]
    table = table_offset(image)
    with open(image, "r+b") as f:
        f.seek(table)
        f.write(b"".join(struct.pack(">Q", host) for host in hosts))


def table_offset(image: Path) -> int:
    """The first bitmap's table offset, read with struct (header extensions)."""
    data = image.read_bytes()[:CLUSTER]
    off = struct.unpack_from(">I", data, 100)[0]
    while True:
        magic, length = struct.unpack_from(">II", data, off)
        if magic == 0x23852875:
            directory = struct.unpack_from(">Q", data, off + 24)[0]
            break
        off += 8 + (length + 7) // 8 * 8
    with open(image, "rb") as f:
        f.seek(directory)
        return struct.unpack(">Q", f.read(8))[0]


def main() -> None:
    with tempfile.TemporaryDirectory(dir=sys.argv[1] if len(sys.argv) > 1 else None) as d:
        image = build(Path(d))
        with open_image(image) as img:
            start, cpu = time.perf_counter(), time.process_time()
            report = bitmap_report(img)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        bitmap = report.bitmaps[0]
        kinds = {t.kind for t in bitmap.table}
        print(f"1 TiB, granularity 64 KiB: {len(bitmap.table)} table entries ({kinds}), "
              f"{len(bitmap.extents)} extents, {bitmap.dirty_bytes} dirty bytes, "
              f"{len(report.all_warnings)} warnings: {elapsed:.3f} s ({cpu:.3f} s CPU)")


if __name__ == "__main__":
    main()
