"""The fuzzing harness: it tells each kind of defect apart, and the short run of
`make test` finds none.

The short run mutates the qemu-made images of the session (tests/fuzz/) and runs every
qcow2kit command on each mutant; it fails listing each defect with its reproducer.
QCOW2KIT_FUZZ_CASES sets its size (default 3000 command runs).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator

import click
import pytest

from fuzz import fields
from fuzz.commands import Command
from fuzz.mutate import Mutant, Patch, Seed, write
from fuzz.runner import Case, Limits, digest, run_command
from qcow2kit.cli import main as cli

TESTS = Path(__file__).parent
CASES = int(os.environ.get("QCOW2KIT_FUZZ_CASES", "3000"))


# --- the harness's judgement ----------------------------------------------------------

@click.command("misbehave")
@click.argument("image")
@click.argument("how")
def misbehave(image: str, how: str) -> None:
    """Each way a command can go wrong, on purpose."""
    if how == "raise":
        raise KeyError("boom")
    if how == "hang":
        while True:
            pass
    if how == "allocate":
        bytearray(4 << 30)
    if how == "two-lines":
        click.echo("qcow2kit: one\nqcow2kit: two", err=True)
        sys.exit(1)
    if how == "unclear":
        click.echo(f"qcow2kit: {image}: image at offset 0x0: ValueError: bad", err=True)
        sys.exit(1)
    if how == "write":
        with open(image, "r+b") as f:
            f.write(b"x")
    if how == "error":
        click.echo(f"qcow2kit: {image}: header.size at offset 0x18: too big", err=True)
        sys.exit(1)


@pytest.fixture
def case(images: Dict[str, Path], tmp_path: Path) -> Iterator[Case]:
    cli.add_command(misbehave)
    seed = Seed("v3", images["v3"], fields.layout(images["v3"]))
    (tmp_path / "v3").mkdir()
    (tmp_path / "io").mkdir()
    case = Case(seed, tmp_path / "v3", tmp_path / "io")
    write(Mutant("v3", (), None), seed.path, case.image)
    yield case
    cli.commands.pop("misbehave")


@pytest.mark.parametrize("how, status", [
    ("ok", "ok"), ("error", "error"), ("raise", "traceback"), ("hang", "hang"),
    ("allocate", "memory"), ("two-lines", "bad-error"), ("unclear", "unclear"),
    ("write", "modified"),
])
def test_each_defect_is_told_apart(case: Case, how: str, status: str) -> None:
    cmd = Command("misbehave", "misbehave", lambda rng, image, out: [])
    outcome = run_command(case, cmd, ["misbehave", case.image.name, how],
                          Limits(timeout=2, memory=1 << 30), digest(case.image))
    assert outcome.status == status, outcome


def test_fields_come_from_the_parser(images: Dict[str, Path]) -> None:
    """Every integer field found decodes, at its offset, to the value the parser read;
    the groups the issue names are all reached on the image set."""
    layout = fields.layout(images["snapshots"])
    header = {f.cls: f for fs in layout.fields.values() for f in fs if f.group == "header"}
    assert (header["header.cluster_bits"].offset, header["header.cluster_bits"].width) == (20, 4)
    assert header["header.ofs_l1_table"].offset == 40
    groups = set()
    for kind in ("snapshots", "bitmaps", "luks", "unknown_ext", "backing"):
        groups |= {fs[0].group for fs in fields.layout(images[kind]).fields.values()}
    assert groups >= {"header", "header_length", "extensions", "feature_table", "l1", "l2",
                      "refcount", "snapshots", "bitmaps", "encryption", "backing"}


def test_mutants_are_deterministic(images: Dict[str, Path], tmp_path: Path) -> None:
    from fuzz.campaign import make_mutant
    seeds = [Seed(k, images[k], fields.layout(images[k])) for k in ("v3", "bitmaps")]
    assert [make_mutant(i, "7", seeds)[1] for i in range(20)] == \
        [make_mutant(i, "7", seeds)[1] for i in range(20)]
    m = Mutant("v3", (Patch(20, b"\0\0\0\x1f", "header.cluster_bits=1f"),), 4096)
    write(m, images["v3"], tmp_path / "m.qcow2")
    data = (tmp_path / "m.qcow2").read_bytes()
    assert len(data) == 4096 and data[20:24] == b"\0\0\0\x1f"


# --- the short run --------------------------------------------------------------------------

def test_short_fuzz_run(images: Dict[str, Path], tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "manifest.json").write_text(json.dumps({k: str(p) for k, p in images.items()}))
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TESTS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz", "--cases", str(CASES), "--seed", "1",
         "--images", str(seeds), "--out", str(tmp_path / "defects"), "--report", str(report)],
        capture_output=True, text=True, env=env, timeout=3600)
    assert report.exists(), proc.stderr
    result = json.loads(report.read_text())
    assert result["cases"] >= CASES
    defects = [f"{d['signature']} (x{d['count']}): qcow2kit {' '.join(d['argv'])}\n"
               f"    {d['detail']}\n    reproducer: {d['reproducer']}/repro.sh"
               for d in result["defects"]]
    assert not defects, "\n".join(defects)
