package filters

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Name patterns as Hubble accepts them for node names and FQDNs: lowercase
// DNS characters, with "*" standing for any run of them.

const anyName = `(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)`

func appendNamePattern(sb *strings.Builder, pat string) error {
	pat = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(pat), "."))
	if pat == "" {
		return errors.New("empty pattern")
	}
	if strings.HasSuffix(pat, ".") {
		return errors.New("multiple trailing dots in pattern")
	}
	for _, r := range pat {
		switch {
		case r == '.':
			sb.WriteString(`\.`)
		case r == '*':
			sb.WriteString(`[-.0-9a-z]*`)
		case r == '-' || r == '_' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'z'):
			sb.WriteRune(r)
		default:
			return fmt.Errorf("%q: invalid character in pattern", r)
		}
	}
	return nil
}

func compileFQDNPatterns(pats []string) (*regexp.Regexp, error) {
	var sb strings.Builder
	sb.WriteString(`\A(?:`)
	for i, p := range pats {
		if i > 0 {
			sb.WriteByte('|')
		}
		if err := appendNamePattern(&sb, p); err != nil {
			return nil, err
		}
	}
	sb.WriteString(`)\z`)
	return regexp.Compile(sb.String())
}

// compileNodeNamePatterns accepts "node", "cluster/node", "cluster/" and
// "/node"; node names without a cluster are matched as "default/<name>".
func compileNodeNamePatterns(pats []string) (*regexp.Regexp, error) {
	var sb strings.Builder
	sb.WriteString(`\A(?:`)
	for i, p := range pats {
		if p == "" {
			return nil, errors.New("empty pattern")
		}
		if i > 0 {
			sb.WriteByte('|')
		}
		cluster, node := "", p
		switch parts := strings.Split(p, "/"); len(parts) {
		case 1:
		case 2:
			cluster, node = parts[0], parts[1]
		default:
			return nil, errors.New("too many slashes in pattern")
		}
		for j, part := range []string{cluster, node} {
			if j == 1 {
				sb.WriteByte('/')
			}
			if part == "" {
				sb.WriteString(anyName)
			} else if err := appendNamePattern(&sb, part); err != nil {
				return nil, err
			}
		}
	}
	sb.WriteString(`)\z`)
	return regexp.Compile(sb.String())
}
