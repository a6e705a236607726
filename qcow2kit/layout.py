"""A picture of the host file: `qcow2kit layout`.

Every cluster of the file gets a kind from the owner table (the references `qemu-img
check` counts) and the stored refcounts: the structure that holds it (the most
important one when several do), leaked when its refcount is above its references,
corrupt when below, free when neither. Images of more than MAX_CELLS clusters are
drawn in cells of a power of two clusters. The upper half of a cell shows the kind
most of its clusters have, the lower half the most important other kind among them
(so that an L2 table shows among the 8192 data clusters it maps); a cell with a
leaked or corrupt cluster shows that whole, so a single damaged cluster shows in a
terabyte.

Classifying needs numpy only; drawing needs matplotlib (the optional extra
`qcow2kit[layout]`).
"""
from __future__ import annotations

import contextlib
import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, NamedTuple, Tuple

import numpy as np

from .errors import Qcow2Error
from .image import Image
from .owners import OwnerTable
from .progress import Progress
from .qemu_style import size_to_str
from .references import ACTIVE, Context, Kind, walk_length
from .tables import StoredRefcounts

MAX_CELLS = 68 << 10  # 64 Ki and a margin: a 1 TiB image and its metadata keep 16 MiB cells
CHUNK = 1 << 20  # clusters classified at a time


class Category(NamedTuple):
    label: str
    colour: str


# In order of importance: where structures overlap, the cluster shows the later one.
CATEGORIES = (
    Category("free", "#eeeeee"),
    Category("data of snapshots only", "#a6c8e8"),
    Category("compressed data of snapshots only", "#b9e0a5"),
    Category("data", "#3b75af"),
    Category("compressed data", "#59a14f"),
    Category("bitmap data", "#f7b6d2"),
    Category("encryption header", "#bcbd22"),
    Category("bitmap directory and tables", "#d03f9b"),
    Category("snapshot table", "#17becf"),
    Category("L2 table", "#f28e2b"),
    Category("L1 table", "#9c4a00"),
    Category("refcount block", "#a48ad3"),
    Category("refcount table", "#5b2c8f"),
    Category("header", "#222222"),
    Category("leaked (refcount above references)", "#ffd400"),
    Category("corrupt (refcount below references)", "#e00000"),
)
(FREE, SNAPSHOT_DATA, SNAPSHOT_COMPRESSED, DATA, COMPRESSED, BITMAP_DATA, ENCRYPTION, BITMAPS,
 SNAPSHOT_TABLE, L2, L1, REFCOUNT_BLOCK, REFCOUNT_TABLE, HEADER, LEAKED,
 CORRUPT) = range(len(CATEGORIES))
# the legend lists them as a reader meets them: metadata, data, the rest
LEGEND_ORDER = (HEADER, L1, L2, REFCOUNT_TABLE, REFCOUNT_BLOCK, SNAPSHOT_TABLE, BITMAPS,
                BITMAP_DATA, ENCRYPTION, DATA, SNAPSHOT_DATA, COMPRESSED, SNAPSHOT_COMPRESSED,
                FREE, LEAKED, CORRUPT)

_OF_KIND = {Kind.HEADER: HEADER, Kind.L1: L1, Kind.L2: L2, Kind.DATA: DATA,
            Kind.COMPRESSED: COMPRESSED, Kind.SNAPSHOT_TABLE: SNAPSHOT_TABLE,
            Kind.REFCOUNT_TABLE: REFCOUNT_TABLE, Kind.ENCRYPTION: ENCRYPTION,
            Kind.BITMAP_DIRECTORY: BITMAPS, Kind.BITMAP_TABLE: BITMAPS,
            Kind.BITMAP_DATA: BITMAP_DATA, Kind.REFCOUNT_BLOCK: REFCOUNT_BLOCK}


