#!/usr/bin/env bash
# make check: unit tests, then the helper built and installed setuid into a temp
# prefix and every integration and hostile test run against it as root, with
# clients as uid 65534; then the fuzz corpus replay and a short fuzz run.
# Prints "N passed, N failed, N skipped" last; exits non-zero on any failure.
# A test that cannot exercise a branch here (no cgroup v1 freezer, no user
# namespaces...) still passes the rest, and appends one line naming what it
# skipped to $LOOPFD_T/skipped: each such line is counted as a skip.
set -uo pipefail
cd "$(dirname "$0")/.."

. tests/prefix.sh
require_root "make check"
export WERROR=${WERROR:-1}	# warnings fail the tests' builds (not a user's `make`)

passed=0; failed=0; failures=()
result() {
	if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1"
	else failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1"; fi
}

echo "== build and unit tests"
make -s all || { echo "build failed"; exit 1; }
make -s unit; result unit $?
# A built tree is up to date (a second `make` rebuilds nothing, so `sudo make
# install` compiles nothing as root), and install refuses a missing build.
make -q all; result build-up-to-date $?
nob=$(mktemp -d /tmp/loopfd-nobuild.XXXXXX)
! make -s O="$nob/build" DESTDIR="$nob/root" install > "$nob/log" 2>&1 &&
	grep -q "is missing: run 'make' first" "$nob/log" && [ ! -e "$nob/build/loopfd" ]
result install-never-builds $?
rm -rf "$nob"

echo "== install into a temp prefix (helper setuid root)"
install_temp_prefix check test-programs || { echo "install failed"; exit 1; }
trap 'rm -rf "$LOOPFD_T"' EXIT
echo "   $PREFIX"

run_test() {
	local t=$1 name rc
	name=${t#tests/}
	echo "== $name"
	timeout -k 5 240 bash "$t"
	rc=$?
	result "$name" "$rc"
}
for t in tests/integration/t_*.sh tests/hostile/t_*.sh; do
	[ -e "$t" ] || continue
	if [ -n "${ONLY:-}" ] && [[ "$t" != *"$ONLY"* ]]; then continue; fi
	run_test "$t"
done

if [ -z "${ONLY:-}" ]; then
	echo "== the loopfd CLI and libloopfd under ASan/UBSan, through integration tests"
	if make -s O="$LOOPFD_T/asan" PREFIX="$PREFIX" SYSCONFDIR="$LOOPFD_T/etc" \
		RUNSTATEDIR="$LOOPFD_RUN" asan-cli > "$LOOPFD_T/asan.log" 2>&1; then
		for t in buffered_writes readonly busy sigkill options policy cli hold partitions; do
			echo "== asan: integration/t_$t.sh"
			LOOPFD_CLI=$LOOPFD_T/asan/loopfd timeout -k 5 240 bash tests/integration/t_$t.sh
			result "asan/t_$t.sh" $?
		done
	else
		tail -20 "$LOOPFD_T/asan.log"; result asan-build 1
	fi
fi

if [ -z "${ONLY:-}" ] && [ -z "${NO_FUZZ:-}" ]; then
	echo "== fuzz: corpus replay and a bounded smoke run"
	make -s fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-60}" > "$LOOPFD_T/fuzz.log" 2>&1
	rc=$?; [ $rc = 0 ] || tail -40 "$LOOPFD_T/fuzz.log"
	result fuzz-smoke $rc
fi

echo "== nothing left attached"
left=$(losetup -a | grep -F "$LOOPFD_T" || true)
[ -z "$left" ] || echo "leaked: $left"
[ -z "$left" ]; result no-leaked-devices $?

skipped=0
if [ -s "$LOOPFD_T/skipped" ]; then
	skipped=$(wc -l < "$LOOPFD_T/skipped")
	sed 's/^/skipped: /' "$LOOPFD_T/skipped"
fi
echo
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
