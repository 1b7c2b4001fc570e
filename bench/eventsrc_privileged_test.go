package bench

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestPrivilegedEventSource drives the event source into a real lab agent
// and checks that every event it wrote reached the agent's reader and
// became a flow or a counted loss; an idle period with no source makes no
// flows, so the figures are the source's.
func TestPrivilegedEventSource(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cfg := privilegedConfig(t, "les")
	t.Cleanup(func() {
		downLab(cfg)
		if left := listNetnsPrefix(cfg.LabName + "-"); len(left) > 0 {
			t.Errorf("netns left after the test: %v", left)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bl, err := upLab(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, pid, url, err := eventRig(bl)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	idle, err := readAgent(ctx, url, pid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	before, err := readAgent(ctx, url, pid)
	if err != nil {
		t.Fatal(err)
	}
	if d := before.flows - idle.flows; d > 10 {
		t.Fatalf("%.0f flows while idle: the lab is not quiet enough to attribute flows", d)
	}
	r, err := measureEvents(ctx, src, url, pid, 20000, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	flows := r.after.flows - r.before.flows
	lost := r.after.lost - r.before.lost
	if r.accounted < 0.999 || r.accounted > 1.01 {
		t.Fatalf("%.0f flows + %.0f lost: %.4f of the events written (want every event a flow or a counted loss)", flows, lost, r.accounted)
	}
	if flows < 1000 {
		t.Fatalf("only %.0f flows (%.0f lost) from the event source", flows, lost)
	}
}
