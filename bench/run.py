"""Every row of issue 22's table, qcow2kit side by side with its peer, from one run.

    make bench                       # or: .venv/bin/python bench/run.py [options]
    python bench/run.py --runs 5 --qcow2py /path/to/qemu/tests/qemu-iotests/qcow2.py

Each job runs --runs times, qcow2kit and its peer in turn (so both meet the same load);
the table gives the median wall time of each, their ratio, the ratio of their median
CPU time (user + system: less sensitive to a loaded machine than wall time), the
peak memory of each (the largest ru_maxrss of the process and its children) and
whether the issue's goal holds. With --instructions, the start-up jobs (the Python
rows) also get the ratio of the instructions both execute, counted by valgrind's
callgrind: a measure the machine's load does not change. Before the timed runs each command runs once, so that
the page cache and Python's bytecode caches are warm (PYTHONDONTWRITEBYTECODE is
dropped from the children's environment). Commands run under GNU time (/usr/bin/time),
which reports their CPU time and peak memory.

The peer is qemu-img, or for the qcow2.py drop-in qemu's own qcow2.py (with its
qcow2_format.py beside it, from a qemu source tree: tests/qemu-iotests/; not part of
this repository), run by this same interpreter; without --qcow2py (or $QCOW2PY) those
rows say the peer is missing. Python rows compare with the floor `python -c "import
click, kaitaistruct, qcow2kit.generated.qcow2"`.

The images are made in a temporary folder (under --workdir) and deleted after: small
images, a 1 GiB zlib and a 1 GiB zstd image of compressible data (qemu-img convert -c),
a fragmented 100 GiB image (a sparse raw file with 60,000 scattered 4 KiB writes,
qemu-img convert -O qcow2: about 4 GB), a 1 TiB preallocation=metadata image (sparse,
160 MB of metadata) and 1000 small images. About 8 GB of free disk.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

PY = sys.executable
OURS = str(Path(PY).with_name("qcow2kit"))
FLOOR = [PY, "-c", "import click, kaitaistruct, qcow2kit.generated.qcow2"]
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
MIB = 1 << 20
TIME = "/usr/bin/time"  # GNU time
PYTHON_STARTUP_MIB = 15  # the goal on memory sets Python's own start-up aside


class Sample(NamedTuple):
    wall: float
    cpu: float
    peak_mib: float
    out: bytes


def run(args: Sequence[str], cwd: Path) -> Sample:
    """One run: wall time, CPU time and peak RSS (of the command and its children) and
    stdout. GNU time reports the peak: a child forked from this (big) process would
    count this process's memory in its own ru_maxrss."""
    report = cwd / "time.txt"
    start = time.perf_counter()
    proc = subprocess.Popen([TIME, "-f", "%M %U %S", "-o", str(report), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV, cwd=cwd)
    out = proc.stdout.read()
    proc.wait()
    proc.stdout.close()
    wall = time.perf_counter() - start
    peak_kib, user, system = report.read_text().split()[-3:]
    return Sample(wall, float(user) + float(system), int(peak_kib) / 1024, out)


class Row(NamedTuple):
    job: str
    ours: Sequence[str]
    peer: Optional[Sequence[str]]  # None: the peer is missing
    goal: str
    holds: Callable[[float, float], bool]  # (our wall, peer wall) -> the goal holds
    same: Optional[Callable[[bytes, bytes], bool]] = None  # stdouts agree
    files: Optional[Sequence[Path]] = None  # or: the output files (ours, peer's) agree
    big: bool = False  # run --big-runs times
    startup: bool = False  # a start-up job: instructions counted with --instructions


def ratio_at_most(limit: float) -> Callable[[float, float], bool]:
    return lambda ours, peer: ours <= limit * peer


def at_most_ms(limit: float) -> Callable[[float, float], bool]:
    return lambda ours, peer: ours * 1000 <= limit


def instructions(args: Sequence[str], cwd: Path) -> int:
    """The instructions a command executes (valgrind's callgrind, children not traced)."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           *args], capture_output=True, text=True, env=ENV, cwd=cwd)
    return int(proc.stderr.split("Collected : ")[1].split()[0])


def measure(row: Row, runs: int, cwd: Path, count: bool = False) -> str:
    commands = {"ours": row.ours, "peer": row.peer}
    sides = [side for side in ("peer", "ours") if commands[side] is not None]
    first = {side: run(commands[side], cwd).out for side in sides}  # warm-up
    same = ""
    if row.same is not None and len(sides) == 2:
        same = "yes" if row.same(first["ours"], first["peer"]) else "NO"
    if row.files is not None:
        same = "yes" if filecmp.cmp(*row.files, shallow=False) else "NO"
    samples: Dict[str, List[Sample]] = {side: [] for side in sides}
    for _ in range(runs):
        _remove(row.files)
        for side in sides:
            samples[side].append(run(commands[side], cwd))
    _remove(row.files)
    ours = samples["ours"]
    wall = statistics.median(s.wall for s in ours)
    cpu = statistics.median(s.cpu for s in ours)
    peak = max(s.peak_mib for s in ours)
    if row.peer is None:
        return (f"| {row.job} | {wall * 1000:.0f} ms | peer missing | | | {peak:.0f} | | | "
                f"{row.goal} | ? | |")
    peer = samples["peer"]
    p_wall = statistics.median(s.wall for s in peer)
    p_cpu = statistics.median(s.cpu for s in peer)
    p_peak = max(s.peak_mib for s in peer)
    holds = row.holds(wall, p_wall)
    memory = peak <= p_peak + PYTHON_STARTUP_MIB
    counted = ""
    if count and row.startup:
        ours_ir, peer_ir = instructions(row.ours, cwd), instructions(row.peer, cwd)
        counted = f"{ours_ir / peer_ir:.3f}x ({ours_ir / 1e6:.0f}M / {peer_ir / 1e6:.0f}M)"
        holds = row.holds(ours_ir, peer_ir)
    return (f"| {row.job} | {_ms(wall)} | {_ms(p_wall)} | {wall / p_wall:.2f}x | "
            f"{cpu / max(p_cpu, 1e-3):.2f}x | {peak:.0f} / {p_peak:.0f} | "
            f"{counted} | {'yes' if memory else 'no'} | {row.goal} | {'yes' if holds else 'no'} | "
            f"{same} |")


def _remove(files: Optional[Sequence[Path]]) -> None:
    for path in files or ():
        path.unlink(missing_ok=True)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def json_equal(a: bytes, b: bytes) -> bool:
    return json.loads(a) == json.loads(b)


def json_lines_equal_each(a: bytes, b: bytes) -> bool:
    """Our JSON lines of several images against qemu-img's documents, in order."""
    ours = [json.loads(line)["result"] for line in a.decode().splitlines()]
    return ours == [json.loads(doc) for doc in _split_documents(b.decode())]


def _split_documents(text: str) -> List[str]:
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while pos < len(text.rstrip()):
        obj, end = decoder.raw_decode(text, pos)
        docs.append(json.dumps(obj))
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


# --- images ---------------------------------------------------------------------------

def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL)


