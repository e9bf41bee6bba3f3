#!/usr/bin/env bash
# make bench: every measurement of issue 5 in one run on this machine, then a
# markdown table of ratios.  Shared machines are noisy: each comparison is made
# inside one run with its arms interleaved (the order rotates every iteration
# or round), and the table shows medians with p10-p90.
#
#   make bench                  the full run (about a minute here, build included)
#   BENCH_QUICK=1 make bench    a ~20 s smoke run with fewer samples
#
# Knobs (environment): CYCLE_N START_N RUN_N CONC_REPS CONC_TOTAL CONC_KS
# WRITE_MIB WRITE_REPS.  Runs as root: the raw baselines need root; every
# loopfd arm runs as uid 65534 through the setuid helper installed into a temp
# prefix (tests/prefix.sh), like a user would, or through a
# `loopfd-helper --listen` daemon for the socket-mode arms.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/prefix.sh
require_root "make bench"

if [ -n "${BENCH_QUICK:-}" ]; then
	: "${CYCLE_N:=300}" "${START_N:=40}" "${RUN_N:=30}" "${CONC_REPS:=2}"
	: "${CONC_TOTAL:=256}" "${WRITE_MIB:=256}" "${WRITE_REPS:=2}"
else
	: "${CYCLE_N:=3000}" "${START_N:=300}" "${RUN_N:=300}" "${CONC_REPS:=9}"
	: "${CONC_TOTAL:=2048}" "${WRITE_MIB:=256}" "${WRITE_REPS:=9}"
fi
: "${CONC_KS:=1 4 16 64}"
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
for i in raw rawx lib sock run losetup rss; do mkimg "$W/$i.img" 16M; done
max_k=0; for k in $CONC_KS; do [ "$k" -gt "$max_k" ] && max_k=$k; done
for ((i = 0; i < max_k; i++)); do mkimg "$W/conc.img.$i" 16M; done
mkimg "$W/write.img" "${WRITE_MIB}M"

# The static no-op the setuid spawn is compared with.
printf 'int main(void) { return 0; }\n' > "$W/noop.c"
cc -static -O2 -o "$W/noop" "$W/noop.c"

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

# ---- 1. attach + release inside a session ----------------------------------
echo "bench: attach+release cycles (N=$CYCLE_N per arm, interleaved)..." >&2
"$BENCH" cycle "$CYCLE_N" "$W/raw.img" "$W/rawx.img" "$W/lib.img" "$W/sock.img" \
	"$W/helper.sock" --uid $NOBODY > "$W/cycle.out" || true
check_leaks cycle
cycle_fail=$(field "$W/cycle.out" fail)
# Diagnostics for the cause of the ratio: the same with every process on
# one CPU (wakeups become plain context switches), and the bare cost of a
# request/reply round trip between two processes, free vs on one CPU.
taskset -c 0 "$BENCH" cycle $((CYCLE_N / 2)) "$W/raw.img" "$W/rawx.img" "$W/lib.img" \
	--uid $NOBODY > "$W/cycle1.out" || true
check_leaks cycle-pinned
cycle_fail=$((cycle_fail + $(field "$W/cycle1.out" fail)))
"$BENCH" ipc-rtt "$((CYCLE_N * 2))" > "$W/rtt.out"
taskset -c 0 "$BENCH" ipc-rtt "$((CYCLE_N * 2))" > "$W/rtt1.out"

# ---- 2. session start ---------------------------------------------------------
echo "bench: session start (N=$START_N per arm)..." >&2
nobody "$BENCH" session-start "$START_N" "$W/noop" "$W/helper.sock" > "$W/start.out" || true

# ---- 3. loopfd run IMG -- true vs losetup ---------------------------------------
echo "bench: loopfd run vs losetup (N=$RUN_N per arm)..." >&2
# A plain PATH: root's may hold directories uid 65534 cannot search, which
# would only add failed execs to loopfd's search for `true`.
env PATH=/usr/local/bin:/usr/bin:/bin "$BENCH" run-cmd "$RUN_N" "$LOOPFD" \
	"$W/run.img" "$LOSETUP" "$W/losetup.img" --uid $NOBODY > "$W/run.out" || true
