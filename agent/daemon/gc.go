package daemon

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// defaultGCPercent is the agent's GOGC when its environment sets none.
//
// The flow ring keeps its 65,535 flows alive, each a graph of pointers,
// and every collection marks all of them again. At Go's default of 100 a
// collection comes every time the heap grows by the ring's size, and on
// the events benchmark the collector took a quarter of the agent's CPU.
// At 200 the agent's CPU per flow went from 8.4 µs to 5.8 µs (lab,
// profiled round at 200k events/s offered) for about 100 MB more RSS
// under pressure (537 MB against 440). GOGC and GOMEMLIMIT in the
// environment still win, for nodes that would trade the other way.
const defaultGCPercent = 200

// tuneGC sets the collector's target unless GOGC is set.
func tuneGC(log *slog.Logger) {
	if os.Getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(defaultGCPercent)
	log.Debug("garbage collector target", "gc_percent", defaultGCPercent)
}
