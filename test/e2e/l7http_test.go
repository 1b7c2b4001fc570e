package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/internal/testtools"
	"github.com/loupe-project/loupe/lab"
)

// httpClientIn is a keep-alive client whose connections are made in pod
// src's netns, at most conns of them.
func (c *cluster) httpClientIn(src lab.PodStatus, conns int) *http.Client {
	path := c.netnsPath(src)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost: conns, MaxIdleConnsPerHost: conns,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var nc net.Conn
			err := ns.WithNetNSPath(path, func(ns.NetNS) error {
				var err error
				nc, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, "tcp4", addr)
				return err
			})
			return nc, err
		},
	}}
}

func get(t *testing.T, hc *http.Client, url string) int {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestPrivilegedL7HTTP follows keep-alive HTTP between real pods to the
// stock hubble CLI through the relay, with its L7 filters.
func TestPrivilegedL7HTTP(t *testing.T) {
	c := needLab(t)
	bin := testtools.Hubble(t, "hubble")
	client, api := c.pods["demo/frontend"], c.pods["demo/api"]
	if client.IP == "" || api.IP == "" {
		t.Fatalf("the demo's frontend and api pods are missing")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tag := hex.EncodeToString(b)
	base := "http://" + net.JoinHostPort(api.IP, "8080")
	hc := c.httpClientIn(client, 10)
	defer hc.CloseIdleConnections()
	if code := get(t, hc, base+"/status/500?t="+tag); code != 500 {
		t.Fatalf("/status/500: %d", code)
	}
	if code := get(t, hc, base+"/delay/200?t="+tag); code != 200 {
		t.Fatalf("/delay/200: %d", code)
	}
	// Pairing: many keep-alive requests over 10 connections.
	const workers, each = 10, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				get(t, hc, fmt.Sprintf("%s/pair-%s/%d/%d", base, tag, w, i))
			}
		}()
	}
	wg.Wait()

	relay := c.status.RelayAddress
	// lost is what the last observe reported lost (the datapath's ring, or
	// a history writer the flow ring lapped): a machine too busy for the
	// agent loses flows, but counts them.
	var lost uint64
	observe := func(args ...string) []*flowpb.Flow {
		out, errs, err := hubble(t, bin, append([]string{"observe", "--server", relay, "--since", "2m", "-o", "json"}, args...)...)
		if err != nil {
			t.Fatalf("hubble observe %v: %v\n%s", args, err, errs)
		}
		res := parseFlows(t, out)
		lost = 0
		for _, r := range res {
			lost += r.GetLostEvents().GetNumEventsLost()
		}
		return flowsOf(res)
	}
	// The query string is dropped: the tag is not in any URL.
	var errFlows []*flowpb.Flow
	if err := poll(15*time.Second, 500*time.Millisecond, func() error {
		errFlows = observe("--protocol", "http", "--http-status", "500", "--http-path", "/status/500", "--http-method", "GET", "--from-pod", "demo/api")
		if len(errFlows) == 0 {
			all := observe("--protocol", "http")
			return fmt.Errorf("no HTTP 500 flow; %d HTTP flows:\n%s", len(all), describeAll(all[:min(len(all), 6)]))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, f := range errFlows {
		h := f.GetL7().GetHttp()
		if h.GetCode() != 500 || h.GetMethod() != "GET" || !strings.HasSuffix(h.GetUrl(), "/status/500") || strings.Contains(h.GetUrl(), tag) ||
			f.GetL7().GetType() != flowpb.L7FlowType_RESPONSE || f.GetEventType().GetType() != 129 {
			t.Errorf("500 flow: %v", f)
		}
	}
	var pairs, reqs int
	var delay *flowpb.Flow
	if err := poll(15*time.Second, time.Second, func() error {
		pairs, reqs, delay = 0, 0, nil
		for _, f := range observe("--protocol", "http", "--type", "l7", "--from-pod", "demo/api", "--to-pod", "demo/frontend") {
			h := f.GetL7().GetHttp()
			if strings.Contains(h.GetUrl(), "/pair-"+tag+"/") && h.GetCode() == 200 && f.GetL7().GetLatencyNs() > 0 {
				pairs++
			}
			if strings.HasSuffix(h.GetUrl(), "/delay/200") && h.GetCode() == 200 {
				delay = f
			}
		}
		for _, f := range observe("--protocol", "http", "--http-method", "GET", "--from-pod", "demo/frontend", "--to-pod", "demo/api") {
			if f.GetL7().GetType() == flowpb.L7FlowType_REQUEST && strings.Contains(f.GetL7().GetHttp().GetUrl(), "/pair-"+tag+"/") {
				reqs++
			}
		}
		// Pairing is the agent's: at least 99.9 % of the requests get their
		// response. Flows missing from the stream must be counted lost.
		n := uint64(workers * each)
		if uint64(reqs)+lost < n || (uint64(pairs)+lost)*1000 < n*999 {
			return fmt.Errorf("%d of %d requests seen (%d flows counted lost), %d responses paired", reqs, n, lost, pairs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if lost > 0 {
		t.Logf("the stream counted %d flows lost (a busy machine): %d of %d requests seen", lost, reqs, workers*each)
	} else if reqs != workers*each {
		t.Errorf("%d request flows, want %d: each message is one flow", reqs, workers*each)
	}
	if delay == nil {
		t.Fatal("no response flow of /delay/200")
	}
	if l := time.Duration(delay.GetL7().GetLatencyNs()); l < 200*time.Millisecond || l >= 400*time.Millisecond {
		t.Errorf("/delay/200 latency %s", l)
	}
	t.Logf("%d requests, %d responses paired; /delay/200 took %s", reqs, pairs, time.Duration(delay.GetL7().GetLatencyNs()))
}
