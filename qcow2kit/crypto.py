"""Decrypting encrypted images: LUKS (the encryption header clusters hold a LUKS1
header) and qemu's legacy AES, given the secret.

Ciphers, modes and PBKDF2 come from PyCA `cryptography` and hashlib; written here is
only what no library offers: qemu's IV generators (plain, plain64, essiv), the LUKS
anti-forensic merge and the key slot search. The layout of the LUKS header is the
spec's (`luks_header` in qcow2.ksy), read through the image.

qemu encrypts 512-byte sectors; the IV of a sector comes from its number: for LUKS the
sector's host offset / 512 (qemu's crypt_physical_offset), for legacy AES its guest
offset / 512.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import numpy as np

from .errors import Qcow2Error
from .image import Image

SECTOR = 512
LUKS_SLOT_ACTIVE = 0x00AC71F3
LUKS_DIGEST_SIZE = 20
CRYPT_AES, CRYPT_LUKS = 1, 2

try:  # ciphers the library keeps apart from its main set
    from cryptography.hazmat.decrepit.ciphers import algorithms as _decrepit
except ImportError:  # pragma: no cover - older cryptography
    _decrepit = None


class SecretRejected(Qcow2Error):
    """The secret opens no key slot."""


def _library() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        raise Qcow2Error("encryption", None, "reading encrypted images needs the "
                         "cryptography package: pip install 'qcow2kit[crypto]'") from None
    return Cipher, algorithms, modes


def _algorithm(name: str) -> Callable[[bytes], Any]:
    """The block cipher of a LUKS cipher name, or a refusal naming it."""
    _, algorithms, _ = _library()
    table = {"aes": algorithms.AES, "sm4": getattr(algorithms, "SM4", None)}
    if _decrepit is not None:
        table.update(cast5=_decrepit.CAST5, des3_ede=_decrepit.TripleDES)
    found = table.get(name)
    if found is None:
        raise Qcow2Error("luks_header.cipher_name", None,
                         f"cipher {name!r} is not offered by the cryptography library")
    return found


def _hash(name: str) -> str:
    """hashlib's name of a LUKS hash, checked to exist here."""
    try:
        hashlib.new(name)
    except ValueError:
        raise Qcow2Error("luks_header.hash_spec", None,
                         f"hash {name!r} is not available here") from None
    return name


XTS_POLY = np.uint64(0x87)  # x^128 = x^7 + x^2 + x + 1, IEEE 1619


def _ecb(algorithm: Any, data: bytes, decrypt: bool) -> bytes:
    Cipher, _, modes = _library()
    cipher = Cipher(algorithm, modes.ECB())
    worker = cipher.decryptor() if decrypt else cipher.encryptor()
    return worker.update(data) + worker.finalize()


def _blocks(data: bytes, width: int) -> np.ndarray:
    """Bytes as rows of width bytes."""
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, width)


