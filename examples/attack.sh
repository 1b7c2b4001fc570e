#!/usr/bin/env bash
# examples/attack.sh: performs the behaviour of each default security rule,
# and of the demo's kill rule, against the demo lab (make demo, which loads
# examples/security as --rules-dir). Watch what loupe makes of it with
#
#   bin/loupe events --server RELAY -f
#
# Every step runs in a pod with `loupe lab exec` (the pod's network
# namespace, the host's files and programs). Environment:
#   LOUPE     the loupe binary (default: bin/loupe next to this folder)
#   LAB_DIR   the lab's folder, for a lab not in the default one
#   POD       the attacking pod (default demo/frontend)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
loupe=${LOUPE:-$here/../bin/loupe}
lab=("$loupe" lab ${LAB_DIR:+--lab-dir "$LAB_DIR"})
pod=${POD:-demo/frontend}
ex() { "${lab[@]}" exec "$pod" -- "$@"; }
step() { printf '\n== %s\n' "$*"; }

status=$("${lab[@]}" status -o json) || { echo "no lab: run make demo first" >&2; exit 1; }
pod_ip() { grep -o "\"namespace\":\"$1\",\"name\":\"$2\",\"node\":\"[^\"]*\",\"ip\":\"[^\"]*\"" <<<"$status" | sed 's/.*"ip":"\([^"]*\)"/\1/'; }
db=$(pod_ip demo db)
dns=$(pod_ip demo dns)
# An address of the lab's underlay that nothing holds: outside the cluster
# (reserved:world), and SYNs to it never leave the lab.
node=$(grep -o '"address":"[^"]*"' <<<"$status" | head -1 | sed 's/.*:"\([^"]*\)"/\1/')
world=${node%.*}.250
[ -n "$db" ] && [ -n "$dns" ] && [ -n "$node" ] || { echo "the demo's pods are not in the lab" >&2; exit 1; }

step "Shell in container: sh -c in $pod"
ex sh -c 'echo a shell in a container'

step "Read sensitive file: cat /etc/gshadow in $pod"
ex sh -c 'cat /etc/gshadow >/dev/null' && echo read

step "Kill shadow readers in frontend: cat /etc/shadow in $pod (exits 137, prints nothing)"
ex cat /etc/shadow; echo "exit status $?"

step "Write below binary dir: open /usr/local/bin/loupe-attack for writing (refused by permissions or not, the open is seen)"
ex sh -c 'touch /usr/local/bin/loupe-attack-$$ 2>/dev/null && rm -f /usr/local/bin/loupe-attack-$$; true'

step "Package management process launched in container: dpkg --version in $pod"
ex sh -c 'dpkg --version >/dev/null 2>&1 || apt-get --version >/dev/null 2>&1 || true'

step "New outbound destination: TCP to $world:443 (outside the cluster)"
ex timeout 1 bash -c "echo >/dev/tcp/$world/443" 2>/dev/null; true

step "Port or host scan: 25 ports of demo/db ($db) within seconds"
ex bash -c "for p in \$(seq 1001 1025); do timeout 0.3 bash -c \"echo >/dev/tcp/$db/\$p\" 2>/dev/null; done"; true

step "DNS query for a suspicious domain: pool.minexmr.com to demo/dns ($dns)"
# A DNS query, written by hand (no dig needed): id, flags RD, one question A IN.
ex timeout 1 bash -c "exec 3<>/dev/udp/$dns/53; printf '\\x13\\x37\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x04pool\\x07minexmr\\x03com\\x00\\x00\\x01\\x00\\x01' >&3; head -c 1 <&3 >/dev/null" 2>/dev/null; true

step "Unexpected connection to the API server: TCP to 10.96.0.1:443 (demo-rules.yaml names it)"
ex timeout 1 bash -c "echo >/dev/tcp/10.96.0.1/443" 2>/dev/null; true

printf '\ndone: bin/loupe events --server RELAY --since 5m shows each rule\n'
