package policy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loupe-project/loupe/metadata"
)

// policyLab is a lab of its own (dir and name) running the netpol model on
// two nodes, driven through the loupe binary as a user would.
type policyLab struct {
	t    *testing.T
	bin  string
	dir  string
	name string
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("LOUPE_BIN"); dir != "" {
		return dir
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/loupe", "./cmd/loupe-agent", "./cmd/loupe-cni")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return dir
}

func newPolicyLab(t *testing.T) *policyLab {
	t.Helper()
	return newPolicyLabWith(t, modelYAML())
}

// newPolicyLabWith brings a two-node lab up with the given namespaces and
// pods.
func newPolicyLabWith(t *testing.T, manifests string) *policyLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	l := &policyLab{t: t, bin: buildBinaries(t), dir: t.TempDir(), name: "p" + hex.EncodeToString(b)}
	t.Cleanup(func() {
		if _, errs, code := l.run("down", "--name", l.name); code != 0 {
			t.Errorf("lab down: %s", errs)
		}
	})
	model := filepath.Join(t.TempDir(), "model.yaml")
	if err := os.WriteFile(model, []byte(manifests), 0o644); err != nil {
		t.Fatal(err)
	}
	l.must("up", "--name", l.name, "--nodes", "2", "-f", model)
	return l
}

