#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds the guest-side programs as static binaries into $RKVM_OUT/selftests:
# the C selftests (kernel's kselftest harness + UAPI headers of the test
# kernel), the Rust selftests (rust-vmm kvm-ioctls), rkvm-caps, the demo VMM,
# the benchmark and the Linux-booting VMM.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kdir=$(test_kernel_dir)
out="$RKVM_OUT/selftests"
mkdir -p "$out"

gen="$RKVM_OUT/gen"
mkdir -p "$gen"

# Userspace Rust uses the machine's rustup toolchain (not the kernel's).
# The crate also holds rkvm_caps_h, which writes rkvm/caps.rs as C for the
# C selftests: one capability table, the module's.
rust="$RKVM_TOP/tools/testing/selftests/rkvm/rust"
(cd "$rust" &&
	env -u RUSTC -u RUSTDOC -u RUSTFMT RUSTFLAGS='-C target-feature=+crt-static' \
	cargo build -q --release --locked --target x86_64-unknown-linux-gnu)
cp "$rust/target/x86_64-unknown-linux-gnu/release/rkvm_rust_selftest" "$out/"
"$rust/target/x86_64-unknown-linux-gnu/release/rkvm_caps_h" > "$gen/rkvm_caps.h.tmp"
cmp -s "$gen/rkvm_caps.h.tmp" "$gen/rkvm_caps.h" && rm "$gen/rkvm_caps.h.tmp" ||
	mv "$gen/rkvm_caps.h.tmp" "$gen/rkvm_caps.h"

make -s -C "$RKVM_TOP/tools/testing/selftests/rkvm" \
	KSRC="$kdir/src" KHDR="$kdir/headers" OUTPUT="$out" GENDIR="$gen"

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
# The VMM that boots the test kernel (tools/rkvm/vmm): no guest library,
# it sets up a Linux machine of its own.
gcc -static -O2 -Wall -Wextra -Werror -pthread -I"$kdir/headers/include" \
	-o "$out/rkvm-vmm" "$RKVM_TOOLS/vmm/rkvm-vmm.c"
note "selftests built in $out"
