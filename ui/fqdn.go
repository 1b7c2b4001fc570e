package ui

import "strings"

// External destinations by name. The agent's FQDN cache puts on each flow
// the names the pod resolved its peer's address from (destination_names,
// and source_names on the replies): an endpoint outside the cluster that
// carries one becomes its own node, named by it, in the "outside the
// cluster" box. Without a name it stays in the one world node, which lists
// its addresses. Per-address nodes would grow with every CDN and cloud
// address a pod touches; names are what a person recognizes.

// externalName picks the node name for a world endpoint from its names:
// the least one, so that every flow to an address lands on the same node
// whatever order the cache gave. "" when none is a plausible DNS name.
// A name needs a dot, so it can never be taken for a reserved entity
// ("world", "host") or, lacking a slash, for a namespaced workload.
func externalName(names []string) string {
	best := ""
	for _, n := range names {
		if dnsName(n) && (best == "" || n < best) {
			best = n
		}
	}
	return best
}

// dnsName accepts host names as DNS carries them (letters, digits, '-',
// '_', dots), at most 253 bytes, with a dot inside.
func dnsName(s string) bool {
	if len(s) == 0 || len(s) > 253 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return strings.Contains(s[:len(s)-1], ".")
}
