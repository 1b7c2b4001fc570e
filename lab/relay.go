package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/loupe-project/loupe/contract"
)

const (
	// RelayPort is where the lab's loupe-relay serves the cluster-wide
	// Observer API, on the bridge address.
	RelayPort = contract.RelayPort
	// UIPort is where the relay serves the web UI, on the bridge address.
	UIPort            = 12000
	relayReadyTimeout = 20 * time.Second
)

func (l *Lab) RelayLog() string     { return l.path("relay.log") }
func (l *Lab) RelayPIDFile() string { return l.path("relay.pid") }

// relayArgs is the lab relay's command line: every node's agent as a static
// peer, both listeners on the bridge address (reachable from the root netns
// and from every node).
func (l *Lab) relayArgs(bin string) []string {
	br := l.BridgeIP()
	args := []string{bin, "--lab",
		"--insecure-listen", netip.AddrPortFrom(br, RelayPort).String(),
		"--ui-listen", netip.AddrPortFrom(br, UIPort).String(),
	}
	for _, n := range l.Nodes {
		args = append(args, "--peer", n.ObserverAddress())
	}
	return args
}

// relayPID returns the pid of the lab's running relay, or 0.
func (l *Lab) relayPID() int {
	pid := pidFromFile(l.RelayPIDFile(), "--lab")
	if pid == 0 || filepath.Base(firstArg(cmdline(pid))) != "loupe-relay" {
		return 0
	}
	return pid
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// RestartRelay restarts the lab's relay with extra arguments (the bench's
// --pprof-listen), or with none to restore the lab's own command line.
func (l *Lab) RestartRelay(ctx context.Context, bin string, extra ...string) error {
	return l.startRelay(ctx, bin, extra...)
}

// startRelay starts the lab's relay and UI, or restarts it when the nodes
// (or the extra arguments) changed, waits until both answer, and records
// their addresses.
func (l *Lab) startRelay(ctx context.Context, bin string, extra ...string) error {
	want := append(l.relayArgs(bin), extra...)
	if pid := l.relayPID(); pid != 0 {
		if slices.Equal(cmdline(pid), want) {
			return l.recordRelay()
		}
		stopPIDs([]int{pid}, 5*time.Second)
	}
	d := detached{argv: want, logFile: l.RelayLog(), pidFile: l.RelayPIDFile()}
	_, done, err := d.start()
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, relayReadyTimeout)
	defer cancel()
	relayAddr := netip.AddrPortFrom(l.BridgeIP(), RelayPort).String()
	uiURL := l.uiURL()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		last := dialOK(relayAddr)
		if last == nil {
			last = httpOK(ctx, uiURL)
		}
		if last == nil {
			return l.recordRelay()
		}
		select {
		case <-done:
			return fmt.Errorf("relay exited; its log (%s) ends with:\n%s", l.RelayLog(), tail(l.RelayLog(), 2000))
		case <-ctx.Done():
			return fmt.Errorf("relay not serving within %s (%v); log %s", relayReadyTimeout, last, l.RelayLog())
		case <-tick.C:
		}
	}
}

func (l *Lab) uiURL() string {
	return "http://" + netip.AddrPortFrom(l.BridgeIP(), UIPort).String() + "/"
}

func (l *Lab) recordRelay() error {
	l.RelayAddress = netip.AddrPortFrom(l.BridgeIP(), RelayPort).String()
	l.UIURL = l.uiURL()
	return l.Save()
}

// stopRelay stops the lab's relay, if it runs.
func (l *Lab) stopRelay() {
	if pid := l.relayPID(); pid != 0 {
		stopPIDs([]int{pid}, 5*time.Second)
	}
}

func dialOK(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