func (l *policyLab) run(args ...string) (string, string, int) {
	l.t.Helper()
	cmd := exec.Command(filepath.Join(l.bin, "loupe"), append([]string{"lab", "--lab-dir", l.dir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		l.t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

func (l *policyLab) must(args ...string) string {
	l.t.Helper()
	out, errs, code := l.run(args...)
	if code != 0 {
		l.t.Fatalf("loupe lab %s: exit %d\n%s\n%s\n%s", strings.Join(args, " "), code, out, errs, l.logs())
	}
	return out
}

func (l *policyLab) logs() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(l.dir, "nodes", "*", "agent.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "== %s\n%s\n", f, data)
	}
	return b.String()
}

func (l *policyLab) file(name, content string) string {
	p := filepath.Join(l.t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return p
}

// snapshot reads the lab's manifests folder, as the agents do.
func (l *policyLab) snapshot() *metadata.Snapshot {
	l.t.Helper()
	snap := &metadata.Snapshot{}
	files, _ := filepath.Glob(filepath.Join(l.dir, "manifests", "*.yaml"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			l.t.Fatal(err)
		}
		if _, err := metadata.ParseManifests(b, snap); err != nil {
			l.t.Fatal(err)
		}
	}
	return snap
}

// probeAll probes the whole table. The timeout is generous because the
// machine is shared: under load a 700ms probe of an allowed TCP port
// sometimes timed out, while no drop was involved.
func (l *policyLab) probeAll() map[cell]bool {
	l.t.Helper()
	raw := l.must("probe", "--all", "-o", "json", "--timeout", "2s", "--parallel", "128")
	var rows []struct {
		From, To, Protocol string
		Port               int
		Allowed            bool
	}
	if err := json.Unmarshal([]byte(raw), &rows); err != nil {
		l.t.Fatalf("probe json: %v", err)
	}
	got := map[cell]bool{}
	for _, r := range rows {
		got[cell{r.From, r.To, portProto{r.Port, r.Protocol}}] = r.Allowed
	}
	for _, p := range modelPods() {
		for _, pp := range modelPorts {
			got[cell{p, p, pp}] = true
		}
	}
	return got
}

// reprobe probes again, one by one with a long timeout, the cells that
// failed but should pass: on this shared machine a probe sometimes misses
// its timeout under load. Each retry is logged; a cell that fails again
// stays failed. Cells that passed but should fail are never retried.
func (l *policyLab) reprobe(r *reach, got map[cell]bool) {
	l.t.Helper()
	for _, c := range sortedCells(got) {
		if got[c] || !r.expected(c.from, c.to, c.pp) {
			continue
		}
		_, _, code := l.run("probe", "--from", c.from, "--to", c.to, "--port", fmt.Sprint(c.pp.port), "--protocol", c.pp.proto, "--timeout", "5s")
		l.t.Logf("re-probed %s -> %s %s: exit %d", c.from, c.to, c.pp, code)
		got[c] = code == 0
	}
}

func policyNames(docs string) []string {
	var s metadata.Snapshot
	_, _ = metadata.ParseManifests([]byte(docs), &s)
	var out []string
	for _, np := range s.NetworkPolicies {
		out = append(out, np.Namespace+"/"+np.Name)
	}
	return out
}

func deleteDocs(names []string) string {
	var b strings.Builder
	for _, n := range names {
		ns, name, _ := strings.Cut(n, "/")
		fmt.Fprintf(&b, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: %s, namespace: %q}\nspec: {podSelector: {}}\n---\n", name, ns)
	}
	return b.String()
}

// Every scenario on the lab: the policies go in with `loupe lab apply -f`,
// `loupe lab probe --all -o json` measures the whole table, which must be
// the expected one, which the model gives too. Scenarios follow each
// other on one lab: the previous scenario's policies that the next one
// does not redefine are deleted, label changes are undone, so every
// change goes through the agents' incremental updates.
func TestPrivilegedLabScenarios(t *testing.T) {
	l := newPolicyLab(t)
	snap := l.snapshot()
	ips := map[string]string{}
	var all []netip.Addr
	for _, p := range snap.Pods {
		ips[p.Namespace+"/"+p.Name] = p.Status.PodIP
		all = append(all, netip.MustParseAddr(p.Status.PodIP))
	}
	cidr16 := netip.PrefixFrom(all[0], 16).Masked()
	for _, a := range all {
		if !cidr16.Contains(a) {
			t.Fatalf("pods %v not in one /16", all)
		}
	}
	ip := func(pod string) string { return ips[pod] }
	// The baseline before any policy.
	if d := diffTables(allAllowed(), l.probeAll()); d != "" {
		t.Fatalf("without policy:\n%s\n%s", d, l.logs())
	}
	budget := time.Now().Add(6 * time.Minute)
	if v := os.Getenv("LOUPE_POLICY_LAB_BUDGET"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			budget = time.Now().Add(d)
		}
	}
	var prevNames []string
	prevMutate := ""
	ran := 0
	for _, sc := range scenarios {
		if time.Now().After(budget) {
			t.Logf("time budget spent after %d of %d scenarios", ran, len(scenarios))
			break
		}
		docs := sc.policies(ip, cidr16.String())
		names := policyNames(docs)
		var stale []string
		for _, n := range prevNames {
			if !slices.Contains(names, n) {
				stale = append(stale, n)
			}
		}
		if len(stale) > 0 {
			l.must("delete", "-f", l.file("stale.yaml", deleteDocs(stale)))
		}
		if prevMutate != "" {
			l.must("apply", "-f", l.file("revert.yaml", revertDocs(prevMutate)))
		}
		if docs+sc.mutate != "" {
			l.must("apply", "-f", l.file("scenario.yaml", docs+sc.mutate))
		}
		got := l.probeAll()
		l.reprobe(sc.expect, got)
		if d := diffTables(sc.expect, got); d != "" {
			t.Errorf("%s: the lab disagrees with the expected table:\n%s", sc.name, d)
		}
		// The model, on what the lab actually stored, gives the same table.
		if d := diffTables(sc.expect, modelTable(t, NewModel(l.snapshot()))); d != "" {
			t.Errorf("%s: the model of the lab's manifests disagrees:\n%s", sc.name, d)
		}
		prevNames, prevMutate = names, sc.mutate
		ran++
	}
	t.Logf("%d scenarios checked on the lab, each a 9x8x4 probe table", ran)
	if ran < 25 {
		t.Errorf("only %d scenarios fit in the time budget", ran)
	}
}

// revertDocs undoes a scenario's label changes: the model's own documents
// for the same objects.
func revertDocs(mutate string) string {
	var s metadata.Snapshot
	_, _ = metadata.ParseManifests([]byte(mutate), &s)
	var b strings.Builder
	for _, ns := range s.Namespaces {
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %q\n  labels: {ns: %q}\n---\n", ns.Name, ns.Name)
	}
	for _, p := range s.Pods {
		b.WriteString(podDoc(p.Namespace, p.Name, "pod: "+p.Name))
	}
	return b.String()
}

// rangeLabYAML: app=srv serves 80, 30000 and 64000 over TCP and UDP, so
// ports far inside wide endPort ranges can be probed; app=cli and
// app=other are clients.
const rangeLabYAML = `apiVersion: v1
kind: Namespace
metadata: {name: r, labels: {ns: r}}
---
apiVersion: v1
kind: Pod
metadata: {name: srv, namespace: r, labels: {app: srv}}
spec:
  containers:
  - name: srv
    ports:
    - {containerPort: 80, protocol: TCP}
    - {containerPort: 30000, protocol: TCP}
    - {containerPort: 64000, protocol: TCP}
    - {containerPort: 80, protocol: UDP}
    - {containerPort: 30000, protocol: UDP}
    - {containerPort: 64000, protocol: UDP}
---
apiVersion: v1
kind: Pod
metadata: {name: cli, namespace: r, labels: {app: cli}}
spec:
  containers:
  - name: cli
    ports:
    - {containerPort: 8080, protocol: TCP}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: r, labels: {app: other}}
spec:
  containers:
  - name: other
    ports:
    - {containerPort: 8080, protocol: TCP}
---
`

// The case on a live lab: TCP 1000-65535 from app=cli to app=srv
// (and UDP 1-65535 from anyone; cli's egress TCP and UDP 1-65535 to srv
// only). `loupe lab probe` reaches exactly the ports the ranges hold, and
// the first line of `loupe policy explain` says the same.
func TestPrivilegedLabEndPortRanges(t *testing.T) {
	l := newPolicyLabWith(t, rangeLabYAML)
	cases := []struct {
		from, to    string
		port        int
		proto       string
		wantAllowed bool
	}{
		{"r/cli", "r/srv", 30000, "TCP", true},
		{"r/cli", "r/srv", 64000, "TCP", true},
		{"r/cli", "r/srv", 80, "TCP", false},
		{"r/cli", "r/srv", 80, "UDP", true},
		{"r/cli", "r/srv", 30000, "UDP", true},
		{"r/cli", "r/srv", 64000, "UDP", true},
		{"r/other", "r/srv", 30000, "TCP", false},
		{"r/other", "r/srv", 64000, "UDP", true},
		{"r/cli", "r/other", 8080, "TCP", false},
	}
	probe := func(from, to string, port int, proto, timeout string) bool {
		_, _, code := l.run("probe", "--from", from, "--to", to, "--port", fmt.Sprint(port), "--protocol", proto, "--timeout", timeout)
		return code == 0
	}
	// Without policy every case connects: a refusal below is policy's.
	for _, tc := range cases {
		if !probe(tc.from, tc.to, tc.port, tc.proto, "2s") && !probe(tc.from, tc.to, tc.port, tc.proto, "5s") {
			t.Fatalf("%s -> %s %d/%s: no connection without policy\n%s", tc.from, tc.to, tc.port, tc.proto, l.logs())
		}
	}
	l.must("apply", "-f", l.file("ranges.yaml", np("r", "srv-ranges", `podSelector: {matchLabels: {app: srv}}
ingress:
- from:
  - podSelector: {matchLabels: {app: cli}}
  ports:
  - {port: 1000, endPort: 65535, protocol: TCP}
- ports:
  - {port: 1, endPort: 65535, protocol: UDP}`)+np("r", "cli-egress", `podSelector: {matchLabels: {app: cli}}
policyTypes: [Egress]
egress:
- to:
  - podSelector: {matchLabels: {app: srv}}
  ports:
  - {port: 1, endPort: 65535, protocol: TCP}
  - {port: 1, endPort: 65535, protocol: UDP}`)))
	manifests := filepath.Join(l.dir, "manifests")
	for _, tc := range cases {
		name := fmt.Sprintf("%s -> %s %d/%s", tc.from, tc.to, tc.port, tc.proto)
		got := probe(tc.from, tc.to, tc.port, tc.proto, "2s")
		if !got && tc.wantAllowed {
			// A shared machine sometimes misses a probe's timeout.
			got = probe(tc.from, tc.to, tc.port, tc.proto, "5s")
			t.Logf("re-probed %s: connected=%v", name, got)
		}
		if got != tc.wantAllowed {
			t.Errorf("%s: lab probe connected=%v, want %v", name, got, tc.wantAllowed)
		}
		out, errs, code := l.loupeCmd("policy", "explain", "--manifests-dir", manifests,
			"--from", tc.from, "--to", tc.to, "--port", fmt.Sprint(tc.port), "--protocol", tc.proto)
		if code != 0 {
			t.Fatalf("%s: policy explain exit %d: %s", name, code, errs)
		}
		first, _, _ := strings.Cut(out, "\n")
		want := ": DENIED"
		if tc.wantAllowed {
			want = ": ALLOWED"
		}
		if !strings.HasSuffix(first, want) {
			t.Errorf("%s: policy explain says %q, want it to end in %q\n%s", name, first, want, out)
		}
	}
}
