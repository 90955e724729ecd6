#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds the guest-side programs as static binaries into $RKVM_OUT/selftests:
# the C selftests (kernel's kselftest harness + UAPI headers of the test
# kernel), the Rust selftests (rust-vmm kvm-ioctls), rkvm-caps, the demo VMM
# and the benchmark.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kdir=$(test_kernel_dir)
out="$RKVM_OUT/selftests"
mkdir -p "$out"

make -s -C "$RKVM_TOP/tools/testing/selftests/rkvm" \
	KSRC="$kdir/src" KHDR="$kdir/headers" OUTPUT="$out"

gen="$RKVM_OUT/gen"
mkdir -p "$gen"
awk '$1 == "#define" && $2 ~ /^KVM_CAP_/ && $3 ~ /^[0-9]+$/ { printf "[%s] = \"%s\",\n", $3, $2 }' \
	"$kdir/headers/include/linux/kvm.h" > "$gen/cap_names.h"
gcc -static -O2 -Wall -I"$kdir/headers/include" -I"$gen" \
	-o "$out/rkvm-caps" "$RKVM_TOOLS/guest/rkvm-caps.c"
# The demo VMM and the benchmark set their guests up with the selftests'
# guest library: one guest setup for all three.
st="$RKVM_TOP/tools/testing/selftests/rkvm"
gcc -static -O2 -Wall -I"$kdir/headers/include" -I"$st" \
	-o "$out/rkvm-demo" "$RKVM_TOOLS/demo/rkvm-demo.c" "$st/guest_lib.c"
gcc -static -O2 -Wall -pthread -I"$kdir/headers/include" -I"$st" \
	-o "$out/rkvm-bench" "$RKVM_TOOLS/bench/rkvm-bench.c" "$st/guest_lib.c"

# Userspace Rust uses the machine's rustup toolchain (not the kernel's).
(cd "$RKVM_TOP/tools/testing/selftests/rkvm/rust" &&
	env -u RUSTC -u RUSTDOC -u RUSTFMT RUSTFLAGS='-C target-feature=+crt-static' \
	cargo build -q --release --locked --target x86_64-unknown-linux-gnu)
cp "$RKVM_TOP/tools/testing/selftests/rkvm/rust/target/x86_64-unknown-linux-gnu/release/rkvm_rust_selftest" "$out/"
note "selftests built in $out"
