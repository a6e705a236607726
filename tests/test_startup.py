"""Start-up: the commands that read the first cluster and a few small tables import
neither numpy nor what they do not use; the qcow2.py drop-in neither click nor typing
nor dataclasses.

Each command runs as the user runs it (the console script, `python -m
qcow2kit.compat`) with Python's import profiler on (PYTHONPROFILEIMPORTTIME, as
`python -X importtime`); the modules it loaded are read from that report.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from ourcmd import COMPAT, QCOW2KIT

# Images with a bitmap table, snapshots, encryption, a backing chain, extended L2.
KINDS = ["v2", "v3", "bitmaps", "bitmaps_crafted", "snapshots", "luks", "backing_chain",
         "extended_l2", "data_file", "zstd"]
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$")


def imported(args: List[str], top_level: bool = True) -> Set[str]:
    """The top-level packages and modules (or, without top_level, every module) a
    command imported; it must succeed."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {m.group(2) for m in map(IMPORTED.match, proc.stderr.splitlines()) if m}
    assert "kaitaistruct" in names  # the report was read: the parser's runtime is in it
    return {n.split(".")[0] for n in names} if top_level else names


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", [["dump"], ["dump", "-j"], ["dump", "--exts-only"],
                                     ["info"], ["info", "--json"], ["snapshots"],
                                     ["snapshots", "--json"]])
def test_header_commands_import_no_numpy(images: Dict[str, Path], kind: str,
                                         command: List[str]) -> None:
    assert "numpy" not in imported(QCOW2KIT + command + [str(images[kind])])


@pytest.mark.parametrize("command", [["dump"], ["info"], ["snapshots"]])
def test_header_commands_load_only_what_they_use(images: Dict[str, Path],
                                                 command: List[str]) -> None:
    """Nor the public API (qcow2kit.open, loaded when first asked for), the secrets,
    fractions (for sizes such as 1.5M), dataclasses, or, printing text, json and shutil
    (qemu-img's version is found and cached without them)."""
    names = imported(QCOW2KIT + command + [str(images["bitmaps"])], top_level=False)
    assert not {"qcow2kit.api", "qcow2kit.secret", "fractions", "dataclasses", "json",
                "shutil"} & names


def test_the_parser_alone_loads_no_other_module_of_the_package() -> None:
    """The floor the start-up is measured against (click and the generated parser): the
    package's names are imported when first asked for."""
    names = imported([sys.executable, "-c", "import qcow2kit.generated.qcow2"],
                     top_level=False)
    assert {n for n in names if n.startswith("qcow2kit")} == {
        "qcow2kit", "qcow2kit.generated", "qcow2kit.generated.qcow2"}


def test_a_command_builds_only_itself(images: Dict[str, Path]) -> None:
    """The command group builds a command (its options and their types) when it runs."""
    code = ("import sys\nfrom qcow2kit.cli import main\n"
            "main(['dump', sys.argv[1]], standalone_mode=False)\n"
            "print(sorted(main.commands))")
    proc = subprocess.run([sys.executable, "-c", code, str(images["v3"])],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "['dump']"


@pytest.mark.parametrize("edit", [["set-header", "size", "0x800000"],
                                  ["set-feature-bit", "autoclear", "5"],
                                  ["add-header-ext", "0x12345678", "data"],
                                  ["del-header-ext", "0x12345678"]])
def test_edits_import_no_numpy(image_copy, edit: List[str]) -> None:
    path = image_copy("bitmaps")
    if edit[0] == "del-header-ext":
        subprocess.run(QCOW2KIT + ["add-header-ext", str(path), "0x12345678", "x"], check=True)
    assert "numpy" not in imported(QCOW2KIT + [edit[0], str(path)] + edit[1:])


@pytest.mark.parametrize("kind", ["v3", "bitmaps", "bitmaps_crafted"])
@pytest.mark.parametrize("mode", [["dump-header"], ["dump-header-exts"], ["dump-header", "-j"],
                                  ["dump-header-exts", "-j"]])
def test_compat_imports_neither_click_nor_numpy(images: Dict[str, Path], kind: str,
                                                mode: List[str]) -> None:
    """Nor typing and dataclasses (and what they load: inspect, ast, ...), which cost
    more than the rest of a dump: qcow2kit's records are made without them."""
    names = imported(COMPAT + [str(images[kind])] + mode)
    assert not {"click", "numpy", "typing", "dataclasses", "inspect"} & names


def test_compat_edit_imports_neither_click_nor_numpy(image_copy) -> None:
    path = image_copy("v3")
    names = imported(COMPAT + [str(path), "set-feature-bit", "autoclear", "5"])
    assert not {"click", "numpy"} & names


def test_the_report_sees_numpy() -> None:
    """The detection itself."""
    assert "numpy" in imported([sys.executable, "-c", "import kaitaistruct, numpy"])


def _threads_after(code: str) -> int:
    """The threads of a fresh interpreter after code (BLAS left to its default)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", code + "\nimport os\n"
                           "print(len(os.listdir('/proc/self/task')))"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def test_the_command_starts_no_blas_threads() -> None:
    """numpy's BLAS starts a thread per core at import (CPU time for nothing: qcow2kit
    never calls it); the command's numpy starts none."""
    assert _threads_after("import qcow2kit.cli, numpy") == 1
    if (os.cpu_count() or 1) > 1:  # the thing avoided, where there is more than one core
        assert _threads_after("import numpy") > 1
