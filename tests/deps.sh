#!/usr/bin/env bash
# make deps: install the Debian packages loopfd needs to build, test, demo and
# benchmark, only those missing.  Runs as root (CI and the quick start do);
# never assumes sudo exists.
set -euo pipefail
pkgs=(build-essential pkg-config libcap-dev libseccomp-dev libcmocka-dev
      clang libclang-rt-14-dev cppcheck clang-tidy
      util-linux procps systemd bubblewrap dosfstools mtools e2fsprogs
      man-db groff-base bsdextrautils bash-completion
      debhelper dh-python lintian
      libblkid-dev fdisk gdisk jq python3 python3-setuptools python3-pip)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "make deps: missing Debian packages: ${missing[*]}" >&2
	echo "make deps: run as root to install them (apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "make deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
