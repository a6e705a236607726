"""Internal snapshots: the snapshot table as `qemu-img snapshot -l` lists it, and more.

The table is read entry by entry with the generated parser, each entry from a window
of the file no larger than the biggest entry QEMU accepts, after the header's count
and offset have been checked against the file size and QEMU's limits: no header field
decides how much is read before it is checked.
"""
from __future__ import annotations

import io
import time
from typing import Any, Dict, List, Optional, Tuple

from kaitaistruct import KaitaiStream

from . import printable
from .errors import PARSE_ERRORS, Qcow2Error, describe, locate
from .generated.qcow2 import Qcow2
from .image import Image, text
from .limits import MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOT_TABLE_BYTES, MAX_SNAPSHOTS
from .qemu_style import InOrder, c_string, ljust, size_to_str, to_json
from .qemu_version import NEWEST, SNAPSHOT_COLUMNS, QemuVersion
from .records import Record

ENTRY_FIXED_BYTES = 40
MAX_ENTRY_BYTES = ENTRY_FIXED_BYTES + MAX_SNAPSHOT_EXTRA_DATA + 2 * 0xFFFF + 7
ID_BUFFER = 128  # qemu copies IDs and names into buffers of these sizes
NAME_BUFFER = 256
NS = 1_000_000_000
L1_ENTRY_BYTES = 8


class Snapshot(Record):
    """One snapshot table entry (a named tuple: cheaper to define than a dataclass, for
    the start-up of the commands that list snapshots).

    vm_state_size is the size QEMU uses (the extra data's 64-bit size when present);
    vm_state_size_large, disk_size and icount are None when the extra data is too
    short to hold them.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, which nothing calls
    offset: int
    id: str
    name: str
    l1_table_offset: int
    l1_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    vm_state_size: int
    extra_data_size: int
    vm_state_size_large: Optional[int]
    disk_size: Optional[int]
    icount: Optional[int]
    name_offset: int  # where the name starts in the file
    name_size: int


# --- reading ---------------------------------------------------------------------

def _check_table(image: Image) -> None:
    """The header's snapshot count and offset, before any entry is read."""
    h = image.header
    count, offset = h.nb_snapshots, h.snapshot_offset
    if count > MAX_SNAPSHOTS:
        field = image.qcow2.header._debug["num_snapshots"]["start"]
        raise Qcow2Error("header.nb_snapshots", field,
                         f"{count} snapshots exceed QEMU's limit of {MAX_SNAPSHOTS}")
    if offset % image.cluster_size:
        raise Qcow2Error("snapshots", offset, "the snapshot table is not cluster aligned")


def _check_extra_data(entry: Any, index: int, offset: int) -> None:
    size = getattr(entry, "len_extra_data", 0)
    if size > MAX_SNAPSHOT_EXTRA_DATA:
        field = offset + entry._debug["len_extra_data"]["start"]
        raise Qcow2Error(f"snapshots[{index}].extra_data_size", field,
                         f"{size} bytes exceed QEMU's limit of {MAX_SNAPSHOT_EXTRA_DATA}")


