"""Header and extension edits: qemu agrees with every result, and refusals change nothing."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
from click.testing import CliRunner

import imagekit
from live import served
from qcow2kit import open_image
from qcow2kit.cli import main as cli
from qcow2kit.dump import render
from golden import regen
from ourcmd import QCOW2KIT, COMPAT

GOLDEN = json.loads((Path(__file__).parent / "golden" / "qcow2py.json").read_text())
COMPAT_EDITS = regen.EDITS  # qcow2.py's arguments after IMAGE, and its standard input
TEST_MAGIC = 0x71C0D3E5
BACKING_FORMAT = 0xE2792ACA


def qcow2kit(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*QCOW2KIT, *args], input=stdin, capture_output=True, text=True)


def compat(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*COMPAT, *args], input=stdin,
                          capture_output=True, text=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cluster_size(path: Path) -> int:
    with open_image(path) as image:
        return image.cluster_size


def qemu_img(*args: str, image: Path) -> subprocess.CompletedProcess:
    """qemu-img run beside the image (qemu opens relative data file names from there)."""
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                          cwd=image.parent)


def opened(*paths: Path) -> List[str]:
    """qemu-img arguments naming images; an encrypted one comes with its secret."""
    with open_image(paths[0]) as image:
        if image.header.crypt_method == 0:
            return [str(p) for p in paths]
    return ["--object", imagekit.SECRET, "--image-opts",
            *(f"driver=qcow2,file.filename={p},encrypt.key-secret=sec0" for p in paths)]


def check(path: Path) -> dict:
    """qemu-img check's JSON without the file name, and its exit status."""
    proc = qemu_img("check", "--output=json", *opened(path), image=path)
    result = json.loads(proc.stdout) if proc.stdout.strip() else {}
    result.pop("filename", None)
    return {"rc": proc.returncode, **result}


def info(path: Path) -> dict:
    return imagekit.qemu_json("info", path)


# --- the edit x image-kind matrix ----------------------------------------------

Edit = Tuple[List[str], Callable[[dict, dict], None], Callable[[str], bool]]


def _size_grew(before: dict, after: dict) -> None:
    assert after["virtual-size"] == 2 * before["virtual-size"]


def l1_covers(path: Path, size: int) -> bool:
    with open_image(path) as image:
        return image.header.l1_size * image.cluster_size * image.qcow2.num_l2_entries >= size


def _lazy_refcounts_on(before: dict, after: dict) -> None:
    assert after["format-specific"]["data"]["lazy-refcounts"] is True


def _same_info(before: dict, after: dict) -> None:
    assert after == before


def _backing_format_gone(before: dict, after: dict) -> None:
    assert "backing-filename-format" in before and "backing-filename-format" not in after
    assert after["backing-filename"] == before["backing-filename"]


MATRIX: Dict[str, Edit] = {
    "add-header-ext": (["add-header-ext", "IMAGE", hex(TEST_MAGIC), "qcow2kit"], _same_info,
                       lambda kind: True),
    "del-header-ext": (["del-header-ext", "IMAGE", hex(BACKING_FORMAT)], _backing_format_gone,
                       lambda kind: kind in ("backing", "backing_chain")),
    "set-feature-bit": (["set-feature-bit", "IMAGE", "compatible", "0"], _lazy_refcounts_on,
                        lambda kind: kind != "v2"),
    "set-header": (["set-header", "IMAGE", "size", "SIZE2"], _size_grew,
                   lambda kind: not kind.startswith("bitmaps")),
}
MATRIX_KINDS = sorted(k for k in imagekit.KINDS if k != "bitmaps_crafted")
CASES = [(kind, edit) for kind in MATRIX_KINDS for edit, (_, _, applies) in MATRIX.items()
         if applies(kind)]


@pytest.mark.parametrize("kind,edit", CASES)
def test_edit_keeps_image_valid(image_copy, kind: str, edit: str) -> None:
    path = image_copy(kind)
    original = path.with_name("original.qcow2")
    shutil.copyfile(path, original)
    args, expect, _ = MATRIX[edit]
    before = info(path)
    args = [str(path) if a == "IMAGE" else str(2 * before["virtual-size"]) if a == "SIZE2"
            else a for a in args]
    check_before = check(path)
    data = path.read_bytes()
    cs = cluster_size(path)
    if edit == "set-header" and not l1_covers(path, 2 * before["virtual-size"]):
        proc = qcow2kit(*args)
        assert proc.returncode == 0
        assert "warning: qemu will refuse to open the image: the L1 table" in proc.stderr
        assert qemu_img("info", str(path), image=path).returncode != 0
        return

    proc = qcow2kit(*args)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr

    after = path.read_bytes()
    assert sha256(after[cs:]) == sha256(data[cs:]), "wrote outside the first cluster"
    check_after = check(path)
    if edit == "set-header":  # guest clusters follow the virtual size
        assert check_after.pop("total-clusters") == 2 * check_before.pop("total-clusters")
    assert check_after == check_before
    cmp = qemu_img("compare", *opened(original, path), image=path)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    expect(before, info(path))
    with open_image(path) as image:
        dump = render(image)
    if edit == "add-header-ext":
        assert f"magic                     {TEST_MAGIC:#x} (<unknown>)" in dump
    elif edit == "del-header-ext":
        assert "(Backing format)" not in dump
    elif edit == "set-feature-bit":
        assert "compatible_features       [0]" in dump
    else:
        assert f"size                      {2 * before['virtual-size']}" in dump


