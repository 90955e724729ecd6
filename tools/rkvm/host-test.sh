#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Host unit tests of rkvm's pure-logic files (cargo test, rustup toolchain).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$RKVM_TOOLS/logic"
env -u RUSTC -u RUSTDOC -u RUSTFMT cargo test --locked -q 2>&1
