"""Time `qcow2kit convert` of a LUKS (aes-256-xts-plain64) image against `qemu-img
convert -O raw` with the same secret, from one run of each, on 1 GiB of random data
written through qemu. Prints the time ratio qcow2kit/qemu-img, whether the outputs are
identical, and qcow2kit's peak memory. Needs about 4 GB of free disk in WORKDIR.

    .venv/bin/python bench/luks.py [WORKDIR]
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from convert import OURS, sha256, timed  # noqa: E402

SIZE = 1 << 30
SECRET = "secret,id=sec0,data=bench"
OPTS = "driver=qcow2,file.filename={},encrypt.key-secret=sec0"


def main() -> None:
    with tempfile.TemporaryDirectory(dir=sys.argv[1] if len(sys.argv) > 1 else None) as tmp:
        work = Path(tmp)
        raw = work / "random.raw"
        with open(raw, "wb") as f:
            for _ in range(SIZE >> 26):
                f.write(Path("/dev/urandom").open("rb").read(1 << 26))
        image = work / "luks.qcow2"
        for _ in range(60):  # qemu's PBKDF timing flake
            proc = subprocess.run(
                ["qemu-img", "convert", "-q", "--object", SECRET, "-O", "qcow2", "-o",
                 "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=aes-256,"
                 "encrypt.cipher-mode=xts,encrypt.hash-alg=sha512,encrypt.iter-time=10",
                 str(raw), str(image)], capture_output=True, text=True)
            if proc.returncode == 0:
                break
        proc.check_returncode()
        raw.unlink()
        (work / "pw").write_text("bench")
        theirs, ours = work / "qemu.raw", work / "ours.raw"
        t_qemu, _ = timed("qemu-img", "convert", "--object", SECRET, "--image-opts",
                          OPTS.format(image), "-O", "raw", str(theirs))
        t_ours, peak = timed(OURS, "convert", "--password-file", str(work / "pw"),
                             str(image), str(ours))
        same = sha256(theirs) == sha256(ours)
        print(f"1 GiB LUKS aes-256-xts: qemu-img {t_qemu:6.2f} s  qcow2kit {t_ours:6.2f} s  "
              f"ratio {t_ours / t_qemu:4.2f}  identical: {same}  qcow2kit peak {peak:.0f} MiB")


if __name__ == "__main__":
    main()
