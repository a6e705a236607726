"""Run qcow2kit commands on mutants in forked children, with limits, and judge them.

Each command runs in a child forked from a worker that has qcow2kit imported: the
click command is called in-process with its stdout and stderr sent to files, under
a wall-clock alarm, an address-space limit and a file-size limit. The outcome is
one of the allowed ones (ok, a clean error, output cut at the file-size limit) or a
defect (see DEFECTS).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from .commands import Command
from .mutate import Mutant, Seed, copy_sparse, data_runs, write

ALLOWED = ("ok", "error", "cut")
DEFECTS = ("traceback", "hang", "memory", "crash", "bad-exit", "bad-error", "unclear",
           "bad-json", "modified")
UNCAUGHT = 70  # a child's exit status for an exception that escaped the command
PAGE = resource.getpagesize()
# Python's words in an error message: an exception that was passed through as is
UNCLEAR = re.compile(r"\b\w*(Error|Exception)\b:|\[Errno|object has no attribute|"
                     r"invalid literal|unsupported operand|NoneType|codec can't|"
                     r"not supported between")
WARNING = "qcow2kit: warning: "


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # seconds of wall-clock time per command
    memory: int = 1 << 30  # address space a command may add to its worker's
    rss: int = 512 << 20  # resident memory a command may add before it counts as a defect
    output: int = 256 << 20  # bytes a command may write to one file


@dataclass
class Outcome:
    """What one command did on one mutant."""

    command: str
    argv: List[str]
    status: str
    exit: Optional[int]
    seconds: float
    rss: int  # peak resident memory of the command's process
    rss_growth: int  # how much of it the command added to its worker's
    detail: str


# --- the child --------------------------------------------------------------------

def _statm(field: int) -> int:
    """This process's address space (field 0) or resident memory (1), in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[field]) * PAGE


def _redirect(fd: int, path: Path, flags: int) -> None:
    new = os.open(path, flags, 0o644)
    os.dup2(new, fd)
    os.close(new)


def _signature(exc: BaseException) -> str:
    """The exception type and the innermost qcow2kit frame it passed."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "qcow2kit" in f.filename]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].name}" if frames else ""
    return f"{type(exc).__name__}{where}"


def _child(argv: List[str], cwd: Path, io_dir: Path, limits: Limits) -> None:
    """Run the command and leave with its exit status (never returns)."""
    code = UNCAUGHT
    try:
        os.chdir(cwd)
        _redirect(0, Path(os.devnull), os.O_RDONLY)
        _redirect(1, io_dir / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        _redirect(2, io_dir / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # as a process has them
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        space = _statm(0) + limits.memory
        resource.setrlimit(resource.RLIMIT_AS, (space, space))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output, limits.output))
        signal.alarm(math.ceil(limits.timeout))
        from qcow2kit.cli import main
        main.main(args=argv, prog_name="qcow2kit", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the defect being looked for
        try:
            (io_dir / "uncaught").write_text(_signature(exc))
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def run_child(argv: List[str], cwd: Path, io_dir: Path,
              limits: Limits) -> Tuple[Optional[int], Optional[int], float, int, int]:
    """Fork, run argv, wait: (exit status, killing signal, seconds, peak RSS, the part
    of it the command added)."""
    for name in ("stdout", "stderr", "uncaught"):
        (io_dir / name).unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    resident = _statm(1)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(argv, cwd, io_dir, limits)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.monotonic() - start
    peak = usage.ru_maxrss * 1024
    growth = max(0, peak - resident)
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status), seconds, peak, growth
    return os.WEXITSTATUS(status), None, seconds, peak, growth


# --- judging ----------------------------------------------------------------------

def _read_text(path: Path, limit: int = 1 << 20) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _is_json(path: Path, limit: int = 64 << 20) -> bool:
    """Whether the file is JSON documents, one after the other (dump -j prints two)."""
    if path.stat().st_size > limit:
        return True  # too big to check here
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    decoder, pos = json.JSONDecoder(), 0
    try:
        while text[pos:].strip():
            pos += len(text[pos:]) - len(text[pos:].lstrip())
            pos = decoder.raw_decode(text, pos)[1]
    except ValueError:
        return False
    return True


def _error_lines(cmd: Command, stderr: str) -> List[str]:
    """The lines of stderr that are errors: not warnings, not check's findings (some
    of which qemu-img check prints with its program name: "ERROR ...")."""
    lines = [line for line in stderr.splitlines() if not line.startswith(WARNING)]
    if not cmd.findings:
        return lines
    return [line for line in lines
            if line.startswith("qcow2kit: ") and not line.startswith("qcow2kit: ERROR ")]


def judge(cmd: Command, code: Optional[int], sig: Optional[int], growth: int,
          io_dir: Path, limits: Limits) -> Tuple[str, str]:
    """(status, detail) of a finished command."""
    if sig in (signal.SIGALRM, signal.SIGXCPU):
        return "hang", f"killed after {limits.timeout:g} s"
    if sig is not None:
        return "crash", signal.Signals(sig).name
    uncaught = _read_text(io_dir / "uncaught")
    if uncaught:
        return ("memory" if uncaught.startswith("MemoryError") else "traceback"), uncaught
    if growth > limits.rss:
        return "memory", f"resident memory grew by {growth >> 20} MiB"
    stderr = _read_text(io_dir / "stderr")
    if "Traceback (most recent call last)" in stderr:
        return "traceback", stderr.strip().splitlines()[-1]
    errors = _error_lines(cmd, stderr)
    if code not in cmd.exit_codes:
        return "bad-exit", f"exit status {code}: {' | '.join(errors)[:300]}"
    if code not in cmd.error_codes:
        if errors:
            return "bad-error", f"exit status {code} with: {' | '.join(errors)[:300]}"
        if cmd.json and not _is_json(io_dir / "stdout"):
            return "bad-json", "stdout is not JSON"
        return "ok", ""
    if len(errors) != 1 or not errors[0].startswith("qcow2kit: "):
        return "bad-error", f"{len(errors)} error lines: {' | '.join(errors)[:300]}"
    if errors[0].endswith(": File too large"):
        return "cut", errors[0]
    if UNCLEAR.search(errors[0]):
        return "unclear", errors[0]
    return "error", errors[0]


# --- the input must not change ------------------------------------------------------

def digest(path: Path, start: int = 0) -> str:
    """A hash of a file's size, and of its holes and bytes from start on."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(str(size).encode())
        for a, b in data_runs(f.fileno(), size):
            a = max(a, start)
            while a < b:
                chunk = os.pread(f.fileno(), min(b - a, 16 << 20), a)
                if not chunk:
                    break
                h.update(a.to_bytes(8, "big") + chunk)
                a += len(chunk)
    return h.hexdigest()


