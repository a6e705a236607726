"""QEMU's limits on what it reads from an image, in one place.

QEMU refuses (or, in qemu-img check, reports) a structure beyond these before it
reads it, and so does qcow2kit: no field sizes an allocation past them. The values
are QEMU's (block/qcow2.h, block/qcow2-bitmap.c, include/block/block_int-common.h);
tests/test_names.py ties those that qcow2.ksy mentions to its text.
"""
from __future__ import annotations

MAX_FILE = 1 << 63  # no file reaches past 2^63 bytes (an off_t)
MAX_READ_END = (1 << 63) - (1 << 30)  # BDRV_MAX_LENGTH: no read ends past it
MAX_BACKING_NAME = 1023  # bytes of the backing file name
MAX_L1_BYTES = 32 << 20  # QCOW_MAX_L1_SIZE
MAX_L1_ENTRIES = MAX_L1_BYTES // 8
MAX_REFTABLE_BYTES = 8 << 20  # QCOW_MAX_REFTABLE_SIZE
MAX_SNAPSHOTS = 65536  # QCOW_MAX_SNAPSHOTS
MAX_SNAPSHOT_TABLE_BYTES = 64 << 20  # QCOW_MAX_SNAPSHOTS_SIZE
MAX_SNAPSHOT_EXTRA_DATA = 1024  # QCOW_MAX_SNAPSHOT_EXTRA_DATA
MAX_BITMAPS = 65535  # QCOW2_MAX_BITMAPS
MAX_BITMAP_DIRECTORY = 1024 * MAX_BITMAPS  # QCOW2_MAX_BITMAP_DIRECTORY_SIZE
MAX_BITMAP_TABLE = 0x8000000  # entries of one bitmap table (BME_MAX_TABLE_SIZE)
MAX_BITMAP_DATA = 512 << 20  # bytes of data one bitmap table may point at (BME_MAX_PHYS_SIZE)
MAX_BITMAP_NAME = 1023  # BME_MAX_NAME_SIZE
BITMAP_GRANULARITY_BITS = range(9, 32)  # BME_MIN_GRANULARITY_BITS..BME_MAX_GRANULARITY_BITS
MAX_CHECK_CLUSTERS = 2**31 - 1  # qemu-img check gives up on larger files
