"""Every LUKS combination qemu-img creates, decrypted as qemu reads it: the long run
of test_crypto.py, `make crypto-matrix` (about ten minutes; not part of make test).

AES-128/192/256 in xts, cbc, ecb and ctr, IV generators plain, plain64 and essiv
(sha256), PBKDF2 with sha1, sha224, sha256, sha384, sha512 and ripemd160, and legacy
AES on compat 0.10 and 1.1: on an image with data, a compressed cluster and an internal
snapshot taken before more data was written, `qcow2kit convert` equals `qemu-img
convert -O raw` for the image and for the snapshot, and so does a cat of a range
across clusters. qemu 7.2 cannot create aes-192 in
cbc, ecb or ctr (it asserts on the unaligned key material), so those are not made.
"""
from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest

import imagekit
from test_crypto import PASSWORD, SECRET, image_opts, make, ours, qemu_raw

SIZES = ("aes-128", "aes-192", "aes-256")
MODES = ("xts", "cbc", "ecb", "ctr")
IVGENS = ("plain", "plain64", "essiv")
HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160")
COMBINATIONS = [c for c in itertools.product(SIZES, MODES, IVGENS, HASHES)
                if not (c[0] == "aes-192" and c[1] != "xts")]


def assert_like_qemu(path: Path, fmt: str) -> None:
    """A snapshot, more data, then the image and the snapshot read as qemu reads them."""
    folder = path.parent
    subprocess.run(["qemu-img", "snapshot", "--object", SECRET, "--image-opts",
                    image_opts(path, fmt), "-c", "s1"], check=True, cwd=folder)
    imagekit.qemu_io(path, "write -P 0x66 96k 64k", objects=[SECRET],
                     image_opts=image_opts(path, fmt))
    (folder / "pw").write_text(PASSWORD)
    raw = qemu_raw(path, fmt)
    proc = ours("convert", "--password-file", "pw", path.name, "ours.raw", cwd=folder)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert (folder / "ours.raw").read_bytes() == raw
    subprocess.run(["qemu-img", "convert", "--object", SECRET, "--image-opts",
                    image_opts(path, fmt), "-l", "snapshot.name=s1", "-O", "raw",
                    "s1.qemu"], check=True, cwd=folder)
    proc = ours("convert", "--password-file", "pw", "--snapshot", "s1", path.name, "s1.ours",
                cwd=folder)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert (folder / "s1.ours").read_bytes() == (folder / "s1.qemu").read_bytes()
    assert (folder / "s1.ours").read_bytes() != raw
    proc = ours("cat", "--password-file", "pw", "--offset", "65000", "--length", "70000",
                path.name, cwd=folder)
    assert proc.returncode == 0 and proc.stdout == raw[65000:135000]


@pytest.mark.parametrize("alg, mode, ivgen, hash_alg", COMBINATIONS,
                         ids=["-".join(c) for c in COMBINATIONS])
def test_every_luks_combination(alg: str, mode: str, ivgen: str, hash_alg: str,
                                tmp_path: Path) -> None:
    opts = {"encrypt.cipher-alg": alg, "encrypt.cipher-mode": mode,
            "encrypt.ivgen-alg": ivgen, "encrypt.hash-alg": hash_alg}
    if ivgen == "essiv":
        opts["encrypt.ivgen-hash-alg"] = "sha256"
    assert_like_qemu(make(tmp_path / "luks.qcow2", "luks", **opts), "luks")


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_legacy_aes(compat: str, tmp_path: Path) -> None:
    assert_like_qemu(make(tmp_path / "aes.qcow2", "aes", compat=compat), "aes")