check_leaks run-cmd
run_fail=$(field "$W/run.out" fail)

# ---- 4. concurrency --------------------------------------------------------------
echo "bench: concurrency K in {$CONC_KS}, $CONC_REPS rounds..." >&2
: > "$W/conc.out"
conc_fail=0
rot=0	# the arms' order rotates with every (round, K)
for ((r = 0; r < CONC_REPS; r++)); do
	for k in $CONC_KS; do
		n=$((CONC_TOTAL / k)); [ "$n" -ge 8 ] || n=8
		case $((rot++ % 3)) in
		0) arms="raw rawx lib" ;; 1) arms="lib raw rawx" ;; *) arms="rawx lib raw" ;;
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

# ---- 5. 256 MiB through the device -----------------------------------------------
echo "bench: ${WRITE_MIB} MiB writes, $WRITE_REPS rounds..." >&2
"$BENCH" write "$WRITE_MIB" "$WRITE_REPS" "$W/write.img" --uid $NOBODY > "$W/write.out" || true
check_leaks write
write_fail=$(field "$W/write.out" fail)

# ---- 6. helper RSS, sizes ---------------------------------------------------------
echo "bench: helper RSS and sizes..." >&2
nobody "$BENCH" rss "$W/rss.img" > "$W/rss.out" || true
check_leaks rss
hwm=$(awk '$1 == "hwm_kib" { print $2 }' "$W/rss.out"); hwm=${hwm:-?}
ready_hwm=$(awk '$1 == "ready_hwm_kib" { print $2 }' "$W/rss.out"); ready_hwm=${ready_hwm:-?}
daemon_hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status")

# ==== the table ======================================================================
# fmt_us MEDIAN P10 P90 -> "123 µs (110–140)" or "1.23 ms (1.10–1.40)"
fmt_us() {
	awk -v m="$1" -v a="$2" -v b="$3" 'BEGIN {
		if (a == "-") { if (m >= 1000) printf "%.2f ms", m / 1000; else if (m < 20) printf "%.1f µs", m; else printf "%.0f µs", m }
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

rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }

read -r raw_m raw_a raw_b raw_n < <(stats "$W/cycle.out" raw)
read -r rx_m rx_a rx_b rx_n < <(stats "$W/cycle.out" rawx)
read -r lib_m lib_a lib_b lib_n < <(stats "$W/cycle.out" lib)
read -r sk_m sk_a sk_b sk_n < <(stats "$W/cycle.out" sock)
r=$(ratio "$lib_m" "$raw_m")
row "attach+release in a session: setuid helper, uid 65534 (n=$lib_n) vs raw root ioctls" \
	"$(fmt_us "$lib_m" "$lib_a" "$lib_b")" "$(fmt_us "$raw_m" "$raw_a" "$raw_b")" \
	"$r" "<= 1.3x" "$(met "${r%x}" "<=" 1.3 $((cycle_fail == 0)))"
r=$(ratio "$sk_m" "$raw_m")
row "attach+release in a session: socket daemon, uid 65534 (n=$sk_n) vs raw root ioctls" \
	"$(fmt_us "$sk_m" "$sk_a" "$sk_b")" "$(fmt_us "$raw_m" "$raw_a" "$raw_b")" \
	"$r" "report" "-"
row "diagnostic: raw + every other kernel call the helper and library make, in-process (no IPC) vs raw" \
	"$(fmt_us "$rx_m" "$rx_a" "$rx_b")" "$(fmt_us "$raw_m" "$raw_a" "$raw_b")" \
	"$(ratio "$rx_m" "$raw_m")" "report" "-"
read -r p_raw_m p_raw_a p_raw_b p_n < <(stats "$W/cycle1.out" raw)
read -r p_lib_m p_lib_a p_lib_b _ < <(stats "$W/cycle1.out" lib)
row "diagnostic: attach+release, setuid helper vs raw, every process pinned to CPU 0 (n=$p_n)" \
	"$(fmt_us "$p_lib_m" "$p_lib_a" "$p_lib_b")" "$(fmt_us "$p_raw_m" "$p_raw_a" "$p_raw_b")" \
	"$(ratio "$p_lib_m" "$p_raw_m")" "report" "-"
