#!/usr/bin/env bash
# What make install ships besides the programs: the systemd units pass
# `systemd-analyze verify` without a single message (it works offline, PID 1
# need not be systemd); the sample policy names every keyword of
# loopfd.conf(5) and, uncommented, is a policy the helper accepts; the bash
# completion offers exactly the options of `loopfd --help`.
. "$(dirname "$0")/../lib.sh"

UNITDIR=$PREFIX/lib/systemd/system
SAMPLE=$PREFIX/share/doc/loopfd/examples/loopfd.conf
COMPLETION=$PREFIX/share/bash-completion/completions/loopfd

# 1. The units.  MANPATH: verify also checks that each Documentation= man
#    page exists, here the ones make install put into the prefix.
for u in loopfd.socket loopfd.service loopfd@.service; do
	[ -f "$UNITDIR/$u" ] || fail "make install did not install $UNITDIR/$u"
done
(cd "$UNITDIR" && MANPATH=$PREFIX/share/man systemd-analyze verify \
	./loopfd.socket ./loopfd.service ./loopfd@test.service) > "$T/verify" 2>&1 ||
	fail "systemd-analyze verify failed: $(cat "$T/verify")"
[ ! -s "$T/verify" ] || fail "systemd-analyze verify: $(cat "$T/verify")"

# 2. The sample policy: every keyword of the man page, commented out.
# (the tag line after each .TP of the KEYWORDS section, in the page's source)
page_keywords=$(awk '/^\.SH/ { on = ($2 == "KEYWORDS"); next }
	on && tag { gsub(/\\-/, "-"); print $2 } { tag = on && /^\.TP/ }' \
	"$PREFIX/share/man/man5/loopfd.conf.5" | sort -u)
sample_keywords=$(sed -n 's/^#\([a-z][a-z-]*\) .*/\1/p' "$SAMPLE" | sort -u)
[ -n "$page_keywords" ] || fail "no keywords found in loopfd.conf.5"
[ "$page_keywords" = "$sample_keywords" ] ||
	fail "sample and loopfd.conf(5) disagree: $(diff <(echo "$page_keywords") <(echo "$sample_keywords") | grep '^[<>]' | tr '\n' ' ')"
! grep -q '^[a-z]' "$SAMPLE" || fail "the sample sets something: $(grep '^[a-z]' "$SAMPLE")"

# As shipped (all comments) and with every default line uncommented (but
# the user and group lists, whose names are examples), the helper serves.
mkimage "$T/img" 4
write_config "$(cat "$SAMPLE")"
as_nobody "$LOOPFD" run "$T/img" -- true 2> "$T/err" || fail "sample as shipped refused: $(cat "$T/err")"
write_config "$(sed -e '/^#allow-\(users\|groups\) /d' -e 's/^#\([a-z]\)/\1/' "$SAMPLE")"
grep -q '^max-devices 256' "$LOOPFD_CONF" || fail "uncommenting the sample did not work"
as_nobody "$LOOPFD" run "$T/img" -- true 2> "$T/err" || fail "sample uncommented refused: $(cat "$T/err")"
remove_config

# 3. Completion: the options offered are those of `loopfd --help`.
help=$("$LOOPFD" --help | grep -oE -- '^ +(-[A-Za-z], )?--[a-z][a-z-]*' | grep -o -- '--[a-z-]*' | sort -u)
comp=$(sed -n "/compgen -W '--/,/-- \"\$cur\"/p" "$COMPLETION" | grep -o -- '--[a-z][a-z-]*' | sort -u)
[ "$help" = "$comp" ] ||
	fail "completion and loopfd --help disagree: $(diff <(echo "$help") <(echo "$comp") | grep '^[<>]' | tr '\n' ' ')"
if [ -f /usr/share/bash-completion/bash_completion ]; then
	got=$(bash -c '. /usr/share/bash-completion/bash_completion; . "$1"
		COMP_WORDS=(loopfd run --gr); COMP_CWORD=2; COMP_LINE="loopfd run --gr"
		COMP_POINT=${#COMP_LINE}; _loopfd; echo "${COMPREPLY[*]}"' sh "$COMPLETION")
	[ "$got" = --grant ] || fail "completing 'loopfd run --gr' gave '$got'"
fi
note "units verified; sample policy: $(echo $sample_keywords | wc -w) keywords, accepted; completion matches --help"
