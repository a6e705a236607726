"""Which files an image may make qcow2kit open, and how every input file is opened.

The chain policy lives here, once, for every command that follows a backing chain
(mapping, guest data, info): where a backing or external data file name points (as
qemu resolves it), the overrides (--no-backing, --backing FILE), safe mode (names
that are absolute, lead out of the image's directory or name anything but a regular
file are refused) and the refusal of FIFOs, devices and sockets named by an image.
Every input is opened without blocking and, unless force-share is on, with qemu's
shared read lock, refusing a file that a qemu process writes to.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import stat
import sys

from .errors import Qcow2Error
from .locking import lock_for_reading, writer_present
from .records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterator, Optional, Tuple

SAFE_ENV = "QCOW2KIT_SAFE"
IMAGE, BACKING, DATA = "image", "backing file", "external data file"
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"))


class Policy(Record):
    """How a command treats the files its image names, and qemu's locks."""

    no_backing: bool = False  # the image alone: unallocated ranges read as zeros
    backing: Optional[str] = None  # this file instead of the image's own backing file
    safe: bool = False  # refuse absolute, escaping and non-regular backing and data files
    allow_special: bool = False  # follow FIFOs, devices and sockets (never in safe mode)
    force_share: bool = False  # read files a qemu process writes to (-U)


_CURRENT: contextvars.ContextVar[Policy] = contextvars.ContextVar("policy", default=Policy())


def current() -> Policy:
    """The policy in force (the default one outside `using`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(policy: Policy) -> Iterator[Policy]:
    """Put policy in force for the duration of the block."""
    token = _CURRENT.set(policy)
    try:
        yield policy
    finally:
        _CURRENT.reset(token)


def warn(message: str) -> None:
    """A warning on stderr, in the command's format."""
    print(f"qcow2kit: warning: {message}", file=sys.stderr, flush=True)


# --- names ------------------------------------------------------------------------------

def _dir_name(filename: str) -> str:
    """The directory part of a file name, its last slash included ("" for none)."""
    return filename[:filename.rfind("/") + 1]


def has_protocol(filename: str) -> bool:
    """Whether qemu reads a "protocol:" prefix in the name (a colon before any slash)."""
    return ":" in filename.split("/", 1)[0]


def full_backing_filename(filename: str, backing: str) -> str:
    """The backing file's name as qemu resolves it: relative to the image's directory."""
    if backing.startswith("/") or has_protocol(backing):
        return backing
    return _dir_name(filename) + backing


def file_path(filename: str) -> str:
    """The file qemu opens for a name (the file protocol's prefix dropped)."""
    return filename[len("file:"):] if filename.startswith("file:") else filename


# --- the chain policy ----------------------------------------------------------------------

def backing_file(image: str, name: Optional[str], fmt: Optional[str],
                 depth: int) -> Optional[Tuple[str, Optional[str]]]:
    """The path and format (None: probe it) of the backing file to open below image
    (at depth 0 the top image), whose header names name in format fmt; None for no
    backing file. Raises Qcow2Error when the policy refuses it."""
    policy = current()
    if depth == 0 and policy.no_backing:
        return None
    if depth == 0 and policy.backing is not None:
        return policy.backing, None  # named on the command line: trusted as the image is
    if not name:
        return None
    full = full_backing_filename(image, name)
    if has_protocol(full) and not full.startswith("file:"):
        raise Qcow2Error(BACKING, None, f"cannot open {full!r}: only plain file names "
                         "are supported")
    path = file_path(full)
    vet(path, name, BACKING, image)
    return path, fmt


def data_file(image: str, name: str) -> str:
    """The path of the external data file that image names (qemu opens a relative name
    from the current directory). Raises Qcow2Error when the policy refuses it."""
    vet(name, name, DATA, image)
    return name


def _kind(mode: int) -> Optional[str]:
    """What a non-regular file is, in words; None for a regular file."""
    return next((words for test, words in _KINDS if test(mode)), None)


def vet(path: str, name: str, role: str, image: str) -> None:
    """Refuse a file that image names as name (opened as path) when the policy does
    not allow it; a file that does not exist is left for its opening to report."""
    policy = current()
    if policy.safe:
        if os.path.isabs(name) or has_protocol(name):
            raise _refused(role, name, "an absolute name" if os.path.isabs(name)
                           else "a protocol name")
        home = os.path.realpath(os.path.dirname(image) or ".")
        if os.path.commonpath([home, os.path.realpath(path)]) != home:
            raise _refused(role, name, f"outside the image's directory {home}")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    _refuse_special(mode, role, name)


def _refuse_special(mode: int, role: str, name: str) -> None:
    kind = _kind(mode)
    if kind is None:
        return
    policy = current()
    if policy.safe:
        raise _refused(role, name, f"{kind}, not a regular file")
    if not policy.allow_special:
        raise _refused(role, name, f"{kind}, not a regular file (--allow-special follows it)")


def _refused(role: str, name: str, why: str) -> Qcow2Error:
    mode = " in safe mode" if current().safe else ""
    return Qcow2Error(role, None, f"{name!r} refused{mode}: {why}")


# --- opening --------------------------------------------------------------------------------

def open_input(path: str, role: str = IMAGE, name: Optional[str] = None,
               lock: bool = True) -> int:
    """A read-only descriptor of an input file, opened without blocking (a FIFO
    without writer does not hang), with qemu's shared read lock unless lock is off.

    A file the image names (role other than IMAGE, as name) must still pass the
    policy once open; the image itself may be a regular file or a block device.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if role != IMAGE:
            _refuse_special(mode, role, name or path)
        elif stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        os.set_blocking(fd, True)
        if lock:
            share_read(fd, path)
        return fd
    except BaseException:
        os.close(fd)
        raise


def share_read(fd: int, path: str) -> None:
    """Take qemu's shared read lock, or with force-share, warn about a writer."""
    if not current().force_share:
        lock_for_reading(fd, path)
    elif writer_present(fd):
        warn(f"{path}: a qemu process is writing to it; the result may be inconsistent")
