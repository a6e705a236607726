"""Planted bugs: does the test suite notice them?

Each mutant replaces one piece of text in one module of a temporary copy of this
checkout (the piece must occur exactly once, so that a mutant cannot silently stop
applying when the code changes), runs the test files that cover that module with
`pytest -x`, and counts the mutant killed when they fail. The copy runs with
PYTHONPATH pointing at it, so that the console script of .venv (tests/ourcmd.py)
imports the mutated package too.

    .venv/bin/python tools/mutate.py [--only NAME...] [--tests FILE...] [--list]

Exit status 0 when every mutant is killed, 1 when some survive.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, NamedTuple, Sequence

REPO = Path(__file__).resolve().parent.parent

CHECK = ["tests/test_check.py"]
WHATIS = ["tests/test_whatis.py"]
EDIT = ["tests/test_edit.py"]
MAP = ["tests/test_map.py"]
TABLES = ["tests/test_tables.py"]
BITMAPS = ["tests/test_bitmaps.py"]
FIELDS = ["tests/test_fieldpath.py::test_set_crafts_the_classic_corruptions",
          "tests/test_fieldpath.py::test_sub_byte_refcount_leaves_its_byte_neighbours",
          "tests/test_fieldpath.py::test_a_wrong_layout_is_caught_before_the_write",
          "tests/test_fieldpath.py::test_get_gives_every_field_the_parser_holds"]


class Mutant(NamedTuple):
    name: str
    path: str  # the module, from the top of the checkout
    old: str  # text that occurs exactly once in it
    new: str
    tests: Sequence[str]  # the test files that should notice


MUTANTS: List[Mutant] = [
    # every reserved-bit check dropped, whole or in part
    Mutant("L1 reserved bits 0-8 unchecked", "qcow2kit/bits.py",
           "L1_RESERVED = 0x7F000000000001FF", "L1_RESERVED = 0x7F00000000000000", CHECK),
    Mutant("L1 reserved bits 56-62 unchecked", "qcow2kit/bits.py",
           "L1_RESERVED = 0x7F000000000001FF", "L1_RESERVED = 0x00000000000001FF", CHECK),
    Mutant("L1 reserved check dropped", "qcow2kit/references.py",
           "if ref.entry & L1_RESERVED:", "if False:", CHECK),
    Mutant("L2 reserved bits 1-8 unchecked", "qcow2kit/bits.py",
           "L2_RESERVED = 0x3F000000000001FE", "L2_RESERVED = 0x3F00000000000000", CHECK),
    Mutant("L2 reserved bits 56-61 unchecked", "qcow2kit/bits.py",
           "L2_RESERVED = 0x3F000000000001FE", "L2_RESERVED = 0x00000000000001FE", CHECK),
    Mutant("L2 reserved check dropped (entry by entry)", "qcow2kit/check.py",
           "if entry & L2_RESERVED:", "if False:", CHECK),
    Mutant("refcount table reserved bits 1-8 unchecked", "qcow2kit/bits.py",
           "REFT_RESERVED = 0x1FF", "REFT_RESERVED = 0x1", CHECK),
    Mutant("refcount table reserved check dropped", "qcow2kit/check.py",
           "if entry & REFT_RESERVED:", "if False:", CHECK),
    Mutant("bitmap table reserved bits 1-8 unchecked", "qcow2kit/bits.py",
           "BITMAP_RESERVED = 0xFF000000000001FE", "BITMAP_RESERVED = 0xFF00000000000000",
           CHECK + BITMAPS),
    Mutant("bitmap table reserved bits 56-63 unchecked", "qcow2kit/bits.py",
           "BITMAP_RESERVED = 0xFF000000000001FE", "BITMAP_RESERVED = 0x00000000000001FE",
           CHECK + BITMAPS),
    Mutant("bitmap table reserved check dropped", "qcow2kit/references.py",
           "    if entry.reserved:\n", "    if False:\n", CHECK),
    Mutant("compressed descriptor copied flag unchecked", "qcow2kit/check.py",
           "        if entry & COPIED:\n            self.problem(CORRUPTION, f\"ERROR: coffset",
           "        if False:\n            self.problem(CORRUPTION, f\"ERROR: coffset", CHECK),
    Mutant("compressed descriptor subcluster bitmap unchecked", "qcow2kit/check.py",
           "        if bitmap:\n            self.problem(CORRUPTION, f\"ERROR compressed cluster",
           "        if False:\n            self.problem(CORRUPTION, f\"ERROR compressed cluster",
           CHECK),
    # the compressed sector count
    Mutant("compressed sector count one too many", "qcow2kit/tables.py",
           ">> x) + np.uint64(1)", ">> x) + np.uint64(2)", CHECK + WHATIS + TABLES),
    Mutant("compressed sector count one too few", "qcow2kit/tables.py",
           ">> x) + np.uint64(1)", ">> x) + np.uint64(0)", CHECK + WHATIS + TABLES),
    Mutant("compressed length from the sector start", "qcow2kit/tables.py",
           "sectors * np.uint64(512) - (offset & np.uint64(511))",
           "sectors * np.uint64(512)", CHECK + WHATIS + TABLES),
    # subclusters
    Mutant("subcluster zero rule dropped (map)", "qcow2kit/tables.py",
           "[compressed, invalid, normal & zero,", "[compressed, invalid, normal & zero & False,",
           MAP + TABLES),
    Mutant("allocated and zero subcluster unchecked", "qcow2kit/check.py",
           "        if (bitmap >> SUBCLUSTERS) & bitmap:", "        if False:", CHECK),
    Mutant("unallocated cluster with allocated subclusters unchecked", "qcow2kit/check.py",
           "            elif bitmap & ALL_ALLOC:", "            elif False:", CHECK),
    # edits
    Mutant("extension padding wrong", "qcow2kit/edit.py",
           "bytes(-len(data) % 8)", "bytes(len(data) % 8)", EDIT),
    Mutant("edit silently refused", "qcow2kit/edit.py",
           "                    write_in_place(self.path, 0, old, new, self.force,",
           "                    (lambda *a: None)(self.path, 0, old, new, self.force,",
           EDIT),
    # whatis
    Mutant("whatis answers the first offset only", "qcow2kit/whatis.py",
           "return [explainer.answer(offset) for offset in offsets]",
           "return [explainer.answer(offset) for offset in offsets[:1]]", WHATIS),
    Mutant("whatis answers one offset for all", "qcow2kit/whatis.py",
           "return [explainer.answer(offset) for offset in offsets]",
           "return [explainer.answer(offset) for offset in offsets[:1]] * len(offsets)",
           WHATIS),
    # more on tables.py, references.py and check.py
    Mutant("offset mask one bit short", "qcow2kit/bits.py",
           "OFFSET = 0x00FFFFFFFFFFFE00", "OFFSET = 0x007FFFFFFFFFFE00", CHECK + TABLES + MAP),
    Mutant("sub-byte refcounts most significant bit first", "qcow2kit/tables.py",
           "shifts = np.arange(0, 8, bits, dtype=np.uint8)",
           "shifts = np.arange(0, 8, bits, dtype=np.uint8)[::-1]", CHECK + TABLES),
    Mutant("copied flag rule inverted", "qcow2kit/check.py",
           "if (refcount == 1) != bool(ref.entry & COPIED):",
           "if (refcount == 1) == bool(ref.entry & COPIED):", CHECK),
    Mutant("data copied flag check dropped", "qcow2kit/check.py",
           "wrong = (refcounts == 1) != ((table.hosted_entries & tables.COPIED_BIT) != 0)",
           "wrong = (refcounts == 1) & False", CHECK),
    Mutant("refcount block referenced twice unchecked", "qcow2kit/check.py",
           "            if count != 1:", "            if False:", CHECK),
    Mutant("refcount block beyond the image unchecked", "qcow2kit/check.py",
           "elif offset >> self.ctx.bits >= self.nb_clusters:", "elif False:", CHECK),
    Mutant("refcount overflow one late", "qcow2kit/check.py",
           "        if count >= self.limit:",
           "        if count > self.limit:", CHECK),
    Mutant("image end offset one cluster short", "qcow2kit/check.py",
           "image_end_offset=(refcounts.highest + 1) * ctx.cs",
           "image_end_offset=refcounts.highest * ctx.cs", CHECK),
    Mutant("fragmentation not counted in bulk", "qcow2kit/check.py",
           "self.fragmented += compressed + int(jumps)",
           "self.fragmented += compressed", CHECK),
    Mutant("standard L2 zero flag ignored", "qcow2kit/tables.py",
           "index |= bit(ZERO_BIT) * _FOUR", "index |= bit(ZERO_BIT) * _FOUR * 0",
           MAP + TABLES),
    Mutant("bitmap all-ones flag ignored", "qcow2kit/tables.py",
           "(raw & BITMAP_ALL_ONES_BIT != 0)", "(raw & BITMAP_ALL_ONES_BIT != 0) * 0",
           BITMAPS + TABLES),
    Mutant("snapshot L1 tables not walked", "qcow2kit/references.py",
           "    for s in ctx.snapshots:\n", "    for s in ctx.snapshots[:0]:\n", CHECK),
    Mutant("misaligned L2 table unreported", "qcow2kit/references.py",
           "        if ref.offset % ctx.cs:\n", "        if False:\n", CHECK),
    Mutant("snapshot L1 alignment unchecked", "qcow2kit/references.py",
           "    if offset % ctx.cs:\n        sink.corruption(",
           "    if False:\n        sink.corruption(", CHECK),
    Mutant("region past the end allowed", "qcow2kit/check.py",
           "if offset + size - self.ctx.qemu_file_size >= self.ctx.cs:",
           "if offset + size - self.ctx.qemu_file_size > self.ctx.cs:", CHECK),
    Mutant("file size not in whole sectors", "qcow2kit/references.py",
           "self.qemu_file_size = disk_size(g.file_size + SECTOR - 1)",
           "self.qemu_file_size = g.file_size", CHECK),
    # map: how runs become extents and extents merge
    Mutant("map joins extents whose host offsets jump", "qcow2kit/mapping.py",
           "(~located | (offsets[:-1] + lengths[:-1] == offsets[1:]))", "True", MAP),
    Mutant("map joins extents of different depths", "qcow2kit/mapping.py",
           "| (depths << 8)", "| (depths << 8) * 0", MAP),
    Mutant("map shows the backing file outside the ranges that read from it",
           "qcow2kit/mapping.py", "starts = np.maximum(found.starts[which], lo[ranges])",
           "starts = found.starts[which]", MAP),
    Mutant("map drops the extent that ends a merged group", "qcow2kit/mapping.py",
           "pieces.append(piece.cut(0, -1))", "pieces.append(piece.cut(0, -2))", MAP),
    # get/set by path
    Mutant("sub-byte refcounts taken most significant bit first", "qcow2kit/fieldpath.py",
           "(i * width % 8, width)", "(8 - width - i * width % 8, width)", FIELDS),
    Mutant("a table's pieces taken as one array", "qcow2kit/fieldpath.py",
           "per_piece = self.root.len_table_piece * 8 // bits", "per_piece = 1 << 40",
           FIELDS),
    Mutant("set's re-parse check skipped", "qcow2kit/fieldwrite.py",
           "        verify(image, path, change, value)\n", "", FIELDS),
]


def copy_tree(dest: Path) -> None:
    """The checkout's files as they are now (tracked and new, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def plant(tree: Path, m: Mutant) -> str:
    """Apply m to the copy; returns the original text of the module."""
    path = tree / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutate: {m.name}: the text to replace occurs "
                         f"{text.count(m.old)} times in {m.path}, not once")
    path.write_text(text.replace(m.old, m.new))
    return text


