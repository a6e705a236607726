"""The qcow2kit command line: a thin click layer over the package."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

import click

from . import __version__, edit
from .dump import render
from .errors import Qcow2Error
from .findings import Finding
from .image import QemuRefuses, Unsupported, open_image, unsupported_features

# Commands import the modules built on numpy when they run, so that the others
# (dump, the edits, info, snapshots) start as fast as qcow2.py does.

EXIT_BAD_IMAGE = 1  # the image (or file) cannot be read or used; click uses 2 for usage


def reports_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a bad image's error as one line on stderr and exit non-zero."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except QemuRefuses as exc:  # as qemu-img words it
            image = kwargs.get("image", "")
            click.echo(one_line(f"qcow2kit: Could not open '{image}': {exc.problem}"), err=True)
        except Qcow2Error as exc:
            image = kwargs.get("image", "")
            click.echo(one_line(f"qcow2kit: {image}: {exc}"), err=True)
        except OSError as exc:
            name = exc.filename if exc.filename is not None else kwargs.get("image", "")
            click.echo(one_line(f"qcow2kit: {name}: {exc.strerror or exc}"), err=True)
        sys.exit(EXIT_BAD_IMAGE)
    return wrapper


def one_line(text: str) -> str:
    """The text with unprintable characters (a newline in a file name read from an
    image, say) escaped, so that an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


GUEST_FORCE = click.option("--force", is_flag=True,
                           help="Read guest data even from an image with incompatible "
                                "feature bits qemu does not know (it refuses to).")


def _guest_data_readable(image: str, force: bool) -> None:
    """Refuse (or, with force, warn once) when qemu would not read the image's guest
    data: incompatible feature bits it does not know are set."""
    with open_image(image) as img:
        try:
            unsupported_features(img)
        except Unsupported as exc:
            if not force:
                raise Qcow2Error(exc.structure, exc.offset,
                                 f"{exc.problem}; qemu reads no guest data from it "
                                 "(--force reads it anyway)") from None
            click.echo(one_line(f"qcow2kit: warning: {image}: {exc}; read anyway (--force)"),
                       err=True)


def _warn_findings(image: str, findings: Sequence[Finding]) -> None:
    """Each finding about the image (what could not be read in full) as a warning."""
    for finding in findings:
        click.echo(one_line(f"qcow2kit: warning: {image}: {finding}"), err=True)


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


FORCE = click.option("--force", is_flag=True,
                     help="Edit even when a qemu process has the image open for writing.")


def _report(warnings: List[str]) -> None:
    for warning in warnings:
        click.echo(f"qcow2kit: warning: {warning}", err=True)


@main.command("set-header")
@IMAGE
@click.argument("field")
@click.argument("value")
@FORCE
@reports_errors
def set_header(image: str, field: str, value: str, force: bool) -> None:
    """Set header FIELD (a name as dump prints it) to VALUE (any int() base: 0x.., 0o..)."""
    _report(edit.set_header_field(image, field, edit.parse_int(value, "number"), force))


@main.command("set-feature-bit")
@IMAGE
@click.argument("group", metavar="{incompatible,compatible,autoclear}")
@click.argument("bit")
@FORCE
@reports_errors
def set_feature_bit(image: str, group: str, bit: str, force: bool) -> None:
    """Set bit BIT (0..63) of a feature bitmask."""
    _report(edit.set_feature_bit(image, group, edit.parse_int(bit, "bit number"), force))


@main.command("add-header-ext")
@IMAGE
@click.argument("magic")
@click.argument("data", required=False)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the data from standard input.")
@click.option("--data-file", type=click.Path(exists=True, dir_okay=False),
              help="Read the (binary) data from a file.")
@FORCE
@reports_errors
def add_header_ext(image: str, magic: str, data: Optional[str], from_stdin: bool,
                   data_file: Optional[str], force: bool) -> None:
    """Append a header extension of type MAGIC with DATA (or --stdin, --data-file)."""
    sources = [data is not None, from_stdin, data_file is not None]
    if sources.count(True) != 1:
        raise edit.EditError("give the data once: as DATA, --stdin or --data-file")
    if from_stdin:
        payload = sys.stdin.buffer.read()
    elif data_file is not None:
        payload = Path(data_file).read_bytes()
    else:
        payload = os.fsencode(data)
    _report(edit.add_extension(image, edit.parse_int(magic, "magic number"), payload, force))


@main.command("del-header-ext")
@IMAGE
@click.argument("magic")
@FORCE
@reports_errors
def del_header_ext(image: str, magic: str, force: bool) -> None:
    """Remove every header extension of type MAGIC (exit 1 when there is none)."""
    _report(edit.delete_extension(image, edit.parse_int(magic, "magic number"), force))


