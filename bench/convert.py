"""Time `qcow2kit convert` against `qemu-img convert -O raw` from one run of each.

Two 4 GiB images: one of incompressible (random) data, one zlib-compressed
(`qemu-img convert -c`) from data that compresses about 3:1, so that its clusters
really are compressed (qemu stores incompressible clusters uncompressed). Prints the
time ratio qcow2kit/qemu-img for each, whether the outputs are identical, and
qcow2kit's peak memory. Needs about 20 GB of free disk in WORKDIR.

    python3 bench/convert.py [WORKDIR]
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The qcow2kit of the interpreter running this script (python3 from .venv/bin).
OURS = str(Path(sys.executable).with_name("qcow2kit"))
SIZE = 4 << 30
BLOCK = 64 << 20


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def write_raw(path: Path, compressible: bool) -> None:
    """SIZE bytes of random data, or of random bytes from a 16-letter alphabet."""
    with open(path, "wb") as f:
        for _ in range(SIZE // BLOCK):
            block = os.urandom(BLOCK)
            if compressible:
                block = bytes(b & 0x0F | 0x40 for b in block[:BLOCK // 64]) * 64
            f.write(block)


def settle() -> None:
    """No dirty pages left over (else the second writer pays for the first one's
    writeback), and, when allowed (root), a cold page cache for each run."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def timed(*args: str) -> tuple:
    """Wall time and peak RSS (MiB) of one command, started on a settled machine."""
    settle()
    start = time.perf_counter()
    proc = subprocess.Popen(args)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, args)
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def measure(work: Path, name: str, compressible: bool) -> None:
    raw, image = work / f"{name}.raw", work / f"{name}.qcow2"
    write_raw(raw, compressible)
    extra = ["-c"] if compressible else []
    subprocess.run(["qemu-img", "convert", *extra, "-f", "raw", "-O", "qcow2", str(raw),
                    str(image)], check=True)
    raw.unlink()
    theirs, ours = work / f"{name}.qemu.raw", work / f"{name}.ours.raw"
    t_qemu, _ = timed("qemu-img", "convert", "-O", "raw", str(image), str(theirs))
    digest = sha256(theirs)
    theirs.unlink()
    t_ours, peak = timed(OURS, "convert", str(image), str(ours))
    same = sha256(ours) == digest
    print(f"{name:>14}: qemu-img {t_qemu:6.2f} s  qcow2kit {t_ours:6.2f} s  "
          f"ratio {t_ours / t_qemu:4.2f}  identical: {same}  qcow2kit peak {peak:.0f} MiB")
    for path in (image, ours):
        path.unlink()


def main() -> None:
    parent = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        measure(Path(tmp), "incompressible", compressible=False)
        measure(Path(tmp), "zlib", compressible=True)


if __name__ == "__main__":
    main()
