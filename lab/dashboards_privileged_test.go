package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The four dashboards of Cilium's Helm chart, read from the cilium module
// that go.mod pins (the module cache holds it: the build needs its API
// packages, and `make tools` builds hubble from it).
var hubbleDashboards = []string{
	"hubble-dashboard.json",
	"hubble-network-overview-namespace.json",
	"hubble-dns-namespace.json",
	"hubble-l7-http-metrics-by-workload.json",
}

// dashboardsManifest: a client, a server a policy lets it reach (so new
// connections to it get policy verdicts), and a server that a deny-all
// policy isolates, so the traffic has forwarded flows, policy drops,
// unanswered SYNs and unanswered pings.
const dashboardsManifest = `
apiVersion: v1
kind: Namespace
metadata: {name: front}
---
apiVersion: v1
kind: Namespace
metadata: {name: back}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: front, labels: {app: client}}
spec:
  containers: [{name: main}]
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: back, labels: {app: api}}
spec:
  containers:
  - name: main
    ports: [{containerPort: 80, protocol: TCP}, {containerPort: 80, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: locked, namespace: back, labels: {app: locked}}
spec:
  containers:
  - name: main
    ports: [{containerPort: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-locked, namespace: back}
spec:
  podSelector: {matchLabels: {app: locked}}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: front-to-api, namespace: back}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: front}}}]
`