def _parse_entry(image: Image, index: int, offset: int) -> Tuple[Any, int]:
    """The parsed entry at offset, read from a window of MAX_ENTRY_BYTES (zeros past
    the end of the file, as qemu reads them), and its size with padding."""
    window = io.BytesIO(image.read(offset, MAX_ENTRY_BYTES))
    entry = Qcow2.Snapshot(KaitaiStream(window), image.qcow2, image.qcow2)
    try:
        entry._read()
    except PARSE_ERRORS as exc:
        _check_extra_data(entry, index, offset)
        where = locate(image.qcow2, exc, entry, offset, f"snapshots[{index}]")
        raise Qcow2Error(where.path, where.offset, describe(exc, in_file=True)) from None
    _check_extra_data(entry, index, offset)
    end = entry._debug["padding"]["start"]
    image.past_end(f"snapshots[{index}]", offset, end)
    return entry, -(-end // 8) * 8


def _snapshot(index: int, offset: int, entry: Any) -> Snapshot:
    extra = entry.extra_data
    large = getattr(extra, "vm_state_size_large", None)  # absent fields are not set
    return Snapshot(
        index=index, offset=offset, id=text(entry.id), name=text(entry.name),
        l1_table_offset=entry.ofs_l1_table, l1_size=entry.num_l1_table,
        date_sec=entry.date_sec, date_nsec=entry.date_nsec,
        vm_clock_nsec=entry.vm_clock_nsec,
        vm_state_size=entry.vm_state_size if large is None else large,
        extra_data_size=entry.len_extra_data, vm_state_size_large=large,
        disk_size=getattr(extra, "disk_size", None), icount=extra.icount,
        name_offset=offset + entry._debug["name"]["start"], name_size=entry.len_name)


def read_snapshots(image: Image) -> List[Snapshot]:
    """The snapshot table, checked against the file size and QEMU's limits."""
    _check_table(image)
    start = offset = image.header.snapshot_offset
    out = []
    for index in range(image.header.nb_snapshots):
        entry, size = _parse_entry(image, index, offset)
        out.append(_snapshot(index, offset, entry))
        offset += size
        if offset - start > MAX_SNAPSHOT_TABLE_BYTES:
            raise Qcow2Error(f"snapshots[{index}]", out[-1].offset,
                             f"the snapshot table exceeds QEMU's limit of "
                             f"{MAX_SNAPSHOT_TABLE_BYTES >> 20} MiB")
    return out


def entry_field(image: Image, snapshot: Snapshot, offset: int) -> Optional[str]:
    """The field of the snapshot's table entry that holds the byte at offset, as the
    generated parser names it; None outside the entry."""
    entry, _ = _parse_entry(image, snapshot.index, snapshot.offset)
    at = offset - snapshot.offset
    return next((name for name, span in entry._debug.items()
                 if span.get("start", at + 1) <= at < span.get("end", 0)), None)


def list_snapshots(image: Image) -> List[Snapshot]:
    """The snapshot table; a snapshot's L1 table past the end of the file (it is not
    read) is a finding."""
    snapshots = read_snapshots(image)
    for s in snapshots:
        image.past_end(f"snapshots[{s.index}].l1_table", s.l1_table_offset,
                       s.l1_size * L1_ENTRY_BYTES)
    return snapshots


# --- qemu's view ---------------------------------------------------------------------

def _int64(value: int) -> int:
    """An unsigned 64-bit value as qemu's JSON prints it (a signed integer)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def qemu_snapshot_info(snapshot: Snapshot) -> Dict[str, Any]:
    """The snapshot as `qemu-img info --output=json` gives it (SnapshotInfo)."""
    info: Dict[str, Any] = {
        "id": c_string(snapshot.id, ID_BUFFER),
        "name": c_string(snapshot.name, NAME_BUFFER),
        "vm-state-size": _int64(snapshot.vm_state_size),
        "date-sec": snapshot.date_sec, "date-nsec": snapshot.date_nsec,
        "vm-clock-sec": snapshot.vm_clock_nsec // NS,
        "vm-clock-nsec": snapshot.vm_clock_nsec % NS}
    if snapshot.icount not in (None, -1):
        info["icount"] = snapshot.icount
    return info


def snapshot_data(snapshot: Snapshot) -> Dict[str, Any]:
    """qemu's fields for the snapshot, then the extra data as stored (None where it
    is too short) and where the snapshot's L1 table is."""
    return InOrder(**qemu_snapshot_info(snapshot),
                   **{"extra-data-size": snapshot.extra_data_size,
                      "vm-state-size-large": snapshot.vm_state_size_large,
                      "disk-size": snapshot.disk_size,
                      "l1-size": snapshot.l1_size,
                      "l1-table-offset": snapshot.l1_table_offset})


# --- text ------------------------------------------------------------------------------

def _clock(nsec: int, hour_digits: int) -> str:
    secs = nsec // NS
    return (f"{secs // 3600:0{hour_digits}d}:{secs // 60 % 60:02d}:{secs % 60:02d}."
            f"{nsec // 1_000_000 % 1000:03d}")


