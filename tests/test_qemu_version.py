"""The qemu release qcow2kit renders for: detected from the qemu-img on PATH (cached),
named by --qemu-version or its environment variable, and each release between the
session's peer and the others rendering what the peer prints wherever the two do not
differ by qemu's history (qemu_version.CHANGES), and something else where they do."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import pytest

from qcow2kit import qemu_version
from qcow2kit.qemu_version import (CHILD_NODES, LUKS_DETACHED_HEADER, MAP_COMPRESSED,
                                   SNAPSHOT_COLUMNS, QemuVersion)
from sidebyside import ours_ok, qemu_ok

FAKE = """#!/bin/sh
echo run >> "{count}"
echo 'qemu-img version {version} (fake)'
"""


def fake_qemu_img(folder: Path, version: str) -> Path:
    """A qemu-img that prints version and counts its runs in folder/runs."""
    script = folder / "qemu-img"
    script.write_text(FAKE.format(count=folder / "runs", version=version))
    script.chmod(0o755)
    return folder / "runs"


@pytest.mark.parametrize("text, release", [
    ("7.2", "7.2"), ("7.2.22", "7.2"), ("8.2.2", "8.2"), ("9.2.1", "9.2"), ("10.0.2", "10.0"),
    ("10.1.0", "10.1"), ("10.2", "10.1"), ("11.0", "10.1"), ("6.2.0", "7.2"), ("8.3", "8.2")])
def test_parse_gives_the_newest_release_not_after(text: str, release: str) -> None:
    assert str(qemu_version.parse(text)) == release


def test_parse_refuses_what_is_no_version() -> None:
    for text in ("", "ten", "10", "10.0.0.1", "v10.0"):
        with pytest.raises(ValueError):
            qemu_version.parse(text)


def test_detection_runs_qemu_img_once_per_build(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The version qemu-img prints, asked once and then read from the cache, asked again
    when the binary changes; no qemu-img (or one that does not say): none, and the
    newest release is used."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert qemu_version.installed() is None
    assert qemu_version.select() == qemu_version.NEWEST
    runs = fake_qemu_img(tmp_path, "8.2.2")
    assert qemu_version.installed() == QemuVersion(8, 2)
    assert qemu_version.select() == QemuVersion(8, 2)
    assert qemu_version.select("9.1") == QemuVersion(9, 1)
    assert runs.read_text().count("run") == 1
    fake_qemu_img(tmp_path, "9.0.10")  # another build: longer, so another size
    assert qemu_version.installed() == QemuVersion(9, 0)
    assert runs.read_text().count("run") == 2
    (tmp_path / "qemu-img").write_text("#!/bin/sh\nexit 1\n")
    assert qemu_version.installed() is None


def test_damaged_cache_line_asks_qemu_img_again(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache line whose release is no version (a damaged cache) is not an error:
    qemu-img is asked again and the line rewritten."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    runs = fake_qemu_img(tmp_path, "8.2.2")
    assert qemu_version.installed() == QemuVersion(8, 2)
    cache = qemu_version.cache_file()
    cache.write_text(cache.read_text().replace("8.2", "banana", 1))
    assert qemu_version.installed() == QemuVersion(8, 2)
    assert runs.read_text().count("run") == 2
    assert "banana" not in cache.read_text()


def test_session_release_is_detected_or_only_given(peer: QemuVersion,
                                                   pytestconfig: pytest.Config) -> None:
    """Detection sessions find the peer on PATH; option sessions detect the other release
    and name the peer in the option's environment variable."""
    if pytestconfig.getoption("--qemu-choice") == "detect":
        assert qemu_version.installed() == peer
        assert qemu_version.ENV not in os.environ
    else:
        assert qemu_version.installed() != peer
        assert os.environ[qemu_version.ENV] == str(peer)


# (qcow2kit arguments, qemu-img arguments, the changes that make them differ)
OUTPUTS = {
    "map-json": (["map", "--json"], ["map", "--output=json"], "zlib", [MAP_COMPRESSED]),
    "map": (["map"], ["map"], "backing_chain", []),  # stops at compressed data: as before
    "check": (["check", "--json"], ["check", "--output=json"], "snapshots", []),
    "snapshots": (["info", "--qemu"], ["info"], "snapshots",
                  [CHILD_NODES, SNAPSHOT_COLUMNS]),
    "luks-json": (["info", "--qemu", "--json"], ["info", "--output=json"], "luks",
                  [CHILD_NODES, LUKS_DETACHED_HEADER]),
}


@pytest.mark.parametrize("release", qemu_version.NAMES)
@pytest.mark.parametrize("output", OUTPUTS)
def test_each_release_prints_the_peers_output_where_history_says_so(
        output: str, release: str, images: Dict[str, Path], peer: QemuVersion,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--qemu-version RELEASE (over the environment variable, whatever is detected) gives
    qemu's bytes exactly when RELEASE and the peer agree on every change that touches
    the output."""
    args, qemu_args, kind, changes = OUTPUTS[output]
    path = images[kind]
    theirs = qemu_ok(*qemu_args, path.name, cwd=path.parent)
    other = next(name for name in qemu_version.NAMES if name != release)
    monkeypatch.setenv(qemu_version.ENV, other)
    got = ours_ok(*args, "--qemu-version", release, path.name, cwd=path.parent)
    wanted = qemu_version.parse(release)
    same = all(wanted.has(change) == peer.has(change) for change in changes)
    assert (got == theirs) == same


def test_without_the_option_detection_decides(images: Dict[str, Path],
                                              pytestconfig: pytest.Config,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither option nor variable, the detected release is rendered: the peer's
    bytes in detection sessions, the other release's (not the peer's) in option ones."""
    path = images["snapshots"]
    theirs = qemu_ok("info", path.name, cwd=path.parent)
    monkeypatch.delenv(qemu_version.ENV, raising=False)
    got = ours_ok("info", "--qemu", path.name, cwd=path.parent)
    assert (got == theirs) == (pytestconfig.getoption("--qemu-choice") == "detect")


def test_extras_give_the_file_length_whatever_the_release(images: Dict[str, Path]) -> None:
    """The file's length (qemu shows it from 8.0 only) is in qcow2kit's own JSON."""
    path = images["v3"]
    lengths: List[int] = []
    for release in ("7.2", "10.0"):
        data = ours_ok("info", "--json", "--qemu-version", release, path.name, cwd=path.parent)
        lengths.append(json.loads(data)["qcow2kit"]["file-length"])
    assert lengths == [path.stat().st_size] * 2
