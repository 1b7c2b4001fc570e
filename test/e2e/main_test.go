// Package e2e runs loupe end to end on a lab: real agents on three nodes, the
// lab's loupe-relay, the loupe CLI, and the stock hubble and hubble-relay
// binaries built by test/tools/build.sh. One lab serves the whole package: it
// comes up once in TestMain and goes down at the end, also when a test fails,
// panics or the binary is interrupted.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loupe-project/loupe/lab"
)

// cluster is the package's shared lab.
type cluster struct {
	bin    string // holds loupe, loupe-agent, loupe-cni, loupe-relay
	dir    string // the lab dir
	name   string
	status lab.Status
	pods   map[string]lab.PodStatus // "ns/name"
	nodes  map[string]lab.NodeStatus

	mu       sync.Mutex
	extraLog map[string]string // name -> file, shown with the lab's logs on failure
}

var (
	theLab   *cluster
	setupErr error
)

const stateRoot = "loupe-e2e-" // prefix of the lab dirs under os.TempDir

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run() // every test skips
	}
	start := time.Now()
	c, err := setUp()
	if c != nil {
		var once sync.Once
		down := func() { once.Do(func() { c.tearDown() }) }
		defer down()
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		go func() {
			<-sig
			fmt.Fprintln(os.Stderr, "e2e: interrupted, removing the lab")
			down()
			os.Exit(1)
		}()
	}
	if err != nil {
		setupErr = err
		if c != nil {
			setupErr = fmt.Errorf("%w\n%s", err, c.logs())
		}
	} else {
		theLab = c
		fmt.Fprintf(os.Stderr, "e2e: lab %s up in %s (%s)\n", c.name, time.Since(start).Round(time.Millisecond), c.dir)
	}
	return m.Run()
}

// setUp builds the binaries and brings up a 3-node lab with the netpol model
// and the demo. A non-nil cluster must be torn down even with an error.
func setUp() (*cluster, error) {
	bin, err := binaries()
	if err != nil {
		return nil, err
	}
	reapStale(filepath.Join(bin, "loupe"))
	dir, err := os.MkdirTemp("", stateRoot)
	if err != nil {
		return nil, fmt.Errorf("lab dir: %w", err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	c := &cluster{bin: bin, dir: dir, name: "e" + hex.EncodeToString(b), extraLog: map[string]string{}}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return c, err
	}
	c.guard()
	root, err := moduleRoot()
	if err != nil {
		return c, err
	}
	out, errs, code := c.lab("up", "--name", c.name, "--nodes", "3",
		"-f", filepath.Join(root, "examples", "netpol-model.yaml"),
		"-f", filepath.Join(root, "examples", "demo.yaml"))
	if code != 0 {
		return c, fmt.Errorf("loupe lab up: exit %d\n%s\n%s", code, out, errs)
	}
	if err := c.refresh(); err != nil {
		return c, err
	}
	if len(c.status.Nodes) != 3 || len(c.status.Pods) != 13 || c.status.RelayAddress == "" {
		return c, fmt.Errorf("lab status: %d nodes, %d pods, relay %q; want 3, 13 and a relay", len(c.status.Nodes), len(c.status.Pods), c.status.RelayAddress)
	}
	return c, nil
}

// refresh reads `loupe lab status -o json`.
func (c *cluster) refresh() error {
	out, errs, code := c.lab("status", "-o", "json")
	if code != 0 {
		return fmt.Errorf("loupe lab status: exit %d: %s", code, errs)
	}
	var st lab.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return fmt.Errorf("lab status json: %w", err)
	}
	c.status = st
	c.pods = map[string]lab.PodStatus{}
	for _, p := range st.Pods {
		c.pods[p.Namespace+"/"+p.Name] = p
	}
	c.nodes = map[string]lab.NodeStatus{}
	for _, n := range st.Nodes {
		c.nodes[n.Name] = n
	}
	return nil
}

func (c *cluster) tearDown() {
	// down is idempotent; a second try covers a netlink dump that another
	// process interrupted (the lab reports it as an error).
	out, errs, code := c.lab("down", "--name", c.name)
	if code != 0 {
		fmt.Fprintf(os.Stderr, "e2e: loupe lab down: exit %d\n%s\n%s\nretrying\n", code, out, errs)
		out, errs, code = c.lab("down", "--name", c.name)
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "e2e: loupe lab down: exit %d\n%s\n%s\n", code, out, errs)
		return // keep the dir: the guard or the next run retries
	}
	os.RemoveAll(c.dir)
	if c.bin != os.Getenv("LOUPE_BIN") {
		os.RemoveAll(c.bin)
	}
}

// guard starts a watcher in its own process group that takes the lab down if
// this process dies without doing it (a panic, a -timeout, a SIGKILL).
func (c *cluster) guard() {
	script := `while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ -e "$2/lab.json" ]; then "$3/loupe" lab --lab-dir "$2" down --name "$4" >/dev/null 2>&1 && rm -rf "$2"; fi`
	cmd := exec.Command("sh", "-c", script, "guard", strconv.Itoa(os.Getpid()), c.dir, c.bin, c.name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err == nil {
		go cmd.Wait()
	}
}

// reapStale takes down labs that earlier runs left behind (their owner is dead).
func reapStale(loupe string) {
	owners, _ := filepath.Glob(filepath.Join(os.TempDir(), stateRoot+"*", "owner.pid"))
	for _, f := range owners {
		b, _ := os.ReadFile(f)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && syscall.Kill(pid, 0) == nil {
			continue
		}
		dir := filepath.Dir(f)
		var st struct{ Name string }
		if raw, err := os.ReadFile(filepath.Join(dir, "lab.json")); err == nil && json.Unmarshal(raw, &st) == nil {
			if out, err := exec.Command(loupe, "lab", "--lab-dir", dir, "down", "--name", st.Name).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: stale lab %s in %s: down: %v\n%s", st.Name, dir, err, out)
				continue
			}
		}
		os.RemoveAll(dir)
	}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the loupe module")
	}
	return filepath.Dir(mod), nil
}

