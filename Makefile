# qcow2kit build. `make` compiles qcow2.ksy into the committed Python parser in generated/.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
KSC := node tools/ksc.js

.PHONY: all typecheck targets check-generated check-ks-version diagram check-diagram deps qemu10 install install-test demo test fuzz mutate crypto-matrix bench clean

all: generated/qcow2.py generated/fields.py

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

generated/qcow2.py: qcow2.ksy tools/ksc.js node_modules/.package-lock.json
	$(KSC) --werror --debug -t python -o generated qcow2.ksy
	printf '"""Parser generated from qcow2.ksy by kaitai-struct-compiler; do not edit."""\n' > generated/__init__.py

# The spec's attribute table (names, -orig-id, sizes) that qcow2kit get/set address.
generated/fields.py: qcow2.ksy tools/fields.js node_modules/.package-lock.json
	node tools/fields.js qcow2.ksy > $@.tmp && mv $@.tmp $@

# Every compiler target, warnings as errors, into the ignored build/ folder.
targets: node_modules/.package-lock.json
	rm -rf build/targets
	$(KSC) --werror -t all -o build/targets qcow2.ksy

# The compiler release the spec's meta/ks-version names (the lowest that compiles it),
# pinned in package-lock.json as kaitai-struct-compiler-<version>: every target that
# release can build must compile (its Go and graphviz back ends crash on casts such as
# `.as<u8>` in sizes, as 0.10's do; they and Rust need 0.11). tests/test_js_parity.py holds its Python and JavaScript values equal to
# the current compiler's on every test image.
KS_VERSION := $(shell sed -n "s/^  ks-version: '\(.*\)'$$/\1/p" qcow2.ksy)
KS_VERSION_TARGETS := construct,cpp_stl,csharp,html,java,javascript,lua,nim,perl,php,python,ruby
check-ks-version: node_modules/.package-lock.json
	rm -rf build/ks-version
	$(KSC) --compiler kaitai-struct-compiler-$(KS_VERSION) -t $(KS_VERSION_TARGETS) -o build/ks-version qcow2.ksy

# Fails when the committed parser is not what the spec compiles to.
check-generated: node_modules/.package-lock.json
	$(KSC) --werror --debug -t python -o build/check qcow2.ksy
	diff -u generated/qcow2.py build/check/qcow2.py
	node tools/fields.js qcow2.ksy > build/check/fields.py
	diff -u generated/fields.py build/check/fields.py

# The compiler's graphviz view of the spec, rendered by graphviz's dot into docs/. dot
# runs with -q: the compiler draws edges from value instances to ports their nodes do
# not have, which dot attaches to the node itself, warning each time.
diagram: docs/qcow2.svg

docs/qcow2.svg: qcow2.ksy tools/ksc.js node_modules/.package-lock.json
	$(KSC) --werror -t graphviz -o build/diagram qcow2.ksy
	dot -q -Tsvg build/diagram/qcow2.dot -o $@

# Fails when docs/qcow2.svg is not what the spec renders to.
check-diagram: node_modules/.package-lock.json
	$(KSC) --werror -t graphviz -o build/check-diagram qcow2.ksy
	dot -q -Tsvg build/check-diagram/qcow2.dot -o build/check-diagram/qcow2.svg
	diff -q docs/qcow2.svg build/check-diagram/qcow2.svg

# System tools the tests drive: qemu-img/qemu-io/qemu-nbd, node and npm, graphviz's dot.
# tools/deps.sh installs the Debian package of each missing tool, and only those.
deps:
	tools/deps.sh

# qemu-img, qemu-io and qemu-nbd 10.0 (Debian's bookworm-backports qemu-utils) unpacked
# into build/qemu-10 beside the system's qemu-utils; nothing to do once they run.
qemu10:
	tools/qemu10.sh

$(VPY):
	$(PYTHON) -m venv $(VENV)

# The package alone (what the demo needs), then with the test tools (what make test needs).
# A stamp per set, so that a second run installs nothing.
$(VENV)/.installed: $(VPY) pyproject.toml
	$(VPY) -m pip install -q --disable-pip-version-check -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Issue 22's table: every job side by side with its peer (qemu-img; qemu's qcow2.py
# when QCOW2PY names it), as ratios from one run. Makes ~8 GB of images in a temp dir.
# BENCH_ARGS="--instructions --runs 7" adds instruction counts (valgrind) and more runs.
bench: install
	$(VPY) bench/run.py $(BENCH_ARGS)

demo: install
	$(VENV)/bin/qcow2kit dump samples/sample.qcow2
	$(VENV)/bin/qcow2kit info samples/sample.qcow2
	$(VENV)/bin/qcow2kit check samples/sample.qcow2
	$(VENV)/bin/qcow2kit map samples/sample.qcow2
	$(VENV)/bin/qcow2kit snapshots samples/sample.qcow2
	$(VENV)/bin/qcow2kit bitmaps samples/sample.qcow2
	$(VENV)/bin/qcow2kit whatis samples/sample.qcow2 0 0x4000 0x30000

# The whole suite: the package's types check, the committed parser and diagram are current, every compiler target
# builds clean, the release ks-version names compiles it, then pytest (qemu-made images,
# golden qcow2.py output, JavaScript parity) against the system's qemu 7.2, found on
# PATH. Then the tests that compare with qemu's output against qemu 10.0 found on PATH,
# and the byte-for-byte ones against each release named by --qemu-version while the
# detected release is the other one (tests/conftest.py: --qemu, --qemu-choice).
PARITY_TESTS := $(addprefix tests/test_,$(addsuffix .py,info snapshots map check \
	damaged truncated hostile subclusters untrusted bitmaps habits))
OPTION_TESTS := $(addprefix tests/test_,$(addsuffix .py,info snapshots map check qemu_version))
test: deps qemu10 install-test typecheck check-generated check-diagram targets check-ks-version
	$(VPY) -m pytest -q tests
	$(VPY) -m pytest -q --qemu 10.0 $(PARITY_TESTS) tests/test_qemu_version.py
	$(VPY) -m pytest -q --qemu 10.0 --qemu-choice option $(OPTION_TESTS)
	$(VPY) -m pytest -q --qemu 7.2 --qemu-choice option $(OPTION_TESTS)

# mypy on the package (settings in pyproject.toml; the generated parser left out).
typecheck: install-test
	$(VPY) -m mypy

# The long fuzzing run (tests/fuzz/): every command on mutants of the qemu-made images,
# then FUZZ_DIFF more mutants compared with qemu-img (check, info, map, convert);
# figures per command, a minimized reproducer per defect under build/fuzz/.
FUZZ_CASES ?= 100000
FUZZ_DIFF ?= 5000
fuzz: deps install-test
	PYTHONPATH=tests $(VPY) -m fuzz --cases $(FUZZ_CASES) --differential $(FUZZ_DIFF) \
		--timeout 30 --report build/fuzz/report.json

# Planted bugs (tools/mutate.py): each applied to a temporary copy of the tree, the
# tests that cover its module run; prints killed/survived per bug and the score.
mutate: deps install-test
	$(VPY) tools/mutate.py

# Every LUKS combination qemu-img creates (tests/matrix_crypto.py), against qemu-img
# convert: the long run of test_crypto.py.
crypto-matrix: deps install-test
	$(VPY) -m pytest -q tests/matrix_crypto.py

clean:
	rm -rf build .pytest_cache
