"""The qcow2kit command line: a thin click layer over the package."""
from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, Dict, List, NoReturn, Optional, Sequence,
                    Tuple)

import click

from . import __version__, access, exits, names, qemu_version
from .errors import Qcow2Error
from .findings import Finding
from .image import QemuRefuses, open_image
from .options import IMAGE_FORMAT, Number, QemuSize, image_format, output_format
from .output import OutputError, ReaderGone

# numpy's BLAS, which qcow2kit never calls, starts a thread per core when numpy is
# imported; the command asks it to start none (before any command imports numpy).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Commands import the modules built on numpy when they run, so that the others
# (dump, the edits, info, snapshots) start as fast as qcow2.py does; and what only
# some commands or failures use (fleet, printable) when it is used.

if TYPE_CHECKING:
    from . import fleet

    OneImage = Callable[..., fleet.Outcome]  # (image=, out=): out takes the stdout text


def reports_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a failure as one line on stderr (then any notes about the output) and
    exit with its status from exits.py."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        image = kwargs.get("image", "")
        try:
            return func(*args, **kwargs)
        except QemuRefuses as exc:  # as qemu-img words it
            _fail(exc, f"Could not open '{image}': {exc.problem}", exits.BAD_IMAGE)
        except ReaderGone:
            sys.exit(exits.READER_GONE)
        except OutputError as exc:
            _fail(exc, str(exc), exits.OUTPUT_FAILED)
        except Qcow2Error as exc:
            _fail(exc, f"{image}: {exc}", exits.BAD_IMAGE)
        except OSError as exc:
            name = exc.filename if exc.filename is not None else image
            _fail(exc, f"{name}: {exc.strerror or exc}", exits.BAD_IMAGE)
        except KeyboardInterrupt as exc:
            _fail(exc, "interrupted", exits.INTERRUPTED)
    return wrapper


class Failed(SystemExit):
    """A command failed, its line already on stderr: the exit status, and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


def _fail(exc: BaseException, message: str, status: int) -> NoReturn:
    from . import printable

    for line in [message, *getattr(exc, "__notes__", [])]:  # escaped: names from images
        click.echo(f"qcow2kit: {printable.escape(line)}", err=True)
    raise Failed(status, message)


def each_image(images: Sequence[str], as_json: bool, one: OneImage) -> None:
    """Run one (wrapped in reports_errors) on each image, then exit with the worst
    status. One image prints what it prints alone; several as fleet.py says."""
    from . import fleet

    if len(images) == 1:
        sys.exit(one(image=images[0], out=_echo_text).status)
    statuses = []
    for n, image in enumerate(images):
        if not as_json:
            click.echo(fleet.header(image, n == 0))
        pieces: List[str] = []
        try:
            outcome = one(image=image, out=pieces.append if as_json else _echo_text)
        except Failed as exc:
            if exc.code != exits.BAD_IMAGE:
                raise  # interrupted, or the output failed: the run ends
            outcome = fleet.Outcome(exc.code, exc.message)
        if as_json:
            _echo_text(fleet.json_line(image, outcome, "".join(pieces)) + "\n")
        statuses.append(outcome.status)
    sys.exit(fleet.worst(statuses))


FORCE_SHARE = click.option(
    "-U", "--force-share", is_flag=True,
    help="Read even when a qemu process has the image (or a file of its chain) open "
         "for writing, with a warning: the result may be inconsistent.")
CHAIN_OPTIONS = (
    click.option("--no-backing", is_flag=True,
                 help="The image alone: what it does not allocate reads as zeros "
                      "(qemu's backing=null)."),
    click.option("--backing", "backing", metavar="FILE",
                 help="Use FILE (qcow2 or raw, probed) as the image's backing file."),
    click.option("--safe", is_flag=True, envvar=access.SAFE_ENV, show_envvar=True,
                 help="Refuse backing and data files that the image names by an "
                      "absolute name, outside its directory, or that are not regular "
                      "files."),
    click.option("--allow-special", is_flag=True,
                 help="Follow backing and data files that are FIFOs, devices or "
                      "sockets (refused otherwise; never in safe mode)."),
)


def reads_images(chain: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options of a command that reads images (-U; with chain, those that steer
    the backing chain), put in force as the access policy while it runs."""
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, force_share: bool = False, no_backing: bool = False,
                    backing: Optional[str] = None, safe: bool = False,
                    allow_special: bool = False, **kwargs: Any) -> Any:
            if no_backing and backing is not None:
                raise click.UsageError("--no-backing and --backing exclude each other")
            policy = access.Policy(no_backing=no_backing, backing=backing, safe=safe,
                                   allow_special=allow_special, force_share=force_share)
            with access.using(policy):
                return func(*args, **kwargs)
        for option in reversed((FORCE_SHARE, *(CHAIN_OPTIONS if chain else ()))):
            wrapper = option(wrapper)
        return wrapper
    return decorate


