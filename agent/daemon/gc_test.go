package daemon

import (
	"log/slog"
	"runtime/debug"
	"testing"
)

func TestTuneGCSetsDefaultUnlessGOGCIsSet(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "")
	tuneGC(slog.New(slog.DiscardHandler))
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Fatalf("GOGC unset: gc percent %d, want %d", got, defaultGCPercent)
	}

	t.Setenv("GOGC", "150") // the runtime read it at start; tuneGC must not override
	tuneGC(slog.New(slog.DiscardHandler))
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC set: gc percent %d, want it left at 100", got)
	}
}