# qemu's columns: ID and TAG padded on the right, the others on the left (before 9.0
# without spaces between VM SIZE, DATE, VM CLOCK and ICOUNT), by release
_OLD_HEADER = f"{'ID':<10}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>13}{'ICOUNT':>11}"
_NEW_HEADER = (f"{'ID':<7} {'TAG':<16} {'VM_SIZE':>8} {'DATE':>19} {'VM_CLOCK':>15} "
               f"{'ICOUNT':>10}")


def listing_header(qemu: QemuVersion = NEWEST) -> str:
    """The column heading of `qemu-img snapshot -l` in release qemu."""
    return _NEW_HEADER if qemu.has(SNAPSHOT_COLUMNS) else _OLD_HEADER


def listing_line(info: Dict[str, Any], qemu: QemuVersion = NEWEST) -> str:
    """The line of `qemu-img snapshot -l` in release qemu for a snapshot as
    qemu_snapshot_info gives it (the date in local time)."""
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["date-sec"]))
    clock = info["vm-clock-sec"] * NS + info["vm-clock-nsec"]
    size = size_to_str(info["vm-state-size"] % (1 << 64))
    if qemu.has(SNAPSHOT_COLUMNS):
        return (f"{ljust(info['id'], 7)} {ljust(info['name'], 16)} {size:>8} {date:>19} "
                f"{_clock(clock, 4):>15} {info.get('icount', '--'):>10}")
    return (f"{ljust(info['id'], 9)} {ljust(info['name'], 16)} {size:>8}{date:>20}"
            f"{_clock(clock, 2):>13}{info.get('icount', ''):>11}")


def listing(snapshots: List[Snapshot], qemu: QemuVersion = NEWEST) -> str:
    """`qemu-img snapshot -l` output in release qemu: nothing without snapshots."""
    if not snapshots:
        return ""
    lines = [listing_line(qemu_snapshot_info(s), qemu) for s in snapshots]
    return "\n".join(["Snapshot list:", listing_header(qemu)] + lines) + "\n"


DETAIL_COLUMNS = (("DISK SIZE", 13), ("VM STATE SIZE", 15), ("ICOUNT", 10),
                  ("EXTRA DATA", 10), ("L1 SIZE", 8), ("L1 OFFSET", 13))
DETAILS_HEADER = f"{'ID':<9} {'TAG':<16}" + "".join(
    f" {label:>{width}}" for label, width in DETAIL_COLUMNS)


def _or_dash(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def details_line(snapshot: Snapshot) -> str:
    """Extra data in bytes ("-" where the extra data is too short) and the L1 table;
    the id and name escaped and padded to terminal columns (qcow2kit's own table)."""
    values = (_or_dash(snapshot.disk_size), _or_dash(snapshot.vm_state_size_large),
              _or_dash(snapshot.icount), str(snapshot.extra_data_size),
              str(snapshot.l1_size), hex(snapshot.l1_table_offset))
    names = (f"{printable.pad(c_string(snapshot.id, ID_BUFFER), 9)} "
             f"{printable.pad(c_string(snapshot.name, NAME_BUFFER), 16)}")
    return names + "".join(f" {value:>{width}}"
                           for value, (_, width) in zip(values, DETAIL_COLUMNS))


def render_text(snapshots: List[Snapshot], qemu: QemuVersion = NEWEST) -> str:
    """`qemu-img snapshot -l` output in release qemu, then a section with each
    snapshot's extra data and L1 table."""
    if not snapshots:
        return ""
    details = ["", "Snapshot details:", DETAILS_HEADER] + [details_line(s) for s in snapshots]
    return listing(snapshots, qemu) + "\n".join(details) + "\n"


def render_json(snapshots: List[Snapshot]) -> str:
    """The snapshots as a JSON list in qemu-img's JSON style."""
    return to_json([snapshot_data(s) for s in snapshots]) + "\n"
