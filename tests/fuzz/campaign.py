"""A fuzzing campaign: seeds, workers, figures per command, minimized reproducers."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import differential, fields
from .commands import Command
from .mutate import Mutant, Seed, mutant
from .runner import ALLOWED, DEFECTS, Case, Limits, Outcome, digest, run_command, run_mutant, \
    write

MANIFEST = "manifest.json"


@dataclass
class Settings:
    commands: List[Command]
    cases: int  # command runs in all: mutants times commands
    key: str  # the random seed: the same key, seeds and commands give the same run
    jobs: int
    limits: Limits
    work: Path  # scratch folders of the workers
    out: Path  # reproducers of the defects

    @property
    def mutants(self) -> int:
        return -(-self.cases // len(self.commands))


@dataclass
class CommandStats:
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    max_seconds: float = 0.0
    peak_rss: int = 0
    peak_growth: int = 0

    def add(self, o: Outcome) -> None:
        self.cases += 1
        self.statuses[o.status] += 1
        self.max_seconds = max(self.max_seconds, o.seconds)
        self.peak_rss = max(self.peak_rss, o.rss)
        self.peak_growth = max(self.peak_growth, o.rss_growth)


# --- seeds --------------------------------------------------------------------------

def load_seeds(images: Path, kinds: Optional[List[str]] = None) -> Dict[str, Path]:
    """The seed images of a folder's manifest; built with qemu (tests/imagekit.py) when
    the folder has none."""
    manifest = images / MANIFEST
    if not manifest.exists():
        import imagekit
        images.mkdir(parents=True, exist_ok=True)
        built = imagekit.build_all(images)
        manifest.write_text(json.dumps({k: str(p) for k, p in built.items()}, indent=1))
    paths = {k: Path(p) for k, p in json.loads(manifest.read_text()).items()}
    return {k: p for k, p in sorted(paths.items()) if not kinds or k in kinds}


def _layout(item: Tuple[str, str]) -> Seed:
    kind, path = item
    return Seed(kind, Path(path), fields.layout(Path(path)))


def analyse(paths: Dict[str, Path], jobs: int) -> List[Seed]:
    """Every seed's fields, found by parsing it completely (in parallel)."""
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(_layout, [(k, str(p)) for k, p in paths.items()])


# --- workers ------------------------------------------------------------------------

_SEEDS: List[Seed] = []
_SETTINGS: Optional[Settings] = None
_CASES: Dict[str, Case] = {}


def _case(seed: Seed, root: Path) -> Case:
    """This process's copy of the seed's folder."""
    if seed.kind not in _CASES:
        directory = root / seed.kind
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(seed.path.parent, directory)
        io_dir = root / "io"
        io_dir.mkdir(exist_ok=True)
        _CASES[seed.kind] = Case(seed, directory, io_dir)
    return _CASES[seed.kind]


def make_mutant(index: int, key: str, seeds: List[Seed]) -> Tuple[Seed, Mutant]:
    rng = random.Random(f"{key}:{index}")
    seed = rng.choice(seeds)
    return seed, mutant(rng, seed)


def _work(index: int) -> Tuple[int, Dict[str, object], List[Outcome]]:
    settings = _SETTINGS
    seed, m = make_mutant(index, settings.key, _SEEDS)
    case = _case(seed, settings.work / f"w{os.getpid()}")
    key = f"{settings.key}:{index}"
    return index, m.to_json(), run_mutant(case, m, settings.commands, settings.limits, key)


def _quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --- defects ------------------------------------------------------------------------

def _classes(m: Mutant) -> str:
    return ",".join(sorted({re.sub(r"\[\d+\]", "[]", n.split("=")[0]) for n in m.notes}))


def signature(o: Outcome, m: Mutant) -> str:
    """What makes two defects the same: command, status and the message without its
    numbers and file name (or, without a message, the mutated field classes)."""
    detail = re.sub(r"^qcow2kit: [^:]*: ", "", o.detail)
    detail = re.sub(r"0x[0-9a-f]+|\d+", "N", detail)
    if o.status in ("hang", "memory", "crash", "modified") and "at " not in detail:
        detail += f" [{_classes(m)}]"
    return f"{o.command} | {o.status} | {detail}"


def minimize(case: Case, m: Mutant, cmd: Command, o: Outcome, limits: Limits) -> Mutant:
    """Leave out every patch (and the new length) the defect does not need."""
    def same(candidate: Mutant) -> bool:
        write(candidate, case.seed.path, case.image)
        again = run_command(case, cmd, o.argv, limits, digest(case.image))
        return signature(again, candidate) == signature(o, m)

    return m.shrunk(same)


