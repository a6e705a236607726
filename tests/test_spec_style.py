"""qcow2.ksy follows the conventions of kaitai_struct_formats (its ksy style guide),
each checked here where a test can check it; README.md's "Submitting to
kaitai_struct_formats" lists them."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import yaml

REPO = Path(__file__).resolve().parent.parent
TEXT = (REPO / "qcow2.ksy").read_text()
KSY = yaml.safe_load(TEXT)
TYPES = {KSY["meta"]["id"]: KSY, **KSY["types"]}

# The xref keys kaitai_struct_formats uses, and the meta keys in the guide's order.
XREF_KEYS = ["forensicswiki", "iso", "justsolve", "loc", "mime", "pronom", "rfc", "wikidata"]
META_ORDER = ["id", "title", "application", "file-extension", "xref", "tags", "license",
              "ks-version", "imports", "encoding", "endian", "bit-endian"]
ATTR_ORDER = ["id", "-orig-id", "io", "pos", "value", "size", "size-eos", "type", "enum",
              "process", "contents", "valid", "repeat", "repeat-expr", "repeat-until",
              "if", "doc", "doc-ref"]
TYPE_ORDER = ["meta", "doc", "doc-ref", "-webide-representation", "params", "seq",
              "instances", "types", "enums"]
# Fields the qcow2 specification describes without a name of its own: nothing to keep
# in -orig-id.
UNNAMED = {("full_disk_encryption_extension", "ofs_encryption_header"),
           ("full_disk_encryption_extension", "len_encryption_header"),
           ("header_extension", "len_data")}


def attributes() -> Iterator[Tuple[str, str, Dict[str, Any]]]:
    """(type, kind, attribute) of every seq field, instance and param."""
    for type_id, spec in TYPES.items():
        for attr in spec.get("seq", []):
            yield type_id, "seq", attr
        for attr in spec.get("params", []):
            yield type_id, "param", attr
        for name, attr in spec.get("instances", {}).items():
            yield type_id, "instance", {"id": name, **attr}


def in_order(keys: List[str], order: List[str]) -> bool:
    known = [k for k in keys if k in order]
    return known == sorted(known, key=order.index)


def test_lines_are_80_columns_lf_2_space_indent() -> None:
    lines = TEXT.split("\n")
    assert TEXT.endswith("\n") and "\r" not in TEXT and "\t" not in TEXT
    assert not TEXT.startswith("---")
    assert [i + 1 for i, line in enumerate(lines) if len(line) > 80] == []
    assert [i + 1 for i, line in enumerate(lines)
            if (len(line) - len(line.lstrip(" "))) % 2 and not line.lstrip().startswith(
                ("- ", "#"))] == []
    assert [i + 1 for i, line in enumerate(lines) if line != line.rstrip()] == []


def test_meta_keys_in_the_guides_order() -> None:
    meta = list(KSY["meta"])
    assert in_order(meta, META_ORDER) and set(meta) <= set(META_ORDER)
    assert list(KSY)[:2] == ["meta", "doc"]
    assert re.fullmatch(r"[0-9]+\.[0-9]+", KSY["meta"]["ks-version"])


def test_xref_sorted_and_complete() -> None:
    """Every registry kaitai_struct_formats links is either in xref or named in the
    README as having no entry for qcow2."""
    xref = list(KSY["meta"]["xref"])
    assert xref == sorted(xref) and set(xref) <= set(XREF_KEYS)
    readme = (REPO / "README.md").read_text()
    item = re.search(r"^- `xref`:(.*?)\n(?:- |\n)", readme, re.M | re.S).group(1)
    absent = set(re.findall(r"`([a-z]+)`", item.split("no entry")[1]))
    assert set(xref).isdisjoint(absent) and set(xref) | absent == set(XREF_KEYS)


def test_every_type_attribute_and_enum_value_has_doc() -> None:
    missing = [f"{t}.{kind}.{a['id']}" for t, kind, a in attributes()
               if not a.get("doc") and not (kind == "seq" and "contents" in a)]
    missing += [t for t, spec in TYPES.items() if not spec.get("doc")]
    missing += [f"enum {e}.{v}" for e, values in KSY["enums"].items()
                for v, value in values.items() if not isinstance(value, dict) or
                not value.get("doc")]
    assert missing == []


def test_ids_lower_snake_case_and_renamed_fields_keep_orig_id() -> None:
    """Counts num_*, lengths len_*, offsets ofs_*: where the specification names the
    field otherwise, its name is in -orig-id."""
    for type_id, kind, attr in attributes():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", attr["id"]), attr["id"]
        if kind == "seq" and attr["id"].startswith(("num_", "len_", "ofs_")) \
                and (type_id, attr["id"]) not in UNNAMED:
            assert attr.get("-orig-id"), (type_id, attr["id"])


def test_keys_in_the_guides_order() -> None:
    for type_id, spec in TYPES.items():
        assert in_order(list(spec), TYPE_ORDER), type_id
    for type_id, _, attr in attributes():
        assert in_order(list(attr), ATTR_ORDER), (type_id, attr["id"])


def test_doc_speaks_of_the_format_only() -> None:
    """Notes on target languages belong in README.md, not in the spec's docs."""
    docs = [a.get("doc", "") for _, _, a in attributes()] + [
        s.get("doc", "") for s in TYPES.values()]
    assert [d for d in docs if re.search(r"JavaScript|Java\b|Python|Web IDE", d)] == []
