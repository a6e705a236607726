"""The backing chain as qemu resolves it: one resolver (qcow2kit.chain) for every command.

An overlay with two backing format extensions is read with the last one, as qemu
reads it: map, convert and info agree with qemu-img on both orders.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import imagekit
from ourcmd import QCOW2KIT

BACKING_FORMAT = "0xe2792aca"  # qcow2.txt's backing file format name extension


def ours(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*QCOW2KIT, *args], capture_output=True, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc


def qemu_img(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc


def overlay_with_formats(tmp_path: Path, formats: tuple) -> Path:
    """base.qcow2 with data, and an overlay whose backing format extensions say
    formats, in that order (written with qcow2kit's own edit commands)."""
    base = imagekit.create(tmp_path / "base.qcow2", "4M")
    imagekit.qemu_io(base, "write -P 0xab 0 1M", "write -P 0xcd 2M 64k")
    top = imagekit.create(tmp_path / "top.qcow2", "4M", backing="base.qcow2")
    imagekit.qemu_io(top, "write -P 0x11 512k 64k")
    ours(tmp_path, "del-header-ext", top.name, BACKING_FORMAT)
    for fmt in formats:
        ours(tmp_path, "add-header-ext", top.name, BACKING_FORMAT, fmt)
    return top


@pytest.mark.parametrize("formats", [("raw", "qcow2"), ("qcow2", "raw")])
def test_last_backing_format_wins(tmp_path: Path, formats: tuple) -> None:
    top = overlay_with_formats(tmp_path, formats)
    dump = ours(tmp_path, "dump", top.name).stdout.decode()
    assert dump.index(f"'{formats[0]}'") < dump.index(f"'{formats[1]}'")
    expected = qemu_img(tmp_path, "map", "--output=json", top.name).stdout
    assert ours(tmp_path, "map", "--json", top.name).stdout == expected
    qemu_img(tmp_path, "convert", "-O", "raw", top.name, "theirs.raw")
    ours(tmp_path, "convert", top.name, "ours.raw")
    assert imagekit.file_sha256(tmp_path / "ours.raw") == \
        imagekit.file_sha256(tmp_path / "theirs.raw")
    theirs = json.loads(qemu_img(tmp_path, "info", "--output=json", top.name).stdout)
    info = json.loads(ours(tmp_path, "info", "--json", top.name).stdout)
    assert info["backing-filename-format"] == theirs["backing-filename-format"] == formats[1]
    chain = json.loads(ours(tmp_path, "info", "--json", "--backing-chain", top.name).stdout)
    qemu_chain = json.loads(qemu_img(tmp_path, "info", "--output=json", "--backing-chain",
                                     top.name).stdout)
    assert [i["format"] for i in chain] == [i["format"] for i in qemu_chain]


def test_chain_depth_limit(tmp_path: Path) -> None:
    """A chain deeper than chain.MAX_DEPTH is refused with one line, not followed."""
    from qcow2kit import chain

    names = [f"l{i}.qcow2" for i in range(chain.MAX_DEPTH + 2)]
    imagekit.create(tmp_path / names[0], "1M")
    for below, above in zip(names, names[1:]):
        imagekit.create(tmp_path / above, "1M", backing=below)
    proc = subprocess.run([*QCOW2KIT, "map", "--json", names[-1]], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "too deep" in proc.stderr
    proc = subprocess.run([*QCOW2KIT, "map", "--json", names[-2]], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_data_file_name_is_a_plain_name(tmp_path: Path) -> None:
    """qemu opens an external data file by its plain name: a `file:` prefix is part of
    the name (unlike a backing file's). With the data in a file of that very name, map
    and convert give what qemu-img gives."""
    top = imagekit.create(tmp_path / "img.qcow2", "1M", data_file="d.raw")
    imagekit.qemu_io(top, "write -P 0x5 0 64k")
    ours(tmp_path, "del-header-ext", top.name, "0x44415441")
    ours(tmp_path, "add-header-ext", top.name, "0x44415441", "file:d.raw")
    (tmp_path / "d.raw").rename(tmp_path / "file:d.raw")
    for args in ((), ("--json",)):
        qemu_args = ("--output=json",) if args else ()
        expected = qemu_img(tmp_path, "map", *qemu_args, top.name).stdout
        assert ours(tmp_path, "map", *args, top.name).stdout == expected
    qemu_img(tmp_path, "convert", "-O", "raw", top.name, "theirs.raw")
    ours(tmp_path, "convert", top.name, "ours.raw")
    assert imagekit.file_sha256(tmp_path / "ours.raw") == \
        imagekit.file_sha256(tmp_path / "theirs.raw")
