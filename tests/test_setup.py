"""The set-up the README promises: the command under test is this checkout's, and the
system packages make deps would ask apt for can be installed on this machine."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qcow2kit
from conftest import DECOY_STATUS
from ourcmd import QCOW2KIT, REPO, SCRIPT

DEPS = REPO / "tools" / "deps.sh"


def test_command_is_built_from_this_checkout(tmp_path: Path) -> None:
    """The script's own interpreter, started away from the checkout, imports qcow2kit
    from this checkout (the editable install), as the script itself does."""
    assert SCRIPT.is_file(), f"{SCRIPT} missing: make install-test installs it"
    shebang = SCRIPT.read_text().splitlines()[0]
    assert shebang.startswith("#!"), shebang
    proc = subprocess.run([shebang[2:].strip(), "-c",
                           "import qcow2kit.cli; print(qcow2kit.cli.__file__)"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve() == REPO / "qcow2kit" / "cli.py"
    assert Path(qcow2kit.__file__).resolve() == REPO / "qcow2kit" / "__init__.py"
    proc = subprocess.run([*QCOW2KIT, "--version"], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, f"qcow2kit, version {qcow2kit.__version__}\n")


def test_path_holds_only_a_decoy() -> None:
    """A test that looks qcow2kit up on PATH meets the decoy and fails."""
    found = shutil.which("qcow2kit")
    assert found is not None and Path(found).resolve() != SCRIPT.resolve()
    proc = subprocess.run(["qcow2kit", "--version"], capture_output=True, text=True)
    assert proc.returncode == DECOY_STATUS
    assert "from PATH" in proc.stderr


@pytest.mark.parametrize("missing", [
    "", "qemu-img", "qemu-nbd", "dot", "node", "npm", "node npm",
    "qemu-img qemu-io qemu-nbd dot node npm"])
def test_deps_asks_apt_only_for_what_it_can_install(missing: str) -> None:
    """With these tools counted missing, the packages tools/deps.sh would ask for
    install on this machine (apt-get -s), and none is asked for twice."""
    proc = subprocess.run([str(DEPS), "--check", *missing.split()],
                          capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = subprocess.run([str(DEPS), "--list"], capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout == "\n"


def test_deps_lists_one_package_per_missing_tool() -> None:
    """qemu's three tools come from one package; npm from nodejs when the installed
    nodejs provides it (NodeSource), else from Debian's npm."""
    proc = subprocess.run([str(DEPS), "--check", "qemu-img", "qemu-io", "qemu-nbd", "dot"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "deps: apt can install qemu-utils graphviz\n"


@pytest.mark.parametrize("args", [["-m", "qcow2kit", "dump", "samples/sample.qcow2"],
                                  ["-m", "qcow2kit.compat", "samples/sample.qcow2",
                                   "dump-header"]])
def test_python_m_from_the_checkout(args: list) -> None:
    """Run from the repository root, where the source tree comes first on sys.path,
    the package finds its parser (qcow2kit/generated is the committed generated/) and
    prints what the installed command prints."""
    python = SCRIPT.read_text().splitlines()[0][2:].strip()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([python, "-c", "import qcow2kit.generated.qcow2 as m; "
                            "print(m.__file__)"], capture_output=True, text=True,
                           cwd=REPO, env=env)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).resolve() == REPO / "generated" / "qcow2.py"
    proc = subprocess.run([python, *args], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    expected = subprocess.run([*QCOW2KIT, "dump", str(REPO / "samples" / "sample.qcow2")],
                              capture_output=True, text=True)
    assert expected.returncode == 0
    assert proc.stdout == expected.stdout


def test_the_package_is_typed() -> None:
    """py.typed ships with the package (PEP 561) and mypy finds no error in it."""
    assert (REPO / "qcow2kit" / "py.typed").is_file()
    assert 'qcow2kit = ["py.typed"]' in (REPO / "pyproject.toml").read_text()
    proc = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found")


def test_qemu10_is_unpacked_beside_the_system_qemu() -> None:
    """tools/qemu10.sh (run by make test) leaves qemu 10.0's tools in build/qemu-10;
    run again it fetches nothing and says nothing, and the system's qemu-utils, its
    qemu-img and the machine's apt sources are untouched."""
    sources = sorted(os.listdir("/etc/apt/sources.list.d"))
    proc = subprocess.run([str(REPO / "tools" / "qemu10.sh")], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    folder = REPO / "build" / "qemu-10" / "bin"
    for tool in ("qemu-img", "qemu-io", "qemu-nbd"):
        version = subprocess.run([str(folder / tool), "--version"], capture_output=True,
                                 text=True)
        assert version.returncode == 0 and " 10.0." in version.stdout.splitlines()[0]
    system = subprocess.run(["/usr/bin/qemu-img", "--version"], capture_output=True, text=True)
    assert system.stdout.startswith("qemu-img version 7.2.")
    package = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "qemu-utils"],
                             capture_output=True, text=True)
    assert package.stdout.startswith("1:7.2")
    assert sorted(os.listdir("/etc/apt/sources.list.d")) == sources
