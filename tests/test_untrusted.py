"""Untrusted and live images: the files an image names, qemu's read locks, and names
printed to a terminal.

Hostile chains are made with qemu-img itself (create -u, rebase -u); in default mode
qcow2kit must read them as qemu does, in safe mode refuse them. Every command runs
as a child process with a timeout, so that a FIFO that blocks fails the test.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import unicodedata
from pathlib import Path
from typing import Dict, Optional

import pytest

import imagekit
from live import served
from ourcmd import QCOW2KIT
from qcow2kit import exits, open_image

TIMEOUT = 30
BACKING_FORMAT_MAGIC = 0xE2792ACA
FEATURE_TABLE_MAGIC = 0x6803F857
SECRET = b"host secret " * 512  # 6 KiB that must not become guest data in safe mode
CHAIN_COMMANDS = (["map", "--json"], ["cat", "--length", "4096"], ["convert", "-"],
                  ["info", "--backing-chain"])


def qcow2kit(*args: str, cwd: Path, env: Optional[Dict[str, str]] = None
             ) -> subprocess.CompletedProcess:
    return subprocess.run([*QCOW2KIT, *args], capture_output=True, cwd=cwd, timeout=TIMEOUT,
                          env=None if env is None else {**os.environ, **env})


def qemu(*args: str, cwd: Path) -> bytes:
    proc = subprocess.run(args, capture_output=True, cwd=cwd, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def only_error(proc: subprocess.CompletedProcess, status: int = exits.BAD_IMAGE) -> str:
    text = proc.stderr.decode()
    assert proc.returncode == status, (proc.returncode, text)
    assert "Traceback" not in text and text.count("\n") == 1, text
    return text.strip()


def qemu_raw(image: str, cwd: Path, out: Path) -> bytes:
    qemu("qemu-img", "convert", "-O", "raw", image, str(out), cwd=cwd)
    return out.read_bytes()


# --- hostile chains ---------------------------------------------------------------------------

@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A folder for images (place/images) beside one they must not reach (place/outside)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.raw").write_bytes(SECRET)
    return tmp_path


def _absolute_backing(d: Path) -> str:
    imagekit.run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b",
                 str(d.parent / "outside" / "secret.raw"), "-F", "raw", "abs.qcow2", "1M", cwd=d)
    return "abs.qcow2"


def _escaping_backing(d: Path) -> str:
    imagekit.run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "../outside/secret.raw",
                 "-F", "raw", "up.qcow2", "1M", cwd=d)
    return "up.qcow2"


def _symlinked_backing(d: Path) -> str:
    (d / "inside.raw").symlink_to("../outside/secret.raw")
    imagekit.run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "inside.raw",
                 "-F", "raw", "link.qcow2", "1M", cwd=d)
    return "link.qcow2"


def _absolute_data_file(d: Path) -> str:
    data = d.parent / "outside" / "data.raw"
    imagekit.create(d / "absdata.qcow2", "1M", data_file=str(data))
    imagekit.qemu_io(d / "absdata.qcow2", "write -P 0x11 0 64k")
    return "absdata.qcow2"


def _escaping_data_file(d: Path) -> str:
    imagekit.create(d / "updata.qcow2", "1M", data_file="../outside/updata.raw")
    imagekit.qemu_io(d / "updata.qcow2", "write -P 0x22 0 64k")
    return "updata.qcow2"


HOSTILE = {"absolute backing file": (_absolute_backing, "an absolute name"),
           "backing file outside": (_escaping_backing, "outside the image's directory"),
           "backing file symlinked outside": (_symlinked_backing,
                                              "outside the image's directory"),
           "absolute data file": (_absolute_data_file, "an absolute name"),
           "data file outside": (_escaping_data_file, "outside the image's directory")}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_default_mode_reads_hostile_chains_as_qemu(place: Path, case: str) -> None:
    d = place / "images"
    image = HOSTILE[case][0](d)
    proc = qcow2kit("convert", image, "-", cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == qemu_raw(image, d, place / "qemu.raw")
    proc = qcow2kit("map", "--json", image, cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == qemu("qemu-img", "map", "--output=json", image, cwd=d)


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("how", ["--safe", "QCOW2KIT_SAFE=1"])
def test_safe_mode_refuses_hostile_chains(place: Path, case: str, how: str) -> None:
    d = place / "images"
    build, why = HOSTILE[case]
    image = build(d)
    role = "backing file" if "backing" in case else "external data file"
    option, env = ([how], None) if how == "--safe" else ([], {"QCOW2KIT_SAFE": "1"})
    for command in CHAIN_COMMANDS + (["convert", "out.raw"],):
        proc = qcow2kit(command[0], *option, image, *command[1:], cwd=d, env=env)
        line = only_error(proc)
        assert line.startswith(f"qcow2kit: {image}: {role}: '"), line
        assert f"' refused in safe mode: {why}" in line, line
        if "outside" in why:
            assert line.endswith(f" {os.path.realpath(d)}"), line
        assert proc.stdout == b"" and b"host secret" not in proc.stdout
    assert not (d / "out.raw").exists()


def test_safe_mode_follows_a_chain_inside_the_directory(images, tmp_path: Path) -> None:
    path = images["backing_chain"]
    for command in CHAIN_COMMANDS:
        proc = qcow2kit(command[0], "--safe", path.name, *command[1:], cwd=path.parent)
        assert proc.returncode == 0 and proc.stderr == b"", (command, proc.stderr)
    proc = qcow2kit("convert", "--safe", path.name, "-", cwd=path.parent)
    assert proc.stdout == qemu_raw(path.name, path.parent, tmp_path / "qemu.raw")


def test_safe_env_can_be_turned_off(place: Path) -> None:
    d = place / "images"
    image = _absolute_backing(d)
    proc = qcow2kit("map", image, cwd=d, env={"QCOW2KIT_SAFE": "0"})
    assert proc.returncode == 0, proc.stderr


# --- FIFOs, devices and sockets ------------------------------------------------------------------

def _fifo(d: Path) -> str:
    os.mkfifo(d / "pipe")
    return "pipe"


def _socket(d: Path) -> str:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))  # left bound: the file stays a socket
    return "sock"


SPECIAL = {"FIFO": (_fifo, "a FIFO"), "socket": (_socket, "a socket"),
           "character device": (lambda d: "/dev/zero", "a character device")}


@pytest.mark.parametrize("kind", sorted(SPECIAL))
@pytest.mark.parametrize("fmt", ["raw", None])
def test_special_backing_file_is_refused_without_hanging(tmp_path: Path, kind: str,
                                                         fmt: Optional[str]) -> None:
    """Without a format, qemu (and qcow2kit before) opened the file to probe it: a
    FIFO without writer blocked for ever."""
    make, words = SPECIAL[kind]
    name = make(tmp_path)
    imagekit.run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "raw",
                 "top.qcow2", "1M", cwd=tmp_path)
    if fmt is None:  # qemu-img insists on a format: drop its extension afterwards
        drop = qcow2kit("del-header-ext", "top.qcow2", hex(BACKING_FORMAT_MAGIC), cwd=tmp_path)
        assert drop.returncode == 0, drop.stderr
    for command in CHAIN_COMMANDS:
        start = time.monotonic()
        proc = qcow2kit(command[0], "top.qcow2", *command[1:], cwd=tmp_path)
        assert time.monotonic() - start < TIMEOUT / 2
        assert only_error(proc) == (f"qcow2kit: top.qcow2: backing file: '{name}' refused: "
                                    f"{words}, not a regular file (--allow-special follows it)")
        proc = qcow2kit(command[0], "--safe", "--allow-special", "top.qcow2", *command[1:],
                        cwd=tmp_path)
        assert "refused in safe mode" in only_error(proc)


def test_fifo_data_file_is_refused(tmp_path: Path) -> None:
    imagekit.create(tmp_path / "img.qcow2", "1M", data_file="data.raw")
    (tmp_path / "data.raw").unlink()
    os.mkfifo(tmp_path / "data.raw")
    for command in CHAIN_COMMANDS:
        proc = qcow2kit(command[0], "img.qcow2", *command[1:], cwd=tmp_path)
        assert only_error(proc) == ("qcow2kit: img.qcow2: external data file: 'data.raw' "
                                    "refused: a FIFO, not a regular file (--allow-special "
                                    "follows it)")


def test_allow_special_follows_a_device(tmp_path: Path) -> None:
    imagekit.run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/dev/zero", "-F", "raw",
                 "top.qcow2", "1M", cwd=tmp_path)
    proc = qcow2kit("map", "--json", "--allow-special", "top.qcow2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == qemu("qemu-img", "map", "--output=json", "top.qcow2", cwd=tmp_path)


# --- overriding the chain ----------------------------------------------------------------------------

def _null_backing(image: str) -> str:
    return json.dumps({"driver": "qcow2", "file": {"driver": "file", "filename": image},
                       "backing": None})


@pytest.mark.parametrize("kind", ["backing", "backing_chain", "backing_short"])
def test_no_backing_is_qemus_null_backing(images, tmp_path: Path, kind: str) -> None:
    path = images[kind]
    spec = "json:" + _null_backing(path.name)
    proc = qcow2kit("convert", "--no-backing", path.name, "-", cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == qemu_raw(spec, path.parent, tmp_path / "qemu.raw")
    proc = qcow2kit("map", "--json", "--no-backing", path.name, cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == qemu("qemu-img", "map", "--output=json", spec, cwd=path.parent)
    proc = qcow2kit("info", "--json", "--backing-chain", "--no-backing", path.name,
                    cwd=path.parent)
    assert proc.returncode == 0 and len(json.loads(proc.stdout)) == 1


def test_backing_override(place: Path) -> None:
    """--backing FILE replaces a hostile backing file; the result is qemu's for an
    image rebased onto FILE."""
    d = place / "images"
    image = _absolute_backing(d)
    other = imagekit.create(d / "other.qcow2", "1M")
    imagekit.qemu_io(other, "write -P 0x77 0 512k")
    imagekit.qemu_io(d / image, "write -P 0x66 64k 64k")
    rebased = d / "rebased.qcow2"
    rebased.write_bytes((d / image).read_bytes())
    imagekit.run("qemu-img", "rebase", "-u", "-b", "other.qcow2", "-F", "qcow2", rebased.name,
                 cwd=d)
    proc = qcow2kit("convert", "--safe", "--backing", "other.qcow2", image, "-", cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == qemu_raw(rebased.name, d, place / "qemu.raw")
    proc = qcow2kit("map", "--json", "--backing", "other.qcow2", image, cwd=d)
    assert proc.stdout == qemu("qemu-img", "map", "--output=json", rebased.name, cwd=d) \
        .replace(b"rebased.qcow2", image.encode())
    proc = qcow2kit("map", "--no-backing", "--backing", "other.qcow2", image, cwd=d)
    assert proc.returncode == exits.USAGE and b"exclude each other" in proc.stderr


# --- live images -----------------------------------------------------------------------------------

READERS = (["dump"], ["info"], ["info", "--backing-chain"], ["check"], ["map"], ["snapshots"],
           ["bitmaps"], ["whatis", "0"], ["cat", "--length", "512"], ["convert", "-"],
           ["layout", "-o", "live.svg"])


def test_image_a_qemu_process_writes_to(image_copy, tmp_path: Path) -> None:
    path = image_copy("snapshots")
    before = path.read_bytes()
    with served(path, tmp_path):
        peer = subprocess.run(["qemu-img", "check", path.name], capture_output=True,
                              cwd=path.parent)
        assert peer.returncode == 1 and b'Failed to get shared "write" lock' in peer.stderr
        for command in READERS:
            proc = qcow2kit(command[0], path.name, *command[1:], cwd=path.parent)
            assert only_error(proc) == (
                f'qcow2kit: {path.name}: image lock: failed to get shared "write" lock: is '
                f"another process (qemu) writing to {path.name}? -U/--force-share reads it "
                "anyway"), command
            proc = qcow2kit(command[0], "-U", path.name, *command[1:], cwd=path.parent)
            assert proc.returncode == 0, (command, proc.stderr)
            assert proc.stderr.decode().splitlines()[0] == (
                f"qcow2kit: warning: {path.name}: a qemu process is writing to it; the "
                "result may be inconsistent")
    assert path.read_bytes() == before


def test_backing_file_a_qemu_process_writes_to(image_copy, tmp_path: Path) -> None:
    path = image_copy("backing")
    base = path.parent / "backing_base.qcow2"
    with served(base, tmp_path):
        proc = qcow2kit("convert", path.name, "-", cwd=path.parent)
        assert "writing to backing_base.qcow2?" in only_error(proc)


def test_reading_holds_qemus_read_lock(images, tmp_path: Path) -> None:
    """While qcow2kit reads an image, no qemu process can start writing to it."""
    path = tmp_path / "v3.qcow2"
    path.write_bytes(images["v3"].read_bytes())
    write = ["qemu-io", "-f", "qcow2", "-c", "write 0 512", str(path)]
    with open_image(path):
        proc = subprocess.run(write, capture_output=True)
        assert proc.returncode == 1 and b'Failed to get "write" lock' in proc.stderr
    assert subprocess.run(write, capture_output=True).returncode == 0


# --- names printed to a terminal ---------------------------------------------------------------------

HOSTILE_NAME = "\x1b[2J\x1b[31mevil\nID fake"
WIDE_NAME = "日本語ディスク"  # 14 columns


def columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_snapshot_names_escaped_and_aligned(image_copy) -> None:
    path = image_copy("v3")
    for name in (HOSTILE_NAME, WIDE_NAME, "plain"):
        imagekit.run("qemu-img", "snapshot", "-c", name, path.name, cwd=path.parent)
    proc = qcow2kit("snapshots", path.name, cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    qemu_part = qemu("qemu-img", "snapshot", "-l", path.name, cwd=path.parent)
    assert proc.stdout.startswith(qemu_part)  # qemu's listing: byte for byte
    details = proc.stdout[len(qemu_part):].decode().split("\n")
    assert details[:2] == ["", "Snapshot details:"] and details[-1] == ""
    header, *rows = details[2:-1]
    assert len(rows) == 3 and "\x1b" not in "".join(rows)
    assert rows[0].startswith("1         \\x1b[2J\\x1b[31mevil\\nID fake ")
    assert rows[1].startswith(f"2         {WIDE_NAME}   ")
    assert columns(rows[1]) == columns(rows[2]) == columns(header)


def test_whatis_escapes_names(image_copy) -> None:
    path = image_copy("v3")
    imagekit.run("qemu-img", "snapshot", "-c", HOSTILE_NAME, path.name, cwd=path.parent)
    proc = qcow2kit("whatis", path.name, hex(_snapshot_offset(path)), cwd=path.parent)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 2 and "\x1b" not in proc.stdout.decode()
    assert "(snapshot 1 (\\x1b[2J\\x1b[31mevil\\nID fake))" in lines[1]


def _snapshot_offset(path: Path) -> int:
    """The header's snapshot_offset (qcow2.txt: bytes 64..71)."""
    return int.from_bytes(path.read_bytes()[64:72], "big")


