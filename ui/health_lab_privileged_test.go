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
	"syscall"
	"testing"
	"time"

	"github.com/loupe-project/loupe/lab"
)

// testLab is a lab a UI test brought up.
type testLab struct {
	run       func(args ...string) (string, error) // loupe lab ARGS in it
	dir, name string
	st        lab.Status // as it was after up
}

// uiLab brings up a lab (loupe lab up --name … upArgs) that is torn down
// when the test ends.
func uiLab(t *testing.T, bin, prefix string, upArgs ...string) testLab {
	t.Helper()
	dir := t.TempDir()
	name := fmt.Sprintf("%s%04x", prefix, rand.IntN(0x10000))
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
	if _, err := run(append([]string{"up", "--name", name}, upArgs...)...); err != nil {
		t.Fatal(err)
	}
	out, err := run("status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st lab.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if st.UIURL == "" {
		t.Fatalf("lab status has no UI: %s", out)
	}
	return testLab{run: run, dir: dir, name: name, st: st}
}

// TestPrivilegedBrowserLabAttack runs examples/attack.sh against the demo
// lab (with examples/security's rules) and checks in chromium that
// demo/frontend, the attacked workload, carries the badge and lists the
// attack's events, and demo/api none. Meanwhile demo/db runs four busy
// loops on this 2-core machine: the edge api -> db must be marked starved
// and db's panel show its run-queue p99.
func TestPrivilegedBrowserLabAttack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds a lab")
	}
	web := needBrowser(t)
	bin := labBinaries(t)
	rules, err := filepath.Abs(filepath.Join("..", "examples", "security"))
	if err != nil {
		t.Fatal(err)
	}
	tl := uiLab(t, bin, "ua", "-f", filepath.Join("..", "examples", "demo.yaml"), "--rules-dir", rules)
	dir, st := tl.dir, tl.st
	loupe := filepath.Join(bin, "loupe")
	// Each background command is its own process group, which the test
	// ends (exec's nsenter and the shell's children with it).
	background := func(args ...string) {
		cmd := exec.Command(loupe, append([]string{"lab", "--lab-dir", dir}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	}
	// The demo's traffic puts the workloads and their edges on the map.
	background("traffic", "--rate", "20", "--duration", "5m")
	// Four busy loops in db until the test ends (at most 3 minutes), at
	// the lowest priority: they wait for each other and for everything
	// else, and do not starve the browser.
	background("exec", "demo/db", "--", "nice", "-n", "19", "sh", "-c", "for i in 1 2 3 4; do timeout 180 sh -c 'while :; do :; done' & done; wait")
	time.Sleep(time.Second) // the agents know their pods

	attack := exec.Command("bash", filepath.Join("..", "examples", "attack.sh"))
	attack.Env = append(os.Environ(), "LOUPE="+loupe, "LAB_DIR="+dir)
	out, err := attack.CombinedOutput()
	if err != nil {
		t.Fatalf("attack.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "exit status 137") {
		t.Errorf("attack.sh: cat /etc/shadow was not killed:\n%s", out)
	}

	shot := screenshotPath(t, "ui-lab-attack.png")
	var res healthResult
	runNode(t, web, "health.mjs", map[string]string{
		"LOUPE_UI_URL":        st.UIURL,
		"LOUPE_UI_TIMEOUT_MS": "40000",
		"LOUPE_UI_HEALTH": mustMarshal(t, map[string]any{
			"attacked": "demo/frontend", "events": 6, "quiet": "demo/api",
			"texts": []string{"Shell in container", "Read sensitive file", "Kill shadow readers in frontend", "(KILL)",
				"/etc/gshadow", "Port or host scan", "DNS pool.minexmr.com", "10.96.0.1:443/tcp", "flows then"},
			"starved":       []string{"demo/api", "demo/db"},
			"resourceTexts": []string{"run queue p99", "starved: waits for a CPU"},
			"screenshot":    shot,
		}),
	}, &res)
	if !res.OK {
		t.Fatalf("health check: %+v\nattack.sh:\n%s", res, out)
	}
	t.Logf("badge %+v (pixel %+v); link %s (%s)", res.Badge, res.BadgePixel, res.URL, res.RangeLabel)
	t.Logf("frontend panel: %s", res.Panel)
	t.Logf("db panel: %s", res.StarvedPanel)
	t.Logf("screenshot: %s", res.Screenshot)
}
