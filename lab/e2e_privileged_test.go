package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// labBinaries returns a directory holding loupe (with the lab command),
// loupe-agent, loupe-cni and loupe-relay: $LOUPE_BIN when it has them all,
// else a fresh build of this tree.
func labBinaries(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if dir := os.Getenv("LOUPE_BIN"); dir != "" {
			ok := true
			for _, b := range []string{"loupe", "loupe-agent", "loupe-cni", "loupe-relay"} {
				if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
					ok = false
				}
			}
			if ok && exec.Command(filepath.Join(dir, "loupe"), "lab", "--help").Run() == nil {
				binPath = dir
				return
			}
		}
		dir, err := os.MkdirTemp("", "loupe-lab-bin")
		if err != nil {
			binErr = err
			return
		}
		build := func(args ...string) error {
			cmd := exec.Command("go", append([]string{"build"}, args...)...)
			cmd.Dir = ".."
			if out, err := cmd.CombinedOutput(); err != nil {
				return errors.New("go build " + strings.Join(args, " ") + ": " + err.Error() + "\n" + string(out))
			}
			return nil
		}
		if binErr = build("-o", dir+"/", "./cmd/loupe-agent", "./cmd/loupe-cni", "./cmd/loupe-relay"); binErr != nil {
			return
		}
		binErr = build("-o", filepath.Join(dir, "loupe"), "./lab/internal/labmain")
		binPath = dir
	})
	if binErr != nil {
		t.Fatalf("build binaries: %v", binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" && binPath != os.Getenv("LOUPE_BIN") {
		os.RemoveAll(binPath)
	}
	os.Exit(code)
}

// testLab is one isolated lab: its own dir and name, removed in t.Cleanup.
type testLab struct {
	t    *testing.T
	bin  string
	dir  string
	name string
}

func newTestLab(t *testing.T) *testLab {
	t.Helper()
	requireRoot(t)
	tl := &testLab{t: t, bin: labBinaries(t), dir: t.TempDir(), name: testLabName(t)}
	t.Cleanup(func() {
		if _, _, code := tl.run("down", "--name", tl.name); code != 0 {
			t.Errorf("lab down failed")
		}
		assertClean(t, tl.dir, tl.name)
	})
	return tl
}

