"""Decryption of LUKS and legacy AES images, held to qemu's own reading of them.

Each image is made by qemu-img with one cipher, mode, IV generator and hash; qemu-io
writes patterns; every data cluster decrypted here equals the same guest range of
`qemu-img convert -O raw`."""
from __future__ import annotations

import contextlib
import json
import os
import pty
import struct
import subprocess
from pathlib import Path
from typing import Dict

import pytest

import imagekit
from qcow2kit import open_image, tables
from ourcmd import QCOW2KIT
from qcow2kit.crypto import SecretRejected, open_decryptor

PASSWORD = "qcow2kit-test"
SECRET = f"secret,id=sec0,data={PASSWORD}"

# cipher-alg, cipher-mode, ivgen-alg, ivgen-hash-alg, hash-alg
LUKS = {
    "aes-256-xts-plain64": ("aes-256", "xts", "plain64", None, "sha512"),
    "aes-128-xts-plain": ("aes-128", "xts", "plain", None, "sha256"),
    # aes-192 with a 24-byte key: qemu 7.2 asserts on its unaligned key material in
    # cbc, ecb and ctr (block.c:372); xts has 48-byte keys
    "aes-192-xts-plain64": ("aes-192", "xts", "plain64", None, "sha384"),
    "aes-128-cbc-essiv": ("aes-128", "cbc", "essiv", "sha256", "sha512"),
    "aes-256-ecb": ("aes-256", "ecb", "plain64", None, "sha224"),
    "aes-256-ctr-plain64": ("aes-256", "ctr", "plain64", None, "sha512"),
    "cast5-128-cbc-plain64": ("cast5-128", "cbc", "plain64", None, "sha1"),
    "aes-128-ctr-essiv": ("aes-128", "ctr", "essiv", "sha256", "ripemd160"),
    "aes-128-ecb": ("aes-128", "ecb", "plain64", None, "sha512"),
}


def image_opts(path: Path, fmt: str) -> str:
    extra = ",encrypt.format=aes" if fmt == "aes" else ""
    return f"driver=qcow2,file.filename={path.name}{extra},encrypt.key-secret=sec0"


def make(path: Path, fmt: str, size: str = "4M", backing: str = None, **opts: str) -> Path:
    opts = {"encrypt.format": fmt, "encrypt.key-secret": "sec0", **opts}
    if fmt == "luks":
        opts["encrypt.iter-time"] = "10"
    imagekit.create(path, size, objects=[SECRET], backing=backing, **opts)
    chain = ",backing.encrypt.key-secret=sec0" if backing else ""
    imagekit.qemu_io(path, "write -P 0x5a 0 64k", "write -P 0x33 65536 3k",
                     "write -P 0x77 1M 512", "write -c -P 0x44 2M 64k",
                     objects=[SECRET], image_opts=image_opts(path, fmt) + chain)
    return path


