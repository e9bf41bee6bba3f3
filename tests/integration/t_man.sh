#!/usr/bin/env bash
# The installed man pages: each renders without a single groff warning, and
# the options they document are exactly those the programs' --help lists
# (loopfd.1 against `loopfd --help`, loopfd-helper.8 against the helper's).
. "$(dirname "$0")/../lib.sh"

MAN=$PREFIX/share/man
pages=("$MAN/man1/loopfd.1" "$MAN/man3/libloopfd.3" "$MAN/man5/loopfd.conf.5"
       "$MAN/man8/loopfd-helper.8")

# 1. Rendered by man(1) (as a user would) and by groff alone with every
#    warning category on: nothing on stderr.
for p in "${pages[@]}"; do
	[ -f "$p" ] || fail "make install did not install $p"
	LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$p" > "$T/out" 2> "$T/warn" ||
		fail "man -l $p failed: $(cat "$T/warn")"
	[ ! -s "$T/warn" ] || fail "man --warnings on $p: $(cat "$T/warn")"
	[ "$(wc -l < "$T/out")" -gt 20 ] || fail "$p renders to almost nothing"
	groff -ww -z -man "$p" 2> "$T/warn"
	[ ! -s "$T/warn" ] || fail "groff -ww on $p: $(cat "$T/warn")"
	! grep -q '@[A-Z]*@' "$p" || fail "$p has an unsubstituted @PATH@"
done

# Long options a page documents: the tags of one section (.TP items are
# rendered at the 7-column indent; their bodies are indented further).
page_options() {	# PAGE SECTION
	LC_ALL=C.UTF-8 MANWIDTH=200 man -E UTF-8 -l "$1" 2>/dev/null | col -b |
		awk -v s="$2" '/^[A-Z]/ { on = ($0 == s); next }
		               on && /^       -/ { print }' |
		grep -o -- '--[a-z][a-z-]*' | sort -u
}

# 2. loopfd(1) OPTIONS against the option lines of `loopfd --help` (lines
#    that start with an option, not options mentioned in running text).
help=$("$LOOPFD" --help | grep -E '^ +(-[A-Za-z], )?--[a-z]' |
	grep -oE -- '^ +(-[A-Za-z], )?--[a-z][a-z-]*' | grep -o -- '--[a-z-]*' | sort -u)
page=$(page_options "$MAN/man1/loopfd.1" OPTIONS)
[ -n "$help" ] && [ -n "$page" ] || fail "no options found (help: '$help', page: '$page')"
[ "$help" = "$page" ] || fail "loopfd --help and loopfd.1 disagree: $(diff <(echo "$help") <(echo "$page") | grep '^[<>]' | tr '\n' ' ')"

# 3. loopfd-helper(8) MODES against every option in the helper's usage text.
help=$("$HELPER" --help | sed -n '/^usage:/,/^$/p' | grep -o -- '--[a-z][a-z-]*' | sort -u)
page=$(page_options "$MAN/man8/loopfd-helper.8" MODES)
[ -n "$help" ] && [ -n "$page" ] || fail "no helper options found (help: '$help', page: '$page')"
[ "$help" = "$page" ] || fail "loopfd-helper --help and loopfd-helper.8 disagree: $(diff <(echo "$help") <(echo "$page") | grep '^[<>]' | tr '\n' ' ')"
note "4 pages render without warnings; loopfd.1 and loopfd-helper.8 list the --help options: $(echo $page)"
