"""The public Python API, qcow2kit.open: what it answers agrees with qemu-img, and it
takes what the command line takes (format, chain options, locks, force, secrets)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict

import pytest

import imagekit
import qcow2kit
from qcow2kit import access


def qemu(*args: str, cwd: Path, ok: tuple = (0,)) -> subprocess.CompletedProcess:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode in ok, proc.stderr
    return proc


def converted(path: Path, *args: str) -> bytes:
    """The guest disk as qemu-img convert -O raw writes it."""
    out = path.parent / "api-converted.raw"
    try:
        imagekit.run("qemu-img", "convert", *args, "-O", "raw", path.name, out.name,
                     cwd=path.parent)
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


@pytest.mark.parametrize("kind", ["v3", "snapshots", "bitmaps", "backing_chain", "zlib",
                                  "extended_l2"])
def test_metadata_and_answers_agree_with_qemu(images: Dict[str, Path], kind: str) -> None:
    path = images[kind]
    info = imagekit.qemu_json("info", path)
    check = qemu("check", "--output=json", path.name, cwd=path.parent, ok=(0, 2, 3))
    mapped = json.loads(qemu("map", "--output=json", path.name, cwd=path.parent).stdout)
    old = os.getcwd()
    os.chdir(path.parent)  # qemu resolves names as from here
    try:
        with qcow2kit.open(path.name) as image:
            assert image.header.size == info["virtual-size"]
            ours = image.info(extras=False)[0]
            assert {k: v for k, v in ours.items() if k != "actual-size"} == \
                {k: v for k, v in info.items() if k != "actual-size"}
            chain = imagekit.qemu_json("info", path, "--backing-chain")
            assert [i["filename"] for i in image.info(backing_chain=True)] == \
                [i["filename"] for i in chain]
            assert image.cluster_size == info["cluster-size"]
            assert image.backing_file == info.get("backing-filename")
            assert [s.name for s in image.snapshots] == \
                [s["name"] for s in info.get("snapshots", [])]
            bitmaps = info["format-specific"]["data"].get("bitmaps", [])
            assert [(b.name, b.granularity) for b in image.bitmaps().bitmaps] == \
                [(b["name"], b["granularity"]) for b in bitmaps]
            result = image.check()
            counts = json.loads(check.stdout)
            assert (result.exit_code, result.corruptions, result.leaks) == \
                (check.returncode, counts.get("corruptions", 0), counts.get("leaks", 0))
            got = [{"start": e.start, "length": e.length, "depth": e.depth,
                    "present": e.present, "zero": e.zero, "data": e.data,
                    **({} if e.offset is None else {"offset": e.offset})}
                   for e in image.map()]
            assert got == mapped
            data = next(e for e in mapped if e["data"] and "offset" in e and e["depth"] == 0)
            answer = image.whatis([data["offset"]])[0]
            assert answer.offset == data["offset"] and answer.refcount == 1
            place = image.whatis_guest([data["start"]])[0]
            assert (place.reads, place.host_offset, place.answer) == \
                ("data", data["offset"], answer)
            with image.disk() as disk:
                assert disk.read() == converted(path)
    finally:
        os.chdir(old)


def test_snapshot_disk_and_range(images: Dict[str, Path]) -> None:
    path = images["snapshots"]
    with qcow2kit.open(path) as image:
        for snap in image.snapshots:
            with image.disk(snapshot=snap.name) as disk:
                disk.seek(65536)
                assert disk.read(131072) == \
                    converted(path, "-l", f"snapshot.name={snap.name}")[65536:196608]
        assert [e.start for e in image.map(start=70000, length=1000)] == [70000]


def test_format_other_than_qcow2_is_refused(images: Dict[str, Path]) -> None:
    with pytest.raises(qcow2kit.FormatRefused, match="'raw' refused"):
        qcow2kit.open(images["v3"], format="raw")
    qcow2kit.open(images["v3"], format="qcow2").close()


def test_encrypted_disk_with_its_secret(images: Dict[str, Path]) -> None:
    path = images["luks"]
    raw = path.parent / "luks.raw"
    imagekit.run("qemu-img", "convert", "--object", imagekit.SECRET, "--image-opts",
                 f"driver=qcow2,file.filename={path.name},encrypt.key-secret=sec0",
                 "-O", "raw", raw.name, cwd=path.parent)
    expected = raw.read_bytes()
    raw.unlink()
    for secret in (b"qcow2kit-test", "qcow2kit-test", lambda name: b"qcow2kit-test"):
        with qcow2kit.open(path, secret=secret) as image, image.disk() as disk:
            assert disk.read() == expected
    words = path.parent / "pw.txt"
    words.write_text("qcow2kit-test\n")
    try:
        with qcow2kit.open(path, password_file=str(words)) as image, image.disk() as disk:
            assert disk.read() == expected
    finally:
        words.unlink()
    with qcow2kit.open(path, secret=b"wrong") as image:
        with pytest.raises(qcow2kit.Qcow2Error, match="no key slot accepts"):
            image.disk()


def test_chain_options(images: Dict[str, Path]) -> None:
    """no_backing: the image alone, as qemu's backing=null; safe refuses what safe mode
    refuses; options not given keep the policy in force."""
    path = images["backing"]
    null = {"driver": "qcow2", "file": {"driver": "file", "filename": path.name},
            "backing": None}
    expected = json.loads(qemu("map", "--output=json", "json:" + json.dumps(null),
                               cwd=path.parent).stdout)
    with qcow2kit.open(path, no_backing=True) as image:
        assert [(e.start, e.length, e.depth, e.zero, e.data) for e in image.map()] == \
            [(e["start"], e["length"], e["depth"], e["zero"], e["data"]) for e in expected]
    with access.using(access.Policy(no_backing=True)):
        with qcow2kit.open(path) as image:
            assert max(e.depth for e in image.map()) == 0
        with qcow2kit.open(path, no_backing=False) as image:
            assert max(e.depth for e in image.map()) == 1
    chain = images["backing_chain"]
    with qcow2kit.open(chain, safe=True) as image:  # relative names: allowed
        assert max(e.depth for e in image.map()) == 2


def test_holds_qemus_read_lock(image_copy) -> None:
    """While open, a qemu writer is refused; with force_share no lock is taken."""
    path = image_copy("v3")

    def write() -> subprocess.CompletedProcess:
        return subprocess.run(["qemu-io", "-c", "write 0 512", path.name],
                              capture_output=True, text=True, cwd=path.parent)
    with qcow2kit.open(path):
        proc = write()
        assert proc.returncode != 0 and 'Failed to get "write" lock' in proc.stderr
    with qcow2kit.open(path, force_share=True):
        proc = write()
        assert proc.returncode == 0, proc.stderr
    assert write().returncode == 0


def test_force_reads_unknown_features(image_copy, capsys: pytest.CaptureFixture) -> None:
    path = image_copy("v3")
    data = bytearray(path.read_bytes())
    data[72:80] = (1 << 40).to_bytes(8, "big")  # an incompatible bit qemu does not know
    path.write_bytes(data)
    with qcow2kit.open(path) as image:
        with pytest.raises(qcow2kit.Qcow2Error, match="qemu reads no guest data"):
            image.map()
    with qcow2kit.open(path, force=True) as image:
        assert image.map()
        assert "read anyway (--force)" in capsys.readouterr().err
