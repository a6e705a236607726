"""The public Python API: open an image once, with the options the command line
takes, and ask it what the commands answer.

    import qcow2kit

    with qcow2kit.open("disk.qcow2") as image:
        print(image.header.size, [snap.name for snap in image.snapshots])
        print(image.check().exit_code)
        with image.disk() as disk:
            sector = disk.read(512)

Chain options (no_backing, backing, safe, allow_special) and force_share (-U) that
are not given keep the policy in force (access.using; the defaults outside it).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from . import access, printable, secret
from .errors import Qcow2Error
from .findings import Finding
from .image import Extension, FeatureName, Header, Image, Unsupported, unsupported_features
from .qemu_version import QemuVersion, select
from .secret import Secrets
from .snapshots import Snapshot, list_snapshots

if TYPE_CHECKING:  # the modules built on numpy load when first used
    from .bitmaps import BitmapsReport
    from .check import CheckResult
    from .guest import GuestDisk
    from .locate import Place
    from .mapping import Extents
    from .whatis import Answer

FORMATS = ("qcow2",)
SecretGiven = Union[bytes, str, Secrets]  # the secret, or a function of the layer's name


class FormatRefused(Qcow2Error):
    """An image format other than qcow2 was asked for."""


def check_format(fmt: str) -> None:
    """Raise FormatRefused unless fmt is a format qcow2kit reads (qemu-img's -f)."""
    if fmt not in FORMATS:
        raise FormatRefused("image format", None,
                            f"{fmt!r} refused: qcow2kit reads qcow2 images only")


class Qcow2Image:
    """A qcow2 image opened read-only (qemu's shared read lock held until close), with
    what every read-only command answers about it."""

    def __init__(self, path: Union[str, Path], policy: access.Policy, force: bool,
                 secrets: Secrets, key_slot: Optional[int]) -> None:
        self.path = str(path)
        self.policy = policy
        self.force = force  # read guest data despite unknown incompatible features
        self.secrets = secrets
        self.key_slot = key_slot
        with access.using(policy):
            self.image: Image = Image(self.path)  # the image model (image.py)

    def __enter__(self) -> "Qcow2Image":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.image.close()

    # --- the metadata ---------------------------------------------------------------

    @property
    def header(self) -> Header:
        return self.image.header

    @property
    def cluster_size(self) -> int:
        return self.image.cluster_size

    @property
    def extensions(self) -> List[Extension]:
        """The header extensions in file order."""
        return self.image.extensions

    @property
    def feature_names(self) -> List[FeatureName]:
        return self.image.feature_names

    @property
    def backing_file(self) -> Optional[str]:
        return self.image.backing_file

    @property
    def snapshots(self) -> List[Snapshot]:
        """The snapshot table, each entry's L1 table checked to lie in the file."""
        return list_snapshots(self.image)

    @property
    def findings(self) -> List[Finding]:
        """What was read past the end of the file (as zeros) so far."""
        return list(self.image.findings)

    def bitmaps(self, name: Optional[str] = None) -> BitmapsReport:
        """Every persistent dirty bitmap (or the one named name), its dirty extents and
        warnings, as the bitmaps command shows them."""
        from .bitmaps import bitmap_report

        return bitmap_report(self.image, name)

    # --- what the commands answer -----------------------------------------------------

    def info(self, backing_chain: bool = False, extras: bool = True,
             qemu: Optional[QemuVersion] = None) -> List[Dict[str, Any]]:
        """What qemu-img info of release qemu says as a dict
        (its JSON members), with qcow2kit's own under "qcow2kit" unless extras is off:
        of the image, then with backing_chain of each backing file in turn. Without
        qemu, the release the command line would choose (qemu_version.select)."""
        from . import info

        with access.using(self.policy):
            if backing_chain:
                return info.backing_chain(self.path, extras, qemu or select())
            return [info.image_info(self.path, extras, qemu=qemu or select())]

    def check(self, explain: bool = False, progress: bool = False) -> CheckResult:
        """Read-only qemu-img check; explain adds the structures behind each refcount
        finding; progress shows a bar on a terminal's stderr."""
        from .check import check_image

        with access.using(self.policy):
            return check_image(self.image, explain=explain, progress=progress)

    def whatis(self, offsets: Sequence[int], progress: bool = False) -> List[Answer]:
        """What is at each host offset of the file."""
        from .whatis import whatis

        return whatis(self.image, offsets, progress=progress)

    def whatis_guest(self, offsets: Sequence[int],
                     snapshot: Optional[str] = None) -> List[Place]:
        """Which host bytes hold each guest offset (of the disk, or of a snapshot's),
        through the backing chain, and what owns them."""
        from .locate import locate

        self.guest_readable()
        with access.using(self.policy):
            return locate(self.path, offsets, snapshot)

    def map(self, start: int = 0, length: Optional[int] = None,
            qemu: Optional[QemuVersion] = None) -> Extents:
        """qemu-img map's extents (a sequence of Extent, held in arrays), from guest
        offset start, length bytes (to the end of the disk without length), merged as
        qemu release qemu merges them (from 8.2 on, extents that differ in being
        compressed stay apart). Without qemu, the release the command line would
        choose (qemu_version.select)."""
        from .mapping import image_map

        self.guest_readable()
        with access.using(self.policy):
            return image_map(self.path, start, length, qemu or select())

    def disk(self, snapshot: Optional[str] = None) -> GuestDisk:
        """The guest disk (or a snapshot's) as a read-only file object."""
        from .guest import GuestDisk

        self.guest_readable()
        with access.using(self.policy):  # which it keeps for its reads
            return GuestDisk(self.path, snapshot, self.secrets, self.key_slot)

    def convert(self, output: Union[str, Path, int], snapshot: Optional[str] = None) -> None:
        """The guest disk as a raw image: a sparse file, or in order to a descriptor
        (see guest.convert and output.py for what is refused)."""
        from .guest import convert

        self.guest_readable()
        with access.using(self.policy):
            convert(self.path, output, snapshot, secrets=self.secrets, key_slot=self.key_slot)

    def cat(self, output: int, start: int = 0, length: Optional[int] = None,
            snapshot: Optional[str] = None, name: str = "stdout") -> None:
        """Guest bytes [start, start+length) in order to the descriptor output."""
        from .guest import cat

        self.guest_readable()
        with access.using(self.policy):
            cat(self.path, output, start, length, snapshot, name, self.secrets, self.key_slot)

    def guest_readable(self) -> None:
        """Raise (or with force, warn once) when qemu would read no guest data from the
        image: incompatible feature bits it does not know are set."""
        try:
            unsupported_features(self.image)
        except Unsupported as exc:
            if not self.force:
                raise Qcow2Error(exc.structure, exc.offset,
                                 f"{exc.problem}; qemu reads no guest data from it "
                                 "(--force reads it anyway)") from None
            access.warn(printable.escape(f"{self.path}: {exc}; read anyway (--force)"))


def _secrets(given: Optional[SecretGiven], objects: Sequence[str], key_secret: Optional[str],
             password_file: Optional[str]) -> Secrets:
    if callable(given):
        return given
    if given is not None:
        value = given.encode() if isinstance(given, str) else given
        return lambda filename: value
    return secret.source(objects, key_secret, password_file, access.warn)


def open(path: Union[str, Path], *, format: str = "qcow2", force: bool = False,
         force_share: Optional[bool] = None, no_backing: Optional[bool] = None,
         backing: Optional[str] = None, safe: Optional[bool] = None,
         allow_special: Optional[bool] = None, secret: Optional[SecretGiven] = None,
         objects: Sequence[str] = (), key_secret: Optional[str] = None,
         password_file: Optional[str] = None, key_slot: Optional[int] = None) -> Qcow2Image:
    """Open the qcow2 image at path read-only, as the command line does.

    format: qemu-img's -f (qcow2 only). force: read guest data despite unknown
    incompatible features. force_share: -U. no_backing, backing, safe, allow_special:
    the chain options. The secret of encrypted layers: secret (bytes, text, or a
    function of the layer's file name), else objects (qemu's "secret,id=..,file=.."),
    key_secret and password_file, else a prompt on a terminal; key_slot tries one
    LUKS key slot. Raises Qcow2Error (or OSError) when the image cannot be opened.
    """
    check_format(format)
    chosen: Dict[str, Any] = dict(force_share=force_share, no_backing=no_backing,
                                  backing=backing, safe=safe, allow_special=allow_special)
    policy = access.current()._replace(**{k: v for k, v in chosen.items() if v is not None})
    if policy.no_backing and policy.backing is not None:
        raise ValueError("no_backing and backing exclude each other")
    return Qcow2Image(path, policy, force, _secrets(secret, objects, key_secret, password_file),
                      key_slot)