def test_edits_keep_compression_type_and_extra_header_bytes(image_copy) -> None:
    path = image_copy("zstd")
    for args in (["add-header-ext", str(path), hex(TEST_MAGIC), "x"],
                 ["set-header", str(path), "size", "0x800000"]):
        proc = qcow2kit(*args)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert info(path)["format-specific"]["data"]["compression-type"] == "zstd"
    assert check(path)["rc"] == 0
    with open_image(path) as image:
        assert image.header.compression_type == 1
        assert image.header.additional_fields == bytes(7)


def test_backing_name_moves_after_extensions(image_copy) -> None:
    path = image_copy("backing")
    before = info(path)
    proc = qcow2kit("add-header-ext", str(path), hex(TEST_MAGIC), "a longer payload " * 8)
    assert proc.returncode == 0, proc.stderr
    with open_image(path) as image:
        last = image.extensions[-1]
        end = last.offset + 8 + last.length + len(last.padding) + 8  # + end marker
        assert image.header.backing_file_offset == end
        assert image.backing_file == "backing_base.qcow2"
    assert info(path)["backing-filename"] == before["backing-filename"]
    assert check(path)["rc"] == 0


def test_bitmaps_extension_untouched(image_copy) -> None:
    """qcow2.py crashes half-way on any edit of such an image; qcow2kit does not."""
    path = image_copy("bitmaps")
    with open_image(path) as image:
        ext = image.extension("bitmaps")
        bitmaps_raw = (ext.data, ext.padding)
        directory = image.bitmaps
    before = info(path)["format-specific"]["data"]["bitmaps"]
    for args in (["add-header-ext", str(path), hex(TEST_MAGIC), "next to bitmaps"],
                 ["set-feature-bit", str(path), "compatible", "0"],
                 ["del-header-ext", str(path), hex(TEST_MAGIC)]):
        assert qcow2kit(*args).returncode == 0
    with open_image(path) as image:
        ext = image.extension("bitmaps")
        assert (ext.data, ext.padding) == bitmaps_raw
        assert image.bitmaps == directory
    assert info(path)["format-specific"]["data"]["bitmaps"] == before
    assert check(path)["rc"] == 0


# --- the compat shim: the same bytes as qcow2.py where qcow2.py is right -----------

def test_compat_edits_cover_the_golden() -> None:
    assert GOLDEN["edits"]
    assert all(sorted(v) == sorted(COMPAT_EDITS) for v in GOLDEN["edits"].values())


def qcow2kit_argv(qcow2py_args: List[str], image: str) -> Tuple[List[str], bool]:
    """The qcow2kit command that does what qcow2.py IMAGE ARGS does, and whether it
    reads the payload from standard input."""
    name, *rest = qcow2py_args
    if name == "add-header-ext-stdio":
        return ["add-header-ext", image, *rest, "--stdin"], True
    return [name, image, *rest], False


@pytest.mark.parametrize("tool", ["compat", "qcow2kit"])
@pytest.mark.parametrize("kind", sorted(GOLDEN["edits"]))
def test_edit_bytes_equal_qcow2py(images: Dict[str, Path], tmp_path: Path, kind: str,
                                  tool: str) -> None:
    """The compat shim (qcow2.py's command line) and the qcow2kit commands write the
    first cluster qcow2.py wrote, and nothing else. Where qcow2.py finds no extension
    to delete, and so writes nothing, qcow2kit refuses (exit status 1)."""
    for name, (args, stdin) in COMPAT_EDITS.items():
        copy = tmp_path / images[kind].name
        shutil.copyfile(images[kind], copy)
        size = cluster_size(copy)
        original = copy.read_bytes()
        rest = sha256(original[size:])
        absent = args[0] == "del-header-ext" and \
            int(args[1], 0) not in [magic for _, magic, _ in imagekit.extensions(copy)]
        if tool == "compat":
            proc = compat(str(copy), *args, stdin=stdin)
            # qcow2.py prints nothing but this
            expected = "No such header extension\n" if absent else ""
            assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected, ""), name
        else:  # in process: a command per edit and kind; no extension to delete: refused
            argv, piped = qcow2kit_argv(args, str(copy))
            result = CliRunner().invoke(cli, argv, input=stdin if piped else "")
            assert result.exit_code == (1 if absent else 0), result.stderr
        data = copy.read_bytes()
        assert sha256(data[:size]) == GOLDEN["edits"][kind][name], name
        assert sha256(data[size:]) == rest


