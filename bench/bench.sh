#!/usr/bin/env bash
# make bench: the targets of issue 11 in one run on this machine, then a
# markdown table of ratios (bench/README.md explains every row).  Shared
# machines are noisy: each comparison is made inside one run with its arms
# interleaved (the order rotates every iteration or round), and the table
# shows medians (with p10-p90 where a row is one arm's samples).
#
#   make bench                  the full run (under two minutes here, build included)
#   BENCH_QUICK=1 make bench    a smoke run with few samples: checks the bench works
#
# Knobs (environment): MULTI_N MULTI_M RUN_N CONC_REPS CONC_TOTAL CONC_KS
# WRITE_MIB WRITE_REPS.  Runs as root: the baselines are a root user's; every
# loopfd arm runs as uid 65534 through the setuid helper installed into a temp
# prefix (tests/prefix.sh), like a user would, or through a
# `loopfd-helper --listen` daemon for the socket-mode arms.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/prefix.sh
require_root "make bench"

if [ -n "${BENCH_QUICK:-}" ]; then
	: "${MULTI_N:=10}" "${RUN_N:=20}" "${CONC_REPS:=1}" "${CONC_TOTAL:=128}"
	: "${WRITE_MIB:=64}" "${WRITE_REPS:=2}"
else
	: "${MULTI_N:=200}" "${RUN_N:=300}" "${CONC_REPS:=7}" "${CONC_TOTAL:=2048}"
	: "${WRITE_MIB:=256}" "${WRITE_REPS:=7}"
fi
: "${MULTI_M:=41}" "${CONC_KS:=1 4 16 64}"
# The setuid arms must spawn the installed helper, not reach a socket.
unset LOOPFD_SOCKET LOOPFD_HELPER
NOBODY=65534
nobody() { setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups -- "$@"; }
ms() { date +%s%3N; }
t_start=$(ms)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

DPID=
LOOPFD_T=

# Devices whose backing file lies under our temp dir: ours, nobody else's.
our_devices() {
	losetup -l -n -O NAME,BACK-FILE 2>/dev/null |
		awk -v t="$LOOPFD_T/" 'index($2, t) == 1 { print $1 }'
}
cleanup() {
	local rc=$? d
	[ -n "$LOOPFD_T" ] || exit "$rc"
	if [ -n "$DPID" ]; then kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
	# Interrupted: helpers whose clients died release on their own; give
	# them a moment before detaching what is left.
	for _ in $(seq 40); do [ -z "$(our_devices)" ] && break; sleep 0.05; done
	for d in $(our_devices); do
		echo "bench: cleanup: detaching leaked $d" >&2
		losetup -d "$d" 2>/dev/null || true
	done
	rm -rf "$LOOPFD_T"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# (the trap is set first: a failed build must not leave the temp root behind)
echo "bench: building and installing into a temp prefix..." >&2
install_temp_prefix bench test-programs
W=$LOOPFD_T/work
mkdir -m 0755 "$W"
BENCH=$BUILD/tests/bench
LOOPFD=$PREFIX/bin/loopfd
HELPER=$PREFIX/libexec/loopfd-helper
LOSETUP=$(command -v losetup)

# 64 concurrent sessions of one uid need more than the default 16 per user.
mkdir -p "$(dirname "$LOOPFD_CONF")"
printf 'max-devices-per-user 128\nmax-devices 1024\n' > "$LOOPFD_CONF"
chmod 0644 "$LOOPFD_CONF"

mkimg() { truncate -s "$2" "$1"; chown $NOBODY:$NOBODY "$1"; }
for i in run losetup; do mkimg "$W/$i.img" 16M; done
for ((i = 0; i < MULTI_M; i++)); do mkimg "$W/multi.img.$i" 16M; done
max_k=0; for k in $CONC_KS; do [ "$k" -gt "$max_k" ] && max_k=$k; done
for ((i = 0; i < max_k; i++)); do mkimg "$W/conc.img.$i" 16M; done
mkimg "$W/write.img" "${WRITE_MIB}M"

# A socket-mode helper daemon for the socket arms.
"$HELPER" --listen "$W/helper.sock" 2> "$W/daemon.log" &
DPID=$!
for _ in $(seq 100); do [ -S "$W/helper.sock" ] && break; sleep 0.05; done
[ -S "$W/helper.sock" ] || { cat "$W/daemon.log"; echo "bench: daemon did not start" >&2; exit 1; }

leaks=0
check_leaks() {
	local left
	left=$(our_devices)
	if [ -n "$left" ]; then
		echo "bench: LEAKED after $1: $left" >&2
		leaks=$((leaks + $(echo "$left" | wc -l)))
		for d in $left; do losetup -d "$d" 2>/dev/null || true; done
	fi
}

# stats FILE ARM [SCALE] -> "median p10 p90 n"
stats() { awk -v a="$2" '$1 == a { print $2 }' "$1" | "$BENCH" stats "${3:-1}"; }
field() { awk -v a="$2" '$1 == a { s += $2 } END { print s + 0 }' "$1"; }
# A plain PATH: root's may hold directories uid 65534 cannot search.
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin

# ---- 1. M images in one `loopfd run` ----------------------------------------------
echo "bench: $MULTI_M-image runs (N=$MULTI_N per arm, interleaved)..." >&2
"$BENCH" multi "$MULTI_N" "$MULTI_M" "$LOOPFD" "$W/helper.sock" "$W/multi.img" \
	--uid $NOBODY > "$W/multi.out" || true
check_leaks multi
multi_fail=$(field "$W/multi.out" fail)

# ---- 2. loopfd run IMG -- /bin/true vs losetup ---------------------------------------
echo "bench: loopfd run vs losetup (N=$RUN_N per arm)..." >&2
"$BENCH" run-cmd "$RUN_N" "$LOOPFD" "$W/run.img" "$LOSETUP" "$W/losetup.img" \
	--uid $NOBODY > "$W/run.out" || true
check_leaks run-cmd
run_fail=$(field "$W/run.out" fail)

# ---- 3. concurrency --------------------------------------------------------------
echo "bench: concurrency K in {$CONC_KS}, $CONC_REPS rounds..." >&2
: > "$W/conc.out"
rot=0	# the arms' order rotates with every (round, K)
for ((r = 0; r < CONC_REPS; r++)); do
	for k in $CONC_KS; do
		n=$((CONC_TOTAL / k)); [ "$n" -ge 8 ] || n=8
		case $((rot++ % 3)) in
		0) arms="careful unsafe lib" ;; 1) arms="lib careful unsafe" ;; *) arms="unsafe lib careful" ;;
		esac
		for arm in $arms; do
			"$BENCH" concurrent "$arm" "$k" "$n" "$W/conc.img" --uid $NOBODY \
				> "$W/conc.one" || true
			check_leaks "concurrent $arm K=$k"
			awk -v a="$arm" -v k="$k" -v n="$n" '{ print a, k, n, $1, $2 }' \
				"$W/conc.one" >> "$W/conc.out"
		done
	done