def clear_reproducers(out: Path) -> None:
    """Make out, without the reproducers of an earlier run."""
    out.mkdir(parents=True, exist_ok=True)
    for folder in out.iterdir():
        if folder.is_dir() and re.match(r"(diff-)?\d{3}-", folder.name):
            shutil.rmtree(folder)


def save_reproducer(folder: Path, case: Case, m: Mutant, o: Outcome) -> None:
    """The mutant beside its seed's companion files, the case as JSON, a script."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(case.seed.path.parent, folder)
    write(m, case.seed.path, folder / case.seed.path.name)
    argv = [("OUT.raw" if a.endswith("out.raw") else a) for a in o.argv]
    (folder / "case.json").write_text(json.dumps(
        {"command": o.command, "argv": argv, "status": o.status, "detail": o.detail,
         "mutant": m.to_json()}, indent=1) + "\n")
    copy = f"cp {case.seed.path.name} edit-copy.qcow2 && " if "edit-copy.qcow2" in argv else ""
    script = f'cd "$(dirname "$0")" && {copy}qcow2kit {" ".join(map(repr, argv))}\n'
    (folder / "repro.sh").write_text("#!/bin/sh\n" + script)
    (folder / "repro.sh").chmod(0o755)


# --- the campaign -------------------------------------------------------------------

@dataclass
class Result:
    stats: Dict[str, CommandStats]
    defects: List[Dict[str, object]]
    seconds: float
    mutants: int
    seeds: Dict[str, List[Tuple[str, int]]]

    @property
    def cases(self) -> int:
        return sum(s.cases for s in self.stats.values())

    def to_json(self) -> Dict[str, object]:
        return {
            "cases": self.cases, "mutants": self.mutants, "seconds": round(self.seconds, 1),
            "commands": {name: {"cases": s.cases, "statuses": dict(s.statuses),
                                "max-seconds": s.max_seconds, "peak-rss": s.peak_rss,
                                "peak-rss-growth": s.peak_growth}
                         for name, s in self.stats.items()},
            "defects": self.defects, "seed-fields": self.seeds}


def run(settings: Settings, seeds: List[Seed], progress=sys.stderr) -> Result:
    """Run the campaign; defects are minimized and saved under settings.out."""
    global _SEEDS, _SETTINGS
    _SEEDS, _SETTINGS = seeds, settings
    stats = {c.name: CommandStats() for c in settings.commands}
    found: Dict[str, Tuple[int, Mutant, Outcome, int]] = {}
    start = time.monotonic()
    done = 0
    with multiprocessing.get_context("fork").Pool(settings.jobs, _quiet_worker) as pool:
        for index, mjson, outcomes in pool.imap_unordered(_work, range(settings.mutants)):
            m = Mutant.from_json(mjson)
            for o in outcomes:
                stats.setdefault(o.command, CommandStats()).add(o)
                if o.status not in ALLOWED:
                    sig = signature(o, m)
                    first = found.get(sig, (index, m, o, 0))
                    found[sig] = first[:3] + (first[3] + 1,)
            done += 1
            if progress and done % 50 == 0:
                defects = sum(f[3] for f in found.values())
                print(f"fuzz: {done}/{settings.mutants} mutants, {defects} defects, "
                      f"{time.monotonic() - start:.0f} s", file=progress, flush=True)
    elapsed = time.monotonic() - start
    defects = _report_defects(settings, seeds, found)
    return Result(stats, defects, elapsed, settings.mutants,
                  {s.kind: fields.summary(s.layout) for s in seeds})


def _report_defects(settings: Settings, seeds: List[Seed],
                    found: Dict[str, Tuple[int, Mutant, Outcome, int]]) -> List[Dict[str, object]]:
    by_kind = {s.kind: s for s in seeds}
    commands = {c.name: c for c in settings.commands}
    out = []
    root = settings.work / "minimize"
    for n, (sig, (index, m, o, count)) in enumerate(sorted(found.items())):
        case = _case(by_kind[m.seed], root)
        small = m if o.command not in commands else \
            minimize(case, m, commands[o.command], o, settings.limits)
        slug = re.sub(r"[^a-z0-9]+", "-", f"{o.command}-{o.status}".lower()).strip("-")
        folder = settings.out / f"{n:03d}-{slug}"
        save_reproducer(folder, case, small, o)
        out.append({"signature": sig, "count": count, "first-mutant": index,
                    "command": o.command, "status": o.status, "detail": o.detail,
                    "argv": o.argv, "reproducer": str(folder)})
    return out


def render(result: Result) -> str:
    """The figures per command and the defects, for people."""
    head = f"{'command':<22}{'cases':>7}{'ok':>7}{'error':>7}{'cut':>6}{'defects':>9}" \
           f"{'max s':>8}{'peak MiB':>10}{'added MiB':>11}"
    lines = [head]
    for name, s in result.stats.items():
        bad = sum(v for k, v in s.statuses.items() if k not in ALLOWED)
        lines.append(f"{name:<22}{s.cases:>7}{s.statuses['ok']:>7}{s.statuses['error']:>7}"
                     f"{s.statuses['cut']:>6}{bad:>9}{s.max_seconds:>8.2f}"
                     f"{s.peak_rss / 2**20:>10.0f}{s.peak_growth / 2**20:>11.0f}")
    totals = Counter()
    for s in result.stats.values():
        totals.update(s.statuses)
    peak = max((s.peak_rss for s in result.stats.values()), default=0)
    added = max((s.peak_growth for s in result.stats.values()), default=0)
    lines += ["", f"{result.cases} cases ({result.mutants} mutants) in {result.seconds:.0f} s; "
              + ", ".join(f"{k}: {totals[k]}" for k in DEFECTS)
              + f"; peak memory {peak / 2**20:.0f} MiB resident, at most "
              f"{added / 2**20:.0f} MiB added by one command"]
    for d in result.defects:
        lines.append(f"DEFECT {d['signature']} (x{d['count']}): {d['detail']}\n"
                     f"    reproducer: {d['reproducer']}/repro.sh")
    return "\n".join(lines) + "\n"


# --- the differential campaign -----------------------------------------------------

def _diff_work(index: int) -> Tuple[int, Dict[str, object], Dict[str, Tuple[str, str]]]:
    settings = _SETTINGS
    seed, m = make_mutant(index, f"diff:{settings.key}", _SEEDS)
    case = _case(seed, settings.work / f"w{os.getpid()}")
    verdicts = differential.compare_mutant(case, m, settings.limits,
                                           list(differential.COMPARISONS))
    return index, m.to_json(), {k: (v.status, v.detail) for k, v in verdicts.items()}


@dataclass
class DiffResult:
    figures: Dict[str, differential.Figures]
    defects: List[Dict[str, object]]
    known: Dict[str, int]  # signature -> count of the known differences
    mutants: int
    seconds: float

    def to_json(self) -> Dict[str, object]:
        return {"mutants": self.mutants, "seconds": round(self.seconds, 1),
                "commands": {k: f.to_json() for k, f in self.figures.items()},
                "defects": self.defects, "known": self.known}


def run_differential(settings: Settings, seeds: List[Seed], mutants: int,
                     progress=sys.stderr) -> DiffResult:
    """Compare qcow2kit with qemu-img on mutants; differences are minimized and saved
    under settings.out."""
    global _SEEDS, _SETTINGS
    _SEEDS, _SETTINGS = seeds, settings
    figures = {name: differential.Figures() for name in differential.COMPARISONS}
    found: Dict[str, Tuple[int, Mutant, str, differential.Verdict, int]] = {}
    known: Counter = Counter()
    start = time.monotonic()
    done = 0
    with multiprocessing.get_context("fork").Pool(settings.jobs, _quiet_worker) as pool:
        for index, mjson, verdicts in pool.imap_unordered(_diff_work, range(mutants)):
            m = Mutant.from_json(mjson)
            for name, (status, detail) in verdicts.items():
                figures[name].cases += 1
                verdict = differential.Verdict(status, detail)
                sig = differential.signature(name, verdict)
                if status == differential.DIFFERENT and differential.known(sig):
                    status = differential.KNOWN
                    known[sig] += 1
                figures[name].verdicts[status] += 1
                if status == differential.DIFFERENT:
                    first = found.get(sig, (index, m, name, verdict, 0))
                    found[sig] = first[:4] + (first[4] + 1,)
            done += 1
            if progress and done % 50 == 0:
                print(f"fuzz: {done}/{mutants} mutants compared with qemu, "
                      f"{sum(f[4] for f in found.values())} differences, "
                      f"{time.monotonic() - start:.0f} s", file=progress, flush=True)
    elapsed = time.monotonic() - start
    by_kind = {s.kind: s for s in seeds}
    defects = []
    for n, (sig, (index, m, name, verdict, count)) in enumerate(sorted(found.items())):
        case = _case(by_kind[m.seed], settings.work / "minimize")
        small = differential.minimize(case, m, name, verdict, settings.limits)
        folder = settings.out / f"diff-{n:03d}-{name}"
        differential.save_reproducer(folder, case, small, name, verdict)
        defects.append({"signature": sig, "count": count, "first-mutant": index,
                        "command": name, "detail": verdict.detail,
                        "patches": small.notes, "reproducer": str(folder)})
    return DiffResult(figures, defects, dict(known), mutants, elapsed)