@dataclass(frozen=True)
class Layout:
    """An image's clusters by category, and the cells they are drawn in."""

    name: str
    virtual_size: int
    file_size: int
    allocated: int  # bytes of the file on disk
    cluster_size: int
    clusters: int  # of the file, the last one maybe partial
    per_cell: int  # clusters in a cell, a power of two
    cells: np.ndarray  # the category of each cell: the most common one
    minor: np.ndarray  # and the most important other one (else the same)
    counts: np.ndarray  # the clusters of each category


def cells_for(clusters: int) -> int:
    """Clusters per cell: 1, or the smallest power of two that keeps the picture to
    MAX_CELLS cells."""
    per_cell = 1
    while -(-clusters // per_cell) > MAX_CELLS:
        per_cell *= 2
    return per_cell


def classify(image: Image, progress: bool = False) -> Layout:
    """The category of every cluster of image, and of every cell of its picture."""
    ctx = Context(image)
    n = ctx.geometry.file_clusters
    with Progress("layout", walk_length(ctx)) if progress else \
            contextlib.nullcontext() as bar:
        table = OwnerTable(ctx, bar)
    stored = StoredRefcounts(ctx.image, ctx.reftable)  # read a chunk at a time
    per_cell = cells_for(n)
    ranks = np.array([_OF_KIND[Kind(k)] for k in range(len(Kind))], dtype=np.uint8)
    row_rank = ranks[table.kind]
    snapshots = table.source != ACTIVE
    row_rank[snapshots & (row_rank == DATA)] = SNAPSHOT_DATA
    row_rank[snapshots & (row_rank == COMPRESSED)] = SNAPSHOT_COMPRESSED
    cells, minor = [np.zeros(0, dtype=np.uint8)], [np.zeros(0, dtype=np.uint8)]
    counts = np.zeros(len(CATEGORIES), dtype=np.int64)
    step = max(CHUNK // per_cell, 1) * per_cell
    for first in range(0, n, step):
        category = _chunk(ctx, table, row_rank, stored, first, min(n, first + step))
        counts += np.bincount(category, minlength=len(CATEGORIES))
        major, other = _cells(category, per_cell)
        cells.append(major)
        minor.append(other)
    allocated = image.allocated
    return Layout(image.path.name, image.header.size, ctx.file_size, allocated, ctx.cs, n,
                  per_cell, np.concatenate(cells), np.concatenate(minor), counts)


def _chunk(ctx: Context, table: OwnerTable, row_rank: np.ndarray, stored: StoredRefcounts,
           first: int, last: int) -> np.ndarray:
    """The categories of clusters first..last-1."""
    rows = table.overlapping(first << ctx.bits, last << ctx.bits)
    rows = rows[table.counted[rows]]
    bits = np.uint64(ctx.bits)
    lo = np.maximum((table.start[rows] >> bits).astype(np.int64), first) - first
    hi = np.minimum(((table.end[rows] - np.uint64(1)) >> bits).astype(np.int64),
                    last - 1) - first
    spans = hi - lo + 1
    where = np.repeat(lo - np.cumsum(spans) + spans, spans) + np.arange(int(spans.sum()))
    references = np.bincount(where, minlength=last - first)
    category = np.zeros(last - first, dtype=np.uint8)
    np.maximum.at(category, where, np.repeat(row_rank[rows], spans))
    refcounts = stored.span(first, last).astype(np.int64)
    category[refcounts > references] = LEAKED
    category[refcounts < references] = CORRUPT
    return category


def _cells(category: np.ndarray, per_cell: int) -> Tuple[np.ndarray, np.ndarray]:
    """Each cell's most common category (the more important one on a tie) and its
    most important other one (else the same); both leaked or corrupt when a cluster
    of the cell is."""
    if per_cell == 1:
        return category, category
    cell = np.arange(category.size) // per_cell
    k = len(CATEGORIES)
    counts = np.bincount(cell * k + category, minlength=(cell[-1] + 1) * k).reshape(-1, k)
    major = np.argmax(counts * k + np.arange(k), axis=1).astype(np.uint8)
    others = counts > 0
    others[np.arange(len(major)), major] = False
    minor = np.where(others.any(axis=1), k - 1 - np.argmax(others[:, ::-1], axis=1),
                     major).astype(np.uint8)
    for problem in (LEAKED, CORRUPT):
        damaged = counts[:, problem] > 0
        major[damaged] = minor[damaged] = problem
    return major, minor


# --- drawing -------------------------------------------------------------------------

GRID_INCHES = 10.0  # the width of the grid, at most
MAX_CELL_INCHES = 0.5
DPI = 150
# margins around the grid, in inches: the title above; tick labels and the caption
# below, then the legend; the axis label and tick labels (LABEL_CHAR each) on the left
TOP, BELOW, CAPTION_LINE, RIGHT, LEFT, LABEL_CHAR = 0.45, 0.3, 0.15, 0.3, 0.45, 0.065
LEGEND_ROW, LEGEND_TITLE, MIN_WIDTH = 0.18, 0.3, 8.0


def grid_shape(cells: int) -> Tuple[int, int]:
    """(rows, columns): a power of two columns, 16 to 256, about twice the rows."""
    columns = 16
    while columns < 256 and columns * columns < 2 * cells:
        columns *= 2
    return -(-cells // columns), columns


def _size(value: int) -> str:
    return size_to_str(value).replace(".00 ", " ").replace(".0 ", " ")


def _step(count: int, ticks: int) -> int:
    """A power of two step that puts at most `ticks` ticks on count cells."""
    step = 1
    while count / step > ticks:
        step *= 2
    return step


def _sparse(layout: Layout) -> str:
    """How much of a sparse file is allocated, as the title mentions it."""
    if layout.allocated >= 0.9 * layout.file_size:
        return ""
    return f" ({_size(layout.allocated)} allocated)"


def _caption(layout: Layout, columns: int) -> str:
    cell_bytes = layout.per_cell * layout.cluster_size
    row = f"one row = {_size(columns * cell_bytes)}; {layout.clusters:,} clusters"
    if layout.per_cell == 1:
        return f"1 cell = 1 cluster, {row}"
    return (f"1 cell = {layout.per_cell} clusters ({_size(cell_bytes)}), {row}\nupper half "
            "of a cell: the kind most of its clusters have; lower half: the most important "
            "other kind among them;\na cell with a leaked or corrupt cluster shows it whole")


SUFFIXES = (".svg", ".png")  # the pictures draw writes


def picture_format(path: Path) -> str:
    """"svg" or "png", from path's suffix, once matplotlib is known to be there: raises
    Qcow2Error otherwise, so that nothing is read for a picture that cannot be drawn."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise Qcow2Error(str(path), None, "the picture must be an .svg or a .png file")
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise Qcow2Error("layout", None, "drawing needs matplotlib: pip install "
                         "'qcow2kit[layout]'") from None
    return suffix[1:]


class Frame(NamedTuple):
    """Where the parts of a picture go."""

    rows: int
    columns: int
    width: float  # of the figure, in inches
    height: float
    grid: Tuple[float, float, float, float]  # left, bottom, width, height: figure fractions
    legend_top: float  # figure fraction
    caption: str
    legend: List[int]  # the categories present, in the legend's order


def frame(layout: Layout) -> Frame:
    """The picture's geometry: square cells, margins sized for the labels."""
    rows, columns = grid_shape(len(layout.cells))
    cell_inches = min(MAX_CELL_INCHES, GRID_INCHES / columns)
    grid_w, grid_h = columns * cell_inches, rows * cell_inches
    row_bytes = columns * layout.per_cell * layout.cluster_size
    left = LEFT + LABEL_CHAR * len(f"{(rows - 1) * row_bytes:#x}")
    legend = [c for c in LEGEND_ORDER if layout.counts[c]]
    legend_h = LEGEND_TITLE + LEGEND_ROW * -(-len(legend) // 3)
    caption = _caption(layout, columns)
    below = BELOW + CAPTION_LINE * (caption.count("\n") + 1)
    width = max(left + grid_w + RIGHT, MIN_WIDTH)
    height = TOP + grid_h + below + legend_h
    x = left + (width - left - RIGHT - grid_w) / 2
    return Frame(rows, columns, width, height,
                 (x / width, (below + legend_h) / height, grid_w / width, grid_h / height),
                 legend_h / height, caption, legend)


def draw(layout: Layout, path: Path) -> None:
    """Draw layout into path, an .svg or a .png file; needs matplotlib."""
    fmt = picture_format(path)
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    f = frame(layout)
    fig = Figure(figsize=(f.width, f.height), dpi=DPI)
    # An SVG holds the grid as a bitmap that viewers scale, some smoothly: it gets one
    # of twice the PNG's resolution, each cell a block of pixels, so that any blur stays
    # on a cell's edge (matplotlib resampling it would take 300 MB for 64K cells).
    scale = 2 * math.ceil(f.grid[2] * f.width / f.columns * DPI) if fmt == "svg" else 1
    _grid(fig.add_axes(f.grid), layout, f, scale)
    handles = [Patch(facecolor=CATEGORIES[c].colour, edgecolor="#888888", linewidth=0.5,
                     label=f"{CATEGORIES[c].label}: {layout.counts[c]:,}") for c in f.legend]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, f.legend_top),
               ncols=min(3, len(handles)), fontsize=8, frameon=False,
               title="clusters by kind", title_fontsize=8, borderaxespad=0)
    with rc_context({"svg.fonttype": "none"}):  # text as text: smaller, searchable
        fig.savefig(path, format=fmt)


def _grid(ax: Any, layout: Layout, f: Frame, scale: int) -> None:
    """The cells, each an upper and a lower half, with offsets on the axes; scale > 1:
    each cell drawn as scale x scale pixels, as they are."""
    from matplotlib.colors import to_rgba_array
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    rows, columns = f.rows, f.columns
    # past the end of the file, white
    palette = (to_rgba_array([c.colour for c in CATEGORIES] + ["white"]) * 255).astype(
        np.uint8)
    halves = np.full((2, rows * columns), len(CATEGORIES), dtype=np.uint8)
    halves[0, :len(layout.cells)] = layout.cells
    halves[1, :len(layout.minor)] = layout.minor
    grid = halves.reshape(2, rows, columns).transpose(1, 0, 2).reshape(2 * rows, columns)
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale // 2, axis=0), scale, axis=1)
    ax.imshow(palette[grid], interpolation="none" if scale > 1 else "nearest",
              aspect="auto", extent=(-0.5, columns - 0.5, rows - 0.5, -0.5))
    cell_bytes = layout.per_cell * layout.cluster_size
    ax.yaxis.set_major_locator(MultipleLocator(_step(rows, 12)))
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda y, _: f"{int(round(y)) * columns * cell_bytes:#x}"))
    ax.xaxis.set_major_locator(MultipleLocator(_step(columns, 8)))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda x, _: f"+{int(round(x)) * cell_bytes:#x}"))
    ax.tick_params(labelsize=7)
    ax.set_ylabel("host offset of the row", fontsize=8)
    if f.grid[2] * f.width / columns * DPI >= 8:  # cells big enough to separate
        ax.set_xticks(np.arange(-0.5, columns, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.6)
        ax.tick_params(which="minor", length=0)
    ax.set_title(f"{layout.name}: virtual size {_size(layout.virtual_size)}, file "
                 f"{_size(layout.file_size)}{_sparse(layout)}, cluster size "
                 f"{_size(layout.cluster_size)}", fontsize=10)
    ax.set_xlabel(f.caption, fontsize=8)
