"""python -m fuzz (with tests/ on PYTHONPATH): run a fuzzing campaign.

With --differential N, N more mutants are compared with qemu-img (check, info, map,
convert; tests/fuzz/differential.py). Exit status 0 when every outcome is allowed and
nothing differs from qemu, 1 when there are defects (each with a minimized reproducer
under --out).
"""
from __future__ import annotations

import os

# One thread per numpy: children are forked from the workers.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import List, Optional  # noqa: E402

from . import campaign, differential  # noqa: E402
from .commands import COMMANDS, available  # noqa: E402
from .runner import Limits  # noqa: E402


def _arguments(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=3000,
                   help="command runs in all, mutants times commands (default 3000)")
    p.add_argument("--seed", default="1", help="random seed (default 1)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds a command may take before it counts as a hang")
    p.add_argument("--memory", type=int, default=1024,
                   help="MiB of address space a command may add (RLIMIT_AS)")
    p.add_argument("--images", type=Path, default=Path("build/fuzz-images"),
                   help="seed images: a folder with manifest.json, else built there")
    p.add_argument("--kinds", nargs="*", help="only these seed kinds")
    p.add_argument("--commands", nargs="*", choices=[c.name for c in COMMANDS],
                   metavar="COMMAND", help="only these commands")
    p.add_argument("--out", type=Path, default=Path("build/fuzz"),
                   help="where reproducers of defects go")
    p.add_argument("--differential", type=int, default=0, metavar="N",
                   help="also compare N mutants with qemu-img (default 0)")
    p.add_argument("--report", type=Path, help="write the figures and defects as JSON")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = _arguments(argv)
    commands = available(args.commands or [])
    paths = campaign.load_seeds(args.images.resolve(), args.kinds)
    seeds = campaign.analyse(paths, args.jobs)
    limits = Limits(timeout=args.timeout, memory=args.memory << 20)
    campaign.clear_reproducers(args.out.resolve())
    with tempfile.TemporaryDirectory(prefix="qcow2kit-fuzz-") as work:
        settings = campaign.Settings(commands, args.cases, args.seed, args.jobs, limits,
                                     Path(work), args.out.resolve())
        result = campaign.run(settings, seeds) if args.cases else None
        diff = campaign.run_differential(settings, seeds, args.differential) \
            if args.differential else None
    report = {}
    if result is not None:
        sys.stdout.write(campaign.render(result))
        report = result.to_json()
    if diff is not None:
        sys.stdout.write(differential.render(diff.figures, diff.defects, diff.known))
        report["differential"] = diff.to_json()
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if (result and result.defects) or (diff and diff.defects) else 0


if __name__ == "__main__":
    sys.exit(main())