@pytest.mark.parametrize("length", [1, 7, 9, 18])
@pytest.mark.parametrize("kind", ["v2", "bitmaps", "backing", "luks"])
def test_payload_padding(image_copy, kind: str, length: int) -> None:
    """Payloads padded to 8 bytes with zeros, read back with struct, on the kinds
    qcow2.py cannot edit too; qemu finds the image as valid as before."""
    path = image_copy(kind)
    payload = bytes(range(0x41, 0x41 + length))
    check_before = check(path)
    proc = qcow2kit("add-header-ext", str(path), hex(TEST_MAGIC), payload.decode())
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    found = [(off, length) for off, magic, length in imagekit.extensions(path)
             if magic == TEST_MAGIC]
    assert [n for _, n in found] == [length]
    data = path.read_bytes()
    start = found[0][0] + 8
    assert data[start:start + length] == payload
    padded = -(-length // 8) * 8
    assert data[start + length:start + padded] == bytes(padded - length)
    assert check(path) == check_before
    assert qemu_img("info", *opened(path), image=path).returncode == 0


def test_compat_v2_header_written_whole(image_copy) -> None:
    """qcow2.py writes header_length - 1 bytes: on v2 the last snapshot_offset byte is lost."""
    path = image_copy("v2")
    assert compat(str(path), "set-header", "snapshot_offset", "0x123456789abcdeff").returncode == 0
    with open_image(path) as image:
        assert image.header.snapshot_offset == 0x123456789ABCDEFF
    assert compat(str(path), "set-header", "snapshot_offset", "0").returncode == 0
    assert compat(str(path), "add-header-ext", "0x71c0d3e5", "v2 ext").returncode == 0
    assert check(path)["rc"] == 0
    with open_image(path) as image:
        assert [e.magic for e in image.extensions] == [TEST_MAGIC]
        assert image.header.snapshot_offset == 0


# --- refusals leave the file byte-identical ----------------------------------------

REFUSALS = {
    "too-big-for-cluster": ("v3", ["add-header-ext", "IMAGE", "0x99", "x" * 70000],
                            "more than the first cluster"),
    "value-too-wide": ("v3", ["set-header", "IMAGE", "l1_size", "0x100000000"],
                       "does not fit l1_size (4 bytes)"),
    "v3-field-on-v2": ("v2", ["set-feature-bit", "IMAGE", "compatible", "0"],
                       "not present in this version 2 header"),
    "unknown-field": ("v3", ["set-header", "IMAGE", "no_such_field", "1"],
                      "'no_such_field' is not a known header field"),
    "bit-out-of-range": ("v3", ["set-feature-bit", "IMAGE", "autoclear", "64"],
                         "64 is not a valid bit number"),
    "version-change": ("v3", ["set-header", "IMAGE", "version", "2"],
                       "changing the version"),
    "end-marker-magic": ("v3", ["add-header-ext", "IMAGE", "0", "x"],
                         "0 ends the extension area"),
    "result-does-not-parse": ("v3", ["set-header", "IMAGE", "cluster_bits", "8"],
                              "the new header would not parse: header.cluster_bits"),
    "no-such-extension": ("v3", ["del-header-ext", "IMAGE", "0x1234"],
                          "no header extension with magic 0x1234"),
    "bad-image": ("unknown_ext", ["set-header", "IMAGE", "size", "1"], "runs past"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_edit_changes_nothing(image_copy, case: str) -> None:
    kind, args, message = REFUSALS[case]
    path = image_copy(kind)
    if case == "bad-image":
        first = imagekit.extensions(path)[0][0]
        with open(path, "r+b") as f:
            f.seek(first + 4)
            f.write((0x7FFFFFF0).to_bytes(4, "big"))
    data = path.read_bytes()
    stamp = os.stat(path).st_mtime_ns
    proc = qcow2kit(*[str(path) if a == "IMAGE" else a for a in args])
    assert proc.returncode == (2 if case == "unknown-field" else 1)  # a usage error
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr
    assert path.read_bytes() == data
    assert os.stat(path).st_mtime_ns == stamp


USAGE_ERRORS = {
    "unknown-group": (["set-feature-bit", "IMAGE", "sideways", "1"],
                      "Invalid value for '{incompatible|compatible|autoclear}': 'sideways'"),
    "bit-not-a-number": (["set-feature-bit", "IMAGE", "autoclear", "one"],
                         "Invalid value for 'BIT': 'one' is not a number"),
    "value-not-a-number": (["set-header", "IMAGE", "size", "12abc"],
                           "Invalid value for 'VALUE': '12abc' is not a number"),
    "magic-not-a-number": (["add-header-ext", "IMAGE", "0xzz", "x"],
                           "Invalid value for 'MAGIC': '0xzz' is not a number"),
    "del-magic-not-a-number": (["del-header-ext", "IMAGE", "bitmaps"],
                               "Invalid value for 'MAGIC': 'bitmaps' is not a number"),
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_error_changes_nothing(image_copy, case: str) -> None:
    """An argument of the wrong kind is a usage error (exit 2, click's usage message)."""
    args, message = USAGE_ERRORS[case]
    path = image_copy("v3")
    data = path.read_bytes()
    proc = qcow2kit(*[str(path) if a == "IMAGE" else a for a in args])
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"Usage: qcow2kit {args[0]} ")
    assert f"Error: {message}" in proc.stderr, proc.stderr
    assert path.read_bytes() == data


def test_warns_when_qemu_will_refuse(image_copy) -> None:
    path = image_copy("v3")
    proc = qcow2kit("set-feature-bit", str(path), "incompatible", "63")
    assert proc.returncode == 0
    assert "warning: qemu will refuse to open the image: unknown incompatible feature bits [63]" \
        in proc.stderr
    assert qemu_img("info", str(path), image=path).returncode != 0
    proc = qcow2kit("set-feature-bit", str(path), "incompatible", "1")
    assert proc.returncode == 0
    assert "the corrupt bit is set" in proc.stderr


def test_add_extension_data_sources(image_copy, tmp_path: Path) -> None:
    path = image_copy("v3")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)))
    assert qcow2kit("add-header-ext", str(path), "0x10", "--data-file", str(blob)).returncode == 0
    assert qcow2kit("add-header-ext", str(path), "0x11", "--stdin", stdin="piped").returncode == 0
    proc = qcow2kit("add-header-ext", str(path), "0x12", "both", "--stdin")
    assert proc.returncode == 2 and "Error: give the data once" in proc.stderr  # usage
    with open_image(path) as image:
        data = {e.magic: e.data for e in image.extensions}
    assert data[0x10] == bytes(range(256)) and data[0x11] == b"piped"