def _stamp(path: Path) -> Tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _first_cluster(path: Path, seed: Seed) -> int:
    """The mutant's cluster size, from the cluster_bits field the seed's layout locates."""
    field = seed.layout.fields["header.cluster_bits"][0]
    with open(path, "rb") as f:
        bits = int.from_bytes(os.pread(f.fileno(), field.width, field.offset), "big")
    return 1 << min(bits, 40)


# --- one mutant, every command -------------------------------------------------------

@dataclass
class Case:
    """Where a worker runs the commands on one mutant."""

    seed: Seed
    directory: Path  # a copy of the seed's folder (backing and data files beside it)
    io_dir: Path  # stdout, stderr, conversion output

    @property
    def image(self) -> Path:
        return self.directory / self.seed.path.name

    @property
    def edit_copy(self) -> Path:
        return self.directory / "edit-copy.qcow2"


FIELD_SPAN = 64  # bytes: the widest field set writes (a feature name is 46)


def _changed_span(a: Path, b: Path) -> Optional[int]:
    """How many bytes from the first to the last that differ between two files of the
    same size (0: none); None when their sizes differ."""
    x, y = a.read_bytes(), b.read_bytes()
    if len(x) != len(y):
        return None
    diff = [i for i in range(0, len(x), 4096) if x[i:i + 4096] != y[i:i + 4096]]
    if not diff:
        return 0
    first = next(i for i in range(diff[0], diff[0] + 4096) if x[i] != y[i])
    end = min(diff[-1] + 4096, len(x))
    last = next(i for i in range(end - 1, diff[-1] - 1, -1) if x[i] != y[i])
    return last - first + 1


def _edit_status(case: Case, cmd: Command, code: Optional[int], before: str,
                 cluster: int, outside: str) -> Optional[str]:
    """Why an edit broke its rules, if it did: refused edits change nothing, successful
    ones nothing outside the first cluster (set: nothing but the bytes of one field)."""
    if code == 0 and cmd.one_field:
        span = _changed_span(case.image, case.edit_copy)
        if span is None or span > FIELD_SPAN:
            return f"a successful set changed more than one field ({span} bytes apart)"
        return None
    if code == 0:
        if digest(case.edit_copy, cluster) != outside:
            return "a successful edit changed bytes outside the first cluster"
        return None
    if digest(case.edit_copy) != before:
        return "a refused edit changed the file"
    return None


def run_command(case: Case, cmd: Command, argv: List[str], limits: Limits,
                before: str) -> Outcome:
    """Run one command on the case's mutant (edits on a copy) and judge it."""
    siblings = {p: _stamp(p) for p in case.directory.iterdir() if p.is_file()}
    outside = ""
    cluster = 0
    if cmd.edits:
        copy_sparse(case.image, case.edit_copy)
        cluster = _first_cluster(case.image, case.seed)
        outside = digest(case.image, cluster)
    code, sig, seconds, peak, growth = run_child(argv, case.directory, case.io_dir, limits)
    status, detail = judge(cmd, code, sig, growth, case.io_dir, limits)
    changed = [p.name for p, stamp in siblings.items() if _stamp(p) != stamp]
    if changed:
        status, detail = "modified", f"wrote to {', '.join(sorted(changed))}"
    elif cmd.edits and status in ALLOWED:
        problem = _edit_status(case, cmd, code, before, cluster, outside)
        if problem:
            status, detail = "modified", problem
    if cmd.edits:
        case.edit_copy.unlink()
    (case.io_dir / "out.raw").unlink(missing_ok=True)
    return Outcome(cmd.name, argv, status, code, round(seconds, 3), peak, growth, detail)


def argv_for(cmd: Command, case: Case, key: str) -> List[str]:
    """The command's arguments for this mutant, the same every time (seeded by key)."""
    image = case.edit_copy.name if cmd.edits else case.image.name
    return cmd.args(random.Random(f"{key}:{cmd.name}"), image, str(case.io_dir / "out.raw"))


def run_mutant(case: Case, mutant: Mutant, commands: List[Command], limits: Limits,
               key: str) -> List[Outcome]:
    """Write the mutant into the case folder and run every command on it."""
    write(mutant, case.seed.path, case.image)
    before = digest(case.image)
    outcomes = [run_command(case, cmd, argv_for(cmd, case, key), limits, before)
                for cmd in commands]
    if digest(case.image) != before:
        outcomes.append(Outcome("(all)", [], "modified", None, 0.0, 0, 0,
                                "the mutant changed while the commands ran"))
    return outcomes
