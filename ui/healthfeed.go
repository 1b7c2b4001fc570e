package ui

import (
	"context"
	"time"

	respb "github.com/loupe-project/loupe/api/resources/v1"
	secpb "github.com/loupe-project/loupe/api/secevents/v1"
)

// followSecurity keeps one follow stream of the relay's merged security
// events open, from the start of the window, reconnecting with backoff and
// resuming after the last event it saw.
func (s *Server) followSecurity(ctx context.Context) {
	delay := 250 * time.Millisecond
	var last int64
	for ctx.Err() == nil {
		since := time.Now().Add(-s.health.window).UnixNano()
		if last > 0 {
			since = max(since, last+1)
		}
		got, err := s.securityStream(ctx, since, &last)
		if ctx.Err() != nil {
			return
		}
		if got {
			delay = 250 * time.Millisecond
		}
		s.log.Debug("relay security events stream ended; reconnecting", "error", err, "delay", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func (s *Server) securityStream(ctx context.Context, since int64, last *int64) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := s.cfg.SecurityEvents.GetEvents(ctx, &secpb.GetEventsRequest{Follow: true, SinceUnixNano: since})
	if err != nil {
		return false, err
	}
	got := false
	for {
		r, err := st.Recv()
		if err != nil {
			return got, err
		}
		got = true
		*last = max(*last, r.GetTimeUnixNano())
		s.mu.Lock()
		switch x := r.GetResponseTypes().(type) {
		case *secpb.GetEventsResponse_Event:
			s.health.addEvent(x.Event, time.Now())
		case *secpb.GetEventsResponse_LostEvents:
			s.health.lost += x.LostEvents.GetCount()
		}
		s.mu.Unlock()
	}
}

// pollResources asks the relay for every pod's counters each interval;
// the map shows the difference between two answers.
func (s *Server) pollResources(ctx context.Context) {
	t := time.NewTicker(s.cfg.ResourcesInterval)
	defer t.Stop()
	for {
		s.readResources(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) readResources(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(s.cfg.ResourcesInterval, 5*time.Second))
	defer cancel()
	r, err := s.cfg.Resources.GetResources(ctx, &respb.GetResourcesRequest{})
	if err != nil {
		s.log.Debug("relay resources", "error", err)
		return
	}
	s.mu.Lock()
	s.health.setResources(r.GetPods(), time.Now())
	s.mu.Unlock()
}