def run_tests(tree: Path, tests: Sequence[str], log: Path) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(tree / "tests")]))
    with open(log, "w") as out:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p",
                               "no:cacheprovider", *tests], cwd=tree, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="only the mutants whose name contains one of these")
    p.add_argument("--tests", nargs="*", help="run these test files instead of the mutants' own")
    p.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = p.parse_args(argv)
    mutants = [m._replace(tests=args.tests or m.tests) for m in MUTANTS
               if not args.only or any(o in m.name for o in args.only)]
    if args.list:
        print("\n".join(m.name for m in mutants))
        return 0
    survived = []
    with tempfile.TemporaryDirectory(prefix="qcow2kit-mutate-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        copy_tree(tree)
        baseline = run_tests(tree, sorted({t for m in mutants for t in m.tests}),
                             Path(tmp) / "baseline.log")
        if baseline:
            print((Path(tmp) / "baseline.log").read_text()[-3000:])
            raise SystemExit("mutate: the tests fail without any mutant")
        for m in mutants:
            start = time.monotonic()
            original = plant(tree, m)
            try:
                code = run_tests(tree, m.tests, Path(tmp) / "mutant.log")
            finally:
                (tree / m.path).write_text(original)
            verdict = "killed" if code else "SURVIVED"
            if not code:
                survived.append(m.name)
            print(f"{verdict:<9}{time.monotonic() - start:6.0f} s  {m.name}", flush=True)
    killed = len(mutants) - len(survived)
    print(f"\nscore: {killed}/{len(mutants)} killed ({100 * killed / len(mutants):.0f}%)")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