def small_image(path: Path) -> Path:
    """64 MiB: data, a persistent bitmap and an internal snapshot."""
    sh("qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M")
    sh("qemu-io", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 10M 64k", str(path))
    sh("qemu-img", "bitmap", "--add", str(path), "b0")
    sh("qemu-img", "snapshot", "-c", "s1", str(path))
    return path


def compressible_raw(path: Path, size: int) -> Path:
    """Random letters of a 16-letter alphabet, each 1 MiB block made of a repeated
    16 KiB: zlib and zstd shrink it to about half."""
    rng = random.Random(22)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(bytes(b & 0x0F | 0x40 for b in rng.randbytes(16 << 10)) * 64)
    return path


def compressed_images(work: Path) -> tuple:
    raw = compressible_raw(work / "data.raw", 1 << 30)
    out = []
    for ctype in ("zlib", "zstd"):
        image = work / f"{ctype}.qcow2"
        sh("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o",
           f"compression_type={ctype}", str(raw), str(image))
        out.append(image)
    raw.unlink()
    return tuple(out)


def fragmented_image(work: Path) -> Path:
    """60,000 scattered 4 KiB writes to a sparse 100 GiB raw file, converted to qcow2."""
    raw, image = work / "frag.raw", work / "frag.qcow2"
    rng = random.Random(60000)
    size = 100 << 30
    fd = os.open(raw, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for _ in range(60000):
            os.pwrite(fd, rng.randbytes(4096), rng.randrange(size // 4096) * 4096)
    finally:
        os.close(fd)
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    raw.unlink()
    return image


def fleet(work: Path, count: int) -> List[str]:
    folder = work / "fleet"
    folder.mkdir()
    first = folder / "0000.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", str(first), "16M")
    sh("qemu-io", "-c", "write -P 0x33 0 256k", str(first))
    names = [str(first)]
    for i in range(1, count):
        names.append(str(folder / f"{i:04d}.qcow2"))
        shutil.copyfile(first, names[-1])
    return names


def qcow2py_command(path: Optional[str], work: Path) -> Optional[List[str]]:
    """qemu's qcow2.py (its qcow2_format.py beside it), copied to work and run by this
    interpreter; None when not given."""
    if not path:
        return None
    src = Path(path)
    peer = work / "qcow2py"
    peer.mkdir()
    for name in ("qcow2.py", "qcow2_format.py"):
        for candidate in (src.with_name(name), src.with_name(name + ".txt")):
            if candidate.exists():
                shutil.copyfile(candidate, peer / name)
                break
    return [PY, str(peer / "qcow2.py")]


# --- the table ---------------------------------------------------------------------------

def rows(work: Path, qcow2py: Optional[List[str]]) -> List[Row]:
    small = str(small_image(work / "small.qcow2"))
    zlib_image, zstd_image = (str(p) for p in compressed_images(work))
    frag = str(fragmented_image(work))
    big = work / "big.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", str(big), "1T")
    names = fleet(work, 1000)
    out_ours, out_qemu = work / "ours.raw", work / "qemu.raw"

    def convert_row(image: str, ctype: str) -> Row:
        return Row(f"convert 1 GiB {ctype} image to raw vs qemu-img convert -O raw",
                   [OURS, "convert", image, str(out_ours)],
                   ["qemu-img", "convert", "-O", "raw", image, str(out_qemu)],
                   "<= 0.8x", ratio_at_most(0.8), files=(out_ours, out_qemu), big=True)

    compat = [PY, "-m", "qcow2kit.compat"]
    table = []
    for mode in (["dump-header"], ["dump-header-exts"], ["dump-header", "-j"]):
        table.append(Row(f"compat {' '.join(mode)} vs qcow2.py, same interpreter",
                         compat + [small, *mode], None if qcow2py is None else
                         qcow2py + [small, *mode], "<= 1.0x", ratio_at_most(1.0),
                         same=lambda a, b: a == b, startup=True))
    for command in (["dump"], ["info"], ["snapshots"]):
        table.append(Row(f"qcow2kit {command[0]} (small image) vs the floor",
                         [OURS, *command, small], FLOOR, "<= 1.15x", ratio_at_most(1.15),
                         startup=True))
    table += [
        Row("check, 1 GiB zlib image vs qemu-img check", [OURS, "check", "--json", zlib_image],
            ["qemu-img", "check", "--output=json", zlib_image], "<= 60 ms", at_most_ms(60),
            same=json_equal),
        Row("map --json, 1 GiB zlib image vs qemu-img map", [OURS, "map", "--json", zlib_image],
            ["qemu-img", "map", "--output=json", zlib_image], "<= 60 ms", at_most_ms(60),
            same=lambda a, b: a == b),
        Row("check, fragmented 100 GiB vs qemu-img check", [OURS, "check", "--json", frag],
            ["qemu-img", "check", "--output=json", frag], "<= 1.0x", ratio_at_most(1.0),
            same=json_equal),
        Row("map --json, fragmented 100 GiB vs qemu-img map", [OURS, "map", "--json", frag],
            ["qemu-img", "map", "--output=json", frag], "<= 1.0x", ratio_at_most(1.0),
            same=lambda a, b: a == b),
        Row("map (text), fragmented 100 GiB vs qemu-img map", [OURS, "map", frag],
            ["qemu-img", "map", frag], "<= 1.0x", ratio_at_most(1.0), same=lambda a, b: a == b),
        Row("check of 1000 small images in one run vs a shell loop of qemu-img check",
            [OURS, "check", "--json", *names],
            ["sh", "-c", 'for f in "$@"; do qemu-img check --output=json "$f"; done', "sh",
             *names], "<= 1.0x", ratio_at_most(1.0), same=json_lines_equal_each, big=True),
        convert_row(zlib_image, "zlib"),
        convert_row(zstd_image, "zstd"),
        Row("check, 1 TiB preallocation=metadata vs qemu-img check",
            [OURS, "check", "--json", str(big)], ["qemu-img", "check", "--output=json", str(big)],
            "<= 0.7x", ratio_at_most(0.7), same=json_equal, big=True),
        Row("map --json, 1 TiB preallocation=metadata vs qemu-img map",
            [OURS, "map", "--json", str(big)], ["qemu-img", "map", "--output=json", str(big)],
            "<= 0.7x", ratio_at_most(0.7), same=lambda a, b: a == b, big=True),
    ]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each side (median)")
    parser.add_argument("--big-runs", type=int, default=3,
                        help="timed runs of the convert, 1 TiB and 1000-image jobs")
    parser.add_argument("--qcow2py", default=os.environ.get("QCOW2PY"),
                        help="qemu's tests/qemu-iotests/qcow2.py (qcow2_format.py beside it)")
    parser.add_argument("--workdir", help="where the temporary folder of images goes")
    parser.add_argument("--only", help="only the jobs whose name contains this")
    parser.add_argument("--instructions", action="store_true",
                        help="also count the start-up jobs' instructions (valgrind); the "
                             "goal is then judged on that count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="qcow2kit-bench-") as tmp:
        work = Path(tmp)
        print(f"making the images in {work} ...", file=sys.stderr)
        table = rows(work, qcow2py_command(args.qcow2py, work))
        load = os.getloadavg()[0]
        print(f"qcow2kit vs peer, median of {args.runs} runs ({args.big_runs} for convert, "
              f"1 TiB and 1000 images), {os.cpu_count()} CPUs, load average {load:.1f} at "
              "the start\n")
        print("| job | qcow2kit | peer | ratio | CPU ratio | peak MiB ours / peer | "
              "instructions ratio | memory ok | goal | holds | same output |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in table:
            if args.only and args.only not in row.job:
                continue
            print(measure(row, args.big_runs if row.big else args.runs, work,
                          args.instructions), flush=True)


if __name__ == "__main__":
    main()