read -r rt_m rt_a rt_b rt_n < <(stats "$W/rtt.out" rtt)
read -r rt1_m rt1_a rt1_b _ < <(stats "$W/rtt1.out" rtt)
mean() { awk -v a="$2" '$1 == a { s += $2; n++ } END { if (n) printf "%.1f", s / n; else print "nan" }' "$1"; }
rt_mean=$(mean "$W/rtt.out" rtt); rt1_mean=$(mean "$W/rtt1.out" rtt)
# The free case is bimodal (same CPU: cheap; other, idle CPU: a cross-CPU
# wakeup), so this row compares means; median and p10-p90 in the text.
row "diagnostic: one request/reply round trip between two processes (SOCK_SEQPACKET), mean; free: median $(fmt_us "$rt_m" "$rt_a" "$rt_b"), pinned to one CPU: median $(fmt_us "$rt1_m" "$rt1_a" "$rt1_b") (n=$rt_n)" \
	"$(fmt_us "$rt_mean" - -)" "$(fmt_us "$rt1_mean" - -)" \
	"$(ratio "$rt_mean" "$rt1_mean")" "report" "-"
# What the two round trips of a cycle cost in CPU, both processes together:
# the concurrency rows' CPU per cycle pays this on top of the kernel work.
rc_free=$(field "$W/rtt.out" cpu_us_per_cycle); rc_pin=$(field "$W/rtt1.out" cpu_us_per_cycle)
row "diagnostic: CPU time of one cycle's two round trips alone (the first passing an fd each way; both processes, no loop work): free vs pinned to one CPU" \
	"$(fmt_us "$rc_free" - -)" "$(fmt_us "$rc_pin" - -)" "$(ratio "$rc_free" "$rc_pin")" "report" "-"

read -r sp_m sp_a sp_b sp_n < <(stats "$W/start.out" spawn)
read -r sc_m sc_a sc_b sc_n < <(stats "$W/start.out" spawn_close)
read -r so_m so_a so_b so_n < <(stats "$W/start.out" sock)
read -r no_m no_a no_b no_n < <(stats "$W/start.out" noop)
row "session start: setuid spawn + hello vs socket connect + hello (n=$sp_n)" \
	"$(fmt_us "$sp_m" "$sp_a" "$sp_b")" "$(fmt_us "$so_m" "$so_a" "$so_b")" \
	"$(ratio "$sp_m" "$so_m")" "report" "-"
r=$(ratio "$sp_m" "$no_m")
row "session start: setuid spawn + hello vs spawn+exit of a static no-op" \
	"$(fmt_us "$sp_m" "$sp_a" "$sp_b")" "$(fmt_us "$no_m" "$no_a" "$no_b")" \
	"$r" "<= 2x" "$(met "${r%x}" "<=" 2)"
row "session end: loopfd_close of a setuid session (waits for the helper's exit)" \
	"$(fmt_us "$sc_m" "$sc_a" "$sc_b")" "-" "-" "report" "-"

read -r lr_m lr_a lr_b lr_n < <(stats "$W/run.out" loopfd)
read -r ls_m ls_a ls_b ls_n < <(stats "$W/run.out" losetup)
read -r tr_m tr_a tr_b _ < <(stats "$W/run.out" true)
r=$(ratio "$lr_m" "$ls_m")
row "\`loopfd run IMG -- true\` as uid 65534 vs \`losetup --find --show\` + \`losetup --detach\` as root (n=$lr_n)" \
	"$(fmt_us "$lr_m" "$lr_a" "$lr_b")" "$(fmt_us "$ls_m" "$ls_a" "$ls_b")" \
	"$r" "<= 1.0x" "$(met "${r%x}" "<=" 1.0 $((run_fail == 0)))"
row "diagnostic: the same without COMMAND (median of loopfd run minus median of running /usr/bin/true alone: $(fmt_us "$tr_m" "$tr_a" "$tr_b"))" \
	"$(fmt_us "$(awk -v a="$lr_m" -v b="$tr_m" 'BEGIN { print a - b }')" - -)" \
	"$(fmt_us "$ls_m" "$ls_a" "$ls_b")" \
	"$(ratio "$(awk -v a="$lr_m" -v b="$tr_m" 'BEGIN { print a - b }')" "$ls_m")" "report" "-"

