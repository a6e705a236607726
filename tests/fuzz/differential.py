"""Differential fuzzing: on every mutant qemu-img opens, qcow2kit must say what qemu says.

Four comparisons per mutant, each run beside the mutant (qemu opens backing and data
files relative to it):

- check: `qemu-img check --output=json` against `qcow2kit check --json`: the JSON,
  the stderr lines (qemu-img's program name read as qcow2kit's) and the exit status;
- info: `qemu-img info --output=json` against `qcow2kit info --qemu --json`;
- map: `qemu-img map --output=json` against `qcow2kit map --json`;
- convert: the SHA-256 of `qemu-img convert -O raw` against `qcow2kit convert`'s, for
  guest disks of at most CONVERT_LIMIT bytes.

qemu refuses a mutant when it cannot open it or gives up on it (any failure of info,
map and convert, "Could not open" from check, or a run past the time limit); nothing
is compared then. Any other difference is a defect, minimized and saved with a
script that runs both programs; those of KNOWN_DIFFERENCES, left to the modules that
own them, are counted apart and do not fail a run.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from imagekit import file_sha256

from .mutate import Mutant
from .runner import Case, Limits, run_child, write

EQUAL, DIFFERENT, KNOWN, REFUSED = "equal", "different", "known", "qemu refused"
CONVERT_LIMIT = 64 << 20  # larger guest disks are not converted
QEMU_OUTPUT_LIMIT = 256 << 20


# Differences found and not fixed yet: qcow2kit refuses, with a clear error, images
# qemu opens (it reads zeros past the end of the file, and ignores the feature name
# table). A pattern matches the signature (numbers as N, file names left out).
KNOWN_DIFFERENCES = {
    r"header_extensions\.extensions\[N\]\.(len_data|data(\.value|\.entries\[N\]\.(bit|name))?)"
    r" at offset N":
        "the header extension area, feature name table and data file name are parsed "
        "strictly (qcow2.ksy, image.py); qemu ignores bad feature name table entries, "
        "takes names as bytes and reads zeros past the end of the file",
    r"bitmap(s_extension\.bitmap)?_directory at offset N: .*past the end of the file":
        "a bitmap directory past the end of the file is refused (image.py, bitmaps.py); "
        "qemu reads zeros there",
    r"backing_file_name at offset N: (is not valid UTF-N text|runs past the end of the file)":
        "the backing file name must be UTF-8 and inside the file (image.py); qemu takes "
        "its bytes as they are, zeros past the end of the file",
    r"snapshots(\[N\]\.(id|name))? at offset N: (N entries of at least N bytes run|runs) "
    r"past the end":
        "a snapshot table past the end of the file is refused (snapshots.py); qemu reads "
        "zeros there",
    r"snapshots\[N\]\.(id|name) at offset N: is not valid UTF-N text":
        "snapshot ids and names must be UTF-8 (qcow2.ksy, snapshots.py); qemu takes their "
        "bytes as they are",
    r"check \| .*((header\.nb_snapshots|snapshots\[N\]\.extra_data_size) at offset N: N "
    r"(snapshots|bytes) exceed QEMU's limit|the snapshot table is not cluster aligned)":
        "check refuses a snapshot table over QEMU's limits; qemu-img check reports that "
        "it cannot read the table and checks the rest",
}


def known(signature: str) -> Optional[str]:
    """Why a difference is known, if it is."""
    return next((why for pattern, why in KNOWN_DIFFERENCES.items()
                 if re.search(pattern, signature)), None)


@dataclass
class Run:
    """One program's run: exit status, stdout, stderr (None when it was stopped)."""

    code: Optional[int]
    stdout: bytes
    stderr: bytes


def run_qemu(case: Case, args: List[str], timeout: float) -> Run:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (QEMU_OUTPUT_LIMIT, QEMU_OUTPUT_LIMIT))
    try:
        proc = subprocess.run(["qemu-img", *args], cwd=case.directory, capture_output=True,
                              timeout=timeout, preexec_fn=limit,
                              env={**os.environ, "TZ": "UTC"})
    except subprocess.TimeoutExpired:
        return Run(None, b"", b"")
    return Run(proc.returncode, proc.stdout, proc.stderr)


