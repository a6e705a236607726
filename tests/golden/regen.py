"""Regenerate qcow2py.json: what qemu's iotests qcow2.py prints for each test image.

    python3 tests/golden/regen.py /path/to/qemu/tests/qemu-iotests/qcow2.py

qcow2.py (with its qcow2_format.py beside it) comes from a qemu source tree; it is
not part of this repository. The images are built by tests/imagekit.py with the
installed qemu-img, whose version is recorded: the images, and so the outputs, are
deterministic for one qemu version.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import imagekit  # noqa: E402

MODES = {  # mode name -> qcow2.py arguments after IMAGE
    "dump-header": ["dump-header"],
    "dump-header-exts": ["dump-header-exts"],
    "dump-header -j": ["dump-header", "-j"],
    "dump-header-exts -j": ["dump-header-exts", "-j"],
}


def qemu_version() -> str:
    return imagekit.run("qemu-img", "--version").splitlines()[0]


def main(qcow2_py: str) -> None:
    out = {"qemu-img": qemu_version(), "outputs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in imagekit.build_all(Path(tmp)).items():
            out["outputs"][kind] = {
                mode: subprocess.run([sys.executable, qcow2_py, str(path), *args],
                                     check=True, capture_output=True, text=True).stdout
                for mode, args in MODES.items()}
    (HERE / "qcow2py.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
