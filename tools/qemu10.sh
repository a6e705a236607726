#!/usr/bin/env bash
# qemu-img, qemu-io and qemu-nbd 10.0 from Debian's bookworm-backports, unpacked into
# build/qemu-10/ beside (never instead of) the system's qemu-utils: the tests compare
# qcow2kit with both.
#
#   tools/qemu10.sh          fetch and unpack unless build/qemu-10/bin/qemu-img runs
#   tools/qemu10.sh --bin    print the folder of the commands (build/qemu-10/bin)
#
# apt runs on a private sources list, package lists and cache under build/qemu-10/apt:
# the machine's apt sources and package lists stay as they are. Each library the
# binaries need that the machine lacks is fetched (from the machine's own apt sources)
# and unpacked beside them; the commands in bin/ then set LD_LIBRARY_PATH.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD/build/qemu-10
BIN=$ROOT/bin
SUITE=bookworm-backports
MIRROR=${QEMU10_MIRROR:-http://deb.debian.org/debian}
TOOLS=(qemu-img qemu-io qemu-nbd)

if [ "${1:-}" = --bin ]; then echo "$BIN"; exit 0; fi
[ $# -eq 0 ] || { echo "usage: tools/qemu10.sh [--bin]" >&2; exit 2; }

if "$BIN/qemu-img" --version 2>/dev/null | grep -q '^qemu-img version 10\.0\.'; then
  exit 0
fi

rm -rf "$ROOT"
APT=$ROOT/apt
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$ROOT/debs" "$ROOT/root" "$BIN"
echo "deb $MIRROR $SUITE main" > "$APT/sources.list"
private=(-o "Dir::Etc::sourcelist=$APT/sources.list" -o "Dir::Etc::sourceparts=-"
         -o "Dir::State::lists=$APT/lists" -o "Dir::Cache=$APT/cache"
         -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")

echo "qemu10: fetching qemu-utils from $SUITE into $ROOT"
apt-get -qq "${private[@]}" update
(cd "$ROOT/debs" && apt-get -qq "${private[@]}" download "qemu-utils/$SUITE")
dpkg -x "$ROOT"/debs/qemu-utils_*.deb "$ROOT/root"

# Libraries the machine lacks: each dependency of the package not installed here,
# fetched from the machine's own sources (bookworm) and unpacked beside the binaries.
missing() {
  local tool
  for tool in "${TOOLS[@]}"; do ldd "$ROOT/root/usr/bin/$tool"; done | grep -c 'not found' || true
}
if [ "$(missing)" -gt 0 ]; then
  depends=$(dpkg-deb -f "$ROOT"/debs/qemu-utils_*.deb Depends | tr ',' '\n' \
            | sed 's/[(|].*//; s/ //g' | grep -v '^$')
  for pkg in $depends; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' && continue
    (cd "$ROOT/debs" && apt-get -qq download "$pkg")
  done
  for deb in "$ROOT"/debs/*.deb; do dpkg -x "$deb" "$ROOT/root"; done
fi
libs=$(find "$ROOT/root" -name '*.so*' -printf '%h\n' | sort -u | paste -sd: -)

for tool in "${TOOLS[@]}"; do
  if [ -z "$libs" ]; then
    ln -sf "../root/usr/bin/$tool" "$BIN/$tool"
  else
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
      "$libs" "$ROOT/root/usr/bin/$tool" > "$BIN/$tool"
    chmod +x "$BIN/$tool"
  fi
done
for tool in "${TOOLS[@]}"; do
  if ! "$BIN/$tool" --version >/dev/null 2>&1; then
    echo "qemu10: $BIN/$tool does not run:" >&2
    ldd "$ROOT/root/usr/bin/$tool" | grep 'not found' >&2 || true
    exit 1
  fi
done
"$BIN/qemu-img" --version | head -n 1
