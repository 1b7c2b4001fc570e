package ui

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/loupe-project/loupe/lab"
)

// TestPrivilegedBrowserLabTraffic runs a bulk transfer demo/frontend ->
// demo/db on a live lab, next to the demo's light traffic, and checks in
// chromium that the map draws the bulk edge wider than frontend -> api.
func TestPrivilegedBrowserLabTraffic(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds a lab")
	}
	web := needBrowser(t)
	st, bin, dir, name := demoLab(t)
	pods := map[string]lab.PodStatus{}
	for _, p := range st.Pods {
		pods[p.Namespace+"/"+p.Name] = p
	}
	fe, db := pods["demo/frontend"], pods["demo/db"]
	if fe.IP == "" || db.IP == "" {
		t.Fatalf("lab status: %+v", st)
	}
	netns := func(p lab.PodStatus) string { return filepath.Join("/run/netns", name+"-"+p.Namespace+"."+p.Name) }

	// db discards what it gets on port 7073; frontend sends until the test ends.
	var ln net.Listener
	var err error
	if err := ns.WithNetNSPath(netns(db), func(ns.NetNS) error {
		ln, err = net.Listen("tcp4", net.JoinHostPort(db.IP, "7073"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 1<<20)
		for ctx.Err() == nil {
			var c net.Conn
			_ = ns.WithNetNSPath(netns(fe), func(ns.NetNS) error {
				c, err = net.Dial("tcp4", net.JoinHostPort(db.IP, strconv.Itoa(7073)))
				return err
			})
			if c == nil {
				return
			}
			// 20 MB a connection, so FIN flows keep reporting totals.
			for i := 0; i < 20 && ctx.Err() == nil; i++ {
				if _, err := c.Write(buf); err != nil {
					break
				}
			}
			c.Close()
		}
	}()
	traffic := exec.Command(filepath.Join(bin, "loupe"), "lab", "--lab-dir", dir, "traffic", "--rate", "5", "--duration", "5m")
	var tout bytes.Buffer
	traffic.Stdout, traffic.Stderr = &tout, &tout
	if err := traffic.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = traffic.Process.Kill(); _ = traffic.Wait() })

	var res trafficResult
	runNode(t, web, "traffic.mjs", map[string]string{
		"LOUPE_UI_URL":        st.UIURL,
		"LOUPE_UI_TIMEOUT_MS": "60000",
		"LOUPE_UI_TRAFFIC":    mustMarshal(t, map[string]any{"bulk": []string{"demo/frontend", "demo/db"}, "idle": []string{"demo/frontend", "demo/api"}}),
	}, &res)
	if !res.OK {
		t.Fatalf("traffic check: %+v\ntraffic: %s", res, tout.String())
	}
	t.Logf("bulk %.0f B/s, width %.1f, colour %s (p99 %.0f µs); idle width %.1f; url %s", res.Bulk.Traffic.BytesPerSec, res.Bulk.Drawn.Width,
		res.Bulk.Drawn.Color, res.Bulk.Traffic.P99, res.Idle.Drawn.Width, res.URL)
	t.Logf("panel: %s", res.Panel)
}
