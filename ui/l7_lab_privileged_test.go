package ui

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPrivilegedBrowserLabL7 runs `loupe lab traffic` on a live lab of the
// demo (HTTP frontend -> api with some 404s and 500s, DNS lookups with
// some NXDOMAIN) and checks in chromium that the real agents' L7 flows
// give those edges their labels on the map, the L7 colours, and the DNS
// edge its queries. TestBrowserL7EdgeLabels is its synthetic version.
func TestPrivilegedBrowserLabL7(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds a lab")
	}
	web := needBrowser(t)
	bin := labBinaries(t)
	tl := uiLab(t, bin, "ul", "-f", filepath.Join("..", "examples", "demo.yaml"))
	st := tl.st
	traffic := exec.Command(filepath.Join(bin, "loupe"), "lab", "--lab-dir", tl.dir, "traffic", "--rate", "20", "--duration", "5m")
	var tout bytes.Buffer
	traffic.Stdout, traffic.Stderr = &tout, &tout
	if err := traffic.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = traffic.Process.Kill(); _ = traffic.Wait() })
	var res map[string]any
	runNode(t, web, "l7map.mjs", map[string]string{
		"LOUPE_UI_URL":        st.UIURL,
		"LOUPE_UI_TIMEOUT_MS": "90000",
		"LOUPE_UI_L7MAP": mustMarshal(t, map[string]any{
			"lab": true, "http": []string{"demo/frontend", "demo/api"}, "dns": []string{"demo/frontend", "demo/dns"},
			"screenshot": screenshotPath(t, "ui-l7map-lab.png"),
		}),
	}, &res)
	if res["ok"] != true {
		t.Fatalf("l7 map check: %v\ntraffic: %s", res, tout.String())
	}
	t.Logf("labels: HTTP %v; DNS %v; colours %v; DNS queries %v; screenshot %v", res["httpLabel"], res["dnsLabel"], res["colors"], res["dnsPanel"], res["screenshot"])
}