done

# ---- 4. a large buffered write ---------------------------------------------------
echo "bench: ${WRITE_MIB} MiB writes, $WRITE_REPS rounds..." >&2
nobody "$BENCH" write "$WRITE_MIB" "$WRITE_REPS" "$W/write.img" > "$W/write.out" || true
check_leaks write
write_fail=$(field "$W/write.out" fail)

# ==== the table ======================================================================
# fmt_us MEDIAN [P10 P90] -> "123 µs (110–140)" or "1.23 ms (1.10–1.40)"
fmt_us() {
	awk -v m="$1" -v a="${2:--}" -v b="${3:--}" 'BEGIN {
		if (a == "-") { if (m >= 1000) printf "%.2f ms", m / 1000; else printf "%.0f µs", m }
		else if (m >= 1000) printf "%.2f ms (%.2f–%.2f)", m / 1000, a / 1000, b / 1000
		else printf "%.0f µs (%.0f–%.0f)", m, a, b }'
}
fmt_rate() { awk -v m="$1" -v a="$2" -v b="$3" -v u="$4" 'BEGIN {
	printf "%.0f %s (%.0f–%.0f)", m, u, a, b }'; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%.2fx", x / y }'; }
# met RATIO OP LIMIT [extra condition 0/1]
met() { awk -v r="$1" -v op="$2" -v l="$3" -v c="${4:-1}" 'BEGIN {
	ok = (op == "<=") ? (r + 0 <= l + 0) : (r + 0 >= l + 0)
	print (ok && c) ? "yes" : "**no**" }'; }
med() { stats "$1" "$2" | cut -d' ' -f1; }
# per_device ARM: (median of the M-image arm - median of its 1-image arm) / (M - 1)
per_device() {
	awk -v a="$(med "$W/multi.out" "$1")" -v b="$(med "$W/multi.out" "${1}1")" \
		-v m="$MULTI_M" 'BEGIN { print (a - b) / (m - 1) }'
}

rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 | $7 |"); }

careful=$(per_device careful); unsafe=$(per_device unsafe)
for arm in run sock; do
	v=$(per_device $arm)
	r=$(ratio "$v" "$careful")
	[ $arm = run ] && what="setuid helper" || what="socket daemon"
	row "per device in a $MULTI_M-image \`loopfd run\` (($MULTI_M-image run - 1-image run) / $((MULTI_M - 1))), $what, uid 65534 (n=$(stats "$W/multi.out" $arm | cut -d' ' -f4); whole $MULTI_M-image run $(fmt_us "$(med "$W/multi.out" $arm)"))" \
		"$(fmt_us "$v")" "$(fmt_us "$careful")" "$(fmt_us "$unsafe")" \
		"$r" "<= 0.8x" "$(met "${r%x}" "<=" 0.8 $((multi_fail == 0)))"
done

