"""Drop-in for qemu's iotests qcow2.py command line: same argv, same output.

    python -m qcow2kit.compat IMAGE CMD [ARGS...] [-j]

Unlike qcow2.py, the dump commands open the image read-only, and a bad image gives
one line on stderr and exit status 1 instead of a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, List, NamedTuple, Optional

from .dump import render
from .errors import Qcow2Error
from .image import open_image


class Command(NamedTuple):
    name: str
    nargs: int
    help: str
    run: Callable[[str, List[str], bool], None]


def _dump(exts_only: bool) -> Callable[[str, List[str], bool], None]:
    def run(path: str, args: List[str], as_json: bool) -> None:
        with open_image(path) as image:
            sys.stdout.write(render(image, exts_only=exts_only, as_json=as_json))
    return run


COMMANDS = [
    Command("dump-header", 0, "Dump image header and header extensions", _dump(False)),
    Command("dump-header-exts", 0, "Dump image header extensions", _dump(True)),
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
    as_json = "-j" in argv
    if as_json:
        argv.remove("-j")
    path, name, args = argv[1], argv[2], argv[3:]
    cmd = next((c for c in COMMANDS if c.name == name), None)
    if cmd is None:
        print(f"Unknown command '{name}'")
        return 0
    if len(args) != cmd.nargs:
        usage(prog)
        return 0
    try:
        cmd.run(path, args, as_json)
    except (Qcow2Error, OSError) as exc:
        print(f"{prog}: {path}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
