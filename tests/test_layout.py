"""qcow2kit layout: the clusters' kinds against the header and tables read with struct,
qemu-img map and qemu-img check; the pictures it writes (SVG parsed as XML, PNG by its
signature and size); cells of many clusters for a large image."""
from __future__ import annotations

import random
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Dict, List

import pytest

import imagekit
from qcow2kit import layout, open_image
from sidebyside import qcow2kit, qemu_img, strict_zip
from rawimage import Header, add_refcount, damage, u64

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def classify(path: Path) -> layout.Layout:
    with open_image(path) as image:
        return layout.classify(image)


def qemu_check_counts(path: Path) -> Dict[str, int]:
    err = qemu_img("check", "-f", "qcow2", path.name, cwd=path.parent).stderr.decode()
    return {"leaked": len(re.findall(r"^Leaked cluster ", err, re.M)),
            "corrupt": len(re.findall(r"^ERROR cluster \d+ refcount", err, re.M))}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compressed data, data that only a snapshot keeps (compressed and not), a second
    snapshot, a bitmap."""
    d = tmp_path_factory.mktemp("mixed")
    raw, path = d / "mixed.raw", d / "mixed.qcow2"
    with open(raw, "wb") as f:  # 16 KiB pieces: zeros, and text that halves when compressed
        for i in range(128):
            letters = random.Random(i).choices(b"abcdefghijklmnop", k=16384)
            f.write(bytes(letters) if i % 4 else bytes(16384))
    imagekit.run("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o",
                 "cluster_size=16384", str(raw), str(path))
    raw.unlink()
    imagekit.run("qemu-img", "resize", "-q", str(path), "16M")
    imagekit.run("qemu-img", "snapshot", "-c", "installed", str(path))
    imagekit.qemu_io(path, "write -P 0x11 256k 192k", "write -P 0x12 6M 256k")
    imagekit.run("qemu-img", "bitmap", "--add", str(path), "backup")
    imagekit.qemu_io(path, "write -P 0x13 12M 64k")
    imagekit.run("qemu-img", "snapshot", "-c", "updated", str(path))
    imagekit.qemu_io(path, "write -P 0x14 6M 64k")
    return path


# --- the clusters' kinds -------------------------------------------------------------------

def test_kinds_from_the_header_and_qemu(mixed: Path) -> None:
    h = Header(mixed)
    found = classify(mixed)
    counts = dict(strict_zip([c.label for c in layout.CATEGORIES], found.counts.tolist()))
    assert found.clusters == h.clusters == sum(counts.values())
    assert found.per_cell == 1 and list(found.cells) == list(found.minor)
    assert counts["header"] == 1
    assert counts["L1 table"] == 1 + h.nb_snapshots
    assert counts["refcount table"] == h.reftable_clusters
    assert counts["snapshot table"] == 1
    assert counts["compressed data of snapshots only"] > 0
    assert counts["data of snapshots only"] > 0
    assert counts["leaked (refcount above references)"] == 0
    cells = found.cells.tolist()
    assert cells[0] == layout.HEADER
    assert cells[h.l1_offset // h.cs] == layout.L1
    assert cells[h.reftable // h.cs] == layout.REFCOUNT_TABLE
    assert cells[(u64(mixed, h.reftable) & ~0x1FF) // h.cs] == layout.REFCOUNT_BLOCK
    assert cells[h.l2_table(h.l1_offset, 0) // h.cs] == layout.L2
    for extent in imagekit.qemu_json("map", mixed):
        if "offset" in extent:  # the active state's own data
            first, last = extent["offset"], extent["offset"] + extent["length"] - 1
            assert set(cells[first // h.cs:last // h.cs + 1]) == {layout.DATA}
    free = [c for c in range(h.clusters) if not h.refcount(c)]
    assert [c for c in range(h.clusters) if cells[c] == layout.FREE] == free


def test_data_clusters_as_qemu_map(images: Dict[str, Path]) -> None:
    """Without snapshots or compression, the data clusters are exactly the clusters
    qemu-img map gives offsets in."""
    path = images["v3"]
    h = Header(path)
    mapped = set()
    for extent in imagekit.qemu_json("map", path):
        if "offset" in extent:
            mapped |= set(range(extent["offset"] // h.cs,
                                (extent["offset"] + extent["length"] - 1) // h.cs + 1))
    cells = classify(path).cells.tolist()
    assert {c for c in range(h.clusters) if cells[c] == layout.DATA} == mapped


def test_leaked_and_corrupt_as_qemu_check(image_copy: Callable[[str], Path]) -> None:
    path = image_copy("snapshots")
    leaked, corrupt = damage(path)
    found = classify(path)
    assert qemu_check_counts(path) == {"leaked": found.counts[layout.LEAKED],
                                       "corrupt": found.counts[layout.CORRUPT]} == \
        {"leaked": 1, "corrupt": 1}
    assert (found.cells[leaked], found.cells[corrupt]) == (layout.LEAKED, layout.CORRUPT)


# --- cells of many clusters ------------------------------------------------------------------

@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 GiB in 4 KiB clusters, metadata preallocated: 262788 clusters, sparse."""
    path = tmp_path_factory.mktemp("large") / "large.qcow2"
    imagekit.create(path, "1G", cluster_size="4096", preallocation="metadata")
    return path