read -r lr_m lr_a lr_b lr_n < <(stats "$W/run.out" loopfd)
read -r ls_m ls_a ls_b _ < <(stats "$W/run.out" losetup)
r=$(ratio "$lr_m" "$ls_m")
row "\`loopfd run IMG -- /bin/true\`, setuid, uid 65534 vs \`d=\$(losetup -f --show IMG); /bin/true \$d; losetup -d \$d\` as root, the baseline itself unsafe: \`losetup -d\` does not fsync (n=$lr_n)" \
	"$(fmt_us "$lr_m" "$lr_a" "$lr_b")" "-" "$(fmt_us "$ls_m" "$ls_a" "$ls_b")" \
	"$r" "<= 0.8x" "$(met "${r%x}" "<=" 0.8 $((run_fail == 0)))"

# conc_values ARM K FIELD: that field's value from every round of ARM at K.
conc_values() {
	awk -v a="$1" -v k="$2" -v f="$3" '$1 == a && $2 == k && $4 == f { print $5 }' "$W/conc.out"
}
conc_fail=0
for k in $CONC_KS; do
	n=$(awk -v k="$k" '$2 == k { print $3; exit }' "$W/conc.out")
	f=$(conc_values lib "$k" fail | awk '{ s += $1 } END { print s + 0 }')
	fc=$(conc_values careful "$k" fail | awk '{ s += $1 } END { print s + 0 }')
	rounds=$(conc_values lib "$k" agg | wc -l)
	conc_fail=$((conc_fail + f))
	read -r cl_m cl_a cl_b _ < <(conc_values lib "$k" agg | "$BENCH" stats)
	read -r cc_m cc_a cc_b _ < <(conc_values careful "$k" agg | "$BENCH" stats)
	read -r cu_m cu_a cu_b _ < <(conc_values unsafe "$k" agg | "$BENCH" stats)
	r=$(ratio "$cl_m" "$cc_m")
	row "$k concurrent clients, one device each, x $n attach+release cycles, aggregate ($rounds rounds; loopfd failures $f, careful failures $fc)" \
		"$(fmt_rate "$cl_m" "$cl_a" "$cl_b" cycles/s)" "$(fmt_rate "$cc_m" "$cc_a" "$cc_b" cycles/s)" \
		"$(fmt_rate "$cu_m" "$cu_a" "$cu_b" cycles/s)" \
		"$r" ">= 0.8x, 0 failures, 0 leaked" "$(met "${r%x}" ">=" 0.8 $((f == 0 && leaks == 0)))"
done

# phases ARM -> "write+release" medians in ms
phases() {
	local w rel
	w=$(awk -v a="$1" '$1 == "phase" && $2 == a { print $3 }' "$W/write.out" | "$BENCH" stats 0.001 | cut -d' ' -f1)
	rel=$(awk -v a="$1" '$1 == "phase" && $2 == a { print $4 }' "$W/write.out" | "$BENCH" stats 0.001 | cut -d' ' -f1)
	printf '%.0f+%.0f' "$w" "$rel"
}
read -r wl_m wl_a wl_b wl_n < <(stats "$W/write.out" loop)
read -r wf_m wf_a wf_b _ < <(stats "$W/write.out" file)
read -r wn_m wn_a wn_b _ < <(stats "$W/write.out" file-nosync)
row "$WRITE_MIB MiB buffered through the device fd + release vs pwrite to the image + fsync (n=$wl_n; phases write+release, median ms: $(phases loop) vs $(phases file))" \
	"$(fmt_rate "$wl_m" "$wl_a" "$wl_b" MiB/s)" "$(fmt_rate "$wf_m" "$wf_a" "$wf_b" MiB/s)" \
	"$(fmt_rate "$wn_m" "$wn_a" "$wn_b" MiB/s)" "$(ratio "$wl_m" "$wf_m")" "report" "-"

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo
echo "loopfd bench: Linux $(uname -r), $(nproc) CPUs ($cpu), load $load_start at start;" \
	"$(date -u +%Y-%m-%dT%H:%MZ)${BENCH_QUICK:+, BENCH_QUICK (smoke run: too few samples to decide anything)}; $(( ($(ms) - t_start) / 1000 )) s"
echo
echo "| measurement | loopfd (median, p10–p90) | baseline: careful root (median, p10–p90) | unsafe root, no fsync | ratio to careful | target | met? |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
echo "Ratios are loopfd/careful of the medians: time for latencies (lower is better),"
echo "throughput for the concurrency and write rows (higher is better). loopfd arms run as"
echo "uid 65534; baselines as root (careful: GET_FREE, open, LOOP_CONFIGURE, fsync, BLKFLSBUF,"
echo "LOOP_CLR_FD, close; unsafe: the same without fsync, what \`losetup -d\` amounts to)."
echo "Failures: multi $multi_fail, run $run_fail, concurrency (loopfd) $conc_fail, write $write_fail; devices leaked: $leaks."
[ "$multi_fail" = 0 ] && [ "$run_fail" = 0 ] && [ "$conc_fail" = 0 ] && [ "$leaks" = 0 ] && [ "$write_fail" = 0 ]
