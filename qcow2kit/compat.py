"""Drop-in for qemu's iotests qcow2.py command line: same argv, same output.

    python -m qcow2kit.compat IMAGE CMD [ARGS...] [-j] [--warnings]

It prints what qcow2.py prints, nothing more: stdout, stderr and exit status are
qcow2.py's, and an edit writes the bytes qcow2.py writes, one that qemu will refuse
included. --warnings (qcow2.py has no such option) adds, on stderr, what about the
result qemu will object to. Unlike qcow2.py, the dump commands open the image
read-only; the edit commands verify the new first cluster before one write and
refuse edits that do not fit in it, leaving the file unchanged; and a bad image gives
one line on stderr and exit status 1 instead of a traceback.
"""
from __future__ import annotations

import sys

from .dump import render
from .errors import Qcow2Error
from .image import open_image
from .names import FEATURE_GROUPS, HEADER_FIELD_IDS
from .records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional


class Options(Record):
    as_json: bool  # -j
    warnings: bool  # --warnings


if TYPE_CHECKING:
    Run = Callable[[str, List[str], Options], None]


class Command(Record):
    name: str
    nargs: int
    help: str
    run: Run


def _dump(exts_only: bool) -> Run:
    def run(path: str, args: List[str], opts: Options) -> None:
        with open_image(path) as image:
            sys.stdout.write(render(image, exts_only=exts_only, as_json=opts.as_json))
    return run


class Refused(Exception):
    """An argument qcow2.py itself rejects, with qcow2.py's message (on stdout, exit 1)."""


def _number(text: str, message: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise Refused(message % text) from None


def _warn(warnings: List[str], opts: Options) -> None:
    """The warnings about an edit's result, with --warnings only: qcow2.py has none."""
    for warning in warnings if opts.warnings else []:
        print(f"qcow2kit.compat: warning: {warning}", file=sys.stderr)


def _set_header(path: str, args: List[str], opts: Options) -> None:
    from . import edit

    name, text = args
    value = _number(text, "'%s' is not a valid number")
    if name not in HEADER_FIELD_IDS or name == "compression_type":
        raise Refused(f"'{name}' is not a known header field")
    _warn(edit.set_header_field(path, name, value), opts)


def _add_header_ext(path: str, args: List[str], opts: Options) -> None:
    from . import edit

    magic = _number(args[0], "'%s' is not a valid magic number")
    _warn(edit.add_extension(path, magic, args[1].encode()), opts)


def _add_header_ext_stdio(path: str, args: List[str], opts: Options) -> None:
    from . import edit

    magic = _number(args[0], "'%s' is not a valid magic number")
    _warn(edit.add_extension(path, magic, sys.stdin.buffer.read()), opts)


def _del_header_ext(path: str, args: List[str], opts: Options) -> None:
    from . import edit

    magic = _number(args[0], "'%s' is not a valid magic number")
    try:
        _warn(edit.delete_extension(path, magic), opts)
    except edit.NoSuchExtension:
        print("No such header extension")


def _set_feature_bit(path: str, args: List[str], opts: Options) -> None:
    from . import edit

    group, text = args
    message = "'%s' is not a valid bit number in range [0, 64)"
    bit = _number(text, message)
    if not 0 <= bit < 64:
        raise Refused(message % bit)
    if group not in FEATURE_GROUPS:
        raise Refused(f"'{group}' is not a valid group, try 'incompatible', "
                      "'compatible', or 'autoclear'")
    _warn(edit.set_feature_bit(path, group, bit), opts)


COMMANDS = [
    Command("dump-header", 0, "Dump image header and header extensions", _dump(False)),
    Command("dump-header-exts", 0, "Dump image header extensions", _dump(True)),
    Command("set-header", 2, "Set a field in the header", _set_header),
    Command("add-header-ext", 2, "Add a header extension", _add_header_ext),
    Command("add-header-ext-stdio", 1, "Add a header extension, data from stdin",
            _add_header_ext_stdio),
    Command("del-header-ext", 1, "Delete a header extension", _del_header_ext),
    Command("set-feature-bit", 2, "Set a feature bit", _set_feature_bit),
]


def usage(prog: str) -> None:
    print(f"Usage: {prog} <file> <cmd> [<arg>, ...] [<key>, ...]")
    print("")
    print("Supported commands:")
    for cmd in COMMANDS:
        print(f"    {cmd.name:<20} - {cmd.help}")
    print("")
    print("Supported keys:")
    print(f"    {'-j':<20} - Dump in JSON format")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    prog = "qcow2kit.compat"
    if len(argv) < 3:
        usage(prog)
        return 1
    opts = Options(as_json="-j" in argv, warnings="--warnings" in argv)
    for key in ("-j", "--warnings"):
        if key in argv:
            argv.remove(key)
    path, name, args = argv[1], argv[2], argv[3:]
    cmd = next((c for c in COMMANDS if c.name == name), None)
    if cmd is None:
        print(f"Unknown command '{name}'")
        return 0
    if len(args) != cmd.nargs:
        usage(prog)
        return 0
    try:
        cmd.run(path, args, opts)
    except Refused as exc:
        print(exc)
        return 1
    except (Qcow2Error, OSError) as exc:
        print(f"{prog}: {path}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
