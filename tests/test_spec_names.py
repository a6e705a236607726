"""The hand-written names and limits held to qcow2.ksy, read as YAML (not through the
code under test): header field ids and their -orig-id, feature bits and bitmap flags by
the spec's instances, the magic, and the QEMU limits the spec's text states. And
set-header takes every name of a field; an unknown one is a usage error."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from ourcmd import QCOW2KIT, REPO
from qcow2kit import image, limits, names

KSY = yaml.safe_load((REPO / "qcow2.ksy").read_text())
TYPES: Dict[str, Any] = KSY["types"]


def _bit_instances(kind: str, source: str) -> List[str]:
    """The names of the instances of type kind that test one bit of source
    (`source % 2 == 1` or `source / 2**n % 2 == 1`), bit 0 first, by -orig-id when
    the spec has one."""
    found = {}
    for name, spec in TYPES[kind]["instances"].items():
        m = re.fullmatch(rf"{source}( / (\d+))? % 2 == 1", str(spec.get("value", "")))
        if m:
            divisor = int(m.group(2) or 1)
            assert divisor & (divisor - 1) == 0
            found[divisor.bit_length() - 1] = spec.get("-orig-id", name)
    assert sorted(found) == list(range(len(found)))
    return [found[bit] for bit in sorted(found)]


def test_header_fields_are_the_specs() -> None:
    seq = [f for f in TYPES["header"]["seq"] if f["id"] != "additional_fields"]
    assert [spec for spec, _, _ in names.HEADER_FIELDS] == [f["id"] for f in seq]
    assert [txt for _, txt, _ in names.HEADER_FIELDS] == \
        [f.get("-orig-id", f["id"]) for f in seq]
    # qcow2.py spells one name its own way; every other is qcow2.txt's
    assert {txt: dump for _, txt, dump in names.HEADER_FIELDS if txt != dump} == \
        {"snapshots_offset": "snapshot_offset"}


def test_feature_bits_are_the_specs() -> None:
    for group in names.FEATURE_GROUPS:
        assert list(names.FEATURE_BITS[group]) == _bit_instances(f"{group}_features", "lo")
        unknown = TYPES[f"{group}_features"]["instances"]["has_unknown_bits"]["value"]
        assert unknown == f"hi != 0 or lo >= {1 << len(names.FEATURE_BITS[group])}"
    assert names.KNOWN_INCOMPATIBLE_BITS == 0b11111


def test_bitmap_flags_are_the_specs() -> None:
    spelled = [n.replace("_", "-") for n in _bit_instances("bitmap_directory_entry", "flags")]
    assert list(names.BITMAP_FLAGS) == spelled
    reserved = TYPES["bitmap_directory_entry"]["instances"]["has_reserved_flags"]["value"]
    assert reserved == f"flags >= {names.KNOWN_BITMAP_FLAGS + 1}"


def test_magic_is_the_specs() -> None:
    contents = TYPES["header"]["seq"][0]["contents"]
    raw = b"".join(c.encode() if isinstance(c, str) else bytes([c]) for c in contents)
    assert image.MAGIC.to_bytes(4, "big") == raw


def test_limits_the_spec_states() -> None:
    """The QEMU limits that qcow2.ksy's text states, as it states them."""
    def doc(kind: str, field: str) -> str:
        return " ".join(next(f for f in TYPES[kind]["seq"] if f["id"] == field)["doc"].split())
    assert f"at most {limits.MAX_BACKING_NAME}" in doc("header", "len_backing_file_name")
    assert f"up to {limits.MAX_BITMAP_NAME}" in doc("bitmap_directory_entry", "len_name")
    assert f"{limits.MAX_BITMAPS})" in doc("bitmaps_extension", "num_bitmaps")
    assert f"a {limits.MAX_L1_BYTES >> 20} MiB L1 table" in " ".join(KSY["doc"].split())


@pytest.mark.parametrize("name", ["ofs_refcount_table", "refcount_table_offset"])
def test_set_header_takes_each_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    proc = subprocess.run([*QCOW2KIT, "set-header", str(path), name, "0x20000"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    info = subprocess.run(["qemu-img", "check", "--output=json", str(path)],
                          capture_output=True, text=True)
    assert info.returncode != 0  # the refcount table moved to where there is none
    with open(path, "rb") as f:
        f.seek(48)
        assert int.from_bytes(f.read(8), "big") == 0x20000


def test_unknown_field_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    before = path.read_bytes()
    proc = subprocess.run([*QCOW2KIT, "set-header", str(path), "refcount_offset", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "'refcount_offset'" in proc.stderr
    for spec, txt, dump in names.HEADER_FIELDS:
        assert spec in proc.stderr and txt in proc.stderr and dump in proc.stderr
    assert path.read_bytes() == before


def test_whatis_names_a_field_set_header_takes(tmp_path: Path) -> None:
    """The name whatis prints for a header field is one set-header takes."""
    path = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    copy = shutil.copy(path, tmp_path / "b.qcow2")
    proc = subprocess.run([*QCOW2KIT, "whatis", str(path), "0x30"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    field = re.search(r"header field (\w+)", proc.stdout).group(1)
    assert field == "ofs_refcount_table"
    proc = subprocess.run([*QCOW2KIT, "set-header", str(copy), field, "0x10000"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
