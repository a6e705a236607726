"""Mutants of seed images: structural field mutations, random bytes, truncation.

A Mutant is its seed's name, byte patches and an optional new file length, so that
it is small, deterministic (made from a seeded random.Random) and written to disk
sparsely, without reading the seed's holes.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .fields import Field, SeedLayout, groups

MAX_OFFSET = 1 << 56  # qcow2 offsets end here
SIZES = (1023, 1024, 1025, 65535, 65536, (32 << 20) // 8 + 1, (8 << 20) + 1, 1 << 31,
         (1 << 32) - 1)
PATHS = ("/dev/zero", "/dev/null", "/proc/self/mem", "no-such-file", ".", "/")
FLAG_BITS = (1 << 63, 1 << 62, 1, 1 << 56, 2)  # copied, compressed, zero, reserved


@dataclass(frozen=True)
class Patch:
    offset: int
    data: bytes
    note: str  # what was changed, e.g. "l1_table[0].entry=8000000000030000"


@dataclass(frozen=True)
class Mutant:
    """A seed image with patches applied, then cut or extended to length."""

    seed: str
    patches: Tuple[Patch, ...]
    length: Optional[int]

    @property
    def notes(self) -> List[str]:
        return [p.note for p in self.patches] + \
            ([] if self.length is None else [f"length={self.length}"])

    def to_json(self) -> Dict[str, object]:
        return {"seed": self.seed, "length": self.length,
                "patches": [[p.offset, p.data.hex(), p.note] for p in self.patches]}

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "Mutant":
        return cls(str(data["seed"]), tuple(Patch(o, bytes.fromhex(h), n)
                                            for o, h, n in data["patches"]), data["length"])

    def without(self, index: int) -> "Mutant":
        """The mutant with patch index left out (for minimizing)."""
        return Mutant(self.seed, self.patches[:index] + self.patches[index + 1:], self.length)

    def full_length(self) -> "Mutant":
        """The mutant with the seed's length (for minimizing)."""
        return Mutant(self.seed, self.patches, None)

    def shrunk(self, same: Callable[["Mutant"], bool]) -> "Mutant":
        """The mutant without every patch (and the new length) that same, which says
        whether a smaller mutant still shows the defect, does not need."""
        m = self
        for i in reversed(range(len(m.patches))):
            if len(m.patches) > 1 and same(m.without(i)):
                m = m.without(i)
        if m.length is not None and m.patches and same(m.full_length()):
            m = m.full_length()
        return m


@dataclass(frozen=True)
class Seed:
    """A seed image: its kind, file and layout."""

    kind: str
    path: Path
    layout: SeedLayout


# --- values -----------------------------------------------------------------------

def _int_value(rng: random.Random, field: Field, current: int, seed: Seed) -> int:
    bits = 8 * field.width
    top = (1 << bits) - 1
    layout = seed.layout
    choices: List[Callable[[], int]] = [
        lambda: rng.choice((0, 1, top, 1 << (bits - 1), (1 << (bits - 1)) - 1)),
        lambda: current + rng.choice((-1, 1)) * rng.randint(1, 16),
        lambda: current ^ 1 << rng.randrange(bits),
        lambda: rng.choice((current * 2, current // 2, current + layout.cluster_size,
                            current - layout.cluster_size, current | 1)),
        lambda: rng.choice(SIZES),
        lambda: rng.choice(layout.targets),
        lambda: rng.choice((layout.size, layout.size - 8, layout.size + layout.cluster_size,
                            MAX_OFFSET - layout.cluster_size, MAX_OFFSET)),
        lambda: rng.getrandbits(bits),
    ]
    return rng.choice(choices)() & top


def _entry_value(rng: random.Random, current: int, seed: Seed) -> int:
    """A 64-bit table entry: an offset somewhere (real or not) with some flag bits."""
    layout = seed.layout
    if rng.random() < 0.2:
        return current ^ 1 << rng.randrange(64)
    offset = rng.choice((rng.choice(layout.targets), rng.choice(layout.targets), 0,
                         layout.size, layout.size + layout.cluster_size,
                         rng.randrange(0, MAX_OFFSET, 512), rng.getrandbits(64)))
    for flag in FLAG_BITS:
        if rng.random() < 0.25:
            offset |= flag
    return offset & (1 << 64) - 1


def _path_value(rng: random.Random, width: int, seed: Seed) -> Optional[bytes]:
    """A file name of exactly width bytes: the image itself (a loop) or a special file,
    stretched with repeated slashes."""
    name = rng.choice((seed.path.name,) + PATHS)
    head, _, tail = name.rpartition("/")
    head = head or "."
    stretched = head + "/" * (width - len(head) - len(tail)) + tail
    return stretched.encode() if len(stretched) == width else None


