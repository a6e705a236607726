"""Extended L2 images in every subcluster state, made with qemu-io where qemu writes the
state and patched with plain struct arithmetic where it never does.

64 KiB clusters of 32 subclusters of 2 KiB, 16 guest clusters. Guest cluster by guest
cluster (qemu-io writes, zero writes and discards):

0  data in subcluster 0, zeros written into subcluster 1 of the allocated cluster,
   the rest allocated but never written
1  a whole cluster of zeros written where nothing was allocated
2  zeros written into subcluster 1 of an unallocated cluster
3  a compressed cluster
4  data written, then the whole cluster discarded
5  data written over the whole cluster, then zeros over subclusters 1 and 2
6  data in subclusters 4..7 only
7  data written, then zeros with unmap over the whole cluster
8.. never written

`backed` is the same sequence over a backing file full of data, where unallocated
subclusters read from the backing file. Copies of `states` get entries qemu never
writes: `crafted` has reserved bits qemu ignores when it reads (bit 0 of an extended
entry, a subcluster bitmap and the copied bit on a compressed cluster), `invalid`
has a subcluster both allocated and zero, and an allocation bit without a host
cluster, which qemu refuses to read.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict

import imagekit

CLUSTER = 64 << 10
SUBCLUSTER = CLUSTER // 32
SIZE = 16 * CLUSTER

WRITES = [
    "write -P 0x11 0 2k", "write -z 2k 2k",
    f"write -z {CLUSTER} {CLUSTER}",
    f"write -z {2 * CLUSTER + SUBCLUSTER} 2k",
    f"write -c -P 0x33 {3 * CLUSTER} {CLUSTER}",
    f"write -P 0x44 {4 * CLUSTER} {CLUSTER}", f"discard {4 * CLUSTER} {CLUSTER}",
    f"write -P 0x55 {5 * CLUSTER} {CLUSTER}", f"write -z {5 * CLUSTER + SUBCLUSTER} 4k",
    f"write -P 0x66 {6 * CLUSTER + 4 * SUBCLUSTER} 8k",
    f"write -P 0x77 {7 * CLUSTER} {CLUSTER}", f"write -z -u {7 * CLUSTER} {CLUSTER}",
]

# The guest clusters whose entries are patched.
INVALID_BOTH = 8     # allocated cluster, subcluster 0 both allocated and zero
INVALID_ALLOC = 9    # no host cluster, yet an allocation bit
RESERVED_BIT0 = 10   # copy of entry 0 with bit 0 set
COMPRESSED_BITMAP = 11  # copy of the compressed entry with a subcluster bitmap
COMPRESSED_COPIED = 12  # copy of the compressed entry with bit 63 set


def _create(path: Path, backing: str | None = None) -> Path:
    imagekit.create(path, str(SIZE), backing=backing, backing_fmt="raw" if backing else None,
                    extended_l2="on", cluster_size=str(CLUSTER))
    imagekit.qemu_io(path, *WRITES)
    return path


def l2_offset(path: Path) -> int:
    """Where the L2 table of guest clusters 0..2047 is (the first L1 entry)."""
    data = path.read_bytes()
    l1, = struct.unpack_from(">Q", data, 40)
    return struct.unpack_from(">Q", data, l1)[0] & 0x00FF_FFFF_FFFF_FE00


def entry(path: Path, index: int) -> tuple:
    """(descriptor, bitmap) of an extended L2 entry of the first L2 table."""
    data = path.read_bytes()
    return struct.unpack_from(">QQ", data, l2_offset(path) + 16 * index)


def set_entry(path: Path, index: int, descriptor: int, bitmap: int) -> None:
    with open(path, "r+b") as f:
        f.seek(l2_offset(path) + 16 * index)
        f.write(struct.pack(">QQ", descriptor, bitmap))


def build(directory: Path) -> Dict[str, Path]:
    """The four images, by name: states, backed, crafted, invalid."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / "base.raw"
    imagekit.run("qemu-img", "create", "-q", "-f", "raw", str(base), str(SIZE))
    imagekit.run("qemu-io", "-f", "raw", "-c", f"write -P 0xbb 0 {SIZE}", str(base))
    states = _create(directory / "states.qcow2")
    backed = _create(directory / "backed.qcow2", backing="base.raw")
    crafted, invalid = directory / "crafted.qcow2", directory / "invalid.qcow2"
    crafted.write_bytes(states.read_bytes())
    invalid.write_bytes(states.read_bytes())
    data0, bitmap0 = entry(states, 0)
    compressed, _ = entry(states, 3)
    set_entry(crafted, RESERVED_BIT0, data0 | 1, bitmap0)
    set_entry(crafted, COMPRESSED_BITMAP, compressed, 0x0000_0001_0000_0002)
    set_entry(crafted, COMPRESSED_COPIED, compressed | 1 << 63, 0)
    set_entry(invalid, INVALID_BOTH, data0, 1 << 32 | 1)
    set_entry(invalid, INVALID_ALLOC, 0, 1)
    return {"states": states, "backed": backed, "crafted": crafted, "invalid": invalid}