def test_cells_of_a_large_image(large: Path) -> None:
    h = Header(large)
    found = classify(large)
    assert h.clusters > layout.MAX_CELLS
    assert found.per_cell == 4 and len(found.cells) == -(-h.clusters // 4) <= layout.MAX_CELLS
    assert found.counts.sum() == h.clusters and found.counts[layout.L2] == 512
    l2_cells = {h.l2_table(h.l1_offset, i) // h.cs // 4 for i in range(h.l1_size)}
    block_cells = {(u64(large, h.reftable + 8 * i) & ~0x1FF) // h.cs // 4
                   for i in range(h.reftable_clusters * h.cs // 8)} - {0}
    assert len(l2_cells) == 512 and len(block_cells) == 128  # the first is in cell 0
    inside = set(range(1, len(found.cells) - 1))  # not the header's, not the last
    for cell in inside:
        # data above; below, the most important other kind in the cell
        below = (layout.REFCOUNT_BLOCK if cell in block_cells else
                 layout.L2 if cell in l2_cells else layout.DATA)
        assert (found.cells[cell], found.minor[cell]) == (layout.DATA, below), cell


def test_one_leaked_cluster_shows_in_a_large_image(large: Path, tmp_path: Path) -> None:
    path = tmp_path / "leak.qcow2"
    subprocess.run(["cp", "--sparse=always", str(large), str(path)], check=True)
    cluster = 200_001
    add_refcount(Header(path), cluster, 1)
    found = classify(path)
    assert found.counts[layout.LEAKED] == 1 == qemu_check_counts(path)["leaked"]
    damaged = [c for c in range(len(found.cells))
               if layout.LEAKED in (found.cells[c], found.minor[c])]
    assert damaged == [cluster // 4]
    assert (found.cells[cluster // 4], found.minor[cluster // 4]) == (layout.LEAKED,) * 2


# --- the pictures --------------------------------------------------------------------------

def svg_texts(path: Path) -> List[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def test_svg(mixed: Path) -> None:
    result = qcow2kit("layout", mixed.name, "-o", "mixed.svg", cwd=mixed.parent)
    assert result.exit_code == 0, result.stderr
    texts = svg_texts(mixed.parent / "mixed.svg")
    found = classify(mixed)
    legend = [t for t in texts if re.fullmatch(r"[a-zA-Z0-9 ()]+: [\d,]+", t)]
    assert legend == [f"{layout.CATEGORIES[c].label}: {found.counts[c]:,}"
                      for c in layout.LEGEND_ORDER if found.counts[c]]
    assert len(legend) >= 10
    assert "mixed.qcow2: virtual size 16 MiB, file " in " ".join(texts)
    assert any(t.startswith("1 cell = 1 cluster, one row = ") for t in texts)
    assert len(list(ET.parse(mixed.parent / "mixed.svg").getroot().iter(f"{SVG}image"))) == 1


def test_png(large: Path, tmp_path: Path) -> None:
    out = tmp_path / "large.png"
    result = qcow2kit("layout", str(large), "-o", str(out), cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    f = layout.frame(classify(large))
    assert abs(width - f.width * layout.DPI) < 1 and abs(height - f.height * layout.DPI) < 1
    assert (f.rows, f.columns) == (257, 256)


def test_caption_of_cells(large: Path, tmp_path: Path) -> None:
    out = tmp_path / "large.svg"
    assert qcow2kit("layout", str(large), "-o", str(out), cwd=tmp_path).exit_code == 0
    texts = svg_texts(out)
    assert "1 cell = 4 clusters (16 KiB), one row = 4 MiB; 262,788 clusters" in texts
    assert "large.qcow2: virtual size 1 GiB, file 1 GiB (" in " ".join(texts)


def test_picture_format_refused_before_reading(images: Dict[str, Path],
                                               tmp_path: Path) -> None:
    """A name of another kind is a usage error (exit 2, click's usage message)."""
    path = images["v3"]
    result = qcow2kit("layout", path.name, "-o", str(tmp_path / "x.jpg"), cwd=path.parent)
    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: ")
    assert "x.jpg': the picture must be an .svg or a .png file" in result.stderr
    assert not (tmp_path / "x.jpg").exists()


def test_without_matplotlib(images: Dict[str, Path], tmp_path: Path) -> None:
    path = images["v3"]
    code = ("import sys; sys.modules['matplotlib'] = None; "
            "from qcow2kit.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "layout", str(path), "-o",
                           str(tmp_path / "x.png")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"qcow2kit: {path}: layout: drawing needs matplotlib: pip install 'qcow2kit[layout]'"]
    assert not (tmp_path / "x.png").exists()