def test_locked_image_refused_then_forced(image_copy, tmp_path: Path) -> None:
    """A qemu process writing to the image holds qemu's locks; --force overrides."""
    path = image_copy("v3")
    with served(path, tmp_path):
        data = path.read_bytes()
        proc = qcow2kit("set-feature-bit", str(path), "compatible", "0")
        assert proc.returncode == 1
        assert 'failed to get "write" lock' in proc.stderr
        assert path.read_bytes() == data
        proc = qcow2kit("set-feature-bit", str(path), "compatible", "0", "--force")
        assert proc.returncode == 0, proc.stderr
    assert info(path)["format-specific"]["data"]["lazy-refcounts"] is True


def test_truncated_image_is_not_extended(image_copy) -> None:
    """Found by the fuzzer: an edit of a file cut inside its header area grew the file."""
    path = image_copy("cluster_512")
    path.write_bytes(path.read_bytes()[:123])
    data = path.read_bytes()
    proc = qcow2kit("add-header-ext", str(path), "0x99", "x" * 100)
    assert proc.returncode == 1
    assert "a truncated image is not extended by an edit" in proc.stderr
    assert path.read_bytes() == data


def test_an_edit_refuses_a_file_changed_under_it(image_copy, monkeypatch) -> None:
    """set-header and set write only if the first cluster (or the field) still holds
    what the edit read: a write by someone else in between refuses the edit, and the
    other writer's bytes stay."""
    from qcow2kit import edit

    path = image_copy("v3")
    real = edit.write_in_place

    def meddle(target, offset, old, new, *args):  # another process writes the header
        with open(target, "r+b") as f:
            f.seek(offset + 100)
            f.write(b"\x01")
        return real(target, offset, old, new, *args)

    monkeypatch.setattr(edit, "write_in_place", meddle)
    before = imagekit.file_sha256(path)
    result = CliRunner().invoke(cli, ["set-header", str(path), "size", "0x20000000"])
    assert result.exit_code == 1
    assert "the first cluster: the file changed while it was being edited" in result.output
    with open(path, "rb") as f:
        f.seek(100)
        assert f.read(1) == b"\x01"
    assert imagekit.file_sha256(path) != before
