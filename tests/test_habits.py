"""Users' habits from qemu-img: --output=json|human wherever --json is, -f qcow2 on
every command that takes an image, map --start-offset/--max-length as qemu-img has
them, whatis --guest, and check --json --explain."""
from __future__ import annotations

import json
import subprocess
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import click
import pytest

import imagekit
import test_map
from ourcmd import QCOW2KIT
from sidebyside import qcow2kit, strict_zip
from qcow2kit.cli import main as cli

KINDS = test_map.KINDS


def ours(path: Path, *args: str) -> subprocess.CompletedProcess:
    """qcow2kit ARGS beside the image, named by its name where an argument is IMAGE,
    else last."""
    named = [path.name if a == "IMAGE" else a for a in args]
    return subprocess.run([*QCOW2KIT, *named, *([] if "IMAGE" in args else [path.name])],
                          capture_output=True, text=True, cwd=path.parent)


def virtual_size(kind: str, path: Path) -> int:
    if kind == "luks":
        return 4 << 20  # imagekit.luks makes a 4 MiB disk; qemu-img info needs the secret
    return int(imagekit.qemu_json("info", path)["virtual-size"])  # type: ignore[index]


# --- map --start-offset / --max-length ------------------------------------------------

def _ranges(size: int) -> List[Tuple[str, Optional[str]]]:
    """Ranges that start and end inside clusters and subclusters, at the end of the
    disk, past it, and empty ones."""
    return [(str(size // 3 + 12345), None), ("511", "70000"), ("65536", "1"),
            (str(size - 1), None), (str(size + 4096), "10"), ("0", "0"), ("1k", "1M")]


@pytest.mark.parametrize("kind", KINDS)
def test_map_range_equals_qemu(images: Dict[str, Path], kind: str) -> None:
    path = images[kind]
    for start, length in _ranges(virtual_size(kind, path)):
        args = ["--start-offset", start] + ([] if length is None else ["--max-length", length])
        for fmt in ("json", "human"):
            expected = test_map.qemu_map(kind, path, f"--output={fmt}", *args)
            got = qcow2kit("map", f"--output={fmt}", *args, path.name, cwd=path.parent)
            where = f"{kind} {fmt} {args}"
            assert got.stdout == expected.stdout, where
            assert got.exit_code == expected.returncode, where
            assert got.stderr == expected.stderr.replace(
                "qemu-img: ", f"qcow2kit: {path.name}: map: "), where


@pytest.mark.parametrize("text", ["1k", "1K", "1.5M", "0x10000", "010", "1b", " 2k", "3E"])
def test_map_reads_sizes_as_qemu(images: Dict[str, Path], text: str) -> None:
    path = images["v3"]
    expected = test_map.qemu_map("v3", path, "--output=json", "--start-offset", text,
                                 "--max-length", text)
    assert expected.returncode == 0, expected.stderr
    got = ours(path, "map", "--json", "--start-offset", text, "--max-length", text)
    assert (got.returncode, got.stdout) == (0, expected.stdout)


@pytest.mark.parametrize("text", ["-1", "foo", "1.5", "1kB", str(2**63), ""])
def test_map_refuses_what_qemu_refuses(images: Dict[str, Path], text: str) -> None:
    """qemu-img says "Invalid start offset specified"; qcow2kit, a usage error."""
    path = images["v3"]
    expected = test_map.qemu_map("v3", path, "--start-offset", text)
    assert expected.returncode == 1 and "Invalid start offset" in expected.stderr
    for option in ("--start-offset", "--max-length"):
        got = ours(path, "map", option, text)
        assert got.returncode == 2, got.stderr
        assert got.stderr.startswith("Usage: qcow2kit map ")
        assert f"Error: Invalid value for '{option}'" in got.stderr


# --- --output=json|human ------------------------------------------------------------------

JSON_COMMANDS = [["dump"], ["bitmaps"], ["map"], ["info"], ["snapshots"], ["check"],
                 ["whatis", "0x30000"], ["diff", "OTHER"], ["get", "header.version"]]


@pytest.mark.parametrize("command", JSON_COMMANDS, ids=lambda c: c[0])
def test_output_spellings(images: Dict[str, Path], command: List[str]) -> None:
    """--output=json is --json (-j too for dump), --output=human the default, and the
    two spellings that contradict each other are a usage error."""
    path = images["bitmaps"] if command[0] != "snapshots" else images["snapshots"]
    name, *rest = command
    rest = [str(images["v3"]) if a == "OTHER" else a for a in rest]
    ok = (0, 1) if name == "diff" else (0,)

    def run(*options: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*QCOW2KIT, name, *options, str(path), *rest],
                              capture_output=True, text=True)
        assert proc.returncode in ok, proc.stderr
        return proc

    as_json, human = run("--json").stdout, run().stdout
    assert as_json != human
    if name != "dump":  # qcow2.py -j prints one document per part
        json.loads(as_json)
    assert run("--output=json").stdout == as_json
    assert run("--output", "human").stdout == human
    if name == "dump":
        assert run("-j").stdout == as_json
    clash = subprocess.run([*QCOW2KIT, name, "--json", "--output=human", str(path), *rest],
                           capture_output=True, text=True)
    assert clash.returncode == 2
    assert "Error: --json and --output=human exclude each other" in clash.stderr
    bad = subprocess.run([*QCOW2KIT, name, "--output=yaml", str(path), *rest],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Invalid value for '--output'" in bad.stderr


def every_command() -> Dict[str, click.Command]:
    """Every command of the group (each built when first asked for)."""
    ctx = click.Context(cli)
    commands = {}
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None, name
        commands[name] = command
    assert len(commands) >= 18
    return commands


def test_every_json_command_has_both_spellings() -> None:
    for name, command in every_command().items():
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        if "--json" in options:
            assert "--output" in options, name
            assert name in [c[0] for c in JSON_COMMANDS], name


# --- -f qcow2 -------------------------------------------------------------------------------

def test_every_image_command_takes_format() -> None:
    for name, command in every_command().items():
        if any(p.name in ("image", "image_a") for p in command.params):
            options = {o for p in command.params for o in getattr(p, "opts", [])}
            assert {"-f", "--format"} <= options, name


@pytest.mark.parametrize("command", [["info"], ["check"], ["map", "--json"], ["dump"],
                                     ["whatis", "IMAGE", "0"], ["bitmaps"]], ids=lambda c: c[0])
def test_format_qcow2_changes_nothing(images: Dict[str, Path], command: List[str]) -> None:
    path = images["bitmaps"]
    plain = ours(path, *command)
    assert plain.returncode == 0, plain.stderr
    for option in (["-f", "qcow2"], ["--format=qcow2"]):
        got = ours(path, *command, *option)
        assert (got.returncode, got.stdout, got.stderr) == (0, plain.stdout, plain.stderr)


@pytest.mark.parametrize("command", [
    ["info"], ["check"], ["map"], ["convert", "out.raw"], ["cat"], ["set-header", "size", "1"],
    ["set-feature-bit", "compatible", "0"], ["del-header-ext", "0x1234"],
    ["layout", "-o", "out.svg"], ["metadata-copy", "copy.qcow2"], ["diff", "OTHER"]],
    ids=lambda c: c[0])
@pytest.mark.parametrize("fmt", ["raw", "vmdk"])
def test_other_formats_are_refused(image_copy, command: List[str], fmt: str) -> None:
    """One line, exit 1, no file touched or created."""
    path = image_copy("v3")
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    name, *rest = command
    rest = [path.name if a == "OTHER" else a for a in rest]
    proc = subprocess.run([*QCOW2KIT, name, "-f", fmt, path.name, *rest],
                          capture_output=True, text=True, cwd=path.parent)
    assert proc.returncode == (2 if name == "diff" else 1)  # diff's trouble
    assert proc.stderr == f"qcow2kit: image format: '{fmt}' refused: qcow2kit reads qcow2 " \
                          "images only\n"
    assert proc.stdout == ""
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before


# --- whatis --guest ------------------------------------------------------------------------

def _qemu_extent(kind: str, path: Path, offset: int) -> dict:
    extents = json.loads(test_map.qemu_map(kind, path, "--output=json").stdout)
    return next(e for e in extents if e["start"] <= offset < e["start"] + e["length"])


GUEST_CASES = {  # kind: guest offsets (data, backing layers, zeros, compressed, ...)
    "backing_chain": [0, 0x100000 + 5, 0x180000 + 7, 0x190000, 0x200000, 0x3fffff],
    "backing_short": [0, 0x10000, 0x180000, 0x3fffff],
    "v3": [0, 0x3000, 0x100000, 0x3fffff],
    "zlib": [0, 0x10000 + 3, 0x100000],
    "zlib_4k": [0, 0x1000 + 3, 0x100000],
    "extended_l2": [0, 0x1000, 0x2000, 0x8000, 0x10000],
    "data_file": [0, 0x100000],
    "snapshots": [0, 0x100000],
    "prealloc_metadata": [0, 0x100000],
}


@pytest.mark.parametrize("kind", sorted(GUEST_CASES))
def test_whatis_guest_follows_the_chain_as_qemu(images: Dict[str, Path], kind: str) -> None:
    """Each guest offset: the layer (depth) and host offset qemu-img map gives, or
    zeros where qemu reads zeros; compressed data that decompresses to what qemu-img
    convert reads; and what owns the host bytes, as whatis says of that offset."""
    path = images[kind]
    offsets = GUEST_CASES[kind]
    got = subprocess.run([*QCOW2KIT, "whatis", "--guest", "--json", path.name,
                          *[hex(o) for o in offsets]], capture_output=True, text=True,
                         cwd=path.parent)
    assert got.returncode == 0, got.stderr
    places = json.loads(got.stdout)
    raw = path.parent / "guest.raw"
    imagekit.run("qemu-img", "convert", "-O", "raw", path.name, raw.name, cwd=path.parent)
    disk = raw.read_bytes()
    raw.unlink()
    for offset, place in strict_zip(offsets, places):
        qemu = _qemu_extent(kind, path, offset)
        assert place["guest-offset"] == offset
        where = f"{kind} {offset:#x}: {place}"
        if qemu["data"] and "offset" in qemu:
            assert place["reads"] == "data", where
            assert (place["depth"], place["host-offset"]) == \
                (qemu["depth"], qemu["offset"] + offset - qemu["start"]), where
        elif qemu["data"]:
            assert place["reads"] == "compressed", where
            assert place["depth"] == qemu["depth"], where
            stored = (path.parent / place["file"]).read_bytes()
            data = stored[place["host-offset"]:place["host-offset"] + place["host-length"]]
            cluster = zlib.decompressobj(-12).decompress(data)
            start = offset - offset % len(cluster)
            assert cluster == disk[start:start + len(cluster)], where
        else:
            assert qemu["zero"], where
            assert place["reads"] in ("zero", "unallocated"), where
            assert disk[offset] == 0
            if place["reads"] == "zero":
                assert place["depth"] == qemu["depth"], where
        if place["whatis"] is not None:
            layer = path.parent / place["layer"]
            alone = subprocess.run([*QCOW2KIT, "whatis", "--json", layer.name,
                                    str(place["host-offset"])], capture_output=True,
                                   text=True, cwd=path.parent)
            assert alone.returncode == 0, alone.stderr
            assert place["whatis"] == json.loads(alone.stdout)[0], where
            kinds = {h["kind"] for h in place["whatis"]["holders"]}
            assert kinds & {"data", "compressed"}, where
        elif place["reads"] in ("data", "compressed"):
            assert place["file"] != place["layer"] or place["layer"].endswith(".raw"), where


def test_whatis_guest_in_a_snapshot(images: Dict[str, Path]) -> None:
    """The host bytes named for a snapshot's guest offset hold what qemu-img convert
    reads from that snapshot."""
    path = images["snapshots"]
    stored = path.read_bytes()
    for snap in ("first", "second snapshot"):
        raw = path.parent / "snap.raw"
        imagekit.run("qemu-img", "convert", "-l", f"snapshot.name={snap}", "-O", "raw",
                     path.name, raw.name, cwd=path.parent)
        disk = raw.read_bytes()
        raw.unlink()
        got = subprocess.run([*QCOW2KIT, "whatis", "--guest", "--json", "--snapshot", snap,
                              path.name, "0", "0x10000", "0x200000"],
                             capture_output=True, text=True, cwd=path.parent)
        assert got.returncode == 0, got.stderr
        for place in json.loads(got.stdout):
            guest, host = place["guest-offset"], place["host-offset"]
            if place["reads"] == "data":
                assert stored[host:host + 4096] == disk[guest:guest + 4096], place
                assert snap in json.dumps(place["whatis"]["holders"])
            else:
                assert place["reads"] == "unallocated" and not any(disk[guest:guest + 4096])
    usage = subprocess.run([*QCOW2KIT, "whatis", "--snapshot", "first", path.name, "0"],
                           capture_output=True, text=True, cwd=path.parent)
    assert usage.returncode == 2 and "--snapshot names a guest disk" in usage.stderr


def test_whatis_guest_text(images: Dict[str, Path]) -> None:
    path = images["backing_chain"]
    got = subprocess.run([*QCOW2KIT, "whatis", "--guest", path.name, "0x180000", "0x3fffff"],
                         capture_output=True, text=True, cwd=path.parent)
    assert got.returncode == 0, got.stderr
    qemu = _qemu_extent("backing_chain", path, 0x180000)
    lines = got.stdout.splitlines()
    assert lines[0] == f"guest 0x180000: data at {qemu['offset']:#x} of chain_top.qcow2 " \
                       "(depth 0: chain_top.qcow2)"
    assert lines[1].startswith(f"    {qemu['offset']:#x}: cluster ")
    assert lines[-1] == "guest 0x3fffff: zeros, at 0x3fffff of chain_base.raw (depth 2: " \
                        "chain_base.raw)"
    assert _qemu_extent("backing_chain", path, 0x3fffff)["depth"] == 2


def test_whatis_guest_past_the_end(images: Dict[str, Path]) -> None:
    path = images["v3"]
    got = subprocess.run([*QCOW2KIT, "whatis", "--guest", path.name, "0x400000"],
                         capture_output=True, text=True, cwd=path.parent)
    assert got.returncode == 1
    assert got.stderr == f"qcow2kit: {path.name}: guest offset 0x400000: past the end of " \
                         "the disk (4194304 bytes)\n"


# --- check --json --explain --------------------------------------------------------------

def test_check_json_explain(image_copy) -> None:
    """qemu's members unchanged, and every finding with its explanation: the lines
    that check --explain prints."""
    path = image_copy("v3")
    with open(path, "r+b") as f:  # refcounts: 0 for cluster 0, 2 for cluster 1
        data = f.read()
        reftable = int.from_bytes(data[48:56], "big")
        block = int.from_bytes(data[reftable:reftable + 8], "big")
        f.seek(block)
        f.write((0).to_bytes(2, "big") + (2).to_bytes(2, "big"))
    qemu = subprocess.run(["qemu-img", "check", "--output=json", path.name],
                          capture_output=True, text=True, cwd=path.parent)
    assert qemu.returncode == 2, qemu.stderr
    got = ours(path, "check", "--json", "--explain")
    assert got.returncode == 2
    ours_json = json.loads(got.stdout)
    extra = ours_json.pop("qcow2kit")
    assert ours_json == json.loads(qemu.stdout)
    text = ours(path, "check", "--explain")
    explained = [line[4:] for line in text.stderr.splitlines() if line.startswith("    ")]
    assert [f["explanation"] for f in extra["findings"]] == explained
    counts = json.loads(qemu.stdout)
    assert len(extra["findings"]) == counts["corruptions"] + counts["leaks"]
    assert [f["message"] for f in extra["findings"]] == \
        [line for line in qemu.stderr.splitlines() if line]
    first = extra["findings"][0]
    assert first["kind"] == "corruption" and first["message"].startswith("ERROR cluster 0 ")
    assert first["explanation"] == f"{first['structure']} at offset {first['offset']:#x}: " \
                                   f"{first['detail']}"
    plain = ours(path, "check", "--json")
    assert json.loads(plain.stdout) == json.loads(qemu.stdout)


# --- usage errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, param", [
    (["cat", "IMAGE", "--offset", "foo"], "'--offset'"),
    (["cat", "IMAGE", "--length", "1x"], "'--length'"),
    (["cat", "IMAGE", "--offset", "-1"], "'--offset'"),
    (["convert", "IMAGE", "-", "--key-slot", "8"], "'--key-slot'"),
    (["whatis", "IMAGE", "zero"], "'OFFSET...'"),
    (["layout", "IMAGE", "-o", "picture.gif"], "'-o' / '--output'"),
    (["info", "IMAGE", "--output", "xml"], "'--output'")], ids=lambda a: " ".join(a))
def test_usage_errors_exit_2(images: Dict[str, Path], args: List[str], param: str) -> None:
    """A value of the wrong kind is click's usage message and exit 2, never an image
    error (cat --offset foo once said "edit refused")."""
    path = images["v3"]
    proc = ours(path, *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"Usage: qcow2kit {args[0]} ")
    assert f"Error: Invalid value for {param}" in proc.stderr, proc.stderr
