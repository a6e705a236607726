"""The bulk table decoder gives the generated parser's values, entry for entry."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import struct

import numpy as np
import pytest

import imagekit
import subclusters
from qcow2kit import Qcow2Error, open_image
from qcow2kit import image as image_module
from qcow2kit import tables
from qcow2kit.image import u64

KINDS = sorted(imagekit.KINDS)


def entries(table) -> list:
    """The entries of a table the spec reads in pieces."""
    return [e for piece in table.pieces for e in piece.entries]


def _check_l1_and_l2(image, l1_raw: np.ndarray, parsed_l1, geometry) -> int:
    """Compare one L1 table and its L2 tables; returns the number of L2 entries seen."""
    assert [int(x) for x in l1_raw] == [u64(e) for e in parsed_l1]
    seen = 0
    for table in tables.l2_tables(image, l1_raw, geometry):
        parsed = entries(parsed_l1[table.l1_index].l2_table)
        assert table.offset == parsed_l1[table.l1_index].ofs_l2_table
        types = tables.cluster_types(table.entries, geometry)
        offsets = tables.host_offsets(table.entries)
        c_off, c_len = tables.compressed_extents(table.entries, geometry)
        subs = tables.subcluster_types(types, table.bitmaps)
        for i, entry in enumerate(parsed):
            assert int(table.entries[i]) == u64(entry)
            assert types[i] == entry.cluster_type, (table.l1_index, i)
            assert bool(table.entries[i] & tables.COPIED_BIT) == entry.copied
            if entry.compressed:
                assert (int(c_off[i]), int(c_len[i])) == \
                    (entry.ofs_compressed_data, entry.len_compressed_data)
            else:
                assert int(offsets[i]) == entry.ofs_host_cluster
            if geometry.extended_l2:
                bitmap = int(table.bitmaps[i])
                assert (bitmap >> 32, bitmap & 0xFFFFFFFF) == \
                    (entry.subcluster_zero, entry.subcluster_alloc)
            assert subs[i].tolist() == [s.subcluster_type for s in entry.subclusters], \
                (table.l1_index, i)
        seen += len(parsed)
    return seen


@pytest.mark.parametrize("kind", KINDS)
def test_l1_l2_equal_generated_parser(images: Dict[str, Path], kind: str) -> None:
    with open_image(images[kind]) as image:
        geometry = tables.Geometry.of(image)
        seen = _check_l1_and_l2(image, tables.l1_table(image), entries(image.qcow2.l1_table),
                                geometry)
        for snap in image.qcow2.snapshots or []:
            raw = tables.l1_table(image, snap.ofs_l1_table, snap.num_l1_table)
            seen += _check_l1_and_l2(image, raw, entries(snap.l1_table), geometry)
    assert seen > 0


@pytest.mark.parametrize("kind", KINDS)
def test_refcounts_equal_generated_parser(images: Dict[str, Path], kind: str) -> None:
    with open_image(images[kind]) as image:
        geometry = tables.Geometry.of(image)
        width = image.qcow2.header.refcount_bits
        table = tables.refcount_table(image)
        parsed_table = entries(image.qcow2.refcount_table)
        assert [int(x) for x in table] == [u64(e) for e in parsed_table]
        used = np.flatnonzero(table & tables.REFTABLE_OFFSET_MASK)
        covered = (int(used[-1]) + 1) * geometry.refcount_block_entries
        stored = tables.refcounts(image, geometry, covered)
        expected = np.zeros(covered, dtype=np.uint64)
        per_block = geometry.refcount_block_entries
        for index, entry in enumerate(parsed_table[:int(used[-1]) + 1]):
            if entry.refcount_block is not None:
                values = [v for piece in entry.refcount_block.pieces
                          for v in getattr(piece, f"refcounts_{width}")]
                expected[index * per_block:(index + 1) * per_block] = [int(v) for v in values]
        assert np.array_equal(stored.astype(np.uint64), expected)
        assert stored.dtype == tables.refcount_dtype(geometry.refcount_order)


@pytest.fixture(scope="module")
def subcluster_states(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    return subclusters.build(tmp_path_factory.mktemp("subclusters"))


@pytest.mark.parametrize("name", ["states", "backed", "crafted", "invalid"])
def test_subcluster_rules_equal_generated_parser(subcluster_states: Dict[str, Path],
                                                 name: str) -> None:
    """Every subcluster state qemu writes, and the invalid ones it refuses: the bulk
    subcluster types are the spec's, entry for entry."""
    with open_image(subcluster_states[name]) as image:
        geometry = tables.Geometry.of(image)
        seen = _check_l1_and_l2(image, tables.l1_table(image), entries(image.qcow2.l1_table),
                                geometry)
    assert seen == geometry.l2_entries


def test_table_past_the_end_of_the_file_reads_zeros(image_copy) -> None:
    """As qemu reads it: the entries past the end are zeros, and a finding names it."""
    path = image_copy("v3")
    last = struct.unpack(">Q", path.read_bytes()[-8:])[0]
    with open_image(path) as image:
        table = tables.l1_table(image, offset=image.file_size - 8, size=2)
        assert table.tolist() == [last, 0]
        assert [(f.structure, f.offset) for f in image.findings] == \
            [("L1 table", image.file_size - 8)]
        assert "16 bytes run past the end of the file" in image.findings[0].problem


def test_oversized_l1_is_refused_before_reading(image_copy) -> None:
    path = image_copy("v3")
    with open_image(path) as image:
        with pytest.raises(Qcow2Error) as err:
            tables.l1_table(image, size=2**32 - 1)
    assert "exceed QEMU's limit" in str(err.value)


@pytest.mark.parametrize("decoder", ["struct", "numpy"])
def test_bitmap_tables_equal_generated_parser(image_copy, monkeypatch, decoder: str) -> None:
    """Every kind and the reserved bits: the crafted image has all-ones and invalid
    entries; reserved bits are set in one more. Small tables are decoded entry by
    entry, big ones with numpy: both decoders, each held to the generated parser."""
    if decoder == "numpy":
        monkeypatch.setattr(image_module, "SMALL_TABLE_ENTRIES", 0)
    path = image_copy("bitmaps_crafted")
    fine = next(e for e in imagekit.bitmap_directory(path) if e["name"] == "fine")
    imagekit.set_u64(path, fine["table_offset"] + 24, 0xFF00000000000106)
    with open_image(path) as image:
        for index, (_, parsed, _) in enumerate(image._bitmap_entries()):
            table = image.bitmap_table(index)
            assert isinstance(table, tables.BitmapTable) == (decoder == "numpy")
            assert [(t.kind, t.offset, t.reserved) for t in table] == [
                (e.kind.name.replace("_", "-"), e.ofs_data,
                 u64(e) & 0xFF000000000001FE) for e in entries(parsed.bitmap_table)]
            assert list(table[1:]) == list(table)[1:]
        kinds = {t.kind for i in range(3) for t in image.bitmap_table(i)}
    assert kinds == {"all-zeroes", "all-ones", "serialized", "invalid"}