GUEST_FORCE = click.option("--force", is_flag=True,
                           help="Read guest data even from an image with incompatible "
                                "feature bits qemu does not know (it refuses to).")


def _warn_findings(image: str, findings: Sequence[Finding]) -> None:
    """Each finding about the image (what could not be read in full) as a warning."""
    from . import printable

    for finding in findings:
        access.warn(printable.escape(f"{image}: {finding}"))


IMAGE_PATH = click.Path(dir_okay=True, path_type=str)  # one: each costs a gettext lookup
IMAGE = click.argument("image", type=IMAGE_PATH)
QEMU_VERSION = click.option(
    "--qemu-version", "qemu_release", type=click.Choice(qemu_version.NAMES),
    envvar=qemu_version.ENV,
    show_envvar=True,
    help="Print what qemu-img of this release prints (default: the release of the "
         "qemu-img on PATH, else the newest).")
IMAGES = click.argument("images", nargs=-1, required=True, metavar="IMAGE...",
                        type=IMAGE_PATH)


def several_images(func: Callable[..., Any]) -> Callable[..., Any]:
    """Say in the command's help how it prints several images (fleet.py)."""
    func.__doc__ = (inspect.cleandoc(func.__doc__ or "") + "\n\n"
                    "Several images: in text, a line `==> IMAGE <==` before each one's "
                    "output; with --json, one line per image (JSON lines): {\"image\": "
                    "IMAGE, \"status\": S, \"result\": what it prints alone}, with "
                    "\"error\": MESSAGE when it fails. The exit status is the worst "
                    "image's (1, then 2, then 3, then 0).")
    return func


