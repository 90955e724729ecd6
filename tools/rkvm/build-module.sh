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
note "built $RKVM_TOP/rkvm.ko"
