"""The qemu releases whose qemu-img output qcow2kit renders, and what changed between them.

Each change is one difference in what qemu-img prints, with the release it first
appeared in and where it comes from in qemu's history; a renderer asks a QemuVersion
whether it has a change. The releases are those from 7.2 on; what their output shows
was read in their sources (qemu-img.c, block/qapi.c, qapi/block-core.json,
qapi/crypto.json of 7.2.0, 8.2.2, 9.2.1, 10.0.2 and 10.1.0) and in the commits below.

The version used by default is the one of the qemu-img found on PATH (its
`--version`, cached per binary), else the newest release known here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

from .records import Record

ENV = "QCOW2KIT_QEMU_VERSION"
RELEASES: Tuple[Tuple[int, int], ...] = (
    (7, 2), (8, 0), (8, 1), (8, 2), (9, 0), (9, 1), (9, 2), (10, 0), (10, 1))
NAMES = tuple(f"{major}.{minor}" for major, minor in RELEASES)
CACHE_NAME = "qemu-img-versions"
VERSION_LINE = r"qemu-img version (\d+)\.(\d+)"  # compiled when qemu-img is asked
DETECT_TIMEOUT = 10  # seconds


class Change(Record):
    """A difference in qemu-img's output: from which release, and from which commits."""

    since: Tuple[int, int]
    what: str
    source: str


CHILD_NODES = "child-nodes"
MAP_COMPRESSED = "map-compressed"
SNAPSHOT_COLUMNS = "snapshot-columns"
LUKS_DETACHED_HEADER = "luks-detached-header"

CHANGES: Dict[str, Change] = {
    CHILD_NODES: Change(
        (8, 0), "info shows each image's protocol node: a \"children\" array in JSON "
        "(the file node with format \"file\", its length as virtual-size, format-specific "
        "data of type \"file\"), a \"Child node '/file':\" section in text (filename, "
        "protocol type, file length, disk size); an empty format-specific dump prints "
        "nothing",
        "c04d0ab026 qemu-img: Let info print block graph; d570177b50 qemu-img: Change info "
        "key names for protocol nodes; 7f36a50ab4 block/file: Add file-specific image info; "
        "3716470b24 block: Improve empty format-specific info dump (Hanna Reitz, merged "
        "February 2023, qemu 8.0)"),
    MAP_COMPRESSED: Change(
        (8, 2), "map --output=json gives each extent a \"compressed\" member (after "
        "\"data\"), and extents that differ in it are not merged",
        "52b10c9c0c qemu-img: map: report compressed data blocks; 2848289168 block: add "
        "BDRV_BLOCK_COMPRESSED flag for bdrv_block_status() (Andrey Drobyshev, merged "
        "September 2023, qemu 8.2)"),
    SNAPSHOT_COLUMNS: Change(
        (9, 0), "snapshot lists (snapshot -l, info) have the columns ID (7), TAG, VM_SIZE, "
        "DATE, VM_CLOCK (hours on 4 digits), ICOUNT (\"--\" when there is none), each "
        "after a space",
        "52df1a5b61 qemu-img: Fix Column Width and Improve Formatting in snapshot list "
        "(Abhiram Tilak, merged March 2024, qemu 9.0; qemu issue #2062)"),
    LUKS_DETACHED_HEADER: Change(
        (9, 0), "the LUKS details of info's format-specific data have \"detached-header\" "
        "(after hash-alg)",
        "0bd779e27e crypto: Introduce 'detached-header' field in QCryptoBlockInfoLUKS "
        "(Hyman Huang, merged February 2024, qemu 9.0)"),
}


class QemuVersion(Record):
    """A qemu release (major, minor) as far as its qemu-img output goes."""

    major: int
    minor: int

    def has(self, change: str) -> bool:
        """Whether this release's output shows the change."""
        return (self.major, self.minor) >= CHANGES[change].since

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


OLDEST = QemuVersion(*RELEASES[0])
NEWEST = QemuVersion(*RELEASES[-1])


def parse(text: str) -> QemuVersion:
    """A release name ("9.2", or "9.2.1"), as the nearest release known here: the
    newest not after it (the oldest for anything older)."""
    parts = text.strip().split(".")
    if len(parts) not in (2, 3) or not all(part.isdecimal() for part in parts):
        raise ValueError(f"{text!r} is not a qemu version (like 10.0)")
    wanted = (int(parts[0]), int(parts[1]))
    known = [release for release in RELEASES if release <= wanted]
    return QemuVersion(*known[-1]) if known else OLDEST


def cache_file() -> Path:
    """Where the detected releases are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qcow2kit" / CACHE_NAME


def _ask(binary: str) -> Optional[str]:
    """The version `binary --version` prints (major.minor), None when it does not run."""
    import subprocess

    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=DETECT_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(VERSION_LINE, proc.stdout)
    return f"{match.group(1)}.{match.group(2)}" if match and proc.returncode == 0 else None


def _on_path(name: str) -> Optional[str]:
    """The executable that PATH names, as shutil.which finds it (importing shutil, and
    the compression modules it loads, would cost info more than its own work)."""
    folders = os.environ.get("PATH", os.defpath)
    for folder in folders.split(os.pathsep) if folders else []:
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def read_cache() -> Dict[str, str]:
    """The detected releases by binary key: one line per binary, the release, a space and
    the key (text, not JSON: importing json would cost info more than its own work);
    empty without a readable cache."""
    try:
        lines = cache_file().read_text().splitlines()
    except (OSError, ValueError):
        return {}
    return {key: found for found, _, key in (line.partition(" ") for line in lines) if key}


def write_cache(known: Dict[str, str]) -> None:
    """Keep the detected releases; without a cache, qemu-img runs again next time."""
    cache = cache_file()
    try:  # written aside and renamed: a concurrent reader sees all of it or none
        cache.parent.mkdir(parents=True, exist_ok=True)
        part = cache.with_name(f"{cache.name}.{os.getpid()}")
        part.write_text("".join(f"{found} {key}\n" for key, found in known.items()))
        os.replace(part, cache)
    except OSError:
        pass


def installed() -> Optional[QemuVersion]:
    """The release of the qemu-img on PATH, None without one (or one that does not say).

    The answer is cached per binary (its path, inode, size and modification time) in
    $XDG_CACHE_HOME/qcow2kit, so that qemu-img runs once per installed build.
    """
    binary = _on_path("qemu-img")
    if binary is None:
        return None
    try:
        st = os.stat(binary)
    except OSError:
        return None
    key = f"{os.path.abspath(binary)}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    known = read_cache()
    found = known.get(key)
    if found is not None:
        try:
            return parse(found)
        except ValueError:  # a damaged cache line: qemu-img is asked again
            pass
    found = _ask(binary)
    if found is None:
        return None
    known[key] = found
    write_cache(known)
    return parse(found)


def select(name: Optional[str] = None) -> QemuVersion:
    """The release to render for: the one named, else the installed qemu-img's, else
    the newest."""
    if name:
        return parse(name)
    return installed() or NEWEST
