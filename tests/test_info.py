"""`qcow2kit info` against `qemu-img info`, byte for byte, on every image kind of
imagekit and on crafted images; the extras against the header read with struct."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, List

import pytest

import imagekit
from sidebyside import (feature_table, header, one_line_error, ours_ok, qcow2kit, qemu_img,
                        qemu_ok)

CRAFTED = "bitmaps_crafted"  # invalid bitmap table entries: qemu refuses to open it
QEMU_KINDS = [k for k in imagekit.KINDS if k != CRAFTED]
FEATURE_TYPES = ("incompatible", "compatible", "autoclear")
# the header extension types of qcow2.txt (docs/interop): backing file format, feature
# name table, bitmaps, full disk encryption header, external data file name
KNOWN_EXTENSIONS = {0xE2792ACA, 0x6803F857, 0x23852875, 0x0537BE77, 0x44415441}


@pytest.fixture(scope="module")
def qemu_known_bits(tmp_path_factory: pytest.TempPathFactory) -> set:
    """The feature bits qemu knows: qemu-img writes its whole feature name table into
    every version 3 image it creates."""
    path = imagekit.create(tmp_path_factory.mktemp("known") / "fresh.qcow2", "1M",
                           compat="1.1")
    return {(FEATURE_TYPES[kind], bit) for kind, bit in feature_table(path)}


def both(path: Path, *args: str, name: str = "") -> tuple:
    """(qemu-img info, qcow2kit info --qemu) stdout for the same arguments."""
    target = name or path.name
    theirs = qemu_ok("info", *args, target, cwd=path.parent)
    ours = ours_ok("info", "--qemu", *[a.replace("--output=json", "--json") for a in args],
                   target, cwd=path.parent)
    return theirs, ours


# --- every kind, byte for byte ---------------------------------------------------------

@pytest.mark.parametrize("args", [["--output=json"], [], ["--output=json", "--backing-chain"],
                                  ["--backing-chain"]], ids=["json", "text", "json-chain",
                                                             "text-chain"])
@pytest.mark.parametrize("kind", QEMU_KINDS)
def test_equals_qemu_img_info(kind: str, args: List[str], images: Dict[str, Path]) -> None:
    """JSON and human output, alone and with the backing chain: identical bytes."""
    theirs, ours = both(images[kind], *args)
    assert ours == theirs


@pytest.mark.parametrize("kind", QEMU_KINDS)
def test_extras_come_on_top_of_qemus_output(kind: str, images: Dict[str, Path]) -> None:
    """Without --qemu: the same JSON plus a "qcow2kit" member, the same text plus the
    feature bit and extension sections."""
    path = images[kind]
    data = json.loads(ours_ok("info", "--json", path.name, cwd=path.parent))
    assert data.pop("qcow2kit")["version"] == header(path)["version"]
    assert data == json.loads(qemu_ok("info", "--output=json", path.name, cwd=path.parent))
    text = ours_ok("info", path.name, cwd=path.parent)
    qemu_text = qemu_ok("info", path.name, cwd=path.parent)
    assert text.startswith(qemu_text)
    assert text[len(qemu_text):].startswith(b"Feature bits:\n" if header(path)["version"] >= 3
                                            else b"Header extensions:\n")


def extras(path: Path) -> dict:
    return json.loads(ours_ok("info", "--json", path.name, cwd=path.parent))["qcow2kit"]


@pytest.mark.parametrize("kind", sorted(imagekit.KINDS))
def test_feature_bits_named_from_the_image_table(kind: str, images: Dict[str, Path],
                                                qemu_known_bits: set) -> None:
    """Every set bit and only those, with the name the image's table gives it, known
    when qemu knows it."""
    path = images[kind]
    h, names = header(path), feature_table(path)
    expected = [(t, bit, names.get((i, bit)), (t, bit) in qemu_known_bits)
                for i, t in enumerate(FEATURE_TYPES) for bit in range(64) if h[t] >> bit & 1]
    got = [(b["type"], b["bit"], b["name"], b["known"]) for b in extras(path)["feature-bits"]]
    assert got == expected


@pytest.mark.parametrize("kind", sorted(imagekit.KINDS))
def test_extensions_listed_unknown_flagged(kind: str, images: Dict[str, Path]) -> None:
    path = images[kind]
    expected = [(off, magic, length, magic in KNOWN_EXTENSIONS)
                for off, magic, length in imagekit.extensions(path)]
    got = [(e["offset"], e["magic"], e["length"], e["known"])
           for e in extras(path)["extensions"]]
    assert got == expected


def test_text_names_bits_and_flags_unknown_extensions(images: Dict[str, Path]) -> None:
    lazy = images["lazy_dirty"]
    text = ours_ok("info", lazy.name, cwd=lazy.parent).decode()
    assert "Feature bits:\n    incompatible: dirty bit (bit 0)\n" \
           "    compatible: lazy refcounts (bit 0)\n" in text
    unknown = images["unknown_ext"]
    text = ours_ok("info", unknown.name, cwd=unknown.parent).decode()
    assert "    unknown extension (0x12345678): 16 bytes at offset " in text
    assert "    unknown extension (0xdeadbeef): 8 bytes at offset " in text


# --- crafted images ---------------------------------------------------------------------

def set_bit(path: Path, group: str, bit: int) -> None:
    result = qcow2kit("set-feature-bit", "--force", path.name, group, str(bit), cwd=path.parent)
    assert result.exit_code == 0, result.stderr


def test_unknown_bits_flagged(image_copy: Callable[[str], Path]) -> None:
    """Unknown bits are listed and flagged; qemu ignores an unknown compatible bit
    (the output stays equal) and refuses an unknown incompatible one."""
    path = image_copy("v3")
    set_bit(path, "compatible", 7)
    set_bit(path, "autoclear", 40)
    theirs, ours = both(path, "--output=json")
    assert ours == theirs
    set_bit(path, "incompatible", 33)
    assert qemu_img("info", path.name, cwd=path.parent).returncode != 0
    bits = {(b["type"], b["bit"]): b for b in extras(path)["feature-bits"]}
    assert [k for k, b in bits.items() if not b["known"]] == [
        ("incompatible", 33), ("compatible", 7), ("autoclear", 40)]
    text = ours_ok("info", path.name, cwd=path.parent).decode()
    assert "    incompatible: unnamed (bit 33, unknown)\n" in text


@pytest.mark.parametrize("args", [["--output=json"], []], ids=["json", "text"])
def test_corrupt_bit(args: List[str], image_copy: Callable[[str], Path]) -> None:
    path = image_copy("v3")
    set_bit(path, "incompatible", 1)
    theirs, ours = both(path, *args)
    assert ours == theirs
    assert b"corrupt: true" in ours or b'"corrupt": true' in ours


CRAFTED_HEADERS = {  # kind, qcow2kit edit
    "data-file-name-without-the-bit": ("v3", ["add-header-ext", "0x44415441", "foo.data"]),
    "second-backing-format": ("backing", ["add-header-ext", "0xe2792aca", "raw"]),
    "bitmaps-autoclear-bit-clear": ("bitmaps", ["set-header", "autoclear_features", "0"]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_HEADERS))
def test_crafted_headers(case: str, image_copy: Callable[[str], Path]) -> None:
    """qemu shows a data file name even without the feature bit, keeps the last of two
    backing formats and hides bitmaps whose auto-clear bit is clear."""
    kind, edit = CRAFTED_HEADERS[case]
    path = image_copy(kind)
    result = qcow2kit(edit[0], "--force", path.name, *edit[1:], cwd=path.parent)
    assert result.exit_code == 0, result.stderr
    for args in (["--output=json"], []):
        theirs, ours = both(path, *args)
        assert ours == theirs


def test_in_use_bitmap(image_copy: Callable[[str], Path]) -> None:
    """A bitmap left in use by a qemu that died: flags in-use and auto."""
    path = image_copy("bitmaps")
    imagekit.run("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 4k", "-c", "abort",
                 path.name, ok=(-6, 134), cwd=path.parent)
    theirs, ours = both(path, "--output=json")
    assert ours == theirs
    assert b'"in-use"' in ours


def create_luks(path: Path, **opts: str) -> Path:
    """A LUKS image with these encrypt.* options (retrying qemu's flaky PBKDF timing)."""
    opts = {"encrypt.format": "luks", "encrypt.key-secret": "sec0", "encrypt.iter-time": "10",
            **{f"encrypt.{k.replace('_', '-')}": v for k, v in opts.items()}}
    for attempt in range(5):
        try:
            return imagekit.create(path, "1M", objects=[imagekit.SECRET], **opts)
        except RuntimeError as exc:
            if "accurate CPU usage" not in str(exc) or attempt == 4:
                raise
    raise AssertionError("unreachable")


LUKS_VARIANTS = {
    "twofish-cbc-essiv": dict(cipher_alg="twofish-128", cipher_mode="cbc", ivgen_alg="essiv",
                              ivgen_hash_alg="sha256", hash_alg="sha512"),
    "serpent-xts": dict(cipher_alg="serpent-192", cipher_mode="xts", hash_alg="sha1"),
    "cast5-cbc-plain": dict(cipher_alg="cast5-128", cipher_mode="cbc", ivgen_alg="plain"),
}


@pytest.mark.parametrize("variant", sorted(LUKS_VARIANTS))
def test_luks_variants(variant: str, tmp_path: Path) -> None:
    """Cipher, mode, IV generator (with its hash for essiv), hash and key slots."""
    path = create_luks(tmp_path / f"{variant}.qcow2", **LUKS_VARIANTS[variant])
    for args in (["--output=json"], []):
        theirs, ours = both(path, *args)
        assert ours == theirs


def test_aes_encryption(tmp_path: Path) -> None:
    path = imagekit.create(tmp_path / "aes.qcow2", "1M", objects=[imagekit.SECRET], **{
        "encrypt.format": "aes", "encrypt.key-secret": "sec0"})
    theirs, ours = both(path, "--output=json")
    assert ours == theirs
    assert b'"format": "aes"' in ours


@pytest.mark.parametrize("name", ["./backing.qcow2", "file:backing.qcow2", "ABSOLUTE",
                                  "../backing/backing.qcow2", "sub/../backing.qcow2"])
def test_file_name_forms(name: str, image_copy: Callable[[str], Path]) -> None:
    """The file name as given (file: dropped), the backing file resolved against its
    directory, the chain followed from there."""
    path = image_copy("backing")
    (path.parent / "sub").mkdir()
    name = str(path) if name == "ABSOLUTE" else name
    for args in (["--output=json", "--backing-chain"], ["--backing-chain"]):
        theirs, ours = both(path, *args, name=name)
        assert ours == theirs


def test_from_another_directory(images: Dict[str, Path]) -> None:
    chain = images["backing_chain"]
    name = f"{chain.parent.name}//{chain.name}"
    cwd = chain.parent.parent
    theirs = qemu_ok("info", "--backing-chain", name, cwd=cwd)
    assert ours_ok("info", "--qemu", "--backing-chain", name, cwd=cwd) == theirs


def test_odd_sizes(tmp_path: Path) -> None:
    """qcow2 virtual sizes round down to sectors, raw ones up."""
    base = tmp_path / "odd.raw"
    base.write_bytes(os.urandom(1000))
    top = imagekit.create(tmp_path / "top.qcow2", "4M", backing="odd.raw", backing_fmt="raw")
    edit = qcow2kit("set-header", top.name, "size", str((4 << 20) + 100), cwd=tmp_path)
    assert edit.exit_code == 0, edit.stderr
    for args in (["--output=json", "--backing-chain"], ["--backing-chain"]):
        theirs, ours = both(top, *args)
        assert ours == theirs


def test_probed_backing_format(tmp_path: Path) -> None:
    """Without a backing format extension qemu probes: qcow2 by its magic, else raw."""
    imagekit.create(tmp_path / "base.qcow2", "1M")
    (tmp_path / "base.raw").write_bytes(b"\1" * 4096)
    for base in ("base.qcow2", "base.raw"):
        top = tmp_path / f"top-{base}.qcow2"
        imagekit.create(top, "1M", backing=base, backing_fmt="raw")
        drop = qcow2kit("del-header-ext", top.name, "0xe2792aca", cwd=tmp_path)
        assert drop.exit_code == 0, drop.stderr
        theirs, ours = both(top, "--output=json", "--backing-chain")
        assert ours == theirs
        assert b"backing-filename-format" not in ours


def test_missing_backing_file(image_copy: Callable[[str], Path]) -> None:
    """Alone the image is shown as qemu shows it; its chain cannot be followed."""
    path = image_copy("backing")
    (path.parent / "backing_base.qcow2").unlink()
    theirs, ours = both(path, "--output=json")
    assert ours == theirs
    assert qemu_img("info", "--backing-chain", path.name, cwd=path.parent).returncode != 0
    error = one_line_error(qcow2kit("info", "--backing-chain", path.name, cwd=path.parent))
    assert "backing_base.qcow2" in error


def test_backing_loop(tmp_path: Path) -> None:
    imagekit.create(tmp_path / "a.qcow2", "1M")
    imagekit.create(tmp_path / "b.qcow2", "1M", backing="a.qcow2")
    imagekit.run("qemu-img", "rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2",
                 cwd=tmp_path)
    proc = qemu_img("info", "--backing-chain", "a.qcow2", cwd=tmp_path)
    assert b"infinite loop" in proc.stderr
    error = one_line_error(qcow2kit("info", "--backing-chain", "a.qcow2", cwd=tmp_path))
    assert "'a.qcow2' creates an infinite loop" in error


def test_big_tables_are_not_read(image_copy: Callable[[str], Path]) -> None:
    """L1 and refcount tables far beyond the end of the file do not matter to info."""
    path = image_copy("v3")
    for field in ("l1_table_offset", "refcount_table_offset"):
        result = qcow2kit("set-header", path.name, field, str(1 << 50), cwd=path.parent)
        assert result.exit_code == 0, result.stderr
    data = json.loads(ours_ok("info", "--json", path.name, cwd=path.parent))
    assert data["virtual-size"] == 4 << 20


def test_not_qcow2(tmp_path: Path) -> None:
    (tmp_path / "x.raw").write_bytes(bytes(1024))
    error = one_line_error(qcow2kit("info", "x.raw", cwd=tmp_path))
    assert "not a qcow2 image" in error

