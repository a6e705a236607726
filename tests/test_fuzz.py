"""The fuzzing harness: it tells each kind of defect apart, and the short run of
`make test` finds none.

The short run mutates the qemu-made images of the session (tests/fuzz/) and runs every
qcow2kit command on each mutant; it fails listing each defect with its reproducer.
QCOW2KIT_FUZZ_CASES sets its size (default 3000 command runs, at least FLOOR), and
QCOW2KIT_FUZZ_DIFF its differential part (default 150 mutants compared with qemu-img,
at least DIFF_FLOOR; tests/fuzz/differential.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import click
import pytest

from fuzz import differential, fields
from fuzz.commands import Command
from fuzz.mutate import Mutant, Patch, Seed, write
from fuzz.runner import Case, Limits, digest, run_command
from qcow2kit.cli import main as cli

TESTS = Path(__file__).parent
CASES = int(os.environ.get("QCOW2KIT_FUZZ_CASES", "3000"))
DIFF_MUTANTS = int(os.environ.get("QCOW2KIT_FUZZ_DIFF", "150"))
FLOOR, DIFF_FLOOR = 1000, 50  # a smaller run would pass without looking


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


def test_differential_tells_equal_different_and_refused(case: Case,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The qemu-made image compares equal on every command; an output changed by one
    byte, or a wrong exit status, is a difference; a mutant qemu cannot open is
    refused and not compared."""
    names = list(differential.COMPARISONS)
    limits = Limits(timeout=30)
    same = differential.compare_mutant(case, Mutant("v3", (), None), limits, names)
    assert {n: v.status for n, v in same.items()} == dict.fromkeys(names, differential.EQUAL)
    run_ours = differential.run_ours

    def changed(c: Case, argv: List[str], lim: Limits) -> differential.Run:
        run = run_ours(c, argv, lim)
        if argv[0] == "convert":  # one byte of the raw output
            with open(argv[-1], "r+b") as f:
                f.write(bytes([f.read(1)[0] ^ 1]))
            return run
        return differential.Run(run.code, run.stdout.replace(b"4", b"5", 1), run.stderr)

    monkeypatch.setattr(differential, "run_ours", changed)
    wrong = differential.compare_mutant(case, Mutant("v3", (), None), limits, names)
    assert {n: v.status for n, v in wrong.items()} == \
        dict.fromkeys(names, differential.DIFFERENT), wrong
    monkeypatch.setattr(differential, "run_ours", lambda c, argv, lim: differential.Run(
        2, b"", b""))
    wrong = differential.compare_mutant(case, Mutant("v3", (), None), limits, names)
    assert {n: v.status for n, v in wrong.items()} == \
        dict.fromkeys(names, differential.DIFFERENT), wrong
    cut = differential.compare_mutant(case, Mutant("v3", (), 10), limits, names)
    assert {n: v.status for n, v in cut.items()} == dict.fromkeys(names, differential.REFUSED)


# --- the short run --------------------------------------------------------------------------

def test_short_fuzz_run(images: Dict[str, Path], tmp_path: Path) -> None:
    assert CASES >= FLOOR, f"QCOW2KIT_FUZZ_CASES={CASES}: the short run needs {FLOOR} or more"
    assert DIFF_MUTANTS >= DIFF_FLOOR, \
        f"QCOW2KIT_FUZZ_DIFF={DIFF_MUTANTS}: the short run needs {DIFF_FLOOR} or more"
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "manifest.json").write_text(json.dumps({k: str(p) for k, p in images.items()}))
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TESTS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz", "--cases", str(CASES), "--seed", "1",
         "--differential", str(DIFF_MUTANTS), "--images", str(seeds),
         "--out", str(tmp_path / "defects"), "--report", str(report)],
        capture_output=True, text=True, env=env, timeout=3600)
    assert report.exists(), proc.stderr
    result = json.loads(report.read_text())
    assert result["cases"] >= CASES
    diff = result["differential"]
    assert diff["mutants"] == DIFF_MUTANTS
    for name, figures in diff["commands"].items():
        assert figures["cases"] == DIFF_MUTANTS, name
        assert figures["equal"] > 0, f"{name}: nothing was compared with qemu"
    defects = [f"{d['signature']} (x{d['count']}): qcow2kit {' '.join(d['argv'])}\n"
               f"    {d['detail']}\n    reproducer: {d['reproducer']}/repro.sh"
               for d in result["defects"]]
    defects += [f"differs from qemu: {d['signature']} (x{d['count']}): {d['detail']}\n"
                f"    reproducer: {d['reproducer']}/repro.sh" for d in diff["defects"]]
    assert proc.returncode == (1 if defects else 0), proc.stderr[-2000:]
    assert not defects, "\n".join(defects)
