#!/usr/bin/env bash
# make demo: a two-node lab with the demo application, live traffic, and
# hints for what to run next. Stays up until Ctrl-C, then tears the lab down.
set -euo pipefail
cd "$(dirname "$0")/.."
loupe=$PWD/bin/loupe

down() {
	trap - EXIT INT TERM
	echo; echo "tearing the lab down..."
	[ -n "${traffic_pid:-}" ] && kill "$traffic_pid" 2>/dev/null || true
	"$loupe" lab down
}
trap down EXIT INT TERM

"$loupe" lab up --nodes 2 -f examples/demo.yaml --rules-dir "$PWD/examples/security"
"$loupe" lab traffic --rate 20 --duration 8760h >/dev/null 2>&1 &
traffic_pid=$!

"$loupe" lab status
status=$("$loupe" lab status -o json)
field() { grep -o "\"$1\": *\"[^\"]*\"" <<<"$status" | head -1 | sed 's/.*: *"\(.*\)"/\1/'; }
relay=$(field relayAddress)
ui=$(field uiURL)
observer=$(field observerAddress)
server=${relay:-$observer}
cat <<MSG

loupe lab is up, with traffic flowing. Try, in another terminal:

  bin/loupe observe --server $server --last 20
  bin/loupe observe --server $server -f --verdict DROPPED
  bin/loupe status --server $server
  bin/loupe lab probe --from demo/frontend --to demo/api --port 8080 --protocol TCP
  bin/loupe events --server $server -f        (security events; then, elsewhere:)
  examples/attack.sh                          (each default rule's behaviour, from demo/frontend)
${ui:+  open $ui  (the service map)
}
Ctrl-C stops the demo and removes the lab.
MSG
while :; do sleep 3600; done