# conc_values ARM K FIELD: that field's value from every round of ARM at K.
conc_values() {
	awk -v a="$1" -v k="$2" -v f="$3" '$1 == a && $2 == k && $4 == f { print $5 }' "$W/conc.out"
}
for k in $CONC_KS; do
	n=$(awk -v k="$k" '$2 == k { print $3; exit }' "$W/conc.out")
	f=$(conc_values lib "$k" fail | awk '{ s += $1 } END { print s + 0 }')
	fr=$(conc_values raw "$k" fail | awk '{ s += $1 } END { print s + 0 }')
	runs=$(conc_values lib "$k" agg | wc -l)
	conc_fail=$((conc_fail + f))
	read -r cl_m cl_a cl_b _ < <(conc_values lib "$k" agg | "$BENCH" stats)
	read -r cr_m cr_a cr_b _ < <(conc_values raw "$k" agg | "$BENCH" stats)
	r=$(ratio "$cl_m" "$cr_m")
	row "$k concurrent clients x $n cycles, aggregate ($runs rounds; lib failures $f, raw failures $fr)" \
		"$(fmt_rate "$cl_m" "$cl_a" "$cl_b" cycles/s)" "$(fmt_rate "$cr_m" "$cr_a" "$cr_b" cycles/s)" \
		"$r" ">= 0.7x, 0 failures, 0 leaked" "$(met "${r%x}" ">=" 0.7 $((f == 0 && leaks == 0)))"
	# The cause, in CPU: once the CPUs are busy, throughput is CPU per cycle.
	read -r ul_m ul_a ul_b _ < <(conc_values lib "$k" cpu_us_per_cycle | "$BENCH" stats)
	read -r ur_m ur_a ur_b _ < <(conc_values raw "$k" cpu_us_per_cycle | "$BENCH" stats)
	row "diagnostic: CPU time per cycle at $k clients (user+sys of clients and helpers, session start included; not the kernel's loop and I/O threads)" \
		"$(fmt_us "$ul_m" "$ul_a" "$ul_b")" "$(fmt_us "$ur_m" "$ur_a" "$ur_b")" \
		"$(ratio "$ul_m" "$ur_m")" "report" "-"
	# The bound without any IPC: the helper's kernel calls done in-process.
	read -r cx_m cx_a cx_b _ < <(conc_values rawx "$k" agg | "$BENCH" stats)
	read -r ux_m _ < <(conc_values rawx "$k" cpu_us_per_cycle | "$BENCH" stats)
	fx=$(conc_values rawx "$k" fail | awk '{ s += $1 } END { print s + 0 }')
	row "diagnostic: $k clients doing the helper's kernel calls in-process, no IPC (rawx, immediate retries like raw; CPU per cycle $(fmt_us "$ux_m" - -); failures $fx)" \
		"$(fmt_rate "$cx_m" "$cx_a" "$cx_b" cycles/s)" "$(fmt_rate "$cr_m" "$cr_a" "$cr_b" cycles/s)" \
		"$(ratio "$cx_m" "$cr_m")" "report" "-"
done