// binaries returns $LOUPE_BIN when it holds every binary, else a fresh build.
func binaries() (string, error) {
	names := []string{"loupe", "loupe-agent", "loupe-cni", "loupe-relay"}
	if dir := os.Getenv("LOUPE_BIN"); dir != "" {
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
				return "", fmt.Errorf("LOUPE_BIN=%s lacks %s", dir, n)
			}
		}
		return dir, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "loupe-e2e-bin")
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", dir + "/"}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return dir, nil
}

// needLab returns the shared lab, skipping when not root and failing when it
// could not be brought up. A failing test prints the lab's logs.
func needLab(t *testing.T) *cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the lab creates network namespaces and loads eBPF programs")
	}
	if setupErr != nil {
		t.Fatalf("lab setup: %v", setupErr)
	}
	c := theLab
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab logs:\n%s", c.logs())
		}
	})
	c.relayConnected(t)
	return c
}

// relayConnected waits until the lab relay is connected to every node: a
// test before may have restarted an agent, and the relay reconnects with
// a backoff; a query in between would miss that node's flows.
func (c *cluster) relayConnected(t *testing.T) {
	t.Helper()
	want := regexp.MustCompile(fmt.Sprintf(`"num_connected_nodes":\s*%d\b`, len(c.status.Nodes)))
	var last string
	if err := poll(30*time.Second, 200*time.Millisecond, func() error {
		out, errs, code := c.loupe("status", "--server", c.status.RelayAddress, "-o", "json")
		last = out + errs
		if code != 0 || !want.MatchString(out) {
			return fmt.Errorf("the lab relay is not connected to all %d nodes", len(c.status.Nodes))
		}
		return nil
	}); err != nil {
		t.Fatalf("%v: loupe status says:\n%s", err, last)
	}
}

// lab runs `loupe lab --lab-dir DIR args...`.
func (c *cluster) lab(args ...string) (string, string, int) {
	return runCmd(filepath.Join(c.bin, "loupe"), append([]string{"lab", "--lab-dir", c.dir}, args...)...)
}

func (c *cluster) mustLab(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := c.lab(args...)
	if code != 0 {
		t.Fatalf("loupe lab %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// loupe runs the loupe CLI.
func (c *cluster) loupe(args ...string) (string, string, int) {
	return runCmd(filepath.Join(c.bin, "loupe"), args...)
}

func (c *cluster) mustLoupe(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := c.loupe(args...)
	if code != 0 {
		t.Fatalf("loupe %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// runCmd runs a command with a minute's timeout; code -1 means it did not run.
func runCmd(bin string, args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		return out.String(), errb.String() + err.Error(), -1
	}
	return out.String(), errb.String(), 0
}

// addLog shows file with the lab's logs when a test fails.
func (c *cluster) addLog(name, file string) {
	c.mu.Lock()
	c.extraLog[name] = file
	c.mu.Unlock()
}

// logs returns the tails of the agents', the relay's and the extra logs.
func (c *cluster) logs() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(c.dir, "nodes", "*", "agent.log"))
	files = append(files, filepath.Join(c.dir, "relay.log"), filepath.Join(c.dir, "cni", "loupe-cni.log"))
	c.mu.Lock()
	var extra []string
	for _, f := range c.extraLog {
		extra = append(extra, f)
	}
	c.mu.Unlock()
	sort.Strings(extra)
	for _, f := range append(files, extra...) {
		fmt.Fprintf(&b, "== %s\n%s\n", f, tail(f, 4000))
	}
	return b.String()
}

func tail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// pod returns the lab's pod "ns/name".
func (c *cluster) pod(t *testing.T, id string) lab.PodStatus {
	t.Helper()
	p, ok := c.pods[id]
	if !ok {
		t.Fatalf("no pod %s in the lab", id)
	}
	return p
}

// agent returns the Observer address of node's agent.
func (c *cluster) agent(t *testing.T, node string) string {
	t.Helper()
	n, ok := c.nodes[node]
	if !ok {
		t.Fatalf("no node %s in the lab", node)
	}
	return n.ObserverAddress
}

// nodeNames returns the lab's node names in order.
func (c *cluster) nodeNames() []string {
	var names []string
	for _, n := range c.status.Nodes {
		names = append(names, n.Name)
	}
	return names
}

// podsOn returns the netpol-model pods (namespaces x, y, z) on node, sorted.
func (c *cluster) podsOn(node string) []lab.PodStatus {
	var ps []lab.PodStatus
	for _, p := range c.status.Pods {
		if p.Node == node && (p.Namespace == "x" || p.Namespace == "y" || p.Namespace == "z") {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Namespace+"/"+ps[i].Name < ps[j].Namespace+"/"+ps[j].Name })
	return ps
}

// hubble runs the stock hubble CLI with a clean environment (no config file,
// no HUBBLE_* variables).
func hubble(t *testing.T, bin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "TERM=dumb"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}
