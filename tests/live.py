"""A live image: qemu-nbd serving it writable, as a running VM would hold it."""
from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def served(path: Path, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """qemu-nbd -t serving path writable (it holds qemu's write locks); killed after."""
    sock = tmp_path / "nbd.sock"
    server = subprocess.Popen(["qemu-nbd", "-t", "-f", "qcow2", "-k", str(sock), str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert server.poll() is None and time.monotonic() < deadline, "qemu-nbd did not start"
            time.sleep(0.05)
        yield server
    finally:
        server.kill()
        server.wait(timeout=10)
