package ui

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// labBinaries returns a directory with loupe, loupe-agent, loupe-cni and
// loupe-relay: $LOUPE_BIN when it has them, else a fresh build of this tree.
func labBinaries(t *testing.T) string {
	t.Helper()
	names := []string{"loupe", "loupe-agent", "loupe-cni", "loupe-relay"}
	if dir := os.Getenv("LOUPE_BIN"); dir != "" {
		ok := true
		for _, b := range names {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				ok = false
			}
		}
		if ok && exec.Command(filepath.Join(dir, "loupe"), "lab", "--help").Run() == nil {
			return dir
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/loupe", "./cmd/loupe-agent", "./cmd/loupe-cni", "./cmd/loupe-relay")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// dbOnlyFromAPI admits only api to db: the demo's frontend -> db requests
// ("bypass" in `loupe lab traffic`) are denied.
const dbOnlyFromAPI = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-allow-api-only, namespace: demo}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{protocol: TCP, port: 5432}]
`

// TestPrivilegedBrowserLab brings up the lab with the demo, a policy that
// denies frontend -> db, and traffic, and checks the relay's UI in chromium.
func TestPrivilegedBrowserLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds a lab")
	}
	web := needBrowser(t)
	bin := labBinaries(t)
	tl := uiLab(t, bin, "ui", "-f", filepath.Join("..", "examples", "demo.yaml"))
	dir, st := tl.dir, tl.st
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(dbOnlyFromAPI), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.run("apply", "-f", policy); err != nil {
		t.Fatal(err)
	}
	if st.RelayAddress == "" {
		t.Fatalf("lab status has no relay: %+v", st)
	}
	// Traffic for the whole check; stopped (by its pid) when the test ends.
	traffic := exec.Command(filepath.Join(bin, "loupe"), "lab", "--lab-dir", dir, "traffic", "--rate", "40", "--duration", "5m")
	var tout bytes.Buffer
	traffic.Stdout, traffic.Stderr = &tout, &tout
	if err := traffic.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = traffic.Process.Kill()
		_ = traffic.Wait()
	})

	shot := screenshotPath(t, "ui-lab-demo.png")
	var res checkResult
	runNode(t, web, "check.mjs", map[string]string{
		"LOUPE_UI_URL":        st.UIURL,
		"LOUPE_UI_TIMEOUT_MS": "60000",
		"LOUPE_UI_CHECK": mustMarshal(t, map[string]any{
			"nodes":      []string{"demo/frontend", "demo/api", "demo/db", "demo/dns"},
			"edge":       []string{"demo/frontend", "demo/api"},
			"dropped":    []string{"demo/frontend", "demo/db"},
			"screenshot": shot,
		}),
	}, &res)
	if !res.OK || len(res.Steps) != 7 {
		t.Fatalf("browser check: %+v\ntraffic: %s", res, tout.String())
	}
	if res.Dropped == nil || res.Dropped.Drops == 0 {
		t.Fatalf("no drops on frontend -> db: %+v", res.Dropped)
	}
	t.Logf("UI %s: %q; frontend -> db dropped %d times, reasons %v, policies %v; %d table rows for %q",
		st.UIURL, res.Connection, res.Dropped.Drops, res.Dropped.Reasons, res.Dropped.Policies, res.TableRows, res.Scope)
	t.Logf("screenshot: %s", res.Screenshot)
	fmt.Println("ui lab screenshot:", res.Screenshot)
}
