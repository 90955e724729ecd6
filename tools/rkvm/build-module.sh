#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds rkvm.ko against the cached test kernel (Kbuild, M=$PWD).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kdir=$(test_kernel_dir)
make -s -C "$kdir/build" M="$RKVM_TOP" "${KMAKE_VARS[@]}" -j"$(nproc)" modules
[ -f "$RKVM_TOP/rkvm.ko" ] || die "rkvm.ko was not produced"
note "built $RKVM_TOP/rkvm.ko"