read -r wf_m wf_a wf_b wf_n < <(stats "$W/write.out" file)
wrow() {	# wrow ARM BASE-ARM TARGET-OP TARGET-LIMIT TEXT
	local m a b bm ba bb r tgt=report met_=-
	read -r m a b _ < <(stats "$W/write.out" "$1")
	read -r bm ba bb _ < <(stats "$W/write.out" "$2")
	[ "$m" != nan ] && [ "$bm" != nan ] || return 0
	r=$(ratio "$m" "$bm")
	if [ -n "$3" ]; then tgt="$3 ${4}x"; met_=$(met "${r%x}" "$3" "$4" $((write_fail == 0))); fi
	row "$5 (n=$wf_n; phases, median ms: $(phases "$1") vs $(phases "$2"))" \
		"$(fmt_rate "$m" "$a" "$b" MiB/s)" "$(fmt_rate "$bm" "$ba" "$bb" MiB/s)" "$r" "$tgt" "$met_"
}
# phases ARM -> "write+release" medians in ms
phases() {
	local w rel
	w=$(awk -v a="$1" '$1 == "phase" && $2 == a { print $3 }' "$W/write.out" | "$BENCH" stats 0.001 | cut -d' ' -f1)
	rel=$(awk -v a="$1" '$1 == "phase" && $2 == a { print $4 }' "$W/write.out" | "$BENCH" stats 0.001 | cut -d' ' -f1)
	printf '%.0f+%.0f' "$w" "$rel"
}
M=$WRITE_MIB
wrow loop-dio file ">=" 0.9 "$M MiB through the device fd + release, --direct-io device, buffered writes to the fd, vs pwrite to the image + fsync"
wrow loop file "" "" "$M MiB through the device fd + release, buffered device (page cache on device and file), vs pwrite + fsync"
wrow loop-dio-odirect file "" "" "$M MiB through the device fd + release, --direct-io device, O_DIRECT 1 MiB writes to the fd, vs pwrite + fsync"
wrow raw-loop-dio file "" "" "control, no loopfd: the loop-dio arm with in-process root ioctls vs pwrite + fsync"
wrow loop-dio raw-loop-dio "" "" "loopfd's own share: loop-dio through loopfd vs the same with in-process root ioctls"
wrow loop raw-loop "" "" "loopfd's own share: buffered device through loopfd vs the same with in-process root ioctls"

row "helper peak RSS (VmHWM) after 100 cycles, 8 devices, 16 MiB written; at hello: ${ready_hwm} KiB" \
	"${hwm} KiB" "-" "-" "<= 2 MiB" "$(met "$hwm" "<=" 2048)"
row "socket daemon (listener) peak RSS" "${daemon_hwm} KiB" "-" "-" "report" "-"
row "helper exec-to-ready: spawn to hello reply (the setuid session-start row)" \
	"$(fmt_us "$sp_m" "$sp_a" "$sp_b")" "-" "-" "report" "-"
sizes() {
	local f=$1 t d b s
	read -r t d b < <(size -B "$f" | awk 'NR == 2 { print $1, $2, $3 }')
	strip -o "$W/stripped" "$f" 2>/dev/null && s=$(stat -c %s "$W/stripped") || s=?
	printf 'text %d, data %d, bss %d; file %d B (%s B stripped)' "$t" "$d" "$b" \
		"$(stat -c %s "$f")" "$s"
}
row "size: loopfd-helper" "$(sizes "$HELPER")" "-" "-" "report" "-"
row "size: loopfd" "$(sizes "$LOOPFD")" "-" "-" "report" "-"
row "size: libloopfd.so.1" "$(sizes "$PREFIX/lib/libloopfd.so.1")" "-" "-" "report" "-"

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
idle=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none)
[ -r /sys/module/haltpoll/parameters/guest_halt_poll_ns ] &&
	idle="$idle, guest_halt_poll_ns=$(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns)"
echo
echo "loopfd bench: Linux $(uname -r), $(nproc) CPUs ($cpu), cpuidle $idle, load $load_start at start;" \
	"$(date -u +%Y-%m-%dT%H:%MZ)${BENCH_QUICK:+, BENCH_QUICK}; $(( ($(ms) - t_start) / 1000 )) s"
echo
echo "| measurement | loopfd (median, p10–p90) | baseline (median, p10–p90) | ratio | target | met? |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
echo "Ratios are loopfd/baseline of the medians: time for latencies (lower is better),"
echo "throughput for the concurrency and write rows (higher is better). loopfd arms run"
echo "as uid 65534 through the installed setuid helper (socket rows: a \`loopfd-helper"
echo "--listen\` daemon); baselines run as root. Policy: max-devices-per-user 128."
echo "Failures: cycle $cycle_fail, run $run_fail, concurrency (lib) $conc_fail, write $write_fail; devices leaked: $leaks."
[ "$cycle_fail" = 0 ] && [ "$run_fail" = 0 ] && [ "$conc_fail" = 0 ] && [ "$leaks" = 0 ] && [ "$write_fail" = 0 ]
