package secevents

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultRulesName is the default rules' name in errors and events.
const DefaultRulesName = "loupe-default-rules.yaml"

//go:embed rules/default.yaml
var defaultRules []byte

// DefaultRules returns the rules that ship with loupe.
func DefaultRules() Source { return Source{Name: DefaultRulesName, Data: defaultRules} }

// ReadDir reads the rules files of dir (*.yaml and *.yml, in name order;
// others are skipped). A file that cannot be read is an error; the others
// are still returned.
func ReadDir(dir string) ([]Source, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("rules dir: %w", err)
	}
	var out []Source
	var errs []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		p := filepath.Join(dir, n)
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out = append(out, Source{Name: p, Data: b})
	}
	slices.SortFunc(out, func(a, b Source) int { return strings.Compare(a.Name, b.Name) })
	if len(errs) > 0 {
		return out, fmt.Errorf("rules dir: %s", strings.Join(errs, "; "))
	}
	return out, nil
}
