#!/usr/bin/env bash
# make fuzz: runs every fuzz target of the module, one after another, for
# FUZZTIME each, and prints one line per target. Exits 1 if any target fails.
#
# Targets are found, not listed: every func FuzzXxx(*testing.F) in the test
# files `go list` gives for each package (so build constraints apply, and the
# nested modules under bench/ are not part of the run).
#
#   FUZZTIME      how long each target fuzzes (default 60s; go test's -fuzztime)
#   FUZZPARALLEL  fuzzing workers per target (default 1; go test's -parallel)
#   FUZZMATCH     only the targets whose "pkg FuzzName" matches this ERE
#   GO            the go command (default go)
#
# A failing input is written by go test to <pkg>/testdata/fuzz/<FuzzName>/;
# fix what it found and commit that file, so that plain `go test` replays it.
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZPARALLEL=${FUZZPARALLEL:-1}
FUZZMATCH=${FUZZMATCH:-}

module=$($GO list -m) || exit 1
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# "pkg Name" pairs, pkg as ./dir.
targets=()
while read -r dir files; do
	[ -n "$files" ] || continue
	rel=./${dir#"$PWD"/}
	[ "$dir" = "$PWD" ] && rel=.
	for f in $files; do
		while read -r name; do
			targets+=("$rel $name")
		done < <(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\([A-Za-z_][A-Za-z0-9_]* \*testing\.F\).*/\1/p' "$dir/$f")
	done
done < <($GO list -f '{{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ./...)

if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found in $module" >&2
	exit 1
fi

echo "fuzz: ${#targets[@]} targets in $module, ${FUZZTIME} each, -parallel ${FUZZPARALLEL}"
failed=()
ran=0
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	if [ -n "$FUZZMATCH" ] && ! [[ "$pkg $name" =~ $FUZZMATCH ]]; then
		continue
	fi
	ran=$((ran + 1))
	log="$logs/$ran.log"
	start=$(date +%s)
	$GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -parallel "$FUZZPARALLEL" "$pkg" >"$log" 2>&1
	rc=$?
	secs=$(($(date +%s) - start))
	if [ $rc -eq 0 ]; then
		printf 'ok    %-20s %-28s %4ds\n' "$pkg" "$name" "$secs"
		continue
	fi
	printf 'FAIL  %-20s %-28s %4ds\n' "$pkg" "$name" "$secs"
	failed+=("$pkg $name")
	sed 's/^/      | /' "$log" | tail -n 40
	new=$(git status --porcelain --untracked-files=all -- "$pkg/testdata/fuzz/$name" 2>/dev/null | sed 's/^...//')
	if [ -n "$new" ]; then
		echo "      the failing input, to commit as a seed once fixed:"
		sed 's/^/        /' <<<"$new"
	fi
done

if [ $ran -eq 0 ]; then
	echo "fuzz: no target matches FUZZMATCH=$FUZZMATCH" >&2
	exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $ran targets failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "fuzz: all $ran targets passed"
