"""The qcow2kit commands the fuzzer runs on every mutant, as data.

A command runs when `qcow2kit --help` lists its subcommand, so commands being
written now join the run as soon as they are registered.
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, List

import click

from qcow2kit import exits
from qcow2kit.cli import main as cli
from qcow2kit.names import FEATURE_GROUPS, HEADER_FIELD_IDS
from qcow2kit.image import ExtensionType

# How a command's arguments are made: (random source, image name, output path).
ArgsMaker = Callable[[random.Random, str, str], List[str]]

NUMBERS = ("0", "1", "0xffffffff", "0x8000000000000000", "104", "112", "4096", "65536",
           "0x10000000000000000", "-1", "9", "22")
MAGICS = tuple(int(m) for m in ExtensionType if m) + (0, 0x12345678, 0xFFFFFFFF)


@dataclass(frozen=True)
class Command:
    """One way of running qcow2kit on an image."""

    name: str  # as reports show it
    subcommand: str
    args: ArgsMaker
    edits: bool = False  # runs on a copy: a refusal must leave it unchanged
    one_field: bool = False  # an edit anywhere in the file, of the bytes of one field
    json: bool = False  # stdout is JSON when the command succeeds
    findings: bool = False  # stderr carries findings besides the error line (check)
    exit_codes: FrozenSet[int] = field(default_factory=lambda: frozenset((0, 1)))
    # the statuses that come with exactly one error line
    error_codes: FrozenSet[int] = frozenset((1, exits.OUTPUT_FAILED))


def _fixed(*words: str) -> ArgsMaker:
    """Arguments that are words, then the image."""
    return lambda rng, image, out: [*words, image]


def _set_header(rng: random.Random, image: str, out: str) -> List[str]:
    value = rng.choice(NUMBERS + (str(rng.getrandbits(64)),))
    return ["set-header", "--", image, rng.choice(sorted(HEADER_FIELD_IDS)), value]


def _set_feature_bit(rng: random.Random, image: str, out: str) -> List[str]:
    group = rng.choice(FEATURE_GROUPS)  # another word is a usage error (exit 2)
    return ["set-feature-bit", image, group, str(rng.randint(0, 64))]


def _text(rng: random.Random) -> str:
    size = rng.choice((0, 1, 7, 8, 100, 5000))
    return "".join(rng.choice(string.ascii_letters) for _ in range(size))


def _add_header_ext(rng: random.Random, image: str, out: str) -> List[str]:
    return ["add-header-ext", image, hex(rng.choice(MAGICS)), _text(rng)]


def _del_header_ext(rng: random.Random, image: str, out: str) -> List[str]:
    return ["del-header-ext", image, hex(rng.choice(MAGICS))]


def _cat(rng: random.Random, image: str, out: str) -> List[str]:
    offset = rng.choice(("0", "0x100000", "0x3ff000"))
    return ["cat", "--offset", offset, "--length", rng.choice(("4096", "65536")), image]


def _snapshot_convert(rng: random.Random, image: str, out: str) -> List[str]:
    return ["convert", "--snapshot", rng.choice(("1", "2", "first")), image, out]


def _whatis(rng: random.Random, image: str, out: str) -> List[str]:
    offsets = [rng.choice(("0", "0x68", "0x10000", "0x30000", str(rng.getrandbits(24))))
               for _ in range(rng.randint(1, 3))]
    return ["whatis", image, *offsets]


FIELD_PATHS = ("header.size", "header.l1_table_offset", "l1_table[0]", "l1_table[0].copied",
               "l1_table[0].l2_table[1]", "l1_table[0].l2_table[1].ofs_host_cluster",
               "refcounts[3]", "refcount_table[0].refcount_block[1]", "snapshots[0].name",
               "snapshots[0].l1_table[0].l2_table[0]", "bitmaps[0].table[0].all_ones",
               "extensions[0].data", "header.incompatible_features.dirty", "bogus")


def _get(rng: random.Random, image: str, out: str) -> List[str]:
    return ["get", image, *rng.sample(FIELD_PATHS, rng.randint(1, 3))]


def _set(rng: random.Random, image: str, out: str) -> List[str]:
    return ["set", image, rng.choice(FIELD_PATHS), rng.choice(NUMBERS)]


CHECK_EXITS = frozenset((0, 1, 2, 3))  # qemu-img check's: clean, failed, corrupt, leaks
PATH_ERRORS = frozenset((1, exits.USAGE))  # get/set: 2 for a path the spec does not have
PATH_EXITS = PATH_ERRORS | {0}
WRITER_EXITS = frozenset((0, 1, exits.OUTPUT_FAILED))  # output cut at the file-size limit

COMMANDS: List[Command] = [
    Command("dump", "dump", _fixed("dump")),
    Command("dump --exts-only", "dump", _fixed("dump", "--exts-only")),
    Command("dump -j", "dump", _fixed("dump", "-j"), json=True),
    Command("bitmaps", "bitmaps", _fixed("bitmaps")),
    Command("bitmaps --json", "bitmaps", _fixed("bitmaps", "--json"), json=True),
    Command("map", "map", _fixed("map")),
    Command("map --json", "map", _fixed("map", "--json"), json=True),
    Command("convert", "convert", lambda rng, image, out: ["convert", image, out],
            exit_codes=WRITER_EXITS),
    Command("convert -", "convert", lambda rng, image, out: ["convert", image, "-"],
            exit_codes=WRITER_EXITS),
    Command("convert --snapshot", "convert", _snapshot_convert, exit_codes=WRITER_EXITS),
    Command("cat", "cat", _cat, exit_codes=WRITER_EXITS),
    Command("set-header", "set-header", _set_header, edits=True),
    Command("set-feature-bit", "set-feature-bit", _set_feature_bit, edits=True),
    Command("add-header-ext", "add-header-ext", _add_header_ext, edits=True),
    Command("del-header-ext", "del-header-ext", _del_header_ext, edits=True),
    Command("info", "info", _fixed("info")),
    Command("info --json", "info", _fixed("info", "--json"), json=True),
    Command("info --backing-chain", "info", _fixed("info", "--backing-chain")),
    Command("snapshots", "snapshots", _fixed("snapshots")),
    Command("snapshots --json", "snapshots", _fixed("snapshots", "--json"), json=True),
    Command("check", "check", _fixed("check"), findings=True, exit_codes=CHECK_EXITS),
    Command("check --json", "check", _fixed("check", "--json"), json=True, findings=True,
            exit_codes=CHECK_EXITS),
    Command("whatis", "whatis", _whatis),
    Command("get", "get", _get, exit_codes=PATH_EXITS, error_codes=PATH_ERRORS),
    Command("get --json", "get", lambda rng, image, out: [*_get(rng, image, out), "--json"],
            json=True, exit_codes=PATH_EXITS, error_codes=PATH_ERRORS),
    Command("set", "set", _set, edits=True, one_field=True, exit_codes=PATH_EXITS,
            error_codes=PATH_ERRORS),
]


def listed_subcommands() -> List[str]:
    """The subcommands `qcow2kit --help` lists."""
    with click.Context(cli) as ctx:
        return cli.list_commands(ctx)


def available(only: List[str] = ()) -> List[Command]:
    """The commands whose subcommand qcow2kit has (those named in only, if given)."""
    listed = set(listed_subcommands())
    return [c for c in COMMANDS if c.subcommand in listed and (not only or c.name in only)]
