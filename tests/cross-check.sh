#!/usr/bin/env bash
# make cross-check (as root; CI runs it): loopfd cross-built for arm64 with
# Debian's gcc-aarch64-linux-gnu, twice: with the Makefile's own flags
# (static PIE) and with dpkg-buildflags' for arm64 (hardening=+all, dynamic,
# as debian/rules builds).  Each helper and CLI must be aarch64 and
# hardened: PIE, full RELRO (GNU_RELRO + BIND_NOW), stack protector,
# FORTIFY; their seccomp programs must be aarch64's.  Nothing is run (no
# arm64 machine or emulator here): these are checks of the files.
# Prints "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/.."
tests/cross-deps.sh || exit 1

passed=0; failed=0; failures=()
result() {
	if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1"
	else failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1"; fi
}
W=$(mktemp -d /tmp/loopfd-cross.XXXXXX)
trap 'rm -rf "$W"' EXIT
CROSS=aarch64-linux-gnu-gcc

echo "== build: Makefile flags, STATIC=1"
make -s O="$W/static" CC=$CROSS WERROR=1 all > "$W/static.log" 2>&1
rc=$?; [ $rc = 0 ] || tail -20 "$W/static.log"; result "cross build (static)" $rc
echo "== build: dpkg-buildflags for arm64 (hardening=+all), STATIC=0"
(eval "$(DEB_HOST_ARCH=arm64 DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --export=sh)"
 echo "   CFLAGS=$CFLAGS"
 make -s O="$W/dynamic" CC=$CROSS STATIC=0 WERROR=1 all) > "$W/dynamic.log" 2>&1
rc=$?; [ $rc = 0 ] || tail -20 "$W/dynamic.log"; head -1 "$W/dynamic.log"
result "cross build (dpkg-buildflags, dynamic)" $rc

# check NAME CMD...: one result line per property.
check() { local name=$1; shift; "$@" > /dev/null 2>&1; result "$name" $?; }
has() { grep -qE -- "$1" "$2"; }

for cfg in static dynamic; do
	O=$W/$cfg
	for prog in loopfd-helper loopfd libloopfd.so.1; do
		f=$O/$prog
		[ -f "$f" ] || { result "$cfg/$prog exists" 1; continue; }
		file "$f" > "$W/file"; readelf -hlW "$f" > "$W/hl"; readelf -dW "$f" > "$W/d"
		readelf -sW "$f" > "$W/syms"
		check "$cfg/$prog: file says aarch64" has 'ARM aarch64' "$W/file"
		check "$cfg/$prog: ELF machine AArch64" has 'Machine: +AArch64' "$W/hl"
		check "$cfg/$prog: position-independent (DYN)" has 'Type: +DYN' "$W/hl"
		check "$cfg/$prog: RELRO segment" has 'GNU_RELRO' "$W/hl"
		check "$cfg/$prog: BIND_NOW (full RELRO)" has 'BIND_NOW|FLAGS_1.*NOW' "$W/d"
		check "$cfg/$prog: stack protector" has '__stack_chk_fail' "$W/syms"
		check "$cfg/$prog: FORTIFY (__*_chk calls)" has ' __[a-z]+_chk(@|$)' "$W/syms"
	done
	# The objects themselves (a static binary also holds glibc's own
	# __stack_chk_fail): ours must call the checks.
	for o in "$O"/helper/main.o "$O"/helper/loopdev.o "$O"/client/cli.o; do
		readelf -sW "$o" > "$W/osyms"
		check "$cfg/${o#$O/}: calls __stack_chk_fail" has 'UND __stack_chk_fail' "$W/osyms"
	done
	readelf -sW "$O"/helper/*.o "$O"/client/*.o > "$W/allsyms"
	echo "   fortified calls: $(grep -oE ' UND __[a-z_]+_chk$' "$W/allsyms" | sort -u | awk '{print $2}' | tr '\n' ' ')"
	check "$cfg: fortified calls in helper and client objects" has ' UND __[a-z_]+_chk$' "$W/allsyms"
	readelf -nW "$O/helper/main.o" > "$W/note"
	check "$cfg/helper/main.o: BTI and PAC (branch protection)" has 'AArch64 feature: BTI, PAC' "$W/note"
	check "$cfg: seccomp programs for aarch64 (AUDIT_ARCH_AARCH64)" has '0xc00000b7' "$O/seccomp_filters.h"
	check "$cfg: no x86-64 program (AUDIT_ARCH_X86_64)" sh -c "! grep -q 0xc000003e $O/seccomp_filters.h"
	check "$cfg: the generator ran natively" has "$(uname -m | tr _ -)|x86-64" <(file "$O/seccomp_policy")
done
check "dynamic/loopfd-helper: needs the arm64 loader" has 'ld-linux-aarch64' <(readelf -lW "$W/dynamic/loopfd-helper")

echo "== the Debian packages, cross-built: dpkg-buildpackage -a arm64"
mkdir "$W/deb" "$W/deb/src"
if git rev-parse --git-dir > /dev/null 2>&1; then
	git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$W/deb/src"
else
	tar -cf - --exclude='./build*' . | tar -xf - -C "$W/deb/src"
fi
(cd "$W/deb/src" && dpkg-buildpackage -a arm64 -us -uc -b) > "$W/deb.log" 2>&1
rc=$?; [ $rc = 0 ] || tail -20 "$W/deb.log"; result "dpkg-buildpackage -a arm64" $rc
for p in loopfd libloopfd1 libloopfd-dev; do
	check "${p}_1.0.0-1_arm64.deb: Architecture arm64" \
		has '^ Architecture: arm64' <(dpkg-deb -I "$W"/deb/${p}_*_arm64.deb)
done
dpkg-deb -x "$W"/deb/loopfd_*_arm64.deb "$W/deb/root" 2>/dev/null
check "packaged helper is aarch64" has 'ARM aarch64' <(file "$W/deb/root/usr/libexec/loopfd-helper")

echo
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
