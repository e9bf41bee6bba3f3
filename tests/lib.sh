# tests/lib.sh: sourced by every integration and hostile test.
#
# check.sh exports (tests must not guess these):
#   LOOPFD_T       the run's temp root (0755, root-owned)
#   PREFIX         temp install prefix: $PREFIX/bin/loopfd, $PREFIX/libexec/loopfd-helper (4755 root)
#   LOOPFD_CONF    the compiled-in config path ($LOOPFD_T/etc/loopfd.conf; absent = defaults)
#   LOOPFD_RUN     the compiled-in run-state dir
#   BUILD          the build dir (test programs in $BUILD/tests/)
# Each test gets its own directory $T (0755) and a trap that kills what it started,
# waits for the helpers it spawned to exit (failing the test if one outlives
# it by 10 s), detaches only loop devices whose backing file lies under $T, and
# removes $T.
set -euo pipefail

LOOPFD=${LOOPFD_CLI:-$PREFIX/bin/loopfd}	# check.sh may point it at an ASan build
HELPER=$PREFIX/libexec/loopfd-helper
NOBODY=65534
T=$(mktemp -d "$LOOPFD_T/t.XXXXXX")
chmod 01777 "$T"	# clients (uid 65534) write results here too
_bg_pids=()
_mounts=()

# Detach the devices backed by files under $T: ours and nobody else's.
_detach_ours() {
	local line dev back
	while IFS= read -r line; do
		dev=${line%%:*}
		back=$(losetup -n -O BACK-FILE "$dev" 2>/dev/null || true)
		case "$back" in
		"$T"/*) echo "cleanup: detaching leaked $dev ($back)" >&2
			losetup -d "$dev" 2>/dev/null || true ;;
		esac
	done < <(losetup -a 2>/dev/null)
}

# Helpers of this run's prefix still running (by executable: the spawned
# ones are called plain "loopfd-helper").  Tests run one at a time, so any
# left when a test ends are its own.
_our_helpers() {
	local p
	local exe
	exe=$(readlink -f "$HELPER")
	for p in $(pgrep -x loopfd-helper 2>/dev/null || true); do
		[ "$(readlink "/proc/$p/exe" 2>/dev/null)" != "$exe" ] || echo "$p"
	done
}

# A helper that lingers for a device released busy exits once the device
# has detached and frees its quota slots only then: one still running when
# its test ends would count against the next test's per-user limit.  Wait
# for them (the watch interval is 1 s), then kill and report what is left.
_reap_helpers() {
	local i left
	for i in $(seq 100); do
		[ -n "$(_our_helpers)" ] || return 0
		sleep 0.1
	done
	left=$(_our_helpers)
	echo "cleanup: loopfd-helper still running 10 s after the test: $left" >&2
	kill -KILL $left 2>/dev/null || true
	return 1
}

_cleanup() {
	local rc=$? p m
	for p in "${_bg_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	for p in "${_bg_pids[@]}"; do wait "$p" 2>/dev/null || true; done
	for m in "${_mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
	if ! _reap_helpers && [ "$rc" = 0 ]; then
		echo "FAIL: a helper outlived its test" >&2
		rc=1
	fi
	_detach_ours
	[ -z "${_wrote_config:-}" ] || rm -f "$LOOPFD_CONF"
	rm -rf "$T"
	exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

# bg CMD...: start in the background and remember the pid for cleanup.
bg() { "$@" & _bg_pids+=("$!"); }
remember_pid() { _bg_pids+=("$1"); }
remember_mount() { _mounts+=("$1"); }

fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "  $*"; }

# as_nobody CMD...: run as uid/gid 65534 with no supplementary groups.
as_nobody() { setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups -- "$@"; }

# mkimage PATH MIB: a zero-filled image owned by nobody.
mkimage() {
	truncate -s "$2M" "$1"
	chown $NOBODY:$NOBODY "$1"
}

# assert_no_device_for FILE: no loop device is backed by FILE.
assert_no_device_for() {
	local left
	left=$(losetup -j "$1" 2>/dev/null || true)
	[ -z "$left" ] || fail "still attached to $1: $left"
}

# wait_until SECONDS CMD...: poll CMD until it succeeds.
wait_until() {
	local deadline=$((SECONDS + $1)); shift
	until "$@"; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.05
	done
}

# write_config TEXT: install TEXT as the helper's root-owned config.
write_config() {
	_wrote_config=1
	mkdir -p "$(dirname "$LOOPFD_CONF")"
	printf '%s\n' "$1" > "$LOOPFD_CONF"
	chown root:root "$LOOPFD_CONF"
	chmod 0644 "$LOOPFD_CONF"
}
remove_config() { rm -f "$LOOPFD_CONF"; }