def ours(*args: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([*QCOW2KIT, *args], capture_output=True, cwd=cwd, input=stdin)


def qemu_raw(path: Path, fmt: str) -> bytes:
    out = path.with_suffix(".raw")
    subprocess.run(["qemu-img", "convert", "--object", SECRET, "--image-opts",
                    image_opts(path, fmt), "-O", "raw", out.name], check=True,
                   cwd=path.parent)
    return out.read_bytes()


def decrypted_clusters(path: Path, secret: bytes) -> Dict[int, bytes]:
    """Every allocated guest cluster of the active L1 table, decrypted here."""
    out = {}
    with open_image(path) as image:
        decryptor = open_decryptor(image, secret)
        geometry = tables.Geometry.of(image)
        for table in tables.l2_tables(image, tables.l1_table(image), geometry):
            normal = tables.cluster_types(table.entries, geometry) == tables.NORMAL
            for j, entry in enumerate(tables.host_offsets(table.entries).tolist()):
                if normal[j]:  # compressed clusters are not encrypted
                    guest = (table.l1_index * geometry.l2_entries + j) * geometry.cluster_size
                    data = image.read(entry, geometry.cluster_size)
                    out[guest] = decryptor.decrypt(data, entry, guest)
    return out


def assert_like_qemu(path: Path, fmt: str) -> None:
    """Decrypted clusters, convert, and cat of odd ranges equal qemu's reading."""
    raw = qemu_raw(path, fmt)
    clusters = decrypted_clusters(path, PASSWORD.encode())
    assert len(clusters) >= 2
    for guest, data in clusters.items():
        assert data == raw[guest:guest + len(data)], hex(guest)
    secret = f"--object=secret,id=sec0,file={path.parent / 'pw'}"
    (path.parent / "pw").write_text(PASSWORD)
    proc = ours("convert", secret, path.name, "ours.raw", cwd=path.parent)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert (path.parent / "ours.raw").read_bytes() == raw
    for start, length in ((0, 512), (65535, 3000), (1 << 20, 100), (2 << 20, 70000),
                          (1000, 3 << 20)):
        proc = ours("cat", "--password-file", "pw", "--offset", str(start), "--length",
                    str(length), path.name, cwd=path.parent)
        assert (proc.returncode, proc.stderr) == (0, b"")
        assert proc.stdout == raw[start:start + length], (start, length)


@pytest.mark.parametrize("variant", sorted(LUKS))
def test_luks_decrypts_as_qemu_reads(variant: str, tmp_path: Path) -> None:
    alg, mode, ivgen, ivhash, hash_alg = LUKS[variant]
    opts = {"encrypt.cipher-alg": alg, "encrypt.cipher-mode": mode,
            "encrypt.ivgen-alg": ivgen, "encrypt.hash-alg": hash_alg}
    if ivhash:
        opts["encrypt.ivgen-hash-alg"] = ivhash
    assert_like_qemu(make(tmp_path / f"{variant}.qcow2", "luks", **opts), "luks")


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_legacy_aes_decrypts_as_qemu_reads(compat: str, tmp_path: Path) -> None:
    assert_like_qemu(make(tmp_path / "aes.qcow2", "aes", compat=compat), "aes")


def test_wrong_or_missing_secret(tmp_path: Path) -> None:
    path = make(tmp_path / "luks.qcow2", "luks", **{"encrypt.hash-alg": "sha512"})
    with open_image(path) as image, pytest.raises(SecretRejected) as caught:
        open_decryptor(image, b"not the secret")
    assert str(caught.value).endswith(": no key slot accepts this secret")
    (tmp_path / "wrong").write_text("not the secret\n")
    proc = ours("convert", "--password-file", "wrong", path.name, "out.raw", cwd=tmp_path)
    assert proc.returncode == 1 and not (tmp_path / "out.raw").exists()
    assert proc.stderr.decode() == "qcow2kit: luks.qcow2: luks_header.key_slots at offset " \
        f"{_luks_layout(path)[0]:#x}: no key slot accepts this secret\n"
    proc = ours("cat", path.name, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode() == "qcow2kit: luks.qcow2: secret: the image is encrypted: " \
        "give its secret with --password-file FILE or --object secret,id=ID,file=FILE " \
        "(or run on a terminal)\n"
    proc = ours("cat", "--object", f"secret,id=sec0,data={PASSWORD}", "--length", "4",
                path.name, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == b"\x5a" * 4
    assert proc.stderr.decode().startswith("qcow2kit: warning: a secret given as data= on "
                                           "the command line")
    assert PASSWORD not in proc.stderr.decode()


def test_snapshot_and_chain_with_encrypted_layers(tmp_path: Path) -> None:
    """An encrypted overlay on an encrypted base, and a snapshot of it: convert equals
    qemu-img convert (both layers opened with one secret)."""
    base = make(tmp_path / "base.qcow2", "luks", **{"encrypt.hash-alg": "sha512"})
    top = make(tmp_path / "top.qcow2", "luks", backing=base.name,
               **{"encrypt.hash-alg": "sha512"})
    opts = image_opts(top, "luks") + ",backing.encrypt.key-secret=sec0"
    subprocess.run(["qemu-img", "snapshot", "--object", SECRET, "--image-opts", opts,
                    "-c", "s1"], check=True, cwd=tmp_path)
    imagekit.qemu_io(top, "write -P 0x99 0 4k", objects=[SECRET], image_opts=opts)
    (tmp_path / "pw").write_text(PASSWORD)
    for extra, name in (([], "now"), (["-l", "snapshot.name=s1"], "s1")):
        subprocess.run(["qemu-img", "convert", "--object", SECRET, "--image-opts", opts,
                        *extra, "-O", "raw", f"{name}.qemu"], check=True, cwd=tmp_path)
        args = ["--snapshot", "s1"] if extra else []
        proc = ours("convert", "--password-file", "pw", *args, top.name, f"{name}.ours",
                    cwd=tmp_path)
        assert (proc.returncode, proc.stderr) == (0, b"")
        assert (tmp_path / f"{name}.ours").read_bytes() == \
            (tmp_path / f"{name}.qemu").read_bytes(), name


def test_second_key_slot(tmp_path: Path) -> None:
    """A secret added to slot 1 with qemu-img amend opens slot 1, and only that."""
    path = make(tmp_path / "luks.qcow2", "luks", **{"encrypt.hash-alg": "sha512"})
    subprocess.run(["qemu-img", "amend", "--object", SECRET, "--object",
                    "secret,id=sec1,data=another", "--image-opts",
                    image_opts(path, "luks"), "-o",
                    "encrypt.keyslot=1,encrypt.state=active,encrypt.new-secret=sec1,"
                    "encrypt.iter-time=10"], check=True, cwd=tmp_path)
    with open_image(path) as image:
        assert open_decryptor(image, b"another").slot == 1
        assert open_decryptor(image, PASSWORD.encode()).slot == 0


def _luks_layout(path: Path) -> tuple:
    """The encryption header's offset, key size and each slot's (active, material
    offset, stripes), read with struct from the LUKS1 on-disk format."""
    data = path.read_bytes()
    for off, magic, _ in imagekit.extensions(path):
        if magic == 0x0537BE77:
            base = struct.unpack_from(">Q", data, off + 8)[0]
    key_bytes = struct.unpack_from(">I", data, base + 108)[0]
    slots = [struct.unpack_from(">I4x32xII", data, base + 208 + 48 * k) for k in range(8)]
    return base, key_bytes, slots


def test_whatis_names_luks_fields_and_key_material(tmp_path: Path) -> None:
    path = make(tmp_path / "luks.qcow2", "luks", **{"encrypt.hash-alg": "sha512"})
    base, key_bytes, slots = _luks_layout(path)
    probes = {base + 8: "LUKS header field cipher_name, byte 0 of 32",
              base + 208 + 48 + 4: "LUKS key slot 1 (inactive), field iterations"}
    for k in (0, 3):
        active, material, stripes = slots[k]
        size = -(-key_bytes * stripes // 512) * 512
        state = "active" if active == 0x00AC71F3 else "inactive"
        probes[base + material * 512 + 5] = \
            f"key material of LUKS key slot {k} ({state}), byte 5 of {size}"
    assert slots[0][0] == 0x00AC71F3 and slots[3][0] != 0x00AC71F3
    proc = subprocess.run([*QCOW2KIT, "whatis", str(path), *map(hex, probes)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    described = [line for line in proc.stdout.splitlines() if line.startswith("    ")]
    assert len(described) == len(probes)
    for line, expected in zip(described, probes.values()):
        assert line.endswith(": " + expected), (line, expected)


def test_unsupported_cipher_is_refused_by_name(tmp_path: Path) -> None:
    """serpent and twofish, which qemu writes and no kept library offers."""
    for alg in ("serpent-256", "twofish-128"):
        path = tmp_path / f"{alg}.qcow2"
        imagekit.create(path, "1M", objects=[SECRET], **{
            "encrypt.format": "luks", "encrypt.key-secret": "sec0",
            "encrypt.cipher-alg": alg, "encrypt.hash-alg": "sha512",
            "encrypt.iter-time": "10"})
        (tmp_path / "pw").write_text(PASSWORD)
        proc = ours("convert", "--password-file", "pw", path.name, "x.raw", cwd=tmp_path)
        assert proc.returncode == 1 and not (tmp_path / "x.raw").exists()
        name = alg.split("-")[0]
        assert proc.stderr.decode() == f"qcow2kit: {path.name}: luks_header.cipher_name: " \
            f"cipher '{name}' is not offered by the cryptography library\n"


def test_info_check_secret(tmp_path: Path) -> None:
    path = make(tmp_path / "luks.qcow2", "luks", **{"encrypt.hash-alg": "sha512"})
    (tmp_path / "pw").write_text(PASSWORD)
    (tmp_path / "bad").write_text("bad")
    proc = ours("info", "--check-secret", "--password-file", "pw", path.name, cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.decode().endswith("\nSecret: opens LUKS key slot 0\n")
    proc = ours("info", "--json", "--check-secret", "--password-file", "pw", path.name,
                cwd=tmp_path)
    assert json.loads(proc.stdout)["qcow2kit"]["secret"] == {"opens": "key-slot",
                                                             "key-slot": 0}
    proc = ours("info", "--check-secret", "--password-file", "bad", path.name, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.decode().endswith(": no key slot accepts this secret\n")
    proc = ours("info", "--qemu", "--check-secret", "--password-file", "pw", path.name,
                cwd=tmp_path)
    assert proc.returncode == 2
    aes = make(tmp_path / "aes.qcow2", "aes")
    proc = ours("info", "--check-secret", "--password-file", "bad", aes.name, cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.decode().endswith("\nSecret: legacy AES cannot check a secret: any "
                                         "one decrypts, a wrong one to noise\n")


def test_secret_asked_for_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the secret is asked for (and not echoed), once, for the image."""
    path = make(tmp_path / "luks.qcow2", "luks", **{"encrypt.hash-alg": "sha512"})
    pid, fd = pty.fork()
    if pid == 0:  # the child, on the new terminal
        os.chdir(tmp_path)
        os.execv(QCOW2KIT[0], [*QCOW2KIT, "cat", "--length", "4", path.name])
    seen = b""
    while b"Password for" not in seen:
        seen += os.read(fd, 1024)
    assert seen.endswith(b"Password for luks.qcow2: ")
    os.write(fd, PASSWORD.encode() + b"\n")
    rest = b""
    with contextlib.suppress(OSError):  # EIO once the child has gone
        while True:
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            rest += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert PASSWORD.encode() not in rest  # not echoed
    assert rest.endswith(b"\x5a" * 4)