@main.command("bitmaps")
@IMAGE
@click.option("--json", "as_json", is_flag=True,
              help="JSON: every field, the dirty extents and the warnings.")
@click.option("--name", help="Only the bitmap of this name.")
@reports_errors
def bitmaps_command(image: str, as_json: bool, name: Optional[str]) -> None:
    """Show each persistent dirty bitmap and the guest ranges it marks dirty.

    Flags, granularity, the bitmap table with every entry classified, and the dirty
    extents (start, length in guest bytes). Inconsistencies are warnings (on stderr,
    or under "warnings" in JSON); the exit status stays 0 as long as the bitmaps can
    be shown.
    """
    from .bitmaps import bitmap_report, render_json, render_text

    with open_image(image) as img:
        report = bitmap_report(img, name)
    if as_json:
        click.echo(render_json(report), nl=False)
        return
    _report(report.all_warnings)
    click.echo(render_text(report), nl=False)


@main.command("map")
@IMAGE
@click.option("--json", "as_json", is_flag=True,
              help="qemu-img map --output=json: every extent with its status.")
@GUEST_FORCE
@reports_errors
def map_command(image: str, as_json: bool, force: bool) -> None:
    """Where each guest range is stored, through the backing chain, as qemu-img map.

    Without --json: the ranges that hold data, with the file and offset they are
    mapped to (qemu-img map's default output).
    """
    from . import mapping

    _guest_data_readable(image, force)
    extents = mapping.image_map(image)
    if as_json:
        click.echo(mapping.render_json(extents), nl=False)
        return
    for line in mapping.render_human(extents):
        click.echo(line)


@main.command()
@IMAGE
@click.argument("output")
@click.option("--snapshot", metavar="ID|NAME", help="Export this internal snapshot instead.")
@GUEST_FORCE
@reports_errors
def convert(image: str, output: str, snapshot: Optional[str], force: bool) -> None:
    """Write the guest disk as a raw image to OUTPUT (sparse), or to stdout for -.

    Reads as qemu does: backing chain, zero clusters, compressed clusters (zlib;
    zstd with the zstandard package), extended L2 subclusters, external data files.
    """
    from . import guest

    _guest_data_readable(image, force)
    if output == "-":
        guest.convert(image, sys.stdout.buffer, snapshot)
    else:
        guest.convert(image, output, snapshot)


@main.command()
@IMAGE
@click.option("--offset", default="0", help="First guest byte (any int() base).")
@click.option("--length", default=None, help="Number of bytes (default: to the end).")
@click.option("--snapshot", metavar="ID|NAME", help="Read this internal snapshot instead.")
@GUEST_FORCE
@reports_errors
def cat(image: str, offset: str, length: Optional[str], snapshot: Optional[str],
        force: bool) -> None:
    """Copy guest bytes to stdout."""
    from . import guest

    _guest_data_readable(image, force)
    start = edit.parse_int(offset, "offset")
    with guest.GuestDisk(image, snapshot) as disk:
        count = disk.size - start if length is None else edit.parse_int(length, "length")
        if start < 0 or count < 0 or start + count > disk.size:
            raise Qcow2Error("guest disk", None,
                             f"range {start}+{count} is outside the disk ({disk.size} bytes)")
        disk.seek(start)
        out = sys.stdout.buffer
        while count:
            chunk = disk.read(min(count, guest.COPY_CHUNK))
            out.write(chunk)
            count -= len(chunk)
        out.flush()


def _echo_text(text: str) -> None:
    """Write text as bytes: names cut inside a UTF-8 sequence stay the bytes qemu prints."""
    click.echo(text.encode("utf-8", "surrogateescape"), nl=False)


@main.command("info")
@IMAGE
@click.option("--json", "as_json", is_flag=True, help="JSON, as qemu-img info --output=json.")
@click.option("--backing-chain", is_flag=True,
              help="The image, then each backing file in turn (qcow2 and raw).")
@click.option("--qemu", "qemu_only", is_flag=True,
              help="Only what qemu-img info prints, byte for byte.")
@reports_errors
def info_command(image: str, as_json: bool, backing_chain: bool, qemu_only: bool) -> None:
    """What qemu-img info says about the image, then what it does not.

    Same fields, values, order and layout as qemu-img info (--output=json with
    --json), followed by the feature bits that are set, named from the image's own
    feature name table, and the header extensions; unknown bits and extensions are
    flagged. Reads only the header, the extensions and the snapshot table; what of
    them lies past the end of the file (read as zeros, as qemu reads it) is listed
    under Findings.
    """
    from . import info as image_info

    extras = not qemu_only
    if backing_chain:
        infos = image_info.backing_chain(image, extras)
    else:
        infos = [image_info.image_info(image, extras)]
    if as_json:
        _echo_text(image_info.render_json(infos, chain=backing_chain))
    else:
        _echo_text(image_info.render_text(infos))


