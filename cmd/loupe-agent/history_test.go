package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestHistoryFlags(t *testing.T) {
	parse := func(args ...string) *historyFlags {
		var h historyFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		h.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &h
	}
	dir := t.TempDir()
	// On by default, in the state dir, private.
	s, err := parse().open(dir, nil)
	if err != nil || s == nil {
		t.Fatalf("default: %v %v", s, err)
	}
	s.Close()
	st, err := os.Stat(filepath.Join(dir, historyDirName))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("history dir: %v %v", st, err)
	}
	for _, args := range [][]string{{"--history-max-bytes=0"}, {"--history-retention=0"}} {
		if s, err := parse(args...).open(t.TempDir(), nil); s != nil || err != nil {
			t.Errorf("%v: want history off, got %v %v", args, s, err)
		}
	}
	if s, err := parse("--history-max-bytes=500Mi", "--history-retention=2h").open(t.TempDir(), nil); s == nil || err != nil {
		t.Errorf("500Mi: %v", err)
	} else {
		s.Close()
	}
	for _, bad := range []string{"lots", "-1Gi"} {
		if _, err := parse("--history-max-bytes="+bad).open(t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "--history-max-bytes") {
			t.Errorf("%s: want an error naming the flag, got %v", bad, err)
		}
	}
}
