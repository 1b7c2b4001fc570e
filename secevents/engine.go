package secevents

import "sync/atomic"

// Match is what a rule made of an event.
type Match struct {
	Rule   *Rule
	Output string
}

// Engine evaluates events against the current rules. Rules are replaced
// atomically; Match never blocks on a reload.
type Engine struct {
	rules atomic.Pointer[Rules]
}

// NewEngine starts with rs (nil: no rules).
func NewEngine(rs *Rules) *Engine {
	e := &Engine{}
	if rs == nil {
		rs = &Rules{}
	}
	e.rules.Store(rs)
	return e
}

// SetRules replaces the rules.
func (en *Engine) SetRules(rs *Rules) { en.rules.Store(rs) }

// Rules returns the current rules.
func (en *Engine) Rules() *Rules { return en.rules.Load() }

// MatchNetwork returns every enabled network rule that matches a network
// event and has not fired for the same pod and key within RefireAfter:
// each network rule is a detector of its own.
func (en *Engine) MatchNetwork(e *Event, refire *Refire) []Match {
	var out []Match
	for _, r := range en.rules.Load().list {
		if r.Enabled && r.Source == SourceNetwork && r.match(e) && refire.Fire(r, e, e.Time) {
			out = append(out, Match{Rule: r, Output: r.Output(e)})
		}
	}
	return out
}

// Match returns the first enabled rule, in load order, that matches e, as
// Falco does by default (rule_matching: first).
func (en *Engine) Match(e *Event) (Match, bool) {
	rs := en.rules.Load()
	if e.Killed {
		// The kernel killed the process for a kill rule: that rule
		// reports the event, whatever rule comes first.
		for _, r := range rs.KillRules() {
			if r.match(e) {
				return Match{Rule: r, Output: r.Output(e)}, true
			}
		}
	}
	for _, r := range rs.list {
		if r.Enabled && r.Source != SourceNetwork && r.match(e) {
			return Match{Rule: r, Output: r.Output(e)}, true
		}
	}
	return Match{}, false
}
