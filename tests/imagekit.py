"""Build the qcow2 test image set with the real qemu-img and qemu-io.

Every image is made on the fly and kept small. Images that qemu never writes
(crafted bitmap entries, unknown extensions) start from a qemu-made image and are
patched with plain struct arithmetic, independent of the code under test.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Callable, Dict, List

SECRET = "secret,id=sec0,data=qcow2kit-test"
UNKNOWN_EXT_MAGIC = 0x12345678
BINARY_EXT_MAGIC = 0xDEADBEEF


# qemu times PBKDF2 with getrusage to choose a LUKS iteration count and fails when its
# first, short round reads 0 ms of CPU (the scheduler updates the figure late): a known
# qemu flake (fixed upstream in 2025 by retrying), retried here likewise.
PBKDF_TIMER_FLAKE = b"Unable to get accurate CPU usage"
FLAKE_TRIES = 60  # a fast hash fails 17 times in 20 on a loaded machine


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(*args: str, stdin: bytes | None = None, ok: tuple = (0,),
        cwd: Path | None = None) -> str:
    for _ in range(FLAKE_TRIES):
        proc = subprocess.run(args, input=stdin, capture_output=True, check=False, cwd=cwd)
        if PBKDF_TIMER_FLAKE not in proc.stderr:
            break
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def create(path: Path, size: str, backing: str | None = None,
           backing_fmt: str | None = None, objects: List[str] = (), **opts: str) -> Path:
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    for obj in objects:
        args += ["--object", obj]
    if opts:
        args += ["-o", ",".join(f"{k}={v}" for k, v in opts.items())]
    if backing:
        args += ["-b", backing, "-F", backing_fmt or "qcow2"]
    # Relative names (backing, data files) are created beside the image.
    run(*args, path.name, size, cwd=path.parent)
    return path


def qemu_io(path: Path, *cmds: str, image_opts: str | None = None,
            objects: List[str] = ()) -> None:
    args = ["qemu-io"]
    for obj in objects:
        args += ["--object", obj]
    for cmd in cmds:
        args += ["-c", cmd]
    if image_opts:
        args += ["--image-opts", image_opts]
    else:
        args += ["-f", "qcow2", path.name]
    # qemu opens a relative external data file name from the current directory.
    run(*args, cwd=path.parent)


def write_pattern_raw(path: Path, size: int, compressible: bool) -> Path:
    """A raw file whose clusters differ from each other (and some are zero)."""
    with open(path, "wb") as f:
        f.truncate(size)
        step = 64 * 1024
        for i, off in enumerate(range(0, size, step)):
            if i % 3 == 2:
                continue
            if compressible:
                block = (f"cluster {i:08d} ".encode() * (step // 17 + 1))[:step]
            else:
                block = os.urandom(step)
            f.seek(off)
            f.write(block)
    return path


# --- header-area arithmetic for crafting, independent of qcow2kit --------------

def _header_info(data: bytes):
    version, = struct.unpack_from(">I", data, 4)
    cluster_bits, = struct.unpack_from(">I", data, 20)
    header_length = struct.unpack_from(">I", data, 100)[0] if version >= 3 else 72
    return version, 1 << cluster_bits, header_length


def extensions(path: Path) -> List[tuple]:
    """(offset, magic, length) of each header extension, end marker excluded."""
    data = Path(path).read_bytes()[:1 << 21]
    _, _, off = _header_info(data)
    out = []
    while off + 8 <= len(data):
        magic, length = struct.unpack_from(">II", data, off)
        if magic == 0:
            break
        out.append((off, magic, length))
        off += 8 + (length + 7) // 8 * 8
    return out


def insert_extension(path: Path, magic: int, payload: bytes) -> None:
    """Insert an extension before the end marker (the image must have no backing file)."""
    with open(path, "r+b") as f:
        head = f.read(4096)
        exts = extensions(path)
        _, _, hl = _header_info(head)
        end = exts[-1][0] + 8 + (exts[-1][2] + 7) // 8 * 8 if exts else hl
        padded = payload + b"\0" * (-len(payload) % 8)
        f.seek(end)
        f.write(struct.pack(">II", magic, len(payload)) + padded + b"\0" * 8)


def bitmap_directory(path: Path) -> List[dict]:
    """Bitmap directory entries (name, table offset and size) read with struct."""
    data = Path(path).read_bytes()
    for off, magic, _ in extensions(path):
        if magic == 0x23852875:
            nb, _, dir_size, dir_off = struct.unpack_from(">IIQQ", data, off + 8)
            entries, pos = [], dir_off
            for _ in range(nb):
                tbl_off, tbl_size, flags, _t, gran, name_size, extra = \
                    struct.unpack_from(">QIIBBHI", data, pos)
                name = data[pos + 24 + extra:pos + 24 + extra + name_size].decode()
                entries.append(dict(name=name, table_offset=tbl_off, table_size=tbl_size,
                                    flags=flags, granularity_bits=gran,
                                    name_offset=pos + 24 + extra))
                pos += (24 + extra + name_size + 7) // 8 * 8
            return entries
    return []


def set_u64(path: Path, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(">Q", value))


# --- the image kinds ----------------------------------------------------------

def _writes(path: Path, **kw) -> None:
    qemu_io(path, "write -P 0x11 0 192k", "write -P 0x22 1M 64k",
            "write -P 0x33 3M 4k", "write -z 2M 128k", **kw)


def v2(d: Path) -> Path:
    p = create(d / "v2.qcow2", "4M", compat="0.10")
    qemu_io(p, "write -P 0x11 0 192k", "write -P 0x22 1M 64k", "write -P 0x33 3M 4k")
    return p


def v3(d: Path) -> Path:
    p = create(d / "v3.qcow2", "4M", compat="1.1")
    _writes(p)
    return p


def _cluster(bits: int) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = create(d / f"cluster_{1 << bits}.qcow2", "8M", cluster_size=str(1 << bits))
        _writes(p)
        return p
    return build


def _refcount(width: int) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = create(d / f"refcount_{width}.qcow2", "4M", refcount_bits=str(width),
                   cluster_size="4096")
        _writes(p)
        if width > 1:
            run("qemu-img", "snapshot", "-c", "s1", str(p))
            qemu_io(p, "write -P 0x44 0 8k")
        return p
    return build


def _compressed(name: str, cluster_size: str, ctype: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        raw = write_pattern_raw(d / f"{name}.raw", 4 << 20, compressible=True)
        p = d / f"{name}.qcow2"
        run("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o",
            f"cluster_size={cluster_size},compression_type={ctype}", str(raw), str(p))
        raw.unlink()
        qemu_io(p, "write -P 0x55 128k 4k")
        return p
    return build


def extended_l2(d: Path) -> Path:
    p = create(d / "extended_l2.qcow2", "4M", extended_l2="on", cluster_size="65536")
    qemu_io(p, "write -P 0x11 0 4k", "write -P 0x22 66k 2k", "write -P 0x33 130k 64k",
            "write -z 260k 8k", "write -P 0x44 1M 64k", "write -z 2M 64k")
    return p


def data_file(d: Path) -> Path:
    p = create(d / "data_file.qcow2", "4M", data_file="data_file.data")
    qemu_io(p, "write -P 0x11 0 128k", "write -P 0x22 1M 64k")
    return p


def data_file_raw(d: Path) -> Path:
    p = create(d / "data_file_raw.qcow2", "4M", data_file="data_file_raw.data",
               data_file_raw="on")
    qemu_io(p, "write -P 0x11 0 128k", "write -P 0x22 1M 64k")
    return p


def backing(d: Path) -> Path:
    base = create(d / "backing_base.qcow2", "4M")
    qemu_io(base, "write -P 0x11 0 1M")
    p = create(d / "backing.qcow2", "4M", backing="backing_base.qcow2", backing_fmt="qcow2")
    qemu_io(p, "write -P 0x22 64k 64k", "write -z 512k 64k")
    return p


def luks(d: Path) -> Path:
    # sha512: its PBKDF rounds are slow enough to make qemu's timing flake rare (sha256
    # failed 10 times in 20 here); run() retries the rest.
    p = create(d / "luks.qcow2", "4M", objects=[SECRET], **{
        "encrypt.format": "luks", "encrypt.key-secret": "sec0",
        "encrypt.hash-alg": "sha512", "encrypt.iter-time": "10"})
    qemu_io(p, "write -P 0x11 0 64k", "write -P 0x22 1M 64k", objects=[SECRET],
            image_opts=f"driver=qcow2,file.filename={p},encrypt.key-secret=sec0")
    return p


def snapshots(d: Path) -> Path:
    p = create(d / "snapshots.qcow2", "4M")
    qemu_io(p, "write -P 0x11 0 128k")
    run("qemu-img", "snapshot", "-c", "first", str(p))
    qemu_io(p, "write -P 0x22 64k 128k", "write -P 0x23 2M 64k")
    run("qemu-img", "snapshot", "-c", "second snapshot", str(p))
    qemu_io(p, "write -P 0x33 0 64k")
    return p


def bitmaps(d: Path) -> Path:
    p = create(d / "bitmaps.qcow2", "64M", cluster_size="4096")
    qemu_io(p, "write -P 0x11 0 64k")
    run("qemu-img", "bitmap", "--add", str(p), "b0")
    run("qemu-img", "bitmap", "--add", "-g", "512", str(p), "fine")
    run("qemu-img", "bitmap", "--add", "-g", "65536", str(p), "disabled")
    qemu_io(p, "write -P 0x22 1M 64k")
    run("qemu-img", "bitmap", "--disable", str(p), "disabled")
    qemu_io(p, "write -P 0x33 40M 4k", "write -P 0x44 63M 1M")
    return p


def bitmaps_crafted(d: Path) -> Path:
    """All-ones and invalid bitmap table entries, which qemu never writes."""
    p = d / "bitmaps_crafted.qcow2"
    shutil.copyfile(bitmaps(d), p)
    fine = next(e for e in bitmap_directory(p) if e["name"] == "fine")
    assert fine["table_size"] >= 4, fine
    table = fine["table_offset"]
    set_u64(p, table + 8 * 1, 1)                       # all-ones
    set_u64(p, table + 8 * 2, fine["table_offset"] | 1)  # offset with bit 0: invalid
    return p


def unknown_ext(d: Path) -> Path:
    p = create(d / "unknown_ext.qcow2", "4M")
    qemu_io(p, "write -P 0x11 0 64k")
    insert_extension(p, UNKNOWN_EXT_MAGIC, b"hello, qcow2kit\n")
    insert_extension(p, BINARY_EXT_MAGIC, bytes(range(250, 256)) + b"\x00\x01")
    return p


def lazy_dirty(d: Path) -> Path:
    p = create(d / "lazy_dirty.qcow2", "4M", lazy_refcounts="on")
    # qemu-io's abort kills it (SIGABRT) before the refcounts are written back.
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 128k", "-c", "abort", p.name,
        ok=(-6, 134), cwd=d)
    return p


def backing_short(d: Path) -> Path:
    """A backing file smaller than the image: past its end the image reads zeros."""
    base = create(d / "short_base.qcow2", "1M")
    qemu_io(base, "write -P 0x11 0 1M")
    p = create(d / "backing_short.qcow2", "4M", backing="short_base.qcow2", backing_fmt="qcow2")
    qemu_io(p, "write -P 0x22 512k 64k", "write -P 0x33 3M 64k")
    return p


def prealloc_metadata(d: Path) -> Path:
    """Every L2 entry allocated in a sparse file, as preallocation=metadata makes it."""
    p = create(d / "prealloc_metadata.qcow2", "64M", preallocation="metadata")
    qemu_io(p, "write -P 0x11 1M 128k")
    return p


def backing_chain(d: Path) -> Path:
    """A three-level chain with a raw base and relative names."""
    base = d / "chain_base.raw"
    run("qemu-img", "create", "-q", "-f", "raw", str(base), "4M")
    run("qemu-io", "-f", "raw", "-c", "write -P 0x01 0 2M", str(base))
    mid = create(d / "chain_mid.qcow2", "4M", backing="chain_base.raw", backing_fmt="raw")
    qemu_io(mid, "write -P 0x02 1M 1M")
    top = create(d / "chain_top.qcow2", "4M", backing="chain_mid.qcow2", backing_fmt="qcow2")
    qemu_io(top, "write -P 0x03 1536k 64k")
    return top


KINDS: Dict[str, Callable[[Path], Path]] = {
    "v2": v2,
    "v3": v3,
    "cluster_512": _cluster(9),
    "cluster_4k": _cluster(12),
    "cluster_2m": _cluster(21),
    **{f"refcount_{w}": _refcount(w) for w in (1, 2, 4, 8, 16, 32, 64)},
    "zlib": _compressed("zlib", "65536", "zlib"),
    "zlib_4k": _compressed("zlib_4k", "4096", "zlib"),
    "zstd": _compressed("zstd", "65536", "zstd"),
    "extended_l2": extended_l2,
    "data_file": data_file,
    "data_file_raw": data_file_raw,
    "backing": backing,
    "backing_chain": backing_chain,
    "backing_short": backing_short,
    "prealloc_metadata": prealloc_metadata,
    "luks": luks,
    "snapshots": snapshots,
    "bitmaps": bitmaps,
    "bitmaps_crafted": bitmaps_crafted,
    "unknown_ext": unknown_ext,
    "lazy_dirty": lazy_dirty,
}


# --- known extensions with malformed contents, patched into a v3 image -----------------

FEATURE_TABLE_MAGIC = 0x6803F857
BACKING_FORMAT_MAGIC = 0xE2792ACA
DATA_FILE_MAGIC = 0x44415441
CRYPTO_MAGIC = 0x0537BE77
BITMAPS_MAGIC = 0x23852875


def _feature(kind: int, bit: int, name: bytes) -> bytes:
    return struct.pack(">BB", kind, bit) + name.ljust(46, b"\0")


MALFORMED_EXTENSIONS: Dict[str, List[tuple]] = {  # name: [(magic, data), ...]
    "short_feature_table": [(FEATURE_TABLE_MAGIC, b"\x00\x3fTest feature")],
    "ragged_feature_table": [(FEATURE_TABLE_MAGIC, _feature(1, 5, b"ragged")
                              + _feature(0, 60, b"partial entry")[:20])],
    "bitmaps_short": [(BITMAPS_MAGIC, bytes(16))],
    "bitmaps_long": [(BITMAPS_MAGIC, bytes(32))],
    "backing_format_odd": [(BACKING_FORMAT_MAGIC, b"qcow2\xff\x01")],
    "data_file_nul": [(DATA_FILE_MAGIC, b"data\x00file")],
    "crypto_short": [(CRYPTO_MAGIC, bytes(8))],
    "duplicates": [(BACKING_FORMAT_MAGIC, b"qcow2"), (BACKING_FORMAT_MAGIC, b"raw"),
                   (FEATURE_TABLE_MAGIC, _feature(0, 40, b"first")),
                   (FEATURE_TABLE_MAGIC, _feature(0, 40, b"second")),
                   (UNKNOWN_EXT_MAGIC, b"one"), (UNKNOWN_EXT_MAGIC, b"two")],
}


def malformed(name: str, directory: Path) -> Path:
    """A qemu-made v3 image with the extensions of MALFORMED_EXTENSIONS[name] added."""
    p = create(directory / f"{name}.qcow2", "4M")
    qemu_io(p, "write -P 0x11 0 64k")
    for magic, data in MALFORMED_EXTENSIONS[name]:
        insert_extension(p, magic, data)
    return p


def build_all(directory: Path) -> Dict[str, Path]:
    """Build every kind into directory (one sub-folder each) and return the paths."""
    out = {}
    for name, build in KINDS.items():
        sub = Path(directory) / name
        sub.mkdir(parents=True, exist_ok=True)
        out[name] = build(sub)
    return out


def qemu_json(command: str, image: Path, *args: str) -> object:
    """`qemu-img COMMAND --output=json ARGS IMAGE`, run beside the image."""
    return json.loads(run("qemu-img", command, "--output=json", *args, Path(image).name,
                          cwd=Path(image).parent))
