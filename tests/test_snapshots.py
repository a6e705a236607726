"""`qcow2kit snapshots` against `qemu-img snapshot -l` and `qemu-img info`, on every image
kind and on snapshot tables crafted with struct; the extra columns against the table
read with struct; the limits checked before the table is read."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

import imagekit
from sidebyside import (header, one_line_error, ours_ok, qcow2kit, qemu_img, qemu_ok,
                        set_header, snapshot_list_args)

CRAFTED = "bitmaps_crafted"
QEMU_KINDS = [k for k in imagekit.KINDS if k != CRAFTED]
DETAILS = b"\nSnapshot details:\n"
QEMU_FIELDS = ("id", "name", "vm-state-size", "date-sec", "date-nsec", "vm-clock-sec",
               "vm-clock-nsec", "icount")


# --- the snapshot table, read and written with struct ----------------------------------

ENTRY = struct.Struct(">QIHHIIQII")  # the fixed 40 bytes of a snapshot table entry


def read_table(path: Path) -> List[dict]:
    """Each entry's L1 table, extra data fields (None when absent) and names."""
    data, h = Path(path).read_bytes(), header(path)
    pos, out = h["snapshots_offset"], []
    for _ in range(h["nb_snapshots"]):
        l1_off, l1_size, id_len, name_len, _, _, _, _, extra_len = ENTRY.unpack_from(data, pos)
        extra = data[pos + 40:pos + 40 + extra_len]
        fields = [struct.unpack_from(">Q", extra, i)[0] if extra_len >= i + 8 else None
                  for i in (0, 8, 16)]
        icount = None if fields[2] is None else fields[2] - (fields[2] >> 63 << 64)
        out.append({"extra-data-size": extra_len, "vm-state-size-large": fields[0],
                    "disk-size": fields[1], "icount": icount, "l1-size": l1_size,
                    "l1-table-offset": l1_off})
        pos += (40 + extra_len + id_len + name_len + 7) // 8 * 8
    return out


def extra_data(large: Optional[int] = None, disk: Optional[int] = None,
               icount: Optional[int] = None, unknown: bytes = b"") -> bytes:
    present = [v for v in (large, disk, icount) if v is not None]
    return b"".join(struct.pack(">Q", v % (1 << 64)) for v in present) + unknown


def entry(snapshot_id: bytes, name: bytes, extra: bytes = b"", l1: tuple = (0, 0),
          date: tuple = (0, 0), clock: int = 0, vm_state: int = 0) -> bytes:
    raw = ENTRY.pack(l1[0], l1[1], len(snapshot_id), len(name), date[0], date[1], clock,
                     vm_state, len(extra)) + extra + snapshot_id + name
    return raw + bytes(-len(raw) % 8)


def l1_of(path: Path) -> tuple:
    data = Path(path).read_bytes()
    return struct.unpack_from(">Q", data, 40)[0], struct.unpack_from(">I", data, 36)[0]


