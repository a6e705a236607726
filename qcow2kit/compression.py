"""qemu's compressed clusters: raw deflate with a 4 KiB window (zlib), or zstd frames.

zstd comes from the standard library's compression.zstd on Python 3.14 and newer, else
from the zstandard package, which qcow2kit depends on there.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Tuple, Union

from .errors import Qcow2Error

DEFLATE_WBITS = -12  # raw deflate, 4 KiB window, as qemu's qcow2_compress writes it
ZSTD = 1  # compression_type
Buffer = Union[bytes, bytearray, memoryview]


class CompressionError(Exception):
    """Data that does not decompress."""


def _zstd() -> Tuple[str, Any]:
    """The zstd implementation at hand: ("stdlib", compression.zstd) or ("zstandard",
    the package)."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
        return "stdlib", zstd
    except ImportError:
        pass
    try:
        import zstandard
    except ImportError:
        raise Qcow2Error("header.compression_type", 104, "zstd-compressed clusters need "
                         "Python 3.14 or the zstandard package: pip install zstandard") \
            from None
    return "zstandard", zstandard


def check_available(compression_type: int) -> None:
    """Raise Qcow2Error now when clusters of this type could not be read."""
    if compression_type == ZSTD:
        _zstd()


def decompressor(compression_type: int) -> Callable[[Buffer, memoryview], int]:
    """A function that decompresses the cluster compressed in raw (a compressed
    cluster's slot: the data, then whatever follows it in its last sector) into out,
    up to its length, and gives the number of bytes it wrote. It keeps a decompression
    context between its calls (guest.py makes one per job)."""
    if compression_type != ZSTD:
        return _checked(_inflate)
    kind, zstd = _zstd()
    if kind == "stdlib":  # its decompressor reads one frame: a new one per cluster
        return _checked(lambda raw, out: _copy(zstd.ZstdDecompressor().decompress(
            raw, len(out)), out))
    context = zstd.ZstdDecompressor()  # reused: a new one costs as much as decompressing
    return _checked(lambda raw, out: context.stream_reader(raw).readinto(out))


def _inflate(raw: Buffer, out: memoryview) -> int:
    return _copy(zlib.decompressobj(DEFLATE_WBITS).decompress(raw, len(out)), out)


def _copy(data: bytes, out: memoryview) -> int:
    out[:len(data)] = data
    return len(data)


def _checked(function: Callable[[Buffer, memoryview], int]
             ) -> Callable[[Buffer, memoryview], int]:
    """function, its library's own errors raised as CompressionError."""
    def run(raw: Buffer, out: memoryview) -> int:
        try:
            return function(raw, out)
        except Exception as exc:  # each library's own error type
            raise CompressionError(str(exc)) from None
    return run


def compress(data: bytes, compression_type: int) -> bytes:
    """data compressed as qemu writes a compressed cluster."""
    if compression_type != ZSTD:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, DEFLATE_WBITS)
        return c.compress(data) + c.flush()
    kind, zstd = _zstd()
    if kind == "stdlib":
        return zstd.compress(data)
    return zstd.ZstdCompressor().compress(data)
