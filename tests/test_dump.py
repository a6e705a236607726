"""`qcow2kit dump` and the compat shim print exactly what qemu's qcow2.py prints."""
from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from pathlib import Path
from typing import Dict

import pytest
from click.testing import CliRunner

import imagekit
from qcow2kit import Qcow2Error, open_image
from qcow2kit import compat
from qcow2kit.cli import main as cli
from qcow2kit.dump import render
from ourcmd import QCOW2KIT, COMPAT

GOLDEN = json.loads((Path(__file__).parent / "golden" / "qcow2py.json").read_text())
MODES = {  # golden mode -> (exts_only, as_json)
    "dump-header": (False, False),
    "dump-header-exts": (True, False),
    "dump-header -j": (False, True),
    "dump-header-exts -j": (True, True),
}


def test_golden_made_with_this_qemu() -> None:
    """The recorded outputs are for images made by the installed qemu-img."""
    assert GOLDEN["qemu-img"] == imagekit.run("qemu-img", "--version").splitlines()[0], \
        "qemu-img changed: rerun tests/golden/regen.py with qemu's qcow2.py"


def test_golden_covers_every_kind() -> None:
    assert sorted(GOLDEN["outputs"]) == sorted(imagekit.KINDS)


@pytest.mark.parametrize("kind", sorted(imagekit.KINDS))
def test_render_equals_qcow2py(images: Dict[str, Path], kind: str) -> None:
    with open_image(images[kind]) as image:
        for mode, (exts_only, as_json) in MODES.items():
            assert render(image, exts_only, as_json) == GOLDEN["outputs"][kind][mode], mode


@pytest.mark.parametrize("kind", ["v2", "bitmaps_crafted", "unknown_ext", "luks"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_cli_and_compat_equal_qcow2py(images: Dict[str, Path], kind: str, mode: str,
                                      capsys: pytest.CaptureFixture) -> None:
    exts_only, as_json = MODES[mode]
    args = ["dump", str(images[kind])] + (["--exts-only"] if exts_only else []) + \
        (["--json"] if as_json else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output == GOLDEN["outputs"][kind][mode]

    argv = ["qcow2.py", "-j"] if as_json else ["qcow2.py"]
    argv[1:1] = [str(images[kind]), "dump-header-exts" if exts_only else "dump-header"]
    assert compat.main(argv) == 0
    assert capsys.readouterr().out == GOLDEN["outputs"][kind][mode]


def test_entry_points_run(images: Dict[str, Path]) -> None:
    """The installed console script and `python -m qcow2kit.compat` work end to end."""
    path = str(images["bitmaps"])
    out = subprocess.run([*QCOW2KIT, "dump", "-j", path], capture_output=True, text=True,
                         check=True).stdout
    assert out == GOLDEN["outputs"]["bitmaps"]["dump-header -j"]
    out = subprocess.run([*COMPAT, path, "-j",
                          "dump-header-exts"], capture_output=True, text=True, check=True).stdout
    assert out == GOLDEN["outputs"]["bitmaps"]["dump-header-exts -j"]


def test_dump_opens_read_only(images: Dict[str, Path]) -> None:
    with open_image(images["v3"]) as image:
        assert image._file.mode == "rb"


def test_compat_argv_rules(images: Dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    path = str(images["v3"])
    assert compat.main(["qcow2.py", path]) == 1
    assert capsys.readouterr().out.startswith("Usage: ")
    assert compat.main(["qcow2.py", path, "no-such-cmd"]) == 0
    assert capsys.readouterr().out == "Unknown command 'no-such-cmd'\n"
    assert compat.main(["qcow2.py", path, "dump-header", "extra"]) == 0
    assert "Supported commands:" in capsys.readouterr().out


# --- bad input: one line on stderr, non-zero exit, no traceback, file untouched ---

def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _not_qcow2(path: Path) -> Path:
    path.write_bytes(b"\x7fELF" + bytes(200))
    return path


def _truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:50])
    return path


def _cluster_bits(path: Path) -> Path:
    _patch(path, 20, struct.pack(">I", 30))
    return path


def _ext_past_cluster(path: Path) -> Path:
    off = imagekit.extensions(path)[0][0]
    _patch(path, off + 4, struct.pack(">I", 0x10000))
    return path


def _non_ascii_bitmap(path: Path) -> Path:
    fine = next(e for e in imagekit.bitmap_directory(path) if e["name"] == "fine")
    _patch(path, fine["name_offset"], "f\u00efe".encode())
    return path


BAD_INPUTS = {
    "not-qcow2": ("v3", _not_qcow2, "header.magic at offset 0x0: not a qcow2 image"),
    # zeros past the end, as qemu reads them ("qcow2 header too short")
    "truncated-header": ("v3", _truncated, "header.len_header at offset 0x64: 0 is below "
                         "the minimum 104"),
    "cluster-bits": ("v3", _cluster_bits,
                     "header.cluster_bits at offset 0x14: 30 is above the maximum 21"),
    "ext-past-cluster": ("v3", _ext_past_cluster,
                         "header_extensions.extensions[0].data at offset 0x78: runs past"),
    "non-ascii-bitmap-name": ("bitmaps", _non_ascii_bitmap, "the name is not ASCII"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line(image_copy, case: str) -> None:
    kind, damage, expected = BAD_INPUTS[case]
    path = damage(image_copy(kind))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for cmd in ([*QCOW2KIT, "dump", str(path)],
                [*COMPAT, str(path), "dump-header"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 1, proc
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert expected in proc.stderr
        assert str(path) in proc.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("target", ["missing", "directory"])
def test_unreadable_path(tmp_path: Path, target: str) -> None:
    path = tmp_path / "nothing.qcow2" if target == "missing" else tmp_path
    proc = subprocess.run([*QCOW2KIT, "dump", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"qcow2kit: {path}: " + (
        "No such file or directory" if target == "missing" else "Is a directory")


def test_api_raises_qcow2error(image_copy) -> None:
    path = _cluster_bits(image_copy("v3"))
    with pytest.raises(Qcow2Error) as err:
        open_image(path)
    assert (err.value.structure, err.value.offset) == ("header.cluster_bits", 0x14)
