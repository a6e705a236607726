# qcow2kit build. `make` compiles qcow2.ksy into the committed Python parser in generated/.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
KSC := node tools/ksc.js

.PHONY: all targets check-generated deps install demo test clean

all: generated/qcow2.py

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

generated/qcow2.py: qcow2.ksy tools/ksc.js node_modules/.package-lock.json
	$(KSC) --werror --debug -t python -o generated qcow2.ksy
	printf '"""Parser generated from qcow2.ksy by kaitai-struct-compiler; do not edit."""\n' > generated/__init__.py

# Every compiler target, warnings as errors, into the ignored build/ folder.
targets: node_modules/.package-lock.json
	rm -rf build/targets
	$(KSC) --werror -t all -o build/targets qcow2.ksy

# Fails when the committed parser is not what the spec compiles to.
check-generated: node_modules/.package-lock.json
	$(KSC) --werror --debug -t python -o build/check qcow2.ksy
	diff -u generated/qcow2.py build/check/qcow2.py

# System tools the tests drive: qemu-img/qemu-io/qemu-nbd, node and npm.
deps:
	@command -v qemu-img >/dev/null && command -v node >/dev/null && command -v npm >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils nodejs npm; }

$(VPY):
	$(PYTHON) -m venv $(VENV)

install: $(VPY)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'

demo: install
	$(VENV)/bin/qcow2kit dump samples/sample.qcow2
	$(VENV)/bin/qcow2kit dump --json --exts-only samples/sample.qcow2

# The whole suite: the committed parser is current, every compiler target builds
# clean, then pytest (qemu-made images, golden qcow2.py output, JavaScript parity).
test: deps install check-generated targets
	$(VPY) -m pytest -q tests

clean:
	rm -rf build .pytest_cache