def test_feature_names_escaped(tmp_path: Path) -> None:
    """The image's own feature name table, printed after qemu's part of info."""
    path = imagekit.create(tmp_path / "lazy.qcow2", "1M", lazy_refcounts="on")
    table = next(off for off, magic, _ in imagekit.extensions(path)
                 if magic == FEATURE_TABLE_MAGIC)
    data = path.read_bytes()
    entry = next(table + 8 + 48 * i for i in range(8)  # 48-byte entries: type, bit, name
                 if data[table + 8 + 48 * i:table + 10 + 48 * i] == b"\x01\x00")
    with open(path, "r+b") as f:  # the name of compatible bit 0, lazy refcounts (set)
        f.seek(entry + 2)
        f.write(b"\x1b]0;owned\x07\nlazy".ljust(46, b"\0"))
    proc = qcow2kit("info", path.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "    compatible: \\x1b]0;owned\\x07\\nlazy (bit 0)\n" in proc.stdout.decode()
    qemu_part = qemu("qemu-img", "info", path.name, cwd=tmp_path)
    assert proc.stdout.startswith(qemu_part)
    assert qcow2kit("info", "--qemu", path.name, cwd=tmp_path).stdout == qemu_part


def test_check_explanations_escape_names(image_copy) -> None:
    """The explanation under a finding is qcow2kit's own: a snapshot name in it is
    escaped, while qemu's finding above it stays as qemu prints it."""
    import rawimage
    path = image_copy("v3")
    imagekit.run("qemu-img", "snapshot", "-c", HOSTILE_NAME, path.name, cwd=path.parent)
    header = rawimage.Header(path)
    _, l1_offset, _, _ = next(header.snapshots())
    rawimage.add_refcount(header, l1_offset // header.cs, 1)  # a leak qemu-img reports
    peer = subprocess.run(["qemu-img", "check", path.name], capture_output=True, cwd=path.parent)
    proc = qcow2kit("check", "--explain", path.name, cwd=path.parent)
    assert proc.returncode == peer.returncode == 3
    finding, explanation = proc.stderr.decode().splitlines()
    assert finding == peer.stderr.decode().strip()
    assert explanation.endswith("referenced by: snapshot 1 (\\x1b[2J\\x1b[31mevil\\nID fake) "
                                "L1 table"), explanation
