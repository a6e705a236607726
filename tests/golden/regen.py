"""Regenerate qcow2py.json: what qemu's iotests qcow2.py does with each test image.

It records the output of the four dump modes, and the SHA-256 of the first cluster after
each edit command (for the image kinds qcow2.py edits correctly: version 3 images
without a bitmaps extension, on which it crashes half-way).

    python3 tests/golden/regen.py /path/to/qemu/tests/qemu-iotests/qcow2.py COMMIT

qcow2.py (with its qcow2_format.py beside it) comes from a qemu source tree; it is
not part of this repository. COMMIT names the qemu commit the two files come from;
it is recorded in qcow2py.json beside the outputs. The images are built by
tests/imagekit.py with the installed qemu-img, whose version is recorded: the images,
and so the outputs, are deterministic for one qemu version.
"""
from __future__ import annotations

import hashlib
import json
import shutil
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


# edit name -> (qcow2.py arguments after IMAGE, standard input)
EDITS = {
    "set-header": (["set-header", "size", "0x1000000"], ""),
    "set-feature-bit": (["set-feature-bit", "compatible", "0"], ""),
    "add-header-ext": (["add-header-ext", "0x71c0d3e5", "qcow2kit test data"], ""),
    "add-header-ext-stdio": (["add-header-ext-stdio", "0x71c0d3e6"], "from stdin\n"),
    "del-header-ext": (["del-header-ext", "0x6803f857"], ""),
    # payloads whose padding to 8 bytes is 7, 1, 7 and 6 bytes
    **{f"add-header-ext-{len(data)}": (["add-header-ext", "0x71c0d3e7", data], "")
       for data in ("q", "qcow2ki", "qcow2kit!", "qcow2kit payload18")},
}


def editable_by_qcow2py(kind: str) -> bool:
    return kind != "v2" and not kind.startswith("bitmaps")


def first_cluster_sha256(path: Path) -> str:
    """The edits change only the first cluster, and the rest holds snapshot times and
    LUKS key material, which differ from one build to the next."""
    data = path.read_bytes()
    cluster_bits = int.from_bytes(data[20:24], "big")
    return hashlib.sha256(data[:1 << cluster_bits]).hexdigest()


def edited_digests(qcow2_py: str, image: Path, scratch: Path) -> dict:
    out = {}
    for name, (args, stdin) in EDITS.items():
        copy = scratch / image.name
        shutil.copyfile(image, copy)
        subprocess.run([sys.executable, qcow2_py, str(copy), *args], input=stdin,
                       check=True, capture_output=True, text=True)
        out[name] = first_cluster_sha256(copy)
    return out


# the edit qcow2.py makes on each image with malformed extensions (it crashes on a
# bitmaps extension of another length than 24, whose data it does not keep)
MALFORMED_EDIT = (["add-header-ext", "0x71c0d3e5", "qcow2kit test data"], "")


def malformed_outputs(qcow2_py: str, directory: Path) -> dict:
    """The dump outputs of each image of imagekit.MALFORMED_EXTENSIONS, and the
    first-cluster digest after MALFORMED_EDIT."""
    out = {}
    for name in imagekit.MALFORMED_EXTENSIONS:
        path = imagekit.malformed(name, directory)
        out[name] = {mode: subprocess.run([sys.executable, qcow2_py, str(path), *args],
                                          check=True, capture_output=True, text=True).stdout
                     for mode, args in MODES.items()}
        if not name.startswith("bitmaps"):
            args, stdin = MALFORMED_EDIT
            subprocess.run([sys.executable, qcow2_py, str(path), *args], input=stdin,
                           check=True, capture_output=True, text=True)
            out[name]["edit"] = first_cluster_sha256(path)
    return out


def qemu_version() -> str:
    return imagekit.run("qemu-img", "--version").splitlines()[0]


def main(qcow2_py: str, commit: str) -> None:
    out = {"qemu-img": qemu_version(), "qcow2.py qemu commit": commit,
           "outputs": {}, "edits": {}}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        for kind, path in imagekit.build_all(Path(tmp) / "images").items():
            out["outputs"][kind] = {
                mode: subprocess.run([sys.executable, qcow2_py, str(path), *args],
                                     check=True, capture_output=True, text=True).stdout
                for mode, args in MODES.items()}
            if editable_by_qcow2py(kind):
                out["edits"][kind] = edited_digests(qcow2_py, path, scratch)
        malformed = Path(tmp) / "malformed"
        malformed.mkdir()
        out["malformed"] = malformed_outputs(qcow2_py, malformed)
    (HERE / "qcow2py.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