// run runs `loupe lab --lab-dir DIR args...` and returns stdout, stderr, exit code.
func (tl *testLab) run(args ...string) (string, string, int) {
	tl.t.Helper()
	cmd := exec.Command(filepath.Join(tl.bin, "loupe"), append([]string{"lab", "--lab-dir", tl.dir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		tl.t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (tl *testLab) mustRun(args ...string) string {
	tl.t.Helper()
	out, errs, code := tl.run(args...)
	if code != 0 {
		tl.t.Fatalf("loupe lab %s: exit %d\nstdout: %s\nstderr: %s\n%s", strings.Join(args, " "), code, out, errs, tl.logs())
	}
	return out
}

// logs returns the agents' log tails, for failure messages.
func (tl *testLab) logs() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(tl.dir, "nodes", "*", "agent.log"))
	for _, f := range files {
		b.WriteString("== " + f + "\n" + tail(f, 3000) + "\n")
	}
	b.WriteString("== cni\n" + tail(filepath.Join(tl.dir, "cni", "loupe-cni.log"), 3000) + "\n")
	return b.String()
}

func (tl *testLab) up(args ...string) {
	tl.t.Helper()
	tl.mustRun(append([]string{"up", "--name", tl.name}, args...)...)
}

func (tl *testLab) status() Status {
	tl.t.Helper()
	var st Status
	if err := json.Unmarshal([]byte(tl.mustRun("status", "-o", "json")), &st); err != nil {
		tl.t.Fatal(err)
	}
	return st
}

func keysOf(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// Two nodes and the netpol model: everything reaches everything (no policy
// yet), across nodes and on one node; status and probe JSON have their exact shape.
func TestPrivilegedLabNetpolModel(t *testing.T) {
	tl := newTestLab(t)
	tl.up("--nodes", "2", "-f", "../examples/netpol-model.yaml")

	// status -o json: exact keys.
	raw := tl.mustRun("status", "-o", "json")
	var generic map[string]any
	if err := json.Unmarshal([]byte(raw), &generic); err != nil {
		t.Fatal(err)
	}
	if got := keysOf(generic); got != "nodes,pods,relayAddress,services,uiURL" {
		t.Fatalf("status keys = %s", got)
	}
	node0 := generic["nodes"].([]any)[0].(map[string]any)
	if got := keysOf(node0); got != "address,flowBufferSize,healthy,metricsAddress,name,observerAddress,podCIDR" {
		t.Fatalf("node keys = %s", got)
	}
	pod0 := generic["pods"].([]any)[0].(map[string]any)
	if got := keysOf(pod0); got != "ip,labels,name,namespace,node,ports" {
		t.Fatalf("pod keys = %s", got)
	}
	st := tl.status()
	if len(st.Nodes) != 2 || len(st.Pods) != 9 {
		t.Fatalf("status: %d nodes, %d pods", len(st.Nodes), len(st.Pods))
	}
	ipRE := regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`)
	perNode := map[string][]PodStatus{}
	for _, n := range st.Nodes {
		if !n.Healthy || !ipRE.MatchString(n.Address) || n.ObserverAddress != n.Address+":4244" || n.MetricsAddress != n.Address+":9962" {
			t.Errorf("node %+v", n)
		}
	}
	for _, p := range st.Pods {
		if !ipRE.MatchString(p.IP) || p.Labels["pod"] != p.Name || len(p.Ports) != 4 {
			t.Errorf("pod %+v", p)
		}
		perNode[p.Node] = append(perNode[p.Node], p)
	}
	if len(perNode) != 2 {
		t.Fatalf("pods not spread over both nodes: %v", perNode)
	}

	// probe --all: 9*8 pairs * 4 ports, all allowed, sorted, exact keys.
	raw = tl.mustRun("probe", "--all", "-o", "json")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(raw), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 288 {
		t.Fatalf("probe --all gave %d results, want 288", len(rows))
	}
	if got := keysOf(rows[0]); got != "allowed,from,port,protocol,to" {
		t.Fatalf("probe keys = %s", got)
	}
	var res []ProbeResult
	_ = json.Unmarshal([]byte(raw), &res)
	for i, r := range res {
		if !r.Allowed {
			t.Errorf("%s -> %s %d/%s not allowed", r.From, r.To, r.Port, r.Protocol)
		}
		if i > 0 {
			p := res[i-1]
			if p.From > r.From || p.From == r.From && (p.To > r.To || p.To == r.To && (p.Port > r.Port || p.Port == r.Port && p.Protocol >= r.Protocol)) {
				t.Fatalf("results not sorted at %d: %+v then %+v", i, p, r)
			}
		}
	}

	// Same node and cross node, one by one, and a closed port.
	var nodes []string
	for n := range perNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	a, b := perNode[nodes[0]][0], perNode[nodes[0]][1]
	c := perNode[nodes[1]][0]
	id := func(p PodStatus) string { return p.Namespace + "/" + p.Name }
	for _, pair := range [][2]PodStatus{{a, b}, {a, c}, {c, a}} {
		for _, proto := range []string{"TCP", "UDP"} {
			if out, _, code := tl.run("probe", "--from", id(pair[0]), "--to", id(pair[1]), "--port", "81", "--protocol", proto); code != 0 {
				t.Errorf("probe %s -> %s 81/%s: exit %d: %s", id(pair[0]), id(pair[1]), proto, code, out)
			}
		}
	}
	if _, _, code := tl.run("probe", "--from", id(a), "--to", id(c), "--port", "82", "--protocol", "TCP", "--timeout", "300ms"); code != 1 {
		t.Errorf("probe to a closed port: exit %d, want 1", code)
	}
	// exec passes the exit code through and runs in the pod's netns.
	out := tl.mustRun("exec", id(a), "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(out, a.IP+"/") {
		t.Errorf("exec in %s shows %q, want %s", id(a), out, a.IP)
	}
	if _, _, code := tl.run("exec", id(a), "--", "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("exec exit code %d, want 3", code)
	}
	if _, _, code := tl.run("exec", id(a), "--", "sh", "-c", "kill -KILL $$"); code != 137 {
		t.Errorf("exec of a command killed by SIGKILL: exit code %d, want 137", code)
	}

	// up again changes nothing.
	tl.up("-f", "../examples/netpol-model.yaml")
	again := tl.status()
	for i := range st.Pods {
		if again.Pods[i].IP != st.Pods[i].IP || again.Pods[i].Node != st.Pods[i].Node {
			t.Errorf("second up moved %s: %+v -> %+v", id(st.Pods[i]), st.Pods[i], again.Pods[i])
		}
	}

	// Deleting a pod removes its netns and its server; the rest still work.
	del := filepath.Join(t.TempDir(), "del.yaml")
	os.WriteFile(del, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: "+a.Name+", namespace: \""+a.Namespace+"\"}\nspec: {containers: [{name: c}]}\n"), 0o644)
	tl.mustRun("delete", "-f", del)
	if netnsMounted(netnsPath(tl.name + "-" + a.Namespace + "." + a.Name)) {
		t.Errorf("deleted pod's netns remains")
	}
	if n := len(tl.status().Pods); n != 8 {
		t.Errorf("%d pods after delete, want 8", n)
	}
	if _, _, code := tl.run("probe", "--from", id(c), "--to", id(b), "--port", "80", "--protocol", "TCP"); code != 0 {
		t.Errorf("probe after delete failed")
	}

	// The demo application and traffic between its workloads.
	tl.mustRun("apply", "-f", "../examples/demo.yaml")
	out = tl.mustRun("traffic", "--rate", "40", "--duration", "1500ms")
	for _, kind := range []string{"http ", "dns ", "tcp "} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, kind) && !strings.Contains(line, "ok 0 ") {
				found = true
			}
		}
		if !found {
			t.Errorf("traffic sent no successful %q requests:\n%s", kind, out)
		}
	}

	tl.mustRun("down")
	assertClean(t, tl.dir, tl.name)
}

// Bad manifests are refused with a clear error and leave nothing behind.
func TestPrivilegedLabBadManifests(t *testing.T) {
	tl := newTestLab(t)
	tl.up("--nodes", "1")
	good := "apiVersion: v1\nkind: Pod\nmetadata: {name: fine, namespace: q}\nspec: {containers: [{name: c, ports: [{containerPort: 80}]}]}\n---\n"
	cases := map[string]struct{ doc, want string }{
		"unknown kind":  {"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\n", `unknown kind "StatefulSet"`},
		"pod no name":   {"apiVersion: v1\nkind: Pod\nmetadata: {namespace: q}\nspec: {containers: [{name: c}]}\n", "Pod without metadata.name"},
		"port range":    {"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 65536}]}]}\n", "port 65536 outside 1-65535"},
		"duplicate pod": {good, "duplicate Pod q/fine"},
		"unknown node":  {"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: nowhere, containers: [{name: c}]}\n", `spec.nodeName "nowhere" is not a lab node`},
	}
	gen, _ := os.ReadFile(filepath.Join(tl.dir, "manifests", "GENERATION"))
	for name, c := range cases {
		f := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(f, []byte(good+c.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		_, errs, code := tl.run("apply", "-f", f)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("%s: exit %d, stderr %q, want an error with %q", name, code, errs, c.want)
		}
		if left := listNetNS(tl.name + "-q."); len(left) > 0 {
			t.Errorf("%s: pod netns created: %v", name, left)
		}
		if recs, _ := filepath.Glob(filepath.Join(tl.dir, "pods", "*")); len(recs) > 0 {
			t.Errorf("%s: pod state created: %v", name, recs)
		}
		objs, _ := filepath.Glob(filepath.Join(tl.dir, "manifests", "*.yaml"))
		if len(objs) != 1 { // the node
			t.Errorf("%s: objects written: %v", name, objs)
		}
		if g, _ := os.ReadFile(filepath.Join(tl.dir, "manifests", "GENERATION")); !bytes.Equal(g, gen) {
			t.Errorf("%s: generation moved from %s to %s", name, gen, g)
		}
	}

	// A namespace nobody declared is created, with a warning and its label.
	f := filepath.Join(t.TempDir(), "ok.yaml")
	os.WriteFile(f, []byte(good), 0o644)
	out, errs, code := tl.run("apply", "-f", f)
	if code != 0 || !strings.Contains(errs, `namespace "q" has no Namespace object`) {
		t.Fatalf("apply: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	b, err := os.ReadFile(filepath.Join(tl.dir, "manifests", "namespace._.q.yaml"))
	if err != nil || !strings.Contains(string(b), "kubernetes.io/metadata.name: q") {
		t.Errorf("namespace object: %v\n%s", err, b)
	}
	b, err = os.ReadFile(filepath.Join(tl.dir, "manifests", "pod.q.fine.yaml"))
	if err != nil || !strings.Contains(string(b), "podIP: ") || !strings.Contains(string(b), "nodeName: "+tl.name+"-node1") {
		t.Errorf("pod object: %v\n%s", err, b)
	}

	// A bad file given to up on a fresh lab creates nothing at all.
	fresh := &testLab{t: t, bin: tl.bin, dir: t.TempDir(), name: testLabName(t)}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(cases["unknown kind"].doc), 0o644)
	if _, errs, code := fresh.run("up", "--name", fresh.name, "-f", bad); code == 0 || !strings.Contains(errs, "unknown kind") {
		t.Errorf("up with a bad file: exit %d, %s", code, errs)
	}
	assertClean(t, fresh.dir, fresh.name)
	if _, err := os.Stat(filepath.Join(fresh.dir, "lab.json")); err == nil {
		t.Errorf("up with a bad file wrote lab.json")
	}
}

// startKilled runs `loupe lab args...` and SIGKILLs it once at least n pod
// records exist, that is while it creates pods with agents running.
func (tl *testLab) startKilled(n int, args ...string) {
	tl.t.Helper()
	before, _ := filepath.Glob(filepath.Join(tl.dir, "pods", "*.json"))
	cmd := exec.Command(filepath.Join(tl.bin, "loupe"), append([]string{"lab", "--lab-dir", tl.dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		tl.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		for processAlive(cmd.Process.Pid) {
			time.Sleep(5 * time.Millisecond)
		}
		close(exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			cmd.Wait()
			tl.t.Fatalf("%v exited before it could be killed: %s\n%s", args, stderr.String(), tl.logs())
		default:
		}
		recs, _ := filepath.Glob(filepath.Join(tl.dir, "pods", "*.json"))
		if len(recs) >= len(before)+n {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			tl.t.Fatalf("%v never got to pods\n%s", args, tl.logs())
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

// An `up` killed half way: a second `up` completes the lab, and `down`
// cleans up, also after a killed `apply`.
func TestPrivilegedLabKilledUp(t *testing.T) {
	tl := newTestLab(t)
	tl.startKilled(2, "up", "--name", tl.name, "--nodes", "2", "-f", "../examples/netpol-model.yaml")
	if len(listNetNS(tl.name+"-")) == 0 {
		t.Fatal("killed up left nothing to clean: the test proves nothing")
	}
	if pids := labProcesses(nil, tl.dir); len(pids) == 0 {
		t.Fatal("no agents were running when up was killed")
	}

	// up again finishes the job.
	tl.up("-f", "../examples/netpol-model.yaml")
	st := tl.status()
	if len(st.Pods) != 9 {
		t.Fatalf("%d pods after the second up, want 9", len(st.Pods))
	}
	for _, n := range st.Nodes {
		if !n.Healthy {
			t.Errorf("node %s unhealthy", n.Name)
		}
	}
	if recs, _ := filepath.Glob(filepath.Join(tl.dir, "pods", "*.json")); len(recs) != 9 {
		t.Errorf("%d pod records, want 9", len(recs))
	}
	if len(listNetNS(tl.name+"-")) != 2+9 {
		t.Errorf("netns: %v", listNetNS(tl.name+"-"))
	}
	var res []ProbeResult
	if err := json.Unmarshal([]byte(tl.mustRun("probe", "--all", "-o", "json")), &res); err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.Allowed {
			t.Errorf("after recovery %s -> %s %d/%s not allowed", r.From, r.To, r.Port, r.Protocol)
		}
	}

	// A killed apply, then down.
	tl.startKilled(1, "apply", "-f", "../examples/demo.yaml")
	tl.mustRun("down")
	assertClean(t, tl.dir, tl.name)
}
