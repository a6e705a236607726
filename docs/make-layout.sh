#!/bin/sh
# Redraw docs/layout.png, the `qcow2kit layout` picture in README.md: a 16 MiB image
# with 16 KiB clusters, compressed data, two internal snapshots (the first keeps data
# that was overwritten since) and a persistent bitmap.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/example.raw" <<'PY'
import random, sys
with open(sys.argv[1], "wb") as f:  # 2 MiB: zeros, and text that halves when compressed
    for i in range(128):
        letters = random.Random(i).choices(b"abcdefghijklmnop", k=16384)
        f.write(bytes(letters) if i % 4 else bytes(16384))
PY
image="$tmp/example.qcow2"
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=16384 "$tmp/example.raw" "$image"
qemu-img resize -q "$image" 16M
qemu-img snapshot -c installed "$image"
qemu-io -f qcow2 -c 'write -P 0x11 256k 192k' -c 'write -P 0x12 6M 256k' "$image" >/dev/null
qemu-img bitmap --add "$image" backup
qemu-io -f qcow2 -c 'write -P 0x13 1M 64k' -c 'write -P 0x14 12M 256k' \
    -c 'write -z 2M 128k' "$image" >/dev/null
qemu-img snapshot -c updated "$image"
qemu-io -f qcow2 -c 'write -P 0x15 6M 128k' -c 'write -P 0x16 8M 320k' "$image" >/dev/null
qcow2kit layout "$image" -o layout.png
