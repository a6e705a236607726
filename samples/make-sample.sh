#!/bin/sh
# Rebuild samples/sample.qcow2, the small image `make demo` inspects: 16 KiB clusters,
# data written in a few places, one internal snapshot and two persistent bitmaps.
set -eu
cd "$(dirname "$0")"
rm -f sample.qcow2
qemu-img create -q -f qcow2 -o cluster_size=16384 sample.qcow2 8M
qemu-io -f qcow2 -c 'write -P 0x51 0 32k' -c 'write -P 0x46 1M 16k' sample.qcow2 >/dev/null
qemu-img snapshot -c before-update sample.qcow2
qemu-img bitmap --add sample.qcow2 backup-0
qemu-img bitmap --add -g 65536 sample.qcow2 coarse
qemu-io -f qcow2 -c 'write -P 0x49 4M 48k' -c 'write -z 6M 64k' sample.qcow2 >/dev/null
qemu-img bitmap --disable sample.qcow2 coarse