def install_table(path: Path, entries: List[bytes], count: Optional[int] = None) -> int:
    """Write a snapshot table in new clusters at the end and point the header at it."""
    cluster = 1 << header(path)["cluster_bits"]
    offset = -(-path.stat().st_size // cluster) * cluster
    table = b"".join(entries)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(table + bytes(-len(table) % cluster))
    set_header(path, "nb_snapshots", len(entries) if count is None else count)
    set_header(path, "snapshots_offset", offset)
    return offset


# --- every kind ----------------------------------------------------------------------

def listing_and_details(path: Path, kind: str, tz: str = "UTC") -> tuple:
    """(qemu-img snapshot -l, qcow2kit snapshots) output."""
    theirs = qemu_ok(*snapshot_list_args(kind, path), cwd=path.parent, tz=tz)
    return theirs, ours_ok("snapshots", path.name, cwd=path.parent, tz=tz)


def detail_rows(ours: bytes) -> List[List[str]]:
    """The columns after ID and TAG of the details section's rows (for names of up to
    16 bytes)."""
    section = ours[ours.index(DETAILS) + len(DETAILS):].splitlines()
    return [row[27:].decode(errors="replace").split() for row in section[1:]]


@pytest.mark.parametrize("kind", QEMU_KINDS)
def test_listing_equals_qemu_img(kind: str, images: Dict[str, Path]) -> None:
    """The text starts with exactly what qemu-img snapshot -l prints (nothing without
    snapshots); the details section has the extra data and L1 table of each."""
    path = images[kind]
    theirs, ours = listing_and_details(path, kind)
    table = read_table(path)
    if not table:
        assert ours == theirs == b""
        return
    assert ours[:len(theirs)] == theirs
    assert ours[len(theirs):].startswith(DETAILS)
    dash = lambda v: "-" if v is None else str(v)  # noqa: E731
    assert detail_rows(ours) == [
        [dash(t["disk-size"]), dash(t["vm-state-size-large"]), dash(t["icount"]),
         str(t["extra-data-size"]), str(t["l1-size"]), hex(t["l1-table-offset"])]
        for t in table]


@pytest.mark.parametrize("kind", QEMU_KINDS)
def test_json_has_qemu_info_fields_and_the_table(kind: str, images: Dict[str, Path]) -> None:
    path = images[kind]
    ours = json.loads(ours_ok("snapshots", "--json", path.name, cwd=path.parent))
    info = json.loads(qemu_ok("info", "--output=json", path.name, cwd=path.parent))
    assert [{k: v for k, v in s.items() if k in QEMU_FIELDS} for s in ours] == \
        info.get("snapshots", [])
    assert [{k: v for k, v in s.items() if k not in QEMU_FIELDS} for s in ours] == \
        [{k: v for k, v in t.items() if k != "icount"} for t in read_table(path)]


# --- crafted tables ------------------------------------------------------------------

def crafted_entries(l1: tuple) -> List[bytes]:
    """Entries qemu never writes: every extra data length, names that qemu cuts or
    escapes, extreme sizes, clocks and dates."""
    long_id = b"x" * 200  # qemu keeps 127 bytes of an ID
    cut_name = "é".encode() * 150  # 300 bytes: cut to 255, inside a character
    return [
        entry(b"1", b"plain", extra_data(0, 4 << 20, -1), l1, (1700000000, 5), 0),
        entry(b"7", 'snäpshot ✓ "quoted"\t\\'.encode(), extra_data(5 << 30 | 123, 8 << 20),
              l1, (0, 999999999), 100 * 3600 * 10**9 + 1_500_000_000),
        entry(long_id, cut_name, b"", l1, (0xFFFFFFFF, 0), 0, 123456789),
        entry(b"42", b"a\0hidden", extra_data((1 << 64) - 1, 1, 1 << 62, bytes(16)), l1,
              (86399, 1), (1 << 64) - 1),
        entry(b"nc", "\ufdd0 \U0001D11E \x01 \x7f".encode(), extra_data(7, 2, -5), l1),
        entry(b"", b"", extra_data(1 << 40), l1, (1, 2), 59 * 10**9 + 999_999_999),
        entry(b"large-only", b"n" * 40, extra_data(1023), l1, (1234567890, 0), 61 * 10**9,
              0xFFFFFFFF),
    ]


@pytest.fixture
def crafted(image_copy: Callable[[str], Path]) -> Path:
    path = image_copy("v3")
    install_table(path, crafted_entries(l1_of(path)))
    return path


@pytest.mark.parametrize("tz", ["UTC", "XST-5:30"])
def test_crafted_table_listing(tz: str, crafted: Path) -> None:
    """Dates in local time, clocks, sizes and cut or padded names, as qemu prints them."""
    theirs, ours = listing_and_details(crafted, "v3", tz)
    assert ours[:len(theirs)] == theirs
    assert len(detail_rows(ours)) == 7


@pytest.mark.parametrize("args", [["--output=json"], []], ids=["json", "text"])
def test_crafted_table_info(args: List[str], crafted: Path) -> None:
    """qemu-img info shows the same table the same way (escapes, signed 64-bit values,
    icount only when recorded)."""
    theirs = qemu_ok("info", *args, crafted.name, cwd=crafted.parent)
    ours_args = [a.replace("--output=json", "--json") for a in args]
    assert ours_ok("info", "--qemu", *ours_args, crafted.name, cwd=crafted.parent) == theirs


def test_crafted_table_json(crafted: Path) -> None:
    snaps = json.loads(ours_ok("snapshots", "--json", crafted.name, cwd=crafted.parent))
    assert [s["extra-data-size"] for s in snaps] == [24, 16, 0, 40, 24, 8, 8]
    assert snaps[2]["vm-state-size-large"] is None and snaps[2]["disk-size"] is None
    assert snaps[3]["vm-state-size"] == -1  # 2^64 - 1 as qemu's signed JSON integer
    assert snaps[3]["vm-state-size-large"] == (1 << 64) - 1
    assert "icount" not in snaps[0] and snaps[4]["icount"] == -5


def test_table_ending_the_file(tmp_path: Path) -> None:
    """qemu writes no padding after the last entry when the table ends the file."""
    path = imagekit.create(tmp_path / "end.qcow2", "1M")
    imagekit.run("qemu-img", "snapshot", "-c", "s1", str(path))
    assert path.stat().st_size % 8  # the file ends inside the last entry's padding
    theirs, ours = listing_and_details(path, "v3")
    assert ours[:len(theirs)] == theirs and len(detail_rows(ours)) == 1
    theirs = qemu_ok("info", "--output=json", path.name, cwd=path.parent)
    assert ours_ok("info", "--qemu", "--json", path.name, cwd=path.parent) == theirs


# --- limits and broken tables ------------------------------------------------------------

def both_fail(path: Path, command: str = "info") -> str:
    """qemu-img info refuses the image; qcow2kit gives one line and exit status 1."""
    assert qemu_img("info", path.name, cwd=path.parent).returncode != 0
    return one_line_error(qcow2kit(command, path.name, cwd=path.parent))


@pytest.mark.parametrize("command", ["info", "snapshots"])
def test_huge_snapshot_count_in_a_tiny_file(command: str, image_copy: Callable[[str], Path]
                                            ) -> None:
    path = image_copy("v3")
    set_header(path, "nb_snapshots", 0xFFFFFFFF)
    set_header(path, "snapshots_offset", 1 << header(path)["cluster_bits"])
    error = both_fail(path, command)
    assert "header.nb_snapshots at offset 0x3c: 4294967295 snapshots exceed QEMU's limit " \
           "of 65536" in error


def test_table_past_the_end_of_the_file(image_copy: Callable[[str], Path]) -> None:
    """qemu reads zeros past the end of the file: 2000 empty entries, listed as qemu
    lists them, and a warning naming the entries past the end."""
    path = image_copy("v3")
    cluster = 1 << header(path)["cluster_bits"]
    offset = -(-path.stat().st_size // cluster) * cluster
    set_header(path, "nb_snapshots", 2000)
    set_header(path, "snapshots_offset", offset)
    for args in ([], ["--output=json"]):
        theirs = qemu_ok("info", *args, path.name, cwd=path.parent)
        assert ours_ok("info", "--qemu", *(["--json"] if args else []), path.name,
                       cwd=path.parent) == theirs
    result = qcow2kit("snapshots", path.name, cwd=path.parent)
    assert result.exit_code == 0, result.stderr
    assert f"qcow2kit: warning: {path.name}: snapshots[0] at offset {offset:#x}: lies " \
           "past the end of the file" in result.stderr
    assert result.stdout.count("1970-01-01 00:00:00") == 2000


def test_unaligned_table(image_copy: Callable[[str], Path]) -> None:
    path = image_copy("snapshots")
    set_header(path, "snapshots_offset", header(path)["snapshots_offset"] + 8)
    assert "not cluster aligned" in both_fail(path)


def test_too_much_extra_data(image_copy: Callable[[str], Path]) -> None:
    path = image_copy("v3")
    install_table(path, [entry(b"1", b"big", bytes(2000), l1_of(path))])
    error = both_fail(path, "snapshots")
    assert "snapshots[0].extra_data_size at offset" in error
    assert "2000 bytes exceed QEMU's limit of 1024" in error


def test_huge_extra_data_size_is_not_read(image_copy: Callable[[str], Path]) -> None:
    path = image_copy("v3")
    raw = bytearray(entry(b"1", b"x", b"", l1_of(path)))
    struct.pack_into(">I", raw, 36, 0xFFFFFFFF)
    install_table(path, [bytes(raw)])
    assert "4294967295 bytes exceed QEMU's limit" in both_fail(path, "snapshots")


def test_table_over_64_mib(image_copy: Callable[[str], Path]) -> None:
    """Entries of 128 KiB (zero names, written sparse): the 513th crosses 64 MiB."""
    path = image_copy("v3")
    head = ENTRY.pack(0, 0, 0xFFFF, 0xFFFF, 0, 0, 0, 0, 0)
    size = (40 + 2 * 0xFFFF + 7) // 8 * 8
    cluster = 1 << header(path)["cluster_bits"]
    offset = -(-path.stat().st_size // cluster) * cluster
    with open(path, "r+b") as f:
        for i in range(520):
            f.seek(offset + i * size)
            f.write(head)
        f.truncate(offset + 520 * size)
    set_header(path, "nb_snapshots", 520)
    set_header(path, "snapshots_offset", offset)
    error = both_fail(path, "snapshots")
    assert "snapshots[511]" in error and "exceeds QEMU's limit of 64 MiB" in error


def test_entry_cut_by_the_end_of_the_file(image_copy: Callable[[str], Path]) -> None:
    """The rest of the name reads as zeros, as qemu reads it; the cut entry is named."""
    path = image_copy("v3")
    offset = install_table(path, [entry(b"1", b"n" * 100, extra_data(0, 1, 2), l1_of(path))])
    with open(path, "r+b") as f:
        f.truncate(offset + 80)
    theirs = qemu_ok("info", "--output=json", path.name, cwd=path.parent)
    assert ours_ok("info", "--qemu", "--json", path.name, cwd=path.parent) == theirs
    result = qcow2kit("snapshots", path.name, cwd=path.parent)
    assert result.exit_code == 0, result.stderr
    assert f"qcow2kit: warning: {path.name}: snapshots[0] at offset {offset:#x}: 165 " \
           f"bytes run past the end of the file, which ends at {offset + 80:#x}" in result.stderr


def test_name_not_utf8(image_copy: Callable[[str], Path]) -> None:
    """A name that is not UTF-8 is shown as qemu-img shows it: its bytes in text,
    U+FFFD in JSON."""
    path = image_copy("v3")
    install_table(path, [entry(b"1", b"\xff\xfe", extra_data(0, 1, 2), l1_of(path))])
    for args in ([], ["--output=json"]):
        theirs = qemu_ok("info", *args, path.name, cwd=path.parent)
        assert ours_ok("info", "--qemu", *(["--json"] if args else []), path.name,
                       cwd=path.parent) == theirs
    theirs = qemu_ok("snapshot", "-l", path.name, cwd=path.parent)
    assert ours_ok("snapshots", path.name, cwd=path.parent).startswith(theirs)


def test_l1_table_past_the_end_of_the_file(image_copy: Callable[[str], Path]) -> None:
    """snapshots warns, naming the snapshot's L1 table; info does not read L1 tables."""
    path = image_copy("snapshots")
    table = read_table(path)
    offset = header(path)["snapshots_offset"] + (40 + 24 + 1 + 5 + 7) // 8 * 8
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(">QI", 1 << 40, table[1]["l1-size"]))
    result = qcow2kit("snapshots", path.name, cwd=path.parent)
    assert result.exit_code == 0, result.stderr
    assert f"qcow2kit: warning: {path.name}: snapshots[1].l1_table at offset " \
           "0x10000000000: lies past the end of the file" in result.stderr
    theirs = qemu_ok("info", "--output=json", path.name, cwd=path.parent)
    assert ours_ok("info", "--qemu", "--json", path.name, cwd=path.parent) == theirs
