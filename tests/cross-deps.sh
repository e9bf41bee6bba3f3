#!/usr/bin/env bash
# make cross-check's packages: Debian's aarch64 cross compiler and libcap-dev
# for arm64 (the helper links libcap; libseccomp is needed only by the
# seccomp program generator, which runs on the build machine and uses the
# native libseccomp-dev).  Adds the arm64 architecture to dpkg once; does
# nothing when everything is there.  Runs as root (CI does).
set -euo pipefail
pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross libcap-dev:arm64 libblkid-dev:arm64 file binutils)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "cross-deps: missing: ${missing[*]}; run as root to install them" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	echo "cross-deps: dpkg --add-architecture arm64"
	dpkg --add-architecture arm64
fi
echo "cross-deps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
