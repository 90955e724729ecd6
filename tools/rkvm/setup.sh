#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Installs everything rkvm needs on a Debian 12 (bookworm) x86-64 machine:
# Debian packages, bindgen-cli, and the Linux 7.3 source tarball (downloaded
# from trixie-backports into rkvm's cache, never installed). Idempotent: each
# step checks what is there first, and a step's result is only trusted once
# its completion marker has been written.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "setup must run as root (it installs Debian packages)"
[ "$(uname -m)" = x86_64 ] || die "rkvm builds on x86-64 only (this is $(uname -m))"
. /etc/os-release
[ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ] ||
	die "rkvm's setup supports Debian 12 (bookworm) only (this is ${PRETTY_NAME:-unknown})"

mkdir -p "$RKVM_CACHE"
avail_kb=$(df -Pk "$RKVM_CACHE" | awk 'NR==2 {print $4}')
# Source tree 1.8 GB, build tree ~1 GB with debug info off, packages ~2 GB.
[ "$avail_kb" -ge $((12 * 1024 * 1024)) ] ||
	die "need 12 GiB free under $RKVM_CACHE, have $((avail_kb / 1024)) MiB"

# The archive's address is taken from the machine's own apt sources, so no
# host name is written into this repository.
debian_uri() {
	local uri
	uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
	[ -n "$uri" ] || die "cannot find the Debian archive address in /etc/apt sources"
	echo "$uri"
}

PACKAGES=(
	rustc-web rust-web-src cargo-web rustfmt-web
	clang-19 libclang-19-dev lld-19 llvm-19
	build-essential bc flex bison libelf-dev libssl-dev cpio kmod rsync
	dwarves xz-utils zstd python3 busybox-static libc6-dev
	bochs bochsbios vgabios isolinux syslinux-common xorriso
)

missing_packages() {
	local p
	for p in "$@"; do
		dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"
	done
}

apt_updated=
apt_update() {
	[ -n "$apt_updated" ] && return
	note "apt-get update"
	apt-get update -q >/dev/null || die "apt-get update failed: is the Debian archive reachable?"
	apt_updated=1
}

backports=/etc/apt/sources.list.d/rkvm-bookworm-backports.sources
if [ ! -f "$backports" ]; then
	cat > "$backports.tmp" <<EOF
Types: deb
URIs: $(debian_uri)
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	mv "$backports.tmp" "$backports"
fi

mapfile -t need < <(missing_packages "${PACKAGES[@]}")
if [ "${#need[@]}" -gt 0 ]; then
	apt_update
	note "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
		die "apt-get install failed"
fi

# QEMU 10 comes from bookworm-backports; bookworm's own 7.2 is older.
if ! qemu-system-x86_64 --version 2>/dev/null | grep -q 'version \(9\|1[0-9]\)\.'; then
	apt_update
	note "installing qemu-system-x86 from bookworm-backports"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-t bookworm-backports qemu-system-x86 >/dev/null || die "installing QEMU failed"
fi

[ -x /usr/bin/rustc ] && [ -d /usr/src/rustc-"$(/usr/bin/rustc --version | awk '{print $2}')"/library ] ||
	die "Debian's rustc or its library source is missing after install"

# bindgen: Debian's 0.60 is older than the kernel's minimum (0.71.1).
if ! "$BINDGEN" --version 2>/dev/null | grep -q '0\.72\.1'; then
	note "cargo install bindgen-cli 0.72.1 (about 2 minutes)"
	cargo install -q bindgen-cli --version 0.72.1 --locked ||
		die "cargo install bindgen-cli failed: is the crate registry reachable?"
fi

# Linux 7.3 source: downloaded from trixie-backports with a private apt
# configuration; nothing from trixie touches the installed system.
src="$RKVM_CACHE/linux-source"
if [ ! -f "$src/VERSION" ]; then
	rm -rf "$src" && mkdir -p "$src/apt/lists/partial" "$src/apt/cache/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_uri) trixie-backports main" \
		> "$src/apt/sources.list"
	aptopts=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$src/apt/sources.list" -o Dir::Etc::SourceParts=-
		-o "Dir::State::Lists=$src/apt/lists" -o "Dir::Cache=$src/apt/cache")
	note "downloading linux-source-7.3 from trixie-backports"
	apt-get -q "${aptopts[@]}" update >/dev/null || die "cannot read trixie-backports' package list"
	(cd "$src" && apt-get -q "${aptopts[@]}" download linux-source-7.3 >/dev/null) ||
		die "apt-get download linux-source-7.3 failed"
	deb=$(ls "$src"/linux-source-7.3_*.deb)
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$src" --wildcards '*/linux-source-7.3.tar.xz'
	mv "$src"/usr/src/linux-source-7.3.tar.xz "$src/linux-source.tar.xz"
	rm -rf "$src/usr" "$deb" "$src/apt"
	echo "${deb##*/}" | sed 's/^linux-source-7.3_\(.*\)_all\.deb$/\1/' > "$src/VERSION.tmp"
	mv "$src/VERSION.tmp" "$src/VERSION"
fi
note "setup complete (linux-source $(cat "$src/VERSION"))"
