package cni

import (
	"log/slog"
	"time"
)

// phases times the steps of one command, so that the log line that ends
// it says where its milliseconds went (issue #25 budgets ADD and DEL by
// phase). The cost is a clock read per step.
type phases struct {
	last  time.Time
	attrs []any
}

func startPhases() *phases { return &phases{last: time.Now()} }

// mark ends the step called name.
func (p *phases) mark(name string) {
	now := time.Now()
	p.attrs = append(p.attrs, slog.Float64(name+"_ms", float64(now.Sub(p.last).Microseconds())/1000))
	p.last = now
}

// group is the steps so far as one log attribute.
func (p *phases) group() slog.Attr { return slog.Group("phases", p.attrs...) }