@main.command("snapshots")
@IMAGE
@click.option("--json", "as_json", is_flag=True,
              help="JSON: qemu-img info's snapshot fields, the extra data and the L1 table.")
@reports_errors
def snapshots_command(image: str, as_json: bool) -> None:
    """List the internal snapshots as qemu-img snapshot -l does, then their details.

    The details are each snapshot's extra data (virtual disk size, 64-bit VM state
    size, icount; "-" where the extra data is too short for the field) and the size
    and offset of its L1 table. Nothing is printed for an image without snapshots.
    """
    from . import snapshots as snapshot_table

    with open_image(image) as img:
        table = snapshot_table.list_snapshots(img)
    _warn_findings(image, img.findings)
    if as_json:
        _echo_text(snapshot_table.render_json(table))
    else:
        _echo_text(snapshot_table.render_text(table))


@main.command("check")
@IMAGE
@click.option("--json", "as_json", is_flag=True, help="JSON, as qemu-img check --output=json.")
@click.option("--explain", is_flag=True,
              help="After each finding: the structure at fault, its offset and what is wrong.")
@reports_errors
def check_command(image: str, as_json: bool, explain: bool) -> None:
    """Check refcounts and copied flags as read-only qemu-img check does.

    The same findings and messages (on stderr), report (on stdout) or JSON, and exit
    status as qemu-img check: 0 clean, 2 corruptions, 3 leaked clusters only, 1 the
    check failed or the image cannot be read. With --explain each finding is followed
    by the structure at fault and its offset, and each refcount finding by the
    structures that reference the cluster. Nothing is repaired.
    """
    from . import check as image_check

    with open_image(image) as img:
        result = image_check.check_image(img, explain=explain, progress=True)
    for line in image_check.stderr_lines(result, explain):
        click.echo(line, err=True)
    _echo_text(image_check.render_json(result, image) if as_json
               else image_check.render_text(result))
    failure = image_check.failure_line(result)
    if failure is not None:
        click.echo(f"qcow2kit: {failure}", err=True)
    sys.exit(result.exit_code)


@main.command("whatis", context_settings={"ignore_unknown_options": True})
@IMAGE
@click.argument("offsets", nargs=-1, required=True, metavar="OFFSET...")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: per offset its cluster, refcount, status and holders.")
@reports_errors
def whatis_command(image: str, offsets: List[str], as_json: bool) -> None:
    """What is at each host OFFSET of the file (any int() base: 4096, 0x1000).

    For each offset: its cluster, the cluster's stored refcount and references, and
    every structure that holds the byte: a header field, header extension or the
    backing file name; an L1 or L2 table entry of the active state or a snapshot; the
    data of a guest cluster and the states that map it; compressed data; the refcount
    table or a refcount block and the clusters it counts; the snapshot table; the
    bitmap directory, a bitmap table or bitmap data; the encryption header. Or: free,
    leaked, or beyond the end of the file.
    """
    from . import whatis

    wanted = [whatis.parse_offset(text) for text in offsets]
    with open_image(image) as img:
        answers = whatis.whatis(img, wanted, progress=True)
    _warn_findings(image, img.findings)
    _echo_text(whatis.render_json(answers) if as_json else whatis.render_text(answers))


@main.command("layout")
@IMAGE
@click.option("-o", "--output", required=True, metavar="FILE.svg|FILE.png",
              help="The picture to write: SVG or PNG, by the name's suffix.")
@reports_errors
def layout_command(image: str, output: str) -> None:
    """Draw the host file, one cell per cluster, coloured by what holds it.

    Header, L1 and L2 tables, refcount table and blocks, snapshot table, data (of the
    active state, or of snapshots only), compressed data, bitmaps, encryption header,
    free, leaked (refcount above its references) and corrupt (below) clusters, with a
    legend that counts them. Images of more than about 64K clusters are drawn in
    cells of a power of two clusters (the caption says how many). Needs matplotlib:
    pip install 'qcow2kit[layout]'.
    """
    from . import layout

    picture = Path(output)
    layout.picture_format(picture)
    with open_image(image) as img:
        found = layout.classify(img, progress=True)
    _warn_findings(image, img.findings)
    layout.draw(found, picture)