class LazyGroup(click.Group):
    """A group that builds each command (its options, their types) when it is first
    asked for: a command that reads a header would spend more on building the
    others than on its own work."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.factories: Dict[str, Callable[[str], click.Command]] = {}

    def lazy(self, name: str) -> Callable[[Callable[[str], click.Command]],
                                           Callable[[str], click.Command]]:
        """Register a function that builds the command of that name."""
        def register(factory: Callable[[str], click.Command]) -> Callable[[str], click.Command]:
            self.factories[name] = factory
            return factory
        return register

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted({*self.commands, *self.factories})

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in self.commands and cmd_name in self.factories:
            self.add_command(self.factories[cmd_name](cmd_name))
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             help="Look inside, check and safely edit QEMU qcow2 disk images.\n\n"
                  "Commands that read an image take qemu's shared read lock and refuse "
                  "an image a qemu process writes to (-U reads it anyway).\n\n"
                  + exits.HELP)
# click's own texts, given: click would look each up in gettext's catalogues at every start
@click.version_option(__version__, prog_name="qcow2kit",
                      message="%(prog)s, version %(version)s", help="Show the version and exit.")
def main() -> None:
    """The command group."""


@main.lazy("dump")
def _dump(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @click.option("--exts-only", is_flag=True,
                  help="Only the header extensions (qcow2.py dump-header-exts).")
    @output_format("JSON, as qcow2.py -j prints it.", short=True)
    @reads_images()
    @reports_errors
    def dump(image: str, exts_only: bool, as_json: bool) -> None:
        """Print the header and header extensions exactly as qemu's qcow2.py does.

        The bitmaps extension includes its directory and each bitmap table with every
        entry classified as all-zeroes, all-ones, serialized or invalid.
        """
        from .dump import render

        with open_image(image) as img:
            click.echo(render(img, exts_only=exts_only, as_json=as_json), nl=False)
    return dump


FORCE = click.option("--force", is_flag=True,
                     help="Edit even when a qemu process has the image open for writing.")


def _report(warnings: List[str]) -> None:
    from . import printable

    for warning in warnings:
        click.echo(f"qcow2kit: warning: {printable.escape(warning)}", err=True)


@main.lazy("set-header")
def _set_header(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @click.argument("field")
    @click.argument("value", type=Number())
    @FORCE
    @reports_errors
    def set_header(image: str, field: str, value: int, force: bool) -> None:
        """Set header FIELD (its qcow2.ksy id, its qcow2.txt name or the name dump prints)
        to VALUE (any int() base: 0x.., 0o..). An unknown FIELD: exit 2, the fields listed."""
        from . import edit

        try:
            warnings = edit.set_header_field(image, field, value, force)
        except edit.UnknownField as exc:
            _fail(exc, f"{image}: {exc}", exits.USAGE)
        _report(warnings)
    return set_header


@main.lazy("set-feature-bit")
def _set_feature_bit(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @click.argument("group", type=click.Choice(names.FEATURE_GROUPS))
    @click.argument("bit", type=Number())
    @FORCE
    @reports_errors
    def set_feature_bit(image: str, group: str, bit: int, force: bool) -> None:
        """Set bit BIT (0..63) of a feature bitmask."""
        from . import edit

        _report(edit.set_feature_bit(image, group, bit, force))
    return set_feature_bit


@main.lazy("add-header-ext")
def _add_header_ext(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @click.argument("magic", type=Number())
    @click.argument("data", required=False)
    @click.option("--stdin", "from_stdin", is_flag=True, help="Read the data from standard input.")
    @click.option("--data-file", type=click.Path(exists=True, dir_okay=False),
                  help="Read the (binary) data from a file.")
    @FORCE
    @reports_errors
    def add_header_ext(image: str, magic: int, data: Optional[str], from_stdin: bool,
                       data_file: Optional[str], force: bool) -> None:
        """Append a header extension of type MAGIC with DATA (or --stdin, --data-file)."""
        from . import edit

        sources = [data is not None, from_stdin, data_file is not None]
        if sources.count(True) != 1:
            raise click.UsageError("give the data once: as DATA, --stdin or --data-file")
        if from_stdin:
            payload = sys.stdin.buffer.read()
        elif data_file is not None:
            payload = Path(data_file).read_bytes()
        else:
            assert data is not None
            payload = os.fsencode(data)
        _report(edit.add_extension(image, magic, payload, force))
    return add_header_ext


@main.lazy("del-header-ext")
def _del_header_ext(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @click.argument("magic", type=Number())
    @FORCE
    @reports_errors
    def del_header_ext(image: str, magic: int, force: bool) -> None:
        """Remove every header extension of type MAGIC (exit 1 when there is none)."""
        from . import edit

        _report(edit.delete_extension(image, magic, force))
    return del_header_ext


def _complete_path(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[Any]:
    """Shell completion of a field path: the names that follow what is typed."""
    from .fieldpath import Resolver, completions

    try:
        with open_image(ctx.params["image"]) as img:
            return completions(Resolver(img), incomplete)
    except (Qcow2Error, OSError, KeyError):
        return []


FIELD_PATHS = ("PATH names a field as qcow2.ksy does (or by its qcow2.txt name where "
               "the spec has -orig-id): header.l1_table_offset, l1_table[3], "
               "l1_table[3].l2_table[17].ofs_host_cluster, refcounts[5] (the refcount of "
               "host cluster 5), snapshots[1].name, bitmaps[\"b0\"].table[2], "
               "extensions[0].data. A name that does not fit is refused with the valid "
               "ones.")


GET_HELP = ("""Print the value of any field or structure the spec describes.

    A field prints as one line: path, offset, size and value (offset and size "-"
    for a value the spec computes from other fields). A structure prints one line
    per field, a table one line per entry.

    """ + FIELD_PATHS + """ Exit status (one line on stderr): 2 for a path that
    names nothing in the spec (unknown name, malformed), 1 for one this image does
    not have (an index out of range, an absent table).
    """)
SET_HELP = ("""Write VALUE into the fixed-size field PATH, wherever it is in the file.

    Integer fields of any width (sub-byte refcounts too), whole table entries (an
    extended L2 entry is one 128-bit value), fixed-size byte fields (hex digits) and
    the named parts of an entry (copied, ofs_host_cluster, all_ones, dirty, ...).
    VALUE: any int() base, true/false, or an enum name. The new bytes are checked by
    parsing the image again before one write under qemu's write lock: the field must
    read VALUE and every other field of its structure and the entries beside it
    what they read before. Variable-size fields (names, extension data) are left
    to the header edit commands.

    """ + FIELD_PATHS + """ A refusal is one line on stderr and leaves the file as it
    was: exit 2 for a path or VALUE that names nothing in the spec (unknown name,
    malformed, not a number), 1 for one this image refuses (out of range, a field of
    variable size, a value too wide, a change that would not parse, a qemu process
    writing to the image).
    """)


@main.lazy("get")
def _get_command(name: str) -> click.Command:
    @click.command(name, help=GET_HELP)
    @IMAGE
    @IMAGE_FORMAT
    @click.argument("paths", nargs=-1, required=True, metavar="PATH...",
                    shell_complete=_complete_path)
    @output_format("A JSON list: per PATH its spec path, offset, size and value.")
    @reads_images()
    @reports_errors
    def get_command(image: str, paths: List[str], as_json: bool) -> None:
        """Print fields by path (GET_HELP)."""
        from . import fieldpath

        with open_image(image) as img:
            resolver = fieldpath.Resolver(img)
            try:
                nodes = [resolver.resolve(p) for p in paths]
            except fieldpath.BadArgument as exc:
                _fail(exc, f"{image}: {exc}", exits.USAGE)
            _echo_text(fieldpath.render_json(resolver, nodes) if as_json
                       else fieldpath.render_text(resolver, nodes))
    return get_command


@main.lazy("set")
def _set_command(name: str) -> click.Command:
    @click.command(name, help=SET_HELP, context_settings={"ignore_unknown_options": True})
    @IMAGE
    @IMAGE_FORMAT
    @click.argument("path", shell_complete=_complete_path)
    @click.argument("value")
    @click.option("--dry-run", is_flag=True,
                  help="Print the offset, old and new bytes; write nothing.")
    @FORCE
    @reports_errors
    def set_command(image: str, path: str, value: str, dry_run: bool, force: bool) -> None:
        """Write one field by path (SET_HELP)."""
        from . import fieldwrite

        try:
            change = fieldwrite.set_field(image, path, value, dry_run, force)
        except fieldwrite.BadArgument as exc:
            _fail(exc, f"{image}: {exc}", exits.USAGE)
        if dry_run:
            click.echo(change.describe())
    return set_command


@main.lazy("bitmaps")
def _bitmaps_command(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @output_format("JSON: every field, the dirty extents and the warnings.")
    @click.option("--name", help="Only the bitmap of this name.")
    @reads_images()
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
    return bitmaps_command


@main.lazy("map")
def _map_command(name: str) -> click.Command:
    @click.command(name)
    @IMAGES
    @IMAGE_FORMAT
    @output_format("qemu-img map --output=json: every extent with its status.")
    @click.option("--start-offset", type=QemuSize(), default=0, metavar="OFFSET",
                  help="The first guest byte to map (as qemu-img: 1024, 0x400, 1k, 1.5M).")
    @click.option("--max-length", type=QemuSize(), metavar="LENGTH",
                  help="Map at most LENGTH bytes (default: to the end of the disk).")
    @GUEST_FORCE
    @QEMU_VERSION
    @reads_images(chain=True)
    @several_images
    def map_command(images: Tuple[str, ...], as_json: bool, start_offset: int,
                    max_length: Optional[int], force: bool, qemu_release: Optional[str]) -> None:
        """Where each guest range is stored, through the backing chain, as qemu-img map.

        Without --json: the ranges that hold data, with the file and offset they are
        mapped to (qemu-img map's default output). --start-offset and --max-length take
        sizes as qemu-img does (decimal or 0x hex, with a k, M, G, T, P or E suffix).
        """
        from . import mapping

        release = qemu_version.select(qemu_release)

        @reports_errors
        def one(image: str, out: Callable[[str], None]) -> fleet.Outcome:
            from . import api, fleet

            with api.open(image, force=force) as img:
                extents = img.map(start_offset, max_length, release)
            # written in pieces as they are rendered; in text, the lines before a failure
            # are printed (as qemu-img prints them)
            for piece in (mapping.render_json(extents, start_offset, release) if as_json
                          else mapping.render_human(extents, release)):
                out(piece)
            return fleet.Outcome(exits.OK)
        each_image(images, as_json, one)
    return map_command


def takes_secrets(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that give encrypted images their secret, turned into the secrets
    and key_slot arguments of func (the secret is asked for once, when needed, and
    serves every encrypted layer)."""
    @functools.wraps(func)
    def wrapper(*args: Any, objects: Tuple[str, ...] = (), key_secret: Optional[str] = None,
                password_file: Optional[str] = None, **kwargs: Any) -> Any:
        source: List[Callable[[str], bytes]] = []  # secret.py loaded when first asked

        def secrets(filename: str) -> bytes:
            if not source:
                from . import secret

                source.append(secret.source(objects, key_secret, password_file, access.warn))
            return source[0](filename)
        return func(*args, secrets=secrets, **kwargs)
    for option in reversed((
            click.option("--object", "objects", multiple=True,
                         metavar="secret,id=ID,file=FILE|data=TEXT",
                         help="A secret, in qemu's --object syntax (data= on the command "
                              "line is visible to other users: prefer file=)."),
            click.option("--key-secret", metavar="ID",
                         help="The secret object to use (qemu's encrypt.key-secret); "
                              "default: the only one given."),
            click.option("--password-file", type=click.Path(dir_okay=False),
                         help="The secret: the first line of this file."),
            click.option("--key-slot", type=click.IntRange(0, 7),
                         help="Try only this LUKS key slot (default: every active one)."))):
        wrapper = option(wrapper)
    return wrapper


@main.lazy("convert")
def _convert(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @click.argument("output")
    @click.option("--snapshot", metavar="ID|NAME", help="Export this internal snapshot instead.")
    @GUEST_FORCE
    @takes_secrets
    @reads_images(chain=True)
    @reports_errors
    def convert(image: str, output: str, snapshot: Optional[str], force: bool, secrets: Any,
                key_slot: Optional[int]) -> None:
        """Write the guest disk as a raw image to OUTPUT (sparse), or to stdout for -.

        Reads as qemu does: backing chain, zero clusters, compressed clusters (zlib;
        zstd with the zstandard package), extended L2 subclusters, external data
        files. A regular OUTPUT is written sparse: zero runs of 4 KiB and more stay
        holes, as qemu-img convert leaves them. OUTPUT may not be the image nor a file
        of its chain (by any name) nor a file a qemu process uses; qemu's write lock is
        held on it while writing. When the conversion fails or is interrupted, an
        OUTPUT it created is removed; an existing one it overwrote is named.

        Encrypted images (LUKS, legacy AES) are decrypted given their secret: --object
        secret,... as qemu takes it, --password-file, or a prompt on a terminal.
        """
        from . import api

        target = sys.stdout.fileno() if output == "-" else output
        with api.open(image, force=force, secret=secrets, key_slot=key_slot) as img:
            img.convert(target, snapshot)
    return convert


@main.lazy("cat")
def _cat(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @click.option("--offset", type=Number(low=0), default=0,
                  help="First guest byte (any int() base).")
    @click.option("--length", type=Number(low=0), default=None,
                  help="Number of bytes (default: to the end; a range past the end is cut there).")
    @click.option("--snapshot", metavar="ID|NAME", help="Read this internal snapshot instead.")
    @GUEST_FORCE
    @takes_secrets
    @reads_images(chain=True)
    @reports_errors
    def cat(image: str, offset: int, length: Optional[int], snapshot: Optional[str],
            force: bool, secrets: Any, key_slot: Optional[int]) -> None:
        """Copy guest bytes to stdout (an encrypted image's given its secret, as for
        convert)."""
        from . import api

        with api.open(image, force=force, secret=secrets, key_slot=key_slot) as img:
            img.cat(sys.stdout.fileno(), offset, length, snapshot)
    return cat


def _echo_text(text: str) -> None:
    """Write text as bytes: names cut inside a UTF-8 sequence stay the bytes qemu prints."""
    click.echo(text.encode("utf-8", "surrogateescape"), nl=False)


@main.lazy("info")
def _info_command(name: str) -> click.Command:
    @click.command(name)
    @IMAGES
    @IMAGE_FORMAT
    @output_format("JSON, as qemu-img info --output=json.")
    @click.option("--backing-chain", is_flag=True,
                  help="The image, then each backing file in turn (qcow2 and raw).")
    @click.option("--qemu", "qemu_only", is_flag=True,
                  help="Only what qemu-img info prints, byte for byte.")
    @click.option("--check-secret", is_flag=True,
                  help="Say which LUKS key slot the secret (given as for convert) opens.")
    @QEMU_VERSION
    @takes_secrets
    @reads_images(chain=True)
    @several_images
    def info_command(images: Tuple[str, ...], as_json: bool, backing_chain: bool,
                     qemu_only: bool, check_secret: bool, qemu_release: Optional[str], secrets: Any,
                     key_slot: Optional[int]) -> None:
        """What qemu-img info says about the image, then what it does not.

        Same fields, values, order and layout as qemu-img info (--output=json with
        --json), followed by the feature bits that are set, named from the image's own
        feature name table, and the header extensions; unknown bits and extensions are
        flagged. Reads only the header, the extensions and the snapshot table; what of
        them lies past the end of the file (read as zeros, as qemu reads it) is listed
        under Findings. With --check-secret, also which key slot of an encrypted image
        the secret opens (a secret no slot accepts: exit 1).
        """
        from . import info as image_info

        if check_secret and qemu_only:
            raise click.UsageError("--check-secret adds to qemu-img's output: not with --qemu")
        extras = not qemu_only
        release = qemu_version.select(qemu_release)

        @reports_errors
        def one(image: str, out: Callable[[str], None]) -> fleet.Outcome:
            from . import fleet

            if backing_chain:
                infos = image_info.backing_chain(image, extras, release)
            else:
                infos = [image_info.image_info(image, extras, qemu=release)]
            if check_secret:
                with open_image(image) as img:
                    image_info.check_secret(infos[0], img, secrets(image), key_slot)
            if as_json:
                out(image_info.render_json(infos, chain=backing_chain))
            else:
                out(image_info.render_text(infos, release))
            return fleet.Outcome(exits.OK)
        each_image(images, as_json, one)
    return info_command


@main.lazy("snapshots")
def _snapshots_command(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @output_format("JSON: qemu-img info's snapshot fields, the extra data and the L1 table.")
    @QEMU_VERSION
    @reads_images()
    @reports_errors
    def snapshots_command(image: str, as_json: bool, qemu_release: Optional[str]) -> None:
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
            _echo_text(snapshot_table.render_text(table, qemu_version.select(qemu_release)))
    return snapshots_command


@main.lazy("check")
def _check_command(name: str) -> click.Command:
    @click.command(name)
    @IMAGES
    @IMAGE_FORMAT
    @output_format("JSON, as qemu-img check --output=json.")
    @click.option("--explain", is_flag=True,
                  help="After each finding: the structure at fault, its offset and what is wrong.")
    @QEMU_VERSION
    @reads_images()
    @several_images
    def check_command(images: Tuple[str, ...], as_json: bool, explain: bool,
                      qemu_release: Optional[str]) -> None:
        """Check refcounts and copied flags as read-only qemu-img check does.

        The same findings and messages (on stderr), report (on stdout) or JSON, and exit
        status as qemu-img check: 0 clean, 2 corruptions, 3 leaked clusters only, 1 the
        check failed or the image cannot be read. With --explain each finding is followed
        by the structure at fault and its offset, and each refcount finding by the
        structures that reference the cluster; with --json too, every finding and its
        explanation are in the JSON, under "qcow2kit". Nothing is repaired. qemu 7.2 to
        10.1 print the same (--qemu-version is accepted for scripts that give it to every
        command).
        """
        from . import check as image_check

        del qemu_release  # the same output in every release

        @reports_errors
        def one(image: str, out: Callable[[str], None]) -> fleet.Outcome:
            from . import api, fleet

            with api.open(image) as img:
                result = img.check(explain=explain, progress=True)
            for line in image_check.stderr_lines(result, explain):
                click.echo(line, err=True)
            out(image_check.render_json(result, image, explain) if as_json
                else image_check.render_text(result))
            failure = image_check.failure_line(result)
            if failure is not None:
                click.echo(f"qcow2kit: {failure}", err=True)
            return fleet.Outcome(result.exit_code, failure)
        each_image(images, as_json, one)
    return check_command


@main.lazy("whatis")
def _whatis_command(name: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True})
    @IMAGE
    @IMAGE_FORMAT
    @click.argument("offsets", nargs=-1, required=True, metavar="OFFSET...",
                    type=Number(low=0, high=2**64 - 1))
    @output_format("JSON: per offset its cluster, refcount, status and holders.")
    @click.option("--guest", is_flag=True,
                  help="The OFFSETs are guest offsets: which host bytes hold each, through "
                       "the backing chain, then what owns them.")
    @click.option("--snapshot", metavar="ID|NAME",
                  help="With --guest: offsets of this internal snapshot's disk.")
    @GUEST_FORCE
    @reads_images(chain=True)
    @reports_errors
    def whatis_command(image: str, offsets: List[int], as_json: bool, guest: bool,
                       snapshot: Optional[str], force: bool) -> None:
        """What is at each host OFFSET of the file (any int() base: 4096, 0x1000).

        For each offset: its cluster, the cluster's stored refcount and references, and
        every structure that holds the byte: a header field, header extension or the
        backing file name; an L1 or L2 table entry of the active state or a snapshot; the
        data of a guest cluster and the states that map it; compressed data; the refcount
        table or a refcount block and the clusters it counts; the snapshot table; the
        bitmap directory, a bitmap table or bitmap data; the encryption header. Or: free,
        leaked, or beyond the end of the file.

        With --guest, each OFFSET is a guest offset (of a snapshot's disk with
        --snapshot), followed as qemu reads it: the layer of the backing chain that
        answers for it, the host bytes that hold it (data,
        compressed data, an allocated zero cluster) or that it reads as zeros, then what
        owns those bytes in that file (the chain options and --force as for map).
        """
        from . import locate, whatis

        if snapshot is not None and not guest:
            raise click.UsageError("--snapshot names a guest disk: with --guest only")
        from . import api

        with api.open(image, force=force) as img:
            if guest:
                places = img.whatis_guest(offsets, snapshot)
                _echo_text(locate.render_json(places) if as_json else locate.render_text(places))
                return
            answers = img.whatis(offsets, progress=True)
        _warn_findings(image, img.findings)
        _echo_text(whatis.render_json(answers) if as_json else whatis.render_text(answers))
    return whatis_command


def _picture(name: str) -> str:
    from .layout import SUFFIXES

    if Path(name).suffix.lower() not in SUFFIXES:
        raise click.BadParameter(f"{name!r}: the picture must be an .svg or a .png file")
    return name


@main.lazy("layout")
def _layout_command(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @click.option("-o", "--output", required=True, metavar="FILE.svg|FILE.png",
                  callback=lambda ctx, param, value: _picture(value),
                  help="The picture to write: SVG or PNG, by the name's suffix.")
    @reads_images()
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
    return layout_command


@main.lazy("metadata-copy")
def _metadata_copy_command(name: str) -> click.Command:
    @click.command(name)
    @IMAGE
    @IMAGE_FORMAT
    @click.argument("output")
    @click.option("--scrub-names", is_flag=True,
                  help="Replace snapshot, bitmap, backing and data file names by neutral "
                       "ones of the same length.")
    @click.option("--chain", is_flag=True,
                  help="Copy every layer of the backing chain too, each beside OUTPUT under "
                       "the name the layer above gives it; raw layers and external data "
                       "files become holes of their size.")
    @reads_images(chain=True)
    @reports_errors
    def metadata_copy_command(image: str, output: str, scrub_names: bool, chain: bool) -> None:
        """Copy the image's metadata to OUTPUT, leaving guest data out.

        Every metadata byte (header cluster, L1 and L2 tables of the image and its
        snapshots, refcount table and blocks, snapshot table, bitmap directory, tables and
        data, LUKS header) stays at its own offset; guest data clusters, compressed ones
        too, and unreferenced clusters are holes that read as zeros. qemu-img check, info,
        map and snapshot -l see the copy as they see the image, corruptions included, so
        it can be shared to show a problem without the data. The copy is sparse and has
        the image's size. OUTPUT is written as convert's output is (never the image,
        locked, every write checked, removed on failure). Backing and external data files
        are copied with --chain only. With --scrub-names no name a user gave is left in
        the copy (a scrubbed backing or data file name names no file, but with --chain the
        copy of that file).

        An OUTPUT named .tar, .tar.gz/.tgz, .tar.xz/.txz or .tar.zst/.tzst is a tar
        archive (GNU tar, compressed by the suffix) holding the copy as a sparse member
        named as the image: one file to send, small whatever the image's size.
        """
        from . import metacopy

        if chain:
            copies = metacopy.chain_copy(image, output, scrub_names)
        else:
            with open_image(image) as img:
                copies = [(output, metacopy.metadata_copy(img, output, scrub_names))]
        for path, report in copies:
            if report is None:
                click.echo(f"{path}: {os.stat(path).st_size} bytes, all a hole")
                continue
            click.echo(f"{path}: {report.metadata_bytes} bytes of metadata in "
                       f"{len(report.ranges)} ranges, file size {report.file_size}"
                       + (f", {len(report.scrubbed)} names scrubbed" if scrub_names else ""))
    return metadata_copy_command


@main.lazy("diff")
def _diff_command(name: str) -> click.Command:
    @click.command(name)
    @click.argument("image_a", metavar="A", type=IMAGE_PATH)
    @click.argument("image_b", metavar="B", type=IMAGE_PATH)
    @image_format(exits.DIFF_TROUBLE)
    @output_format("Every change, as JSON.")
    @click.option("--data", is_flag=True,
                  help="Also compare guest data, sector by sector, through the backing chains.")
    @reads_images(chain=True)
    def diff_command(image_a: str, image_b: str, as_json: bool, data: bool) -> None:
        """What changed from image A to image B (typically one image before and after a
        qemu operation).

        Header fields and feature bits, header extensions, the guest mapping (guest
        ranges newly allocated, freed, zeroed, moved, with the copied flag set or cleared,
        or other subclusters), refcounts by host range, snapshots added, removed or
        changed, bitmaps and their dirty ranges; with --data, the guest ranges whose data
        differs. A structure that cannot be read in one image is reported as a change.

        Exit status, as diff's: 0 no difference, 1 differences, 2 trouble (an image that
        cannot be opened, a usage error).
        """
        from . import diff

        opened: List[str] = []
        try:
            with open_image(image_a) as a:
                opened.append(image_a)
                with open_image(image_b) as b:
                    opened.append(image_b)
                    changes = diff.diff(a, b, data=data)
        except (Qcow2Error, OSError) as exc:
            name = getattr(exc, "filename", None) or [image_a, image_b][min(len(opened), 1)]
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            _fail(exc, f"{name}: {problem}", exits.DIFF_TROUBLE)
        _echo_text(diff.render_json(changes) if as_json else diff.render_text(changes))
        sys.exit(exits.DIFF_DIFFERENT if any(changes.values()) else 0)
    return diff_command