def run_ours(case: Case, argv: List[str], limits: Limits) -> Run:
    """qcow2kit in a forked child, as the robustness campaign runs it."""
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    try:
        code, sig, _, _, _ = run_child(argv, case.directory, case.io_dir, limits)
    finally:
        if old_tz is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old_tz
    read = lambda name: (case.io_dir / name).read_bytes() \
        if (case.io_dir / name).exists() else b""  # noqa: E731
    return Run(None if sig is not None else code, read("stdout"), read("stderr"))


def _qemu_lines(stderr: bytes) -> List[str]:
    return [f"qcow2kit: {line[10:]}" if line.startswith("qemu-img: ") else line
            for line in stderr.decode(errors="replace").splitlines()]


def _first_difference(a: bytes, b: bytes) -> str:
    """Where two outputs part, for the defect's detail."""
    la, lb = a.decode(errors="replace").splitlines(), b.decode(errors="replace").splitlines()
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return f"line {i + 1}: qemu {x.strip()[:120]!r}, qcow2kit {y.strip()[:120]!r}"
    return f"qemu {len(la)} lines, qcow2kit {len(lb)} lines"


@dataclass(frozen=True)
class Verdict:
    status: str  # EQUAL, DIFFERENT or REFUSED
    detail: str = ""  # what differs, for DIFFERENT


Comparison = Callable[[Case, Limits], Verdict]


def _opened_verdict(qemu: Run, ours: Run) -> Verdict:
    """Stdout and exit status of a command qemu ran successfully."""
    if ours.code != 0:
        first = ours.stderr.decode(errors="replace").strip().splitlines()[:1]
        return Verdict(DIFFERENT, f"qemu succeeded, qcow2kit exit status {ours.code}: "
                                  f"{' '.join(first)[:200]}")
    if ours.stdout != qemu.stdout:
        return Verdict(DIFFERENT, _first_difference(qemu.stdout, ours.stdout))
    return Verdict(EQUAL)


def compare_check(case: Case, limits: Limits) -> Verdict:
    name = case.image.name
    qemu = run_qemu(case, ["check", "--output=json", "-f", "qcow2", name], limits.timeout)
    if qemu.code is None or b"Could not open" in qemu.stderr:
        return Verdict(REFUSED)
    ours = run_ours(case, ["check", "--json", name], limits)
    refused = ours.code == 1 and qemu.stdout and not ours.stdout  # qemu could check it
    if ours.code != qemu.code or refused:
        last = ours.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return Verdict(DIFFERENT, f"exit status: qemu {qemu.code}, qcow2kit {ours.code}: "
                                  f"{' '.join(last)[:200]}")
    if ours.stdout != qemu.stdout:
        return Verdict(DIFFERENT, "stdout " + _first_difference(qemu.stdout, ours.stdout))
    theirs, mine = _qemu_lines(qemu.stderr), ours.stderr.decode(errors="replace").splitlines()
    if theirs != mine:
        return Verdict(DIFFERENT, "stderr " + _first_difference(
            "\n".join(theirs).encode(), "\n".join(mine).encode()))
    return Verdict(EQUAL)


def compare_info(case: Case, limits: Limits) -> Verdict:
    name = case.image.name
    qemu = run_qemu(case, ["info", "--output=json", "-f", "qcow2", name], limits.timeout)
    if qemu.code != 0:
        return Verdict(REFUSED)
    return _opened_verdict(qemu, run_ours(case, ["info", "--qemu", "--json", name], limits))


def compare_map(case: Case, limits: Limits) -> Verdict:
    name = case.image.name
    qemu = run_qemu(case, ["map", "--output=json", "-f", "qcow2", name], limits.timeout)
    if qemu.code != 0:
        return Verdict(REFUSED)
    return _opened_verdict(qemu, run_ours(case, ["map", "--json", name], limits))




def compare_convert(case: Case, limits: Limits) -> Verdict:
    name = case.image.name
    info = run_qemu(case, ["info", "--output=json", "-f", "qcow2", name], limits.timeout)
    if info.code != 0 or json.loads(info.stdout)["virtual-size"] > CONVERT_LIMIT:
        return Verdict(REFUSED)
    theirs, mine = case.io_dir / "qemu.raw", case.io_dir / "ours.raw"
    try:
        qemu = run_qemu(case, ["convert", "-f", "qcow2", "-O", "raw", name, str(theirs)],
                        limits.timeout)
        if qemu.code != 0:
            return Verdict(REFUSED)
        ours = run_ours(case, ["convert", name, str(mine)], limits)
        if ours.code != 0:
            return _opened_verdict(qemu, ours)
        if file_sha256(mine) != file_sha256(theirs):
            return Verdict(DIFFERENT, "the raw images differ")
        return Verdict(EQUAL)
    finally:
        theirs.unlink(missing_ok=True)
        mine.unlink(missing_ok=True)


