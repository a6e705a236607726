"""records.Record: the named tuples qcow2kit's records are, made without typing."""
from __future__ import annotations

import copy
import pickle

import pytest

from qcow2kit.records import Record


class Point(Record):
    """A point."""

    x: int
    y: int
    label: str = "origin"

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


def test_fields_by_position_and_name_with_defaults() -> None:
    assert Point(1, 2) == (1, 2, "origin")
    assert Point(1, y=2, label="a") == Point(x=1, y=2, label="a") == (1, 2, "a")
    p = Point(3, -4)
    assert (p.x, p.y, p.label, p.norm1) == (3, -4, "origin", 7)
    assert Point._fields == ("x", "y", "label")
    assert Point.__doc__ == "A point."
    assert repr(p) == "Point(x=3, y=-4, label='origin')"


@pytest.mark.parametrize("make", [lambda: Point(1), lambda: Point(1, 2, "a", 4),
                                  lambda: Point(1, 2, x=1), lambda: Point(1, 2, z=3),
                                  lambda: Point(1, 2)._replace(z=3)])
def test_wrong_fields_are_refused(make) -> None:
    with pytest.raises(TypeError):
        make()


def test_immutable_replaced_copied_pickled() -> None:
    p = Point(1, 2)
    with pytest.raises(AttributeError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.z = 5  # type: ignore[attr-defined]
    assert p._replace(y=7) == Point(1, 7) and p == Point(1, 2)
    assert copy.deepcopy(p) == p and pickle.loads(pickle.dumps(p)) == p
    assert type(pickle.loads(pickle.dumps(p))) is Point
    assert hash(p) == hash(Point(1, 2))


def test_a_record_of_a_record_is_refused() -> None:
    """Fields come from one class body: a record subclassing another (which
    typing.NamedTuple does not allow either) is refused, not built wrong."""
    with pytest.raises(TypeError, match="subclass Record itself"):
        class Point3(Point):
            z: int
