"""Record, the base of qcow2kit's plain records, and the records the image model and the
table decoder share (so that neither imports the other for them): an image's geometry
and its bitmap table entries."""
from __future__ import annotations

from operator import itemgetter

TYPE_CHECKING = False  # typing is not imported at run time: see Record
if TYPE_CHECKING:
    from typing import NamedTuple as Record

    from .image import Image
else:
    class _RecordType(type):
        """Gives each subclass of Record its fields: the annotated names of its body,
        in order, with the values the body gives them as defaults. (The body keeps
        its annotations under `from __future__ import annotations`, which every
        module that defines records has, on Python 3.14 too.)"""

        def __new__(mcs, name: str, bases: tuple, body: dict) -> type:
            if any(getattr(base, "_fields", ()) for base in bases):
                raise TypeError(f"{name}: a record's fields are those of one class body; "
                                "subclass Record itself")
            fields = tuple(body.get("__annotations__", ()))
            body["_field_defaults"] = {f: body[f] for f in fields if f in body}
            body["_fields"] = fields
            body["__slots__"] = ()
            for index, field in enumerate(fields):
                body[field] = property(itemgetter(index), doc=f"field {index}")
            return super().__new__(mcs, name, bases, body)

    class Record(tuple, metaclass=_RecordType):
        """A named tuple of the annotated fields of the subclass's body: `class
        Point(Record)` is what `class Point(typing.NamedTuple)` is (and type checkers
        see it as one), made without importing typing (which costs an eighth of
        qcow2.py's whole run, the drop-in's peer) and without compiling code for each
        class as collections.namedtuple does (start-up makes a dozen records)."""

        def __new__(cls, *args: object, **kwargs: object) -> Record:
            if kwargs or len(args) != len(cls._fields):
                rest = cls._fields[len(args):]
                values = {**cls._field_defaults, **kwargs}
                if len(args) > len(cls._fields) or not set(kwargs) <= set(rest) <= set(values):
                    raise TypeError(f"{cls.__name__}() takes {', '.join(cls._fields)}; given "
                                    f"{len(args)} values and {sorted(kwargs)}")
                args += tuple(values[field] for field in rest)
            return tuple.__new__(cls, args)

        def _replace(self, **changes: object) -> Record:
            return type(self)(*[changes.pop(f, v) for f, v in zip(self._fields, self)],
                              **changes)

        def __repr__(self) -> str:
            values = ", ".join(f"{f}={v!r}" for f, v in zip(self._fields, self))
            return f"{type(self).__name__}({values})"

        def __getnewargs__(self) -> tuple:
            return tuple(self)


class BitmapTableEntry(Record):
    """A bitmap table entry: its kind (all-zeroes, all-ones, serialized, invalid),
    data offset and reserved bits."""

    kind: str
    offset: int
    reserved: int


class Geometry(Record):
    """The numbers that shape an image's tables, from the generated parser."""

    cluster_bits: int
    cluster_size: int
    extended_l2: bool
    l2_entries: int
    refcount_order: int
    refcount_block_entries: int
    compressed_offset_bits: int
    external_data_file: bool
    file_size: int

    @classmethod
    def of(cls, image: Image) -> "Geometry":
        """The geometry of an open image (Image.geometry keeps it)."""
        q = image.qcow2
        return cls(
            cluster_bits=q.header.cluster_bits, cluster_size=q.cluster_size,
            extended_l2=bool(q.is_extended_l2), l2_entries=q.num_l2_entries,
            refcount_order=q.header.refcount_order_effective,
            refcount_block_entries=q.num_refcount_block_entries,
            compressed_offset_bits=q.compressed_offset_bits,
            external_data_file=bool(q.has_external_data_file), file_size=image.file_size)

    @property
    def file_clusters(self) -> int:
        return -(-self.file_size // self.cluster_size)
