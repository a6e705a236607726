"""Where convert and cat write: never an input, never a file qemu uses, every write
checked, nothing half-written left behind unnamed, holes where qemu-img leaves them.

Each case runs the real command (ourcmd.QCOW2KIT) and checks its exit status and
its one stderr line; qemu-img is the peer where it has an opinion (locks, holes).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import random
import re
import resource
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

import imagekit
from live import served
from ourcmd import QCOW2KIT, REPO
from qcow2kit import exits
from qcow2kit import output as output_module

TIMEOUT = 60


def qcow2kit(*args: str, cwd: Optional[Path] = None, stdout=subprocess.PIPE,
             preexec: Optional[Callable[[], None]] = None) -> subprocess.CompletedProcess:
    return subprocess.run([*QCOW2KIT, *args], stdout=stdout, stderr=subprocess.PIPE,
                          cwd=cwd, timeout=TIMEOUT, preexec_fn=preexec)


def error_lines(proc: subprocess.CompletedProcess) -> List[str]:
    text = proc.stderr.decode()
    assert "Traceback" not in text, text
    return text.splitlines()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(folder: Path) -> Dict[str, str]:
    return {p.name: digest(p) for p in sorted(folder.iterdir()) if p.is_file()}


# --- an output that is an input -------------------------------------------------------

def _same_path(d: Path, image: Path) -> str:
    return image.name


def _dot_path(d: Path, image: Path) -> str:
    return f"./{image.name}"


def _symlink(d: Path, image: Path) -> str:
    (d / "link.raw").symlink_to(image.name)
    return "link.raw"


def _hard_link(d: Path, image: Path) -> str:
    os.link(image, d / "hard.raw")
    return "hard.raw"


INPUT_NAMES = {"same path": ("backing_chain", _same_path, "the image chain_top.qcow2"),
               "dot path": ("backing_chain", _dot_path, "the image chain_top.qcow2"),
               "symlink": ("backing_chain", _symlink, "the image chain_top.qcow2"),
               "hard link": ("backing_chain", _hard_link, "the image chain_top.qcow2"),
               "backing file": ("backing_chain", lambda d, i: "chain_mid.qcow2",
                                "the backing file chain_mid.qcow2"),
               "raw backing file": ("backing_chain", lambda d, i: "chain_base.raw",
                                    "the backing file chain_base.raw"),
               "data file": ("data_file", lambda d, i: "data_file.data",
                             "the external data file data_file.data")}


@pytest.mark.parametrize("case", sorted(INPUT_NAMES))
def test_output_that_is_an_input_is_refused(image_copy, case: str) -> None:
    kind, name_of, what = INPUT_NAMES[case]
    path = image_copy(kind)
    output = name_of(path.parent, path)
    before = digests(path.parent)
    proc = qcow2kit("convert", path.name, output, cwd=path.parent)
    assert proc.returncode == exits.OUTPUT_FAILED
    assert error_lines(proc) == [f"qcow2kit: {output}: refused: it is the same file as "
                                 f"{what}, an input"]
    assert digests(path.parent) == before


def test_stdout_that_is_an_input_is_refused(image_copy) -> None:
    """`convert IMAGE - >> BACKING` would grow the file being read."""
    path = image_copy("backing_chain")
    base = path.parent / "chain_base.raw"
    before = digests(path.parent)
    for command in (["convert", path.name, "-"], ["cat", path.name]):
        with open(base, "ab") as out:
            proc = qcow2kit(*command, cwd=path.parent, stdout=out)
        assert proc.returncode == exits.OUTPUT_FAILED
        assert error_lines(proc) == ["qcow2kit: stdout: refused: it is the same file as "
                                     "the backing file chain_base.raw, an input"]
        assert digests(path.parent) == before


def test_qemu_img_refuses_the_same(image_copy) -> None:
    """The peer: qemu-img convert refuses the image as its own output too."""
    path = image_copy("v3")
    before = digest(path)
    proc = subprocess.run(["qemu-img", "convert", "-O", "raw", path.name, path.name],
                          capture_output=True, cwd=path.parent)
    assert proc.returncode == 1 and b'"write" lock' in proc.stderr
    assert digest(path) == before


# --- qemu's locks ---------------------------------------------------------------------------

def test_output_in_use_by_qemu_is_refused(image_copy, images, tmp_path: Path) -> None:
    live = image_copy("v3")
    before = digest(live)
    with served(live, tmp_path):
        peer = subprocess.run(["qemu-img", "convert", "-O", "raw", str(images["v2"]), str(live)],
                              capture_output=True)
        assert peer.returncode == 1 and b'Failed to get "write" lock' in peer.stderr
        proc = qcow2kit("convert", str(images["v2"]), str(live))
        assert proc.returncode == exits.OUTPUT_FAILED
        assert error_lines(proc) == [f'qcow2kit: {live}: failed to get "write" lock: is '
                                     "another process (qemu) using the image?"]
        assert digest(live) == before
    assert digest(live) == before


def test_output_write_lock_is_held_while_writing(images, tmp_path: Path,
                                                 monkeypatch) -> None:
    """While convert writes, qemu cannot open the output for writing."""
    from click.testing import CliRunner
    from qcow2kit import output
    from qcow2kit.cli import main

    out = tmp_path / "out.raw"
    tries: List[subprocess.CompletedProcess] = []
    write = output.Output.write

    def write_then_try_qemu(self, offset: int, data: bytes) -> None:
        if not tries:
            tries.append(subprocess.run(["qemu-io", "-f", "raw", "-c", "write 0 512", str(out)],
                                        capture_output=True))
        write(self, offset, data)
    monkeypatch.setattr(output.Output, "write", write_then_try_qemu)
    result = CliRunner().invoke(main, ["convert", str(images["v3"]), str(out)])
    assert result.exit_code == 0, result.output
    assert len(tries) == 1 and b'Failed to get "write" lock' in tries[0].stderr
    after = subprocess.run(["qemu-io", "-f", "raw", "-c", "read 0 512", str(out)],
                           capture_output=True)
    assert after.returncode == 0, after.stderr  # released at the end


# --- every write checked ---------------------------------------------------------------------

@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (the tests run as root, as the project's machine does)."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_full_filesystem(images, full_fs: Path) -> None:
    """The chain has 2 MiB of data: it cannot fit, and each way of writing says so."""
    image = str(images["backing_chain"])
    out = full_fs / "out.raw"
    proc = qcow2kit("convert", image, str(out))
    assert proc.returncode == exits.OUTPUT_FAILED
    assert error_lines(proc) == [f"qcow2kit: {out}: No space left on device"]
    assert list(full_fs.iterdir()) == []  # the output this run created is removed
    for command in (["convert", image, "-"], ["cat", image]):
        with open(full_fs / "piped.raw", "wb") as piped:
            proc = qcow2kit(*command, stdout=piped)
        assert proc.returncode == exits.OUTPUT_FAILED, command
        assert error_lines(proc) == ["qcow2kit: stdout: No space left on device"]
        (full_fs / "piped.raw").unlink()
    existing = full_fs / "existing.raw"
    existing.write_bytes(b"precious")
    proc = qcow2kit("convert", image, str(existing))
    assert proc.returncode == exits.OUTPUT_FAILED
    assert error_lines(proc) == [f"qcow2kit: {existing}: No space left on device",
                                 f"qcow2kit: {existing}: the existing file was overwritten "
                                 "and is left incomplete"]


def test_dev_full_and_dev_null(images) -> None:
    """Errors name the output, not the image ("snapshots.qcow2: Invalid argument" was
    printed for /dev/null); a device is written in order, every byte."""
    image = str(images["snapshots"])
    proc = qcow2kit("convert", image, "/dev/full")
    assert proc.returncode == exits.OUTPUT_FAILED
    assert error_lines(proc) == ["qcow2kit: /dev/full: No space left on device"]
    with open("/dev/full", "wb") as full:
        proc = qcow2kit("cat", image, stdout=full)
    assert proc.returncode == exits.OUTPUT_FAILED
    assert error_lines(proc) == ["qcow2kit: stdout: No space left on device"]
    proc = qcow2kit("convert", image, "/dev/null")
    assert proc.returncode == 0 and proc.stderr == b""


@pytest.mark.parametrize("args", [["cat"], ["convert", "-"]])
def test_reader_that_goes_away_ends_the_run_quietly(images, args) -> None:
    """`qcow2kit cat IMG | head -c 10`: the pipe closes, the run ends with 141 and
    nothing on stderr, as cat's does."""
    image = str(images["snapshots"])
    proc = subprocess.Popen([*QCOW2KIT, args[0], image, *args[1:]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    assert proc.wait(timeout=60) == exits.READER_GONE
    assert proc.stderr.read() == b""


def test_short_write(images, tmp_path: Path) -> None:
    """A file-size limit cuts a write short, then refuses the next one (EFBIG)."""
    limit = (1 << 20) + 1000

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    out = tmp_path / "out.raw"
    proc = qcow2kit("convert", str(images["backing_chain"]), str(out), preexec=small_files)
    assert proc.returncode == exits.OUTPUT_FAILED
    assert error_lines(proc) == [f"qcow2kit: {out}: File too large"]
    assert not out.exists()


def test_io_error(images, tmp_path: Path, monkeypatch) -> None:
    """EIO from the disk (injected: no device-mapper error target here) names the
    output, and the output this run created is removed."""
    import errno
    from click.testing import CliRunner
    from qcow2kit.cli import main

    pwrite = os.pwrite
    calls: List[int] = []

    def failing(fd: int, data, offset: int) -> int:
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return pwrite(fd, data, offset)
    monkeypatch.setattr(os, "pwrite", failing)
    out = tmp_path / "out.raw"
    result = CliRunner().invoke(main, ["convert", str(images["backing_chain"]), str(out)])
    assert len(calls) == 2
    assert result.exit_code == exits.OUTPUT_FAILED
    assert result.stderr == f"qcow2kit: {out}: Input/output error\n"
    assert not out.exists()


def test_failed_conversion_leaves_no_output(image_copy, tmp_path: Path) -> None:
    """A corrupt compressed cluster is found after the output was created (it used
    to stay behind, empty): the error names the image and the output is gone."""
    path = image_copy("zlib_4k")
    data = bytearray(path.read_bytes())
    l2 = int.from_bytes(data[int.from_bytes(data[40:48], "big"):][:8], "big") & 0x00FFFFFFFFFFFE00
    entry = int.from_bytes(data[l2:l2 + 8], "big")  # guest cluster 0: compressed (qcow2.txt)
    assert entry >> 62 == 1, hex(entry)
    start = entry & ((1 << 62 - (12 - 8)) - 1)  # x = 62 - (cluster_bits - 8) offset bits
    data[start:start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    out = tmp_path / "out.raw"
    proc = qcow2kit("convert", str(path), str(out))
    assert proc.returncode == exits.BAD_IMAGE
    [line] = error_lines(proc)
    assert line.startswith(f"qcow2kit: {path}: compressed cluster at offset {start:#x}: "), line
    assert not out.exists()


def test_missing_package_leaves_no_output(images, tmp_path: Path, monkeypatch) -> None:
    import sys
    from click.testing import CliRunner
    from qcow2kit.cli import main

    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.setitem(sys.modules, "compression.zstd", None)  # Python 3.14+
    out = tmp_path / "out.raw"
    result = CliRunner().invoke(main, ["convert", str(images["zstd"]), str(out)])
    assert result.exit_code == exits.BAD_IMAGE
    assert "pip install zstandard" in result.stderr
    assert not out.exists()


# --- interrupted -------------------------------------------------------------------------------

def _interruptible(*args: str) -> subprocess.Popen:
    """The command started as from a terminal, where Ctrl-C reaches it: with SIGINT at
    its default action even when the tests run with it ignored (a shell script's
    background job, nohup), which the command would otherwise inherit and keep."""
    return subprocess.Popen([*QCOW2KIT, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)


def test_interrupt_removes_the_output(tmp_path: Path) -> None:
    image = imagekit.create(tmp_path / "big.qcow2", "1G")
    imagekit.qemu_io(image, "write -P 0x5a 0 256M")
    out = tmp_path / "out.raw"
    proc = _interruptible("convert", str(image), str(out))
    _interrupt_when(proc, out.exists)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == exits.INTERRUPTED
    assert stderr.decode().splitlines() == ["qcow2kit: interrupted"]
    assert not out.exists()


def test_interrupt_names_a_partly_written_output(images, tmp_path: Path) -> None:
    """A FIFO that nobody reads from blocks the writer: SIGINT then stops it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # holds it open, reads nothing
    try:
        proc = _interruptible("convert", str(images["backing_chain"]), str(fifo))
        time.sleep(0.2)
        _interrupt_when(proc, lambda: _buffered(reader) > 0)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        os.close(reader)
    assert proc.returncode == exits.INTERRUPTED
    assert stderr.decode().splitlines() == ["qcow2kit: interrupted",
                                            f"qcow2kit: {fifo}: partly written"]


def _buffered(fd: int) -> int:
    """Bytes waiting in the pipe, left there (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


# --- holes where qemu-img leaves them --------------------------------------------------------

def _zero_heavy(d: Path) -> Path:
    """Data clusters written full of zeros, a few 4 KiB blocks and odd bytes of data."""
    p = imagekit.create(d / "zero_heavy.qcow2", "8M")
    imagekit.qemu_io(p, "write -P 0 0 8M", "write -P 0x11 100k 4k", "write -P 0x22 1M 512",
                     "write -P 0x33 3000k 6k", "write -P 0x44 8188k 4k")
    return p


def _chained_zeros(d: Path) -> Path:
    """A raw base and a qcow2 middle whose data is mostly zeros, under a small top."""
    base = d / "zeros_base.raw"
    with open(base, "wb") as f:
        f.write(bytes(3 << 20) + b"\x01" * 4096 + bytes((1 << 20) - 4096))
    mid = imagekit.create(d / "zeros_mid.qcow2", "6M", backing="zeros_base.raw",
                          backing_fmt="raw")
    imagekit.qemu_io(mid, "write -P 0 1M 2M", "write -P 0x02 2M 8k")
    top = imagekit.create(d / "zeros_top.qcow2", "6M", backing="zeros_mid.qcow2")
    imagekit.qemu_io(top, "write -P 0x03 5M 64k", "write -P 0 5184k 64k")
    return top


def _compressed(d: Path) -> Path:
    """Compressed clusters that decompress to zeros in parts and whole."""
    raw = d / "source.raw"
    with open(raw, "wb") as f:
        for i in range(256):
            f.write(bytes(65536) if i % 3 == 0 else
                    (b"%08d" % i) * 512 + bytes(65536 - 4096))
    p = d / "compressed.qcow2"
    imagekit.run("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(p))
    raw.unlink()
    return p


SPARSE_CASES = {"compressed": _compressed, "zero-heavy": _zero_heavy, "chained": _chained_zeros}


@pytest.mark.parametrize("case", sorted(SPARSE_CASES))
def test_allocation_at_most_qemu_img(tmp_path: Path, case: str) -> None:
    image = SPARSE_CASES[case](tmp_path)
    theirs, ours = tmp_path / "qemu.raw", tmp_path / "ours.raw"
    imagekit.run("qemu-img", "convert", "-O", "raw", image.name, str(theirs), cwd=tmp_path)
    proc = qcow2kit("convert", image.name, str(ours), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert digest(ours) == digest(theirs)
    assert ours.stat().st_blocks <= theirs.stat().st_blocks, \
        (ours.stat().st_blocks, theirs.stat().st_blocks)
    data = ours.read_bytes()  # every 4 KiB block of zeros is a hole, none of data is
    zero = [not any(data[i:i + 4096]) for i in range(0, len(data), 4096)]
    assert holes(ours) == zero


def holes(path: Path) -> List[bool]:
    """Per 4 KiB block of the file: whether it lies in a hole (SEEK_HOLE/SEEK_DATA)."""
    size = path.stat().st_size
    out = [True] * (-(-size // 4096))
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            try:
                data = os.lseek(f.fileno(), pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            end = os.lseek(f.fileno(), data, os.SEEK_HOLE)
            for block in range(data // 4096, -(-end // 4096)):
                out[block] = False
            pos = end
    return out


def test_existing_regular_output_is_replaced_sparse(images, tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    out.write_bytes(b"\xff" * (8 << 20))
    proc = qcow2kit("convert", str(images["prealloc_metadata"]), str(out))
    assert proc.returncode == 0 and proc.stderr == b""
    expected = tmp_path / "qemu.raw"
    imagekit.run("qemu-img", "convert", "-O", "raw", str(images["prealloc_metadata"]),
                 str(expected))
    assert digest(out) == digest(expected)
    assert out.stat().st_blocks <= expected.stat().st_blocks


# --- documented ----------------------------------------------------------------------------------

def test_exit_codes_are_documented() -> None:
    """`qcow2kit --help` and README's table give each exit status of exits.py."""
    proc = subprocess.run([*QCOW2KIT, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for code, words in ((exits.BAD_IMAGE, "the image or a file of its chain cannot be read"),
                        (exits.USAGE, "a usage error"),
                        (exits.OUTPUT_FAILED, "the output is refused or cannot be written"),
                        (exits.INTERRUPTED, "interrupted"),
                        (exits.READER_GONE, "the reader of stdout went away")):
        assert f"{code} {words}" in text
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Exit codes and errors", 1)[1].split("\n\n")[2]
    codes = [int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert codes == [exits.OK, exits.BAD_IMAGE, exits.USAGE, 3, exits.OUTPUT_FAILED,
                     exits.INTERRUPTED, exits.READER_GONE]


@pytest.mark.parametrize("offset", [0, 1, 4095, 4096, 6000])
def test_zero_blocks_found_alike_small_and_large(monkeypatch, offset: int) -> None:
    """A write's blocks of zeros on the output's 4 KiB grid, whether the write is
    scanned block by block (small) or with numpy (large): both give the ranges an
    independent scan of the grid gives."""
    rng = random.Random(offset)
    data = bytearray()
    for _ in range(40):  # zero and data blocks, runs of each, unaligned pieces
        data += bytes(rng.choice([1, 100, 4096, 8192, 5000])) if rng.random() < 0.5 else \
            rng.randbytes(rng.choice([1, 3000, 4096, 9000]))
    data[rng.randrange(len(data))] = 7  # a lone byte in a zero run
    data += bytes(12288)
    data[-6000] = 9  # inside a block whose first and last bytes are zeros
    edges = sorted({0, len(data), *range(-offset % 4096 or 4096, len(data), 4096)})
    expected, start = [], None
    for a, b in zip(edges, edges[1:]):
        busy = any(data[a:b])
        if busy and start is None:
            start = a
        if not busy and start is not None:
            expected.append((start, a))
            start = None
    if start is not None:
        expected.append((start, len(data)))
    view = memoryview(bytes(data))
    small = list(output_module.nonzero_blocks(view, offset))
    monkeypatch.setattr(output_module, "SMALL_VIEW", 0)
    large = list(output_module.nonzero_blocks(view, offset))
    assert small == large == expected
