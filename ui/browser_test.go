package ui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/relay/relaytest"
)

// The browser tests drive Debian's chromium with playwright-core from
// ui/web/node_modules (cd ui/web && npm ci). They skip when either is
// missing, unless LOUPE_REQUIRE_BROWSER=1 (CI), where that is a failure.
func needBrowser(tb testing.TB) string {
	tb.Helper()
	web, err := filepath.Abs("web")
	if err != nil {
		tb.Fatal(err)
	}
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	var missing string
	if _, err := exec.LookPath("node"); err != nil {
		missing = "node"
	} else if _, err := os.Stat(chromium); err != nil {
		missing = chromium + " (apt-get install chromium)"
	} else if _, err := os.Stat(filepath.Join(web, "node_modules", "playwright-core")); err != nil {
		missing = "playwright-core (cd ui/web && npm ci)"
	}
	if missing != "" {
		if os.Getenv("LOUPE_REQUIRE_BROWSER") == "1" {
			tb.Fatalf("browser test needs %s", missing)
		}
		tb.Skipf("browser test needs %s", missing)
	}
	return web
}

// runNode runs a script of ui/web/test and decodes the JSON line it prints.
func runNode(tb testing.TB, web, script string, env map[string]string, out any) {
	tb.Helper()
	cmd := exec.Command("node", filepath.Join(web, "test", script))
	cmd.Dir = web
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		tb.Fatalf("%s: %v\nstdout: %s\nstderr: %s", script, err, stdout.String(), stderr.String())
	}
	if err := json.Unmarshal(bytes.TrimSpace(lastLine(stdout.Bytes())), out); err != nil {
		tb.Fatalf("%s: decode %q: %v (stderr %s)", script, stdout.String(), err, stderr.String())
	}
}

func lastLine(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

// checkResult is what web/test/check.mjs reports.
type checkResult struct {
	OK         bool     `json:"ok"`
	Error      string   `json:"error"`
	Steps      []string `json:"steps"`
	Connection string   `json:"connection"`
	Dropped    *struct {
		Drops    int      `json:"drops"`
		Reasons  []string `json:"reasons"`
		Policies []string `json:"policies"`
	} `json:"dropped"`
	DroppedPixels struct{ Red, Other int } `json:"droppedPixels"`
	TableRows     int                      `json:"tableRows"`
	Scope         string                   `json:"scope"`
	URL           string                   `json:"url"`
	Screenshot    string                   `json:"screenshot"`
}

// screenshotPath is where a browser test saves its screenshot: bench/out at
// the repository root when it exists, else the test's temporary folder.
func screenshotPath(tb testing.TB, name string) string {
	if dir, err := filepath.Abs(filepath.Join("..", "bench", "out")); err == nil {
		if err := os.MkdirAll(dir, 0o755); err == nil {
			return filepath.Join(dir, name)
		}
	}
	return filepath.Join(tb.TempDir(), name)
}

// demoFlows is the demo application's traffic as the agents report it:
// frontend -> api and api -> db allowed, frontend -> db denied by policy,
// everyone -> dns, plus replies.
func demoFlows(now time.Time) []*flowpb.Flow {
	fe := pod("demo", "frontend", "", "k8s:app=frontend", "k8s:tier=web")
	api := pod("demo", "api", "", "k8s:app=api", "k8s:tier=backend")
	db := pod("demo", "db", "", "k8s:app=db", "k8s:tier=data")
	dns := pod("demo", "dns", "", "k8s:app=dns")
	var out []*flowpb.Flow
	add := func(f *flowpb.Flow) {
		f.Time = timestampOf(now.Add(time.Duration(len(out)) * time.Millisecond))
		out = append(out, f)
	}
	for i := range 30 {
		req := tcpFlow(fe, api, uint32(40000+i), 8080, flowpb.Verdict_FORWARDED, i)
		add(req)
		add(reply(req))
		add(tcpFlow(api, db, uint32(41000+i), 5432, flowpb.Verdict_FORWARDED, i))
		d := tcpFlow(fe, db, uint32(42000+i), 5432, flowpb.Verdict_DROPPED, i)
		d.DropReasonDesc, d.DropReason = flowpb.DropReason_POLICY_DENIED, 133
		d.EventType = &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 133}
		d.IngressDeniedBy = []*flowpb.Policy{{Name: "db-allow-api-only", Namespace: "demo", Kind: "NetworkPolicy"}}
		d.Summary = "TCP Flags: SYN"
		add(d)
		u := tcpFlow(fe, dns, uint32(43000+i), 53, flowpb.Verdict_FORWARDED, i)
		u.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: uint32(43000 + i), DestinationPort: 53}}}
		add(u)
	}
	return out
}

// TestBrowserServiceMap checks the UI in chromium against the relay serving
// the demo's traffic from fake agents (the lab version is
// TestPrivilegedBrowserLab).
func TestBrowserServiceMap(t *testing.T) {
	web := needBrowser(t)
	a, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	a.Add(demoFlows(time.Now().Add(-time.Second))...)
	_, addr := startUI(t, startRelay(t, a))
	shot := screenshotPath(t, "ui-demo-synthetic.png")
	var res checkResult
	runNode(t, web, "check.mjs", map[string]string{
		"LOUPE_UI_URL": "http://" + addr + "/",
		"LOUPE_UI_CHECK": mustMarshal(t, map[string]any{
			"nodes":      []string{"demo/frontend", "demo/api", "demo/db", "demo/dns"},
			"edge":       []string{"demo/frontend", "demo/api"},
			"dropped":    []string{"demo/frontend", "demo/db"},
			"screenshot": shot,
		}),
	}, &res)
	if !res.OK || len(res.Steps) != 7 {
		t.Fatalf("browser check: %+v", res)
	}
	if res.Dropped == nil || res.Dropped.Drops != 30 || fmt.Sprint(res.Dropped.Reasons) != "[POLICY_DENIED]" ||
		fmt.Sprint(res.Dropped.Policies) != "[demo/db-allow-api-only]" {
		t.Fatalf("dropped edge as the page holds it: %+v", res.Dropped)
	}
	t.Logf("connection %q, dropped edge pixels %+v, %d table rows for %q", res.Connection, res.DroppedPixels, res.TableRows, res.Scope)
	t.Logf("screenshot: %s", res.Screenshot)
	fmt.Println("ui screenshot:", res.Screenshot)
}

func mustMarshal(tb testing.TB, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
