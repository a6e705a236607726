"""qemu-img and qcow2kit run the same way, for byte-for-byte comparisons.

Both run in a given folder (qemu resolves relative names from its working directory)
and a given time zone (qemu prints snapshot dates in local time). qcow2kit runs in
process through click's test runner.
"""
from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple, TypeVar

from click.testing import CliRunner, Result

import imagekit
from qcow2kit.cli import main as cli

A = TypeVar("A")
B = TypeVar("B")
UTC = "UTC"
LUKS_OPTS = "driver=qcow2,file.filename={},encrypt.key-secret=sec0"


def strict_zip(a: Sequence[A], b: Sequence[B]) -> List[Tuple[A, B]]:
    """Pairs of a and b, which must be as long as each other (zip(strict=True) needs
    Python 3.10)."""
    assert len(a) == len(b), f"{len(a)} items paired with {len(b)}"
    return list(zip(a, b))


def qemu_img(*args: str, cwd: Path, tz: str = UTC) -> subprocess.CompletedProcess:
    """qemu-img ARGS in cwd; stdout and stderr as bytes."""
    return subprocess.run(["qemu-img", *args], capture_output=True, check=False, cwd=cwd,
                          env={**os.environ, "TZ": tz})


def qemu_ok(*args: str, cwd: Path, tz: str = UTC) -> bytes:
    proc = qemu_img(*args, cwd=cwd, tz=tz)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@contextlib.contextmanager
def _inside(cwd: Path, tz: str) -> Iterator[None]:
    old_cwd, old_tz = os.getcwd(), os.environ.get("TZ")
    os.chdir(cwd)
    os.environ["TZ"] = tz
    time.tzset()
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_tz is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old_tz
        time.tzset()


def qcow2kit(*args: str, cwd: Path, tz: str = UTC) -> Result:
    """qcow2kit ARGS in cwd, in process."""
    with _inside(cwd, tz):
        return CliRunner().invoke(cli, list(args))


def ours_ok(*args: str, cwd: Path, tz: str = UTC) -> bytes:
    result = qcow2kit(*args, cwd=cwd, tz=tz)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result.stdout_bytes


def one_line_error(result: Result) -> str:
    """The error of a run that must fail with exit status 1 and one line on stderr."""
    assert result.exit_code == 1, (result.stdout, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qcow2kit: "), result.stderr
    return lines[0]


def snapshot_list_args(kind: str, path: Path) -> List[str]:
    """`qemu-img snapshot -l` arguments for an image (the LUKS image gets its secret)."""
    if kind == "luks":
        return ["snapshot", "-l", "--object", imagekit.SECRET, "--image-opts",
                LUKS_OPTS.format(path.name)]
    return ["snapshot", "-l", path.name]


# --- the header, read with struct (independent of qcow2kit) --------------------------

HEADER_FIELDS = {  # name: (offset, struct format)
    "version": (4, ">I"), "cluster_bits": (20, ">I"), "nb_snapshots": (60, ">I"),
    "snapshots_offset": (64, ">Q"), "incompatible": (72, ">Q"), "compatible": (80, ">Q"),
    "autoclear": (88, ">Q"),
}


def header(path: Path) -> Dict[str, int]:
    data = Path(path).read_bytes()[:104]
    out = {name: struct.unpack_from(fmt, data, off)[0]
           for name, (off, fmt) in HEADER_FIELDS.items()}
    if out["version"] < 3:
        out.update(incompatible=0, compatible=0, autoclear=0)
    return out


def set_header(path: Path, name: str, value: int) -> None:
    offset, fmt = HEADER_FIELDS[name]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def feature_table(path: Path) -> Dict[Tuple[int, int], str]:
    """The image's feature name table: (type, bit) -> name."""
    data = Path(path).read_bytes()
    out = {}
    for off, magic, length in imagekit.extensions(path):
        if magic == 0x6803F857:
            for pos in range(off + 8, off + 8 + length - 47, 48):
                kind, bit = data[pos], data[pos + 1]
                out[(kind, bit)] = data[pos + 2:pos + 48].split(b"\0")[0].decode()
    return out
