#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds rkvm.ko against the cached test kernel (Kbuild, M=$PWD). A compiler
# or objtool warning fails the build: the module builds clean, and a new
# warning is a finding to look at, not noise.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kdir=$(test_kernel_dir)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
make -s -C "$kdir/build" M="$RKVM_TOP" "${KMAKE_VARS[@]}" -j"$(nproc)" modules 2>&1 | tee "$log"
grep -qE 'warning:' "$log" && die "the module build printed warnings (above)"
[ -f "$RKVM_TOP/rkvm.ko" ] || die "rkvm.ko was not produced"
# Kernel stacks are 16 KiB and this kernel has no VMAP_STACK guard page: an
# ioctl whose frames overflow corrupts memory silently (a 12 KiB frame once
# did). No function of the module may take more than RKVM_MAX_FRAME bytes.
max_frame=${RKVM_MAX_FRAME:-6144}
big=$(objdump -d --no-show-raw-insn "$RKVM_TOP/rkvm.ko" | awk -v max="$max_frame" '
	/^[0-9a-f]+ <.*>:$/ { fn = $2 }
	/sub +\$0x[0-9a-f]+,%rsp/ {
		match($0, /\$0x[0-9a-f]+/)
		v = 0; h = substr($0, RSTART + 3, RLENGTH - 3)
		for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1
		if (v > max) print v, fn
	}')
[ -z "$big" ] || die "stack frames over $max_frame bytes: $big"
note "built $RKVM_TOP/rkvm.ko"
