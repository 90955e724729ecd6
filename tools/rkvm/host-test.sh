#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Host unit tests of rkvm's pure-logic files (cargo test, rustup toolchain).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$RKVM_TOOLS/logic"
env -u RUSTC -u RUSTDOC -u RUSTFMT cargo test --locked -q 2>&1
# The loom model of the TDP MMU's zap / TLB-flush handshake
# (tests/loom_tdp.rs): about 30 s from a clean tree, 3 s once built.
env -u RUSTC -u RUSTDOC -u RUSTFMT RUSTFLAGS="--cfg loom" \
	cargo test --locked -q --release --test loom_tdp loom_tdp 2>&1