COMPARISONS: Dict[str, Comparison] = {"check": compare_check, "info": compare_info,
                                      "map": compare_map, "convert": compare_convert}
QEMU_ARGS = {  # for the reproducers' scripts: (qemu-img, qcow2kit) arguments after the name
    "check": ("check --output=json -f qcow2", "check --json"),
    "info": ("info --output=json -f qcow2", "info --qemu --json"),
    "map": ("map --output=json -f qcow2", "map --json"),
    "convert": ("convert -f qcow2 -O raw", "convert"),
}


def compare_mutant(case: Case, m: Mutant, limits: Limits,
                   names: List[str]) -> Dict[str, Verdict]:
    write(m, case.seed.path, case.image)
    return {name: COMPARISONS[name](case, limits) for name in names}


def signature(command: str, verdict: Verdict) -> str:
    """What makes two differences the same: the command and the detail without the
    file name and numbers."""
    detail = re.sub(r"qcow2kit: [^: ]*: ", "qcow2kit: ", verdict.detail)
    return f"{command} | " + re.sub(r"\b(0x[0-9a-f]+|\d+)\b", "N", detail)


def minimize(case: Case, m: Mutant, command: str, verdict: Verdict, limits: Limits) -> Mutant:
    """Leave out every patch (and the new length) the difference does not need."""
    def same(candidate: Mutant) -> bool:
        again = compare_mutant(case, candidate, limits, [command])[command]
        return again.status == DIFFERENT and signature(command, again) == \
            signature(command, verdict)

    return m.shrunk(same)


def save_reproducer(folder: Path, case: Case, m: Mutant, command: str,
                    verdict: Verdict) -> None:
    """The mutant beside its seed's companion files, the case as JSON, a script that
    runs both programs."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(case.seed.path.parent, folder)
    write(m, case.seed.path, folder / case.seed.path.name)
    name = case.seed.path.name
    (folder / "case.json").write_text(json.dumps(
        {"command": command, "detail": verdict.detail, "mutant": m.to_json()},
        indent=1) + "\n")
    qemu, ours = QEMU_ARGS[command]
    out = " qemu.raw" if command == "convert" else ""
    mine = " ours.raw" if command == "convert" else ""
    (folder / "repro.sh").write_text(
        f'#!/bin/sh\ncd "$(dirname "$0")"\nqemu-img {qemu} {name}{out}; echo "exit $?"\n'
        f'qcow2kit {ours} {name}{mine}; echo "exit $?"\n')
    (folder / "repro.sh").chmod(0o755)


@dataclass
class Figures:
    cases: int = 0
    verdicts: Counter = field(default_factory=Counter)

    def to_json(self) -> Dict[str, int]:
        return {"cases": self.cases, "equal": self.verdicts[EQUAL],
                "different": self.verdicts[DIFFERENT], "known": self.verdicts[KNOWN],
                "qemu refused": self.verdicts[REFUSED]}


def render(figures: Dict[str, Figures], defects: List[Dict[str, object]],
           known_ones: Dict[str, int]) -> str:
    lines = [f"{'compared with qemu':<22}{'cases':>7}{'equal':>7}{'different':>11}"
             f"{'known':>7}{'qemu refused':>14}"]
    for name, f in figures.items():
        j = f.to_json()
        lines.append(f"{name:<22}{j['cases']:>7}{j['equal']:>7}{j['different']:>11}"
                     f"{j['known']:>7}{j['qemu refused']:>14}")
    for sig, count in sorted(known_ones.items()):
        lines.append(f"known difference (x{count}): {sig}")
    for d in defects:
        lines.append(f"DIFFERENCE {d['signature']} (x{d['count']}): {d['detail']}\n"
                     f"    reproducer: {d['reproducer']}/repro.sh")
    return "\n".join(lines) + "\n"
