package ui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loupe-project/loupe/lab"
)

// demoLab brings up a lab of examples/demo.yaml for the test (down again
// when it ends) and returns its status, the folder of the binaries, the
// lab's folder and its name.
func demoLab(t *testing.T) (st lab.Status, bin, dir, name string) {
	t.Helper()
	bin, dir = labBinaries(t), t.TempDir()
	name = fmt.Sprintf("ut%04x", rand.IntN(0x10000))
	run := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(bin, "loupe"), append([]string{"lab", "--lab-dir", dir}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return out.String(), fmt.Errorf("loupe lab %s: %w\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.String(), nil
	}
	t.Cleanup(func() {
		if _, err := run("down", "--name", name); err != nil {
			t.Errorf("%v", err)
		}
	})
	if _, err := run("up", "--name", name, "-f", filepath.Join("..", "examples", "demo.yaml")); err != nil {
		t.Fatal(err)
	}
	out, err := run("status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if st.UIURL == "" {
		t.Fatalf("lab status without a UI: %s", out)
	}
	return st, bin, dir, name
}

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
	st, bin, dir, _ := demoLab(t)
	traffic := exec.Command(filepath.Join(bin, "loupe"), "lab", "--lab-dir", dir, "traffic", "--rate", "20", "--duration", "5m")
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