@dataclass(frozen=True)
class SectorCipher:
    """A cipher in a mode with an IV generator, decrypting whole 512-byte sectors.

    Every mode is done as one ECB pass over all the blocks of a read, with numpy for
    the chaining (CBC), the counters (CTR) and the tweaks (XTS), so that a large read
    costs what the cipher costs, not a Python loop per sector.
    """

    algorithm: Callable[[bytes], Any]
    mode: str  # xts, cbc, ecb, ctr
    ivgen: str  # plain, plain64, essiv, or "" for none
    ivgen_hash: str  # essiv's hash
    key: bytes

    def _ivs(self, first: int, count: int, width: int) -> np.ndarray:
        """The IV of each of count sectors from sector first, as rows of width bytes."""
        numbers = np.arange(first, first + count, dtype=np.uint64)
        if self.ivgen == "plain":
            numbers &= np.uint64(0xFFFFFFFF)
        ivs = np.zeros((count, width), dtype=np.uint8)
        ivs[:, :8] = numbers.astype("<u8").view(np.uint8).reshape(count, 8)[:, :width]
        if self.ivgen == "essiv":
            salt = hashlib.new(self.ivgen_hash, self.key).digest()
            ivs = _blocks(_ecb(self.algorithm(salt), ivs.tobytes(), False), width).copy()
        return ivs

    def decrypt(self, data: bytes, first_sector: int) -> bytes:
        """data (a whole number of sectors) decrypted, its first sector numbered
        first_sector."""
        sectors = len(data) // SECTOR
        if self.mode == "xts":
            return self._xts(data, first_sector, sectors)
        algorithm = self.algorithm(self.key)
        width = algorithm.block_size // 8
        per_sector = SECTOR // width
        if self.mode == "ecb":
            return _ecb(algorithm, data, True)
        ivs = self._ivs(first_sector, sectors, width)
        if self.mode == "cbc":
            plain = _blocks(_ecb(algorithm, data, True), width).reshape(sectors, per_sector,
                                                                          width).copy()
            cipher = _blocks(data, width).reshape(sectors, per_sector, width)
            plain[:, 0] ^= ivs
            plain[:, 1:] ^= cipher[:, :-1]
            return plain.tobytes()
        # ctr: the IV is a big-endian counter, one step per block
        hi = ivs[:, :8].copy().view(">u8").astype(np.uint64).reshape(sectors, 1)
        lo = ivs[:, 8:16].copy().view(">u8").astype(np.uint64).reshape(sectors, 1)
        steps = np.arange(per_sector, dtype=np.uint64).reshape(1, per_sector)
        new_lo = lo + steps
        new_hi = hi + (new_lo < lo)
        counters = np.stack([new_hi, new_lo], axis=-1).astype(">u8")
        stream = np.frombuffer(_ecb(algorithm, counters.tobytes(), False), dtype="<u8")
        return (stream ^ np.frombuffer(data, dtype="<u8")).tobytes()

    def _xts(self, data: bytes, first_sector: int, sectors: int) -> bytes:
        """IEEE 1619 XTS: the sector's tweak E_K2(IV), times alpha for each block."""
        half = len(self.key) // 2
        data_key, tweak_key = self.key[:half], self.key[half:]
        ivs = self._ivs(first_sector, sectors, 16)
        tweak = np.frombuffer(_ecb(self.algorithm(tweak_key), ivs.tobytes(), False),
                              dtype="<u8").reshape(sectors, 2).astype(np.uint64)
        per_sector = SECTOR // 16
        tweaks = np.empty((sectors, per_sector, 2), dtype=np.uint64)
        lo, hi = tweak[:, 0].copy(), tweak[:, 1].copy()
        one, top = np.uint64(1), np.uint64(63)
        for j in range(per_sector):
            tweaks[:, j, 0], tweaks[:, j, 1] = lo, hi
            carry = hi >> top
            hi = (hi << one) | (lo >> top)
            lo = (lo << one) ^ (carry * XTS_POLY)
        mask = tweaks.astype("<u8", copy=False).reshape(-1)
        mixed = np.frombuffer(data, dtype="<u8") ^ mask
        plain = np.frombuffer(_ecb(self.algorithm(data_key), mixed.tobytes(), True),
                              dtype="<u8")
        return (plain ^ mask).tobytes()


def _parse_mode(mode: str) -> Tuple[str, str, str]:
    """LUKS cipher_mode ("xts-plain64", "cbc-essiv:sha256", "ecb") as mode, ivgen and
    essiv hash."""
    name, _, ivgen = mode.partition("-")
    ivgen, _, ivhash = ivgen.partition(":")
    if name not in ("xts", "cbc", "ecb", "ctr") or ivgen not in ("", "plain", "plain64",
                                                                "essiv"):
        raise Qcow2Error("luks_header.cipher_mode", None, f"mode {mode!r} is not supported")
    return name, ivgen, _hash(ivhash) if ivgen == "essiv" else ""


