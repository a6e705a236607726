"""The qcow2kit command line: a thin click layer over the package."""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

from . import __version__
from .dump import render
from .errors import Qcow2Error
from .image import open_image

EXIT_BAD_IMAGE = 1  # the image (or file) cannot be read or used; click uses 2 for usage


def reports_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a bad image's error as one line on stderr and exit non-zero."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Qcow2Error as exc:
            image = kwargs.get("image", "")
            click.echo(f"qcow2kit: {image}: {exc}", err=True)
        except OSError as exc:
            name = exc.filename if exc.filename is not None else kwargs.get("image", "")
            click.echo(f"qcow2kit: {name}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_BAD_IMAGE)
    return wrapper


IMAGE = click.argument("image", type=click.Path(dir_okay=True, path_type=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qcow2kit")
def main() -> None:
    """Look inside, check and safely edit QEMU qcow2 disk images.

    Exit status: 0 success, 1 the image or file cannot be read or used (one line on
    stderr names the structure and offset), 2 a usage error.
    """


@main.command()
@IMAGE
@click.option("--exts-only", is_flag=True,
              help="Only the header extensions (qcow2.py dump-header-exts).")
@click.option("-j", "--json", "as_json", is_flag=True,
              help="JSON, as qcow2.py -j prints it.")
@reports_errors
def dump(image: str, exts_only: bool, as_json: bool) -> None:
    """Print the header and header extensions exactly as qemu's qcow2.py does.

    The bitmaps extension includes its directory and each bitmap table with every
    entry classified as all-zeroes, all-ones, serialized or invalid.
    """
    with open_image(image) as img:
        click.echo(render(img, exts_only=exts_only, as_json=as_json), nl=False)