def _bytes_value(rng: random.Random, field: Field, seed: Seed) -> bytes:
    n = field.width
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(n))
    if kind == 1:
        return bytes([rng.choice((0, 0xFF, 0x41, 0x80))]) * n
    if kind == 2:
        return (b"\xff\xfe" * n)[:n]  # not UTF-8
    if kind == 3:
        return _path_value(rng, n, seed) or bytes(n)
    data = bytearray(_read(seed.path, field.offset, n))
    data[rng.randrange(n)] = rng.getrandbits(8)
    return bytes(data)


def _read(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), size, offset)


# --- mutations --------------------------------------------------------------------

def structural(rng: random.Random, seed: Seed) -> List[Patch]:
    """Change one field: pick a group, a field class in it, then one of its fields."""
    by_group = groups(seed.layout)
    group = rng.choice(sorted(by_group))
    cls = rng.choice(by_group[group])
    field = rng.choice(seed.layout.fields[cls])
    old = _read(seed.path, field.offset, field.width)
    current = int.from_bytes(old, "big")
    if field.kind == "entry":
        data = _entry_value(rng, current, seed).to_bytes(8, "big")
    elif field.kind == "int":
        data = _int_value(rng, field, current, seed).to_bytes(field.width, "big")
    else:
        data = _bytes_value(rng, field, seed)
    return [Patch(field.offset, data, f"{field.path}={data.hex()}")]


def random_bytes(rng: random.Random, seed: Seed) -> List[Patch]:
    """Random values for a few bytes of the first cluster or of some structure."""
    layout = seed.layout
    start = 0 if rng.random() < 0.5 else rng.choice(layout.targets)
    end = min(start + layout.cluster_size, layout.size)
    if end <= start:
        start, end = 0, min(layout.cluster_size, layout.size)
    offsets = [rng.randrange(start, end) for _ in range(rng.randint(1, 8))]
    return [Patch(at, bytes([rng.getrandbits(8)]), f"random byte at {at:#x}") for at in offsets]


def resize(rng: random.Random, seed: Seed) -> int:
    """A new file length: cut at or near a structure, or extended."""
    layout = seed.layout
    target = rng.choice(layout.targets)
    return max(0, rng.choice((target, target + rng.randint(1, 64), layout.size - 1,
                              layout.size - rng.randint(1, layout.cluster_size),
                              layout.size // 2, rng.randint(0, 512),
                              layout.size + rng.randint(1, 4) * layout.cluster_size)))


def mutant(rng: random.Random, seed: Seed) -> Mutant:
    """One to three mutations of a seed, mostly structural."""
    patches: List[Patch] = []
    length = None
    for _ in range(1 + (rng.random() < 0.3) + (rng.random() < 0.1)):
        roll = rng.random()
        if roll < 0.75:
            patches += structural(rng, seed)
        elif roll < 0.92:
            patches += random_bytes(rng, seed)
        else:
            length = resize(rng, seed)
    return Mutant(seed.kind, tuple(patches), length)


# --- files ------------------------------------------------------------------------

def data_runs(fd: int, size: int) -> List[Tuple[int, int]]:
    """(start, end) of the parts of a file that are not holes."""
    runs, pos = [], 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        runs.append((start, end))
        pos = end
    return runs


def copy_range(src: int, out: int, start: int, end: int) -> None:
    """Copy bytes start..end of src to the same place in out."""
    while start < end:
        done = os.copy_file_range(src, out, end - start, start, start)
        if done == 0:
            return
        start += done


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy a file, its holes left holes."""
    with open(src, "rb") as a, open(dst, "wb") as b:
        size = os.fstat(a.fileno()).st_size
        for start, end in data_runs(a.fileno(), size):
            copy_range(a.fileno(), b.fileno(), start, end)
        os.ftruncate(b.fileno(), size)


def write(m: Mutant, seed_path: Path, dst: Path) -> None:
    """Write the mutant to dst: the seed's data (holes stay holes), the patches, the
    length."""
    with open(seed_path, "rb") as src, open(dst, "wb") as out:
        size = os.fstat(src.fileno()).st_size
        for start, end in data_runs(src.fileno(), size):
            copy_range(src.fileno(), out.fileno(), start, end)
        for p in m.patches:
            os.pwrite(out.fileno(), p.data, p.offset)
        os.ftruncate(out.fileno(), max(size, os.fstat(out.fileno()).st_size)
                     if m.length is None else m.length)
