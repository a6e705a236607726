"""The qcow2kit command under test, found without PATH.

It is the console script installed beside the interpreter that runs the tests (under
`make test`, .venv/bin/qcow2kit, installed from this checkout in editable mode);
test_setup.py fails when that script is missing or imports qcow2kit from anywhere but
this checkout. conftest.py puts a decoy `qcow2kit` first on PATH, so that a test that
looks the command up there fails instead of testing some other build.
"""
from __future__ import annotations

import sys
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("qcow2kit")
QCOW2KIT = [str(SCRIPT)]
COMPAT = [sys.executable, "-m", "qcow2kit.compat"]
REPO = Path(__file__).resolve().parent.parent