// TestPrivilegedLabHubbleDashboards runs every query of Hubble's Grafana
// dashboards and of loupe's own (install/grafana), through a real Prometheus scraping the lab agents'
// metricsAddress, after lab traffic that exercises them, and wants data
// from each. A query without data fails naming its dashboard, its panel
// and the metrics Prometheus has no series of.
func TestPrivilegedLabHubbleDashboards(t *testing.T) {
	requireRoot(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed (scripts/install-deps.sh installs Debian's)")
	}
	dashboards := readDashboards(t)

	tl := newTestLab(t)
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	tl.name = "m28" + hex.EncodeToString(b)
	mf := filepath.Join(t.TempDir(), "dash.yaml")
	if err := os.WriteFile(mf, []byte(dashboardsManifest), 0o644); err != nil {
		t.Fatal(err)
	}
	tl.up("--nodes", "2", "-f", mf)
	st := tl.status()
	pods := map[string]PodStatus{}
	for _, p := range st.Pods {
		pods[p.Namespace+"/"+p.Name] = p
	}

	prom := startPrometheus(t, promBin, st.Nodes)
	prom.waitTargets(t, len(st.Nodes))

	// World: an address of the lab's underlay that no node, pod or
	// process holds; SYNs to it go unanswered and never leave the lab.
	l, err := Load(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	world := netip.AddrFrom4([4]byte{172, 30, byte(l.Index), 250}).String()
	var apiNetNS string
	for _, n := range l.Nodes {
		if n.Name == pods["back/api"].Node {
			apiNetNS = n.NetNSPath()
		}
	}
	runDashboardTraffic(t, tl, pods, world, apiNetNS, 12*time.Second)
	time.Sleep(3 * time.Second) // two more scrapes after the last packet

	// The series the "done when" names, and those the families'
	// unit tests build by hand (observer/hubblemetrics), from the datapath.
	for _, q := range []string{
		`hubble_flows_processed_total{type="Trace",subtype="from-endpoint",protocol="TCP",verdict="FORWARDED",source_namespace="front",source="front/client",destination="back/api"}`,
		`hubble_flows_processed_total{type="Trace",subtype="to-endpoint",verdict="FORWARDED"}`,
		`hubble_flows_processed_total{type="Drop",verdict="DROPPED",destination_namespace="back"}`,
		`hubble_drop_total{reason="POLICY_DENIED",protocol="TCP",source="front/client",destination="back/locked"}`,
		`hubble_drop_total{reason="POLICY_DENIED",protocol="ICMPv4"}`,
		`hubble_tcp_flags_total{family="IPv4",flag="SYN"}`,
		`hubble_tcp_flags_total{family="IPv4",flag="SYN-ACK"}`,
		`hubble_tcp_flags_total{family="IPv4",flag="FIN"}`,
		`hubble_icmp_total{family="IPv4",type="EchoRequest",destination="back/api"}`,
		`hubble_icmp_total{family="IPv4",type="EchoReply",source="back/api"}`,
		`hubble_port_distribution_total{protocol="TCP",port="80"}`,
		`hubble_port_distribution_total{protocol="UDP",port="80"}`,
		`hubble_port_distribution_total{protocol="ICMPv4",port="0"}`,
		`hubble_policy_verdicts_total{direction="ingress",match="l3-only",action="forwarded",source="front/client",destination="back/api"}`,
		`hubble_flows_processed_total{type="PolicyVerdict",verdict="FORWARDED",source="reserved:host",destination="back/api"}`,
		`hubble_flows_to_world_total{protocol="TCP",verdict="FORWARDED",source="front/client"}`,
	} {
		if res := prom.query(t, q); len(res) == 0 {
			t.Errorf("no series for %s", q)
		}
	}
	// Hubble leaves the node's own connections out of policy verdicts.
	if res := prom.query(t, `hubble_policy_verdicts_total{source="reserved:host"}`); len(res) != 0 {
		t.Errorf("policy verdicts from the host are counted: %v", res)
	}

	v6 := false
	for _, p := range st.Pods {
		v6 = v6 || strings.Contains(p.IP, ":")
	}
	l7 := l7Seen{
		dns: len(prom.query(t, `hubble_flows_processed_total{type="L7",subtype="DNS"}`)) > 0,
		// HTTP flows alone are not enough: the lab leaves the http family
		// off (its dashboard also needs kube-state-metrics and cAdvisor).
		http: len(prom.query(t, `hubble_http_requests_total`)) > 0,
	}
	vars := map[string]string{
		"__rate_interval": "1m",
		// One cluster, so its Prometheus has no cluster label: Grafana's
		// "All" of an empty list matches the series without one.
		"cluster": "",
	}
	ran := 0
	for _, d := range dashboards {
		for _, p := range d.panels {
			for _, expr := range p.exprs {
				why := exemption(expr, l7, v6)
				if why != "" {
					t.Logf("exempt: %s / %s: %s", d.file, p.title, why)
					continue
				}
				q := prom.substitute(t, expr, d.vars, vars)
				ran++
				if res := prom.query(t, q); len(res) == 0 {
					t.Errorf("%s / panel %q: no data; %s\n  query: %s", d.file, p.title, prom.missing(t, q), q)
				}
			}
		}
	}
	if ran < 30 {
		t.Errorf("ran only %d dashboard queries", ran)
	}
	t.Logf("ran %d dashboard queries", ran)
}

// l7Seen says which L7 protocols the lab's agents reported flows of.
type l7Seen struct{ dns, http bool }

// exemption says why a query cannot have data on this lab yet, or "".
// Each lifts itself when what it waits for is there, so the query must
// then return data.
func exemption(expr string, l7 l7Seen, v6 bool) string {
	switch {
	case !l7.dns && strings.Contains(expr, "hubble_dns_"):
		return "no L7 DNS flow seen: the lab has no DNS pod"
	case !l7.http && (strings.Contains(expr, "hubble_http_") || strings.Contains(expr, "kube_pod_owner") || strings.Contains(expr, "container_cpu_usage")):
		return "no hubble_http_* series: the lab does not enable the http family"
	case !l7.dns && !l7.http && strings.Contains(expr, `type="L7"`):
		return "no L7 flow seen"
	case !v6 && strings.Contains(expr, `family="IPv6"`):
		return "the lab's pods have no IPv6 address"
	}
	return ""
}

type dashboard struct {
	file   string
	panels []panel
	vars   []templateVar
}

type panel struct {
	title string
	exprs []string
}

type templateVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   *string         `json:"allValue"`
}

func readDashboards(t *testing.T) []dashboard {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cilium/cilium")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("find the cilium module: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "install/kubernetes/cilium/files/hubble/dashboards")
	var paths []string
	for _, f := range hubbleDashboards {
		paths = append(paths, filepath.Join(dir, f))
	}
	// loupe's own dashboard, which install/ ships.
	paths = append(paths, "../install/grafana/loupe-dashboard.json")
	var ds []dashboard
	for _, path := range paths {
		f := filepath.Base(path)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Panels     []json.RawMessage `json:"panels"`
			Templating struct {
				List []templateVar `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		d := dashboard{file: f, vars: doc.Templating.List}
		var walk func([]json.RawMessage)
		walk = func(ps []json.RawMessage) {
			for _, r := range ps {
				var p struct {
					Title   string            `json:"title"`
					Panels  []json.RawMessage `json:"panels"`
					Targets []struct {
						Expr string `json:"expr"`
					} `json:"targets"`
				}
				if err := json.Unmarshal(r, &p); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				walk(p.Panels) // collapsed rows hold their panels
				pn := panel{title: p.Title}
				for _, tg := range p.Targets {
					if strings.TrimSpace(tg.Expr) != "" {
						pn.exprs = append(pn.exprs, tg.Expr)
					}
				}
				if len(pn.exprs) > 0 {
					d.panels = append(d.panels, pn)
				}
			}
		}
		walk(doc.Panels)
		if len(d.panels) == 0 {
			t.Fatalf("%s: no panel with a query", f)
		}
		ds = append(ds, d)
	}
	return ds
}

// runDashboardTraffic sends, for d, from front/client: TCP and UDP to
// back/api (allowed), TCP to back/locked (dropped by policy), pings to
// both, and TCP SYNs to a world address; and TCP from api's node to api.
func runDashboardTraffic(t *testing.T, tl *testLab, pods map[string]PodStatus, world, apiNetNS string, d time.Duration) {
	t.Helper()
	api, locked := pods["back/api"].IP, pods["back/locked"].IP
	if api == "" || locked == "" {
		t.Fatalf("pods: %+v", pods)
	}
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	loop := func(every time.Duration, args ...string) {
		wg.Go(func() {
			for time.Now().Before(end) {
				_, _, _ = tl.run(args...) // a refused probe exits 1: that is the point
				time.Sleep(every)
			}
		})
	}
	loop(200*time.Millisecond, "probe", "--from", "front/client", "--to", "back/api", "--port", "80", "--protocol", "TCP")
	loop(300*time.Millisecond, "probe", "--from", "front/client", "--to", "back/api", "--port", "80", "--protocol", "UDP")
	loop(300*time.Millisecond, "probe", "--from", "front/client", "--to", "back/locked", "--port", "80", "--protocol", "TCP", "--timeout", "300ms")
	n := fmt.Sprint(int(d / (500 * time.Millisecond)))
	loop(0, "exec", "front/client", "--", "ping", "-n", "-q", "-c", n, "-i", "0.5", "-W", "1", api)
	loop(0, "exec", "front/client", "--", "ping", "-n", "-q", "-c", n, "-i", "0.5", "-W", "1", locked)
	loop(500*time.Millisecond, "exec", "front/client", "--", "timeout", "0.5", "bash", "-c", "echo > /dev/tcp/"+world+"/443")
	wg.Go(func() {
		for time.Now().Before(end) {
			_ = exec.Command("nsenter", "--net="+apiNetNS, "timeout", "1", "bash", "-c", "echo > /dev/tcp/"+api+"/80").Run()
			time.Sleep(500 * time.Millisecond)
		}
	})
	wg.Wait()
}

// prometheus is a Prometheus server this test started.
type prometheus struct {
	url string
}

func startPrometheus(t *testing.T, bin string, nodes []NodeStatus) *prometheus {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	var cfg bytes.Buffer
	cfg.WriteString("global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n- job_name: loupe-agent\n  static_configs:\n")
	for _, n := range nodes {
		if n.MetricsAddress == "" {
			t.Fatalf("node %s has no metricsAddress", n.Name)
		}
		// pod: the agent, as Kubernetes service discovery labels a
		// DaemonSet pod's series; the hubble dashboard sums by it.
		fmt.Fprintf(&cfg, "  - targets: [%q]\n    labels: {pod: %q}\n", n.MetricsAddress, "loupe-agent-"+n.Name)
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
	})
	p := &prometheus{url: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("prometheus not ready on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitTargets waits until Prometheus scraped n agents successfully.
func (p *prometheus) waitTargets(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if len(p.query(t, `up{job="loupe-agent"} == 1`)) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus does not scrape the %d agents: up = %v", n, p.query(t, `up`))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// query runs an instant query and returns its vector's series.
func (p *prometheus) query(t *testing.T, q string) []map[string]string {
	t.Helper()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	p.get(t, "/api/v1/query?query="+url.QueryEscape(q), &body)
	if body.Status != "success" {
		t.Fatalf("query %s: %s", q, body.Error)
	}
	var out []map[string]string
	for _, r := range body.Data.Result {
		out = append(out, r.Metric)
	}
	return out
}

func (p *prometheus) get(t *testing.T, path string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
}

var (
	templateRef = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)
	metricName  = regexp.MustCompile(`\b[a-zA-Z_:][a-zA-Z0-9_:]*_(?:total|bucket|relabel|sum_irate)\b`)
)

// substitute replaces Grafana's template variables as Grafana would on
// this lab: fixed values from fixed, else the variable's "All" value,
// else the first value its label_values query finds in Prometheus.
func (p *prometheus) substitute(t *testing.T, expr string, defs []templateVar, fixed map[string]string) string {
	t.Helper()
	val := func(name string) string {
		if v, ok := fixed[name]; ok {
			return v
		}
		for _, d := range defs {
			if d.Name != name {
				continue
			}
			if d.IncludeAll && d.AllValue != nil {
				return *d.AllValue
			}
			vals := p.labelValues(t, d)
			if len(vals) == 0 {
				t.Errorf("template variable %s: its query %s finds no value", name, d.Query)
				return ""
			}
			if d.IncludeAll {
				return "(" + strings.Join(vals, "|") + ")"
			}
			return vals[0]
		}
		t.Fatalf("expression uses $%s, which the dashboard does not define: %s", name, expr)
		return ""
	}
	return templateRef.ReplaceAllStringFunc(expr, func(m string) string {
		sub := templateRef.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		if name == "1" || strings.HasPrefix(m, "$1") {
			return m // label_replace's "$1"
		}
		return val(name)
	})
}

var labelValuesQuery = regexp.MustCompile(`^label_values\((?:(.*),\s*)?(\w+)\)$`)

// labelValues runs a variable's label_values(selector, label) query.
func (p *prometheus) labelValues(t *testing.T, d templateVar) []string {
	t.Helper()
	var q string
	if err := json.Unmarshal(d.Query, &q); err != nil {
		var obj struct {
			Query string `json:"query"`
		}
		_ = json.Unmarshal(d.Query, &obj)
		q = obj.Query
	}
	m := labelValuesQuery.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		t.Fatalf("template variable %s: query %q is not label_values", d.Name, q)
	}
	path := "/api/v1/label/" + m[2] + "/values"
	if m[1] != "" {
		path += "?match[]=" + url.QueryEscape(m[1])
	}
	var body struct {
		Data []string `json:"data"`
	}
	p.get(t, path, &body)
	var out []string
	for _, v := range body.Data {
		if v != "" {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// missing names the metrics of q that have no series at all.
func (p *prometheus) missing(t *testing.T, q string) string {
	t.Helper()
	var gone, have []string
	seen := map[string]bool{}
	for _, m := range metricName.FindAllString(q, -1) {
		if seen[m] {
			continue
		}
		seen[m] = true
		if len(p.query(t, "group("+m+")")) == 0 {
			gone = append(gone, m)
		} else {
			have = append(have, m)
		}
	}
	if len(gone) > 0 {
		return "missing metric(s): " + strings.Join(gone, ", ")
	}
	return "its metrics have series (" + strings.Join(have, ", ") + ") but none matches the query's labels or conditions"
}
