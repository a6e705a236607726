"""Command-line option types, and the options many commands share in one spelling:
numbers in any int() base, sizes as qemu-img reads them, the output format (--json,
or qemu-img's --output=json|human) and the image format (-f qcow2)."""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Optional

import click

from . import exits, printable

F = Callable[..., Any]


class Number(click.ParamType):
    """An integer in any int() base (4096, 0x1000, 0o10000), optionally bounded."""

    name = "number"

    def __init__(self, low: Optional[int] = None, high: Optional[int] = None) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: Optional[click.Parameter],
                ctx: Optional[click.Context]) -> int:
        if isinstance(value, int):
            return value
        try:
            number = int(value, 0)
        except ValueError:
            self.fail(f"{value!r} is not a number (any int() base: 4096, 0x1000, 0o10000)",
                      param, ctx)
        if self.low == 0 and number < 0:
            self.fail(f"{value} is negative", param, ctx)
        if self.low is not None and number < self.low:
            self.fail(f"{value} is below {self.low}", param, ctx)
        if self.high is not None and number > self.high:
            self.fail(f"{value} is beyond {self.high:#x}", param, ctx)
        return number


_SIZE = (r"\s*(?:0[xX](?P<hex>[0-9a-fA-F]+)|(?P<dec>\d+(?:\.\d+)?))"  # compiled when used
         r"(?P<unit>[bBkKmMgGtTpPeE]?)\Z")
_UNITS = "bkmgtpe"  # powers of 1024
INT64_MAX = 2**63 - 1


class QemuSize(click.ParamType):
    """A byte count as qemu-img reads one (its cvtnum): decimal, or hex with 0x, with
    an optional suffix b, k, M, G, T, P or E (powers of 1024, any case; a fraction
    only with a suffix), from 0 to 2^63-1."""

    name = "size"

    def convert(self, value: Any, param: Optional[click.Parameter],
                ctx: Optional[click.Context]) -> int:
        if isinstance(value, int):
            return value
        match = re.match(_SIZE, value)
        if match is None or ("." in (match["dec"] or "") and not match["unit"]):
            self.fail(f"{value!r} is not a size: use a number with an optional k, M, G, "
                      "T, P or E suffix", param, ctx)
        from fractions import Fraction  # for sizes such as 1.5M; costs start-up

        number = int(match["hex"], 16) if match["hex"] else Fraction(match["dec"])
        size = int(number * 1024 ** _UNITS.index((match["unit"] or "b").lower()))
        if size > INT64_MAX:
            self.fail(f"{value} is beyond {INT64_MAX}", param, ctx)
        return size


def output_format(help: str, short: bool = False) -> Callable[[F], F]:
    """--json (-j too with short) and its qemu-img spelling --output=json|human, given
    to the command as as_json."""
    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, as_json: bool = False, output_format: Optional[str] = None,
                    **kwargs: Any) -> Any:
            if as_json and output_format == "human":
                raise click.UsageError("--json and --output=human exclude each other")
            return func(*args, as_json=as_json or output_format == "json", **kwargs)
        wrapper = click.option("--output", "output_format", type=click.Choice(["json", "human"]),
                               help="json: as --json; human: the default text "
                                    "(qemu-img's spelling).")(wrapper)
        names = ("-j", "--json") if short else ("--json",)
        return click.option(*names, "as_json", is_flag=True, help=help)(wrapper)
    return decorate


def image_format(status: int = exits.BAD_IMAGE) -> Callable[[F], F]:
    """-f/--format as qemu-img takes it: qcow2 passes, any other format is refused in
    one line with exit status status, before anything is opened."""
    def refuse(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> None:
        if value is None:
            return
        from . import api

        try:
            api.check_format(value)
        except api.FormatRefused as exc:
            click.echo(f"qcow2kit: {printable.escape(str(exc))}", err=True)
            ctx.exit(status)
    return click.option("-f", "--format", metavar="qcow2", expose_value=False,
                        callback=refuse, help="The image format, as qemu-img takes it: "
                        f"qcow2 (any other is refused, exit {status}).")


IMAGE_FORMAT = image_format()