def af_merge(material: bytes, key_bytes: int, stripes: int, hash_name: str) -> bytes:
    """The LUKS anti-forensic merge: stripes blocks of key_bytes back to one key."""
    digest_size = hashlib.new(hash_name).digest_size
    merged = bytes(key_bytes)
    for stripe in range(stripes - 1):
        block = material[stripe * key_bytes:(stripe + 1) * key_bytes]
        mixed = bytes(a ^ b for a, b in zip(merged, block))
        diffused = bytearray()
        for j in range(0, key_bytes, digest_size):
            chunk = mixed[j:j + digest_size]
            h = hashlib.new(hash_name, (j // digest_size).to_bytes(4, "big") + chunk)
            diffused += h.digest()[:len(chunk)]
        merged = bytes(diffused)
    last = material[(stripes - 1) * key_bytes:stripes * key_bytes]
    return bytes(a ^ b for a, b in zip(merged, last))


@dataclass(frozen=True)
class Decryptor:
    """What reads an encrypted image's data clusters: the payload cipher, and whether
    a sector's IV counts host (LUKS) or guest (legacy AES) sectors."""

    cipher: SectorCipher
    by_host_offset: bool
    slot: Optional[int]  # the LUKS key slot the secret opened

    def decrypt(self, data: bytes, host_offset: int, guest_offset: int) -> bytes:
        """Sectors read at host_offset (mapping guest_offset), decrypted."""
        start = host_offset if self.by_host_offset else guest_offset
        return self.cipher.decrypt(data, start // SECTOR)


class LuksPart(NamedTuple):
    """A byte range of the LUKS header clusters: a header field, a key slot's field
    or its key material (slot None for the header's own fields)."""

    start: int
    end: int
    field: str
    slot: Optional[int]
    active: bool


def luks_parts(image: Image) -> List[LuksPart]:
    """Every field of the LUKS header and of its key slots, and each slot's key
    material, as file ranges (the parser's positions, taken relative to the header's
    magic, so that they hold whichever stream the header is read from)."""
    base, header = luks_header(image)
    origin = header._debug["magic"]["start"]
    out = [LuksPart(base + span["start"] - origin, base + span["end"] - origin, name,
                    None, False)
           for name, span in header._debug.items() if name != "key_slots"]
    for index, ks in enumerate(header.key_slots):
        active = int(ks.active) == LUKS_SLOT_ACTIVE
        out += [LuksPart(base + span["start"] - origin, base + span["end"] - origin, name,
                         index, active) for name, span in ks._debug.items()]
        material = base + ks.key_material_offset * SECTOR
        size = -(-header.key_bytes * ks.stripes // SECTOR) * SECTOR
        out.append(LuksPart(material, material + size, "key_material", index, active))
    return out


def luks_header(image: Image) -> Tuple[int, Any]:
    """The encryption header's offset and its parsed LUKS header."""
    ext = image.extension("full_disk_encryption")
    if ext is None:
        raise Qcow2Error("header extensions", None,
                         "a LUKS image without its encryption header pointer")
    with image.parsing(ext.parsed, ext.data_offset, "full_disk_encryption_extension"):
        header = ext.parsed.encryption_header
    return ext.parsed.ofs_encryption_header, header


def open_luks(image: Image, secret: bytes, slot: Optional[int] = None) -> Decryptor:
    """The decryptor of a LUKS image: the first active key slot (or the one named)
    that the secret opens. Raises SecretRejected when none does."""
    base, header = luks_header(image)
    algorithm = _algorithm(header.cipher_name)
    mode, ivgen, ivhash = _parse_mode(header.cipher_mode)
    hash_name = _hash(header.hash_spec)
    key_bytes = header.key_bytes
    for index, ks in enumerate(header.key_slots):
        if (slot is not None and index != slot) or int(ks.active) != LUKS_SLOT_ACTIVE:
            continue
        slot_key = hashlib.pbkdf2_hmac(hash_name, secret, ks.salt, ks.iterations, key_bytes)
        size = key_bytes * ks.stripes
        material = image.read(base + ks.key_material_offset * SECTOR,
                              -(-size // SECTOR) * SECTOR)
        split = SectorCipher(algorithm, mode, ivgen, ivhash, slot_key).decrypt(material, 0)
        master = af_merge(split[:size], key_bytes, ks.stripes, hash_name)
        digest = hashlib.pbkdf2_hmac(hash_name, master, header.mk_digest_salt,
                                     header.mk_digest_iterations, LUKS_DIGEST_SIZE)
        if hmac.compare_digest(digest, header.mk_digest):
            return Decryptor(SectorCipher(algorithm, mode, ivgen, ivhash, master),
                             by_host_offset=True, slot=index)
    which = "no key slot" if slot is None else f"key slot {slot}"
    raise SecretRejected("luks_header.key_slots", base, f"{which} accepts this secret")


def open_aes(secret: bytes) -> Decryptor:
    """qemu's legacy AES: AES-128-CBC keyed with the first 16 bytes of the password
    (zero-padded), plain64 IVs of guest sectors."""
    _, algorithms, _ = _library()
    key = secret[:16].ljust(16, b"\0")
    return Decryptor(SectorCipher(algorithms.AES, "cbc", "plain64", "", key),
                     by_host_offset=False, slot=None)


def open_decryptor(image: Image, secret: bytes, slot: Optional[int] = None
                   ) -> Optional[Decryptor]:
    """The decryptor for image's crypt method; None for an image not encrypted."""
    method = image.header.crypt_method
    if method == CRYPT_LUKS:
        return open_luks(image, secret, slot)
    if method == CRYPT_AES:
        return open_aes(secret)
    return None
