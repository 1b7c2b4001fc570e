// Package k8s is loupe's end-to-end test on a real Kubernetes node. It runs
// only with LOUPE_K8S_E2E=1, as root, with LOUPE_BIN pointing at loupe's
// binaries and bin/images/loupe.tar (make image), and builds (or reuses the
// cache of) the Kubernetes binaries with build-k8s.sh. `make k8s-e2e` does
// all of this.
package k8s

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loupe-project/loupe/cni"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/image"
	"github.com/loupe-project/loupe/install"
	"github.com/loupe-project/loupe/internal/testtools"
)

const (
	testNS       = "loupe-e2e"
	policyName   = "deny-web-ingress"
	conflistPath = "/etc/cni/net.d/05-loupe.conflist"
)

type node struct {
	t       *testing.T
	work    string
	k8s     string
	bin     string
	ns      string
	testhtp string
}

// run runs a command in the node's network namespace.
func (n *node) run(name string, args ...string) (string, error) {
	full := append([]string{"--net=/run/netns/" + n.ns, "--", name}, args...)
	cmd := exec.Command("nsenter", full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (n *node) kubectl(args ...string) (string, error) {
	return n.run(filepath.Join(n.k8s, "kubectl"), append([]string{"--kubeconfig", filepath.Join(n.work, "kubeconfig")}, args...)...)
}

func (n *node) mustKubectl(args ...string) string {
	n.t.Helper()
	out, err := n.kubectl(args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

func (n *node) kubectlStdin(stdin string, args ...string) (string, error) {
	full := append([]string{"--net=/run/netns/" + n.ns, "--", filepath.Join(n.k8s, "kubectl"),
		"--kubeconfig", filepath.Join(n.work, "kubeconfig")}, args...)
	cmd := exec.Command("nsenter", full...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// poll retries f until it returns nil or timeout passes; it returns the last error.
func poll(timeout time.Duration, f func() error) error {
	end := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(end) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// dump prints what explains a failure: the cluster's state, loupe's logs
// and the tail of every component's log.
func (n *node) dump() {
	t := n.t
	for _, args := range [][]string{
		{"get", "nodes,pods,svc,ds,deploy,netpol", "-A", "-o", "wide"},
		{"describe", "pods", "-A"},
		{"-n", "kube-system", "logs", "ds/loupe-agent", "--all-containers", "--tail", "200"},
		{"-n", "kube-system", "logs", "deploy/loupe-relay", "--tail", "100"},
		{"-n", "kube-system", "logs", "deploy/loupe-dns", "--tail", "50"},
		{"get", "events", "-A", "--sort-by", ".lastTimestamp"},
	} {
		out, err := n.kubectl(args...)
		t.Logf("$ kubectl %s\n%s%v", strings.Join(args, " "), out, errOrEmpty(err))
	}
	logs, _ := filepath.Glob(filepath.Join(n.work, "logs", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		lines := strings.Split(string(b), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("--- %s (tail)\n%s", filepath.Base(l), strings.Join(lines, "\n"))
	}
}

func errOrEmpty(err error) any {
	if err == nil {
		return ""
	}
	return err
}

func step(t *testing.T, name string, f func()) {
	t.Helper()
	start := time.Now()
	f()
	t.Logf("step %q passed in %s", name, time.Since(start).Round(100*time.Millisecond))
}

func TestPrivilegedKubernetes(t *testing.T) {
	if os.Getenv("LOUPE_K8S_E2E") != "1" {
		t.Skip("set LOUPE_K8S_E2E=1 (make k8s-e2e) to run the Kubernetes end-to-end test")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bin := os.Getenv("LOUPE_BIN")
	loupeImage := filepath.Join(bin, "images", "loupe.tar")
	for _, f := range []string{"loupe-agent", "loupe", "images/loupe.tar"} {
		if _, err := os.Stat(filepath.Join(bin, f)); err != nil {
			t.Fatalf("LOUPE_BIN=%q: %v (run make image)", bin, err)
		}
	}
	total := time.Now()
	start := time.Now()
	out, err := exec.Command("./build-k8s.sh").Output()
	if err != nil {
		t.Fatalf("build-k8s.sh: %v", err)
	}
	k8sDir := strings.TrimSpace(string(out))
	t.Logf("kubernetes binaries in %s (%s)", k8sDir, time.Since(start).Round(time.Second))

	// The test image: a static HTTP server that is also the pause image.
	work := t.TempDir()
	testhttp := filepath.Join(work, "testhttp")
	build := exec.Command("go", "build", "-trimpath", "-o", testhttp, "./testhttp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build testhttp: %v\n%s", err, out)
	}
	imgs := filepath.Join(work, "images")
	for ref, spec := range map[string]image.Spec{
		"web.tar":   {Ref: "loupe-testhttp:e2e", Files: []image.File{{Src: testhttp, Dst: "/testhttp"}}, Entrypoint: []string{"/testhttp"}},
		"pause.tar": {Ref: "loupe-pause:e2e", Files: []image.File{{Src: testhttp, Dst: "/testhttp"}}, Entrypoint: []string{"/testhttp", "pause"}},
	} {
		if err := image.WriteFile(filepath.Join(imgs, ref), spec); err != nil {
			t.Fatal(err)
		}
	}

	nodeDir := filepath.Join(work, "node")
	down := func() {
		cmd := exec.Command("./node.sh", "down", nodeDir)
		cmd.Env = append(os.Environ(), "LOUPE_BIN="+bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("node.sh down: %v\n%s", err, out)
		}
	}
	t.Cleanup(down)
	start = time.Now()
	up := exec.Command("./node.sh", "up", nodeDir, k8sDir, loupeImage, filepath.Join(imgs, "web.tar"), filepath.Join(imgs, "pause.tar"))
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("node.sh up: %v\n%s", err, out)
	}
	t.Logf("node up in %s", time.Since(start).Round(100*time.Millisecond))
	env, err := os.ReadFile(filepath.Join(nodeDir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, work: nodeDir, k8s: k8sDir, bin: bin, testhtp: testhttp}
	for _, l := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(l, "NS="); ok {
			n.ns = v
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			n.dump()
		}
	})

	step(t, "1. the DaemonSet becomes ready and the CNI config appears", func() {
		// With the cluster DNS of install/kubernetes/dns/, which the
		// egress steps resolve names through.
		manifests := installManifests(t, loupeImageRef(t, loupeImage)) + "\n---\n" + manifestsOf(t, dnsDir, loupeImageRef(t, loupeImage))
		if out, err := n.kubectlStdin(manifests, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("applied install/kubernetes:\n%s", out)
		}
		// The Job issues the certificates the agent and the relay mount.
		n.mustKubectl("-n", "kube-system", "wait", "--for=condition=complete", "job/loupe-certs", "--timeout=120s")
		n.mustKubectl("-n", "kube-system", "rollout", "status", "ds/loupe-agent", "--timeout=180s")
		// The running agent is not privileged and has exactly its listed
		// capabilities.
		var sc struct {
			Privileged   *bool `json:"privileged"`
			Capabilities struct{ Add, Drop []string }
		}
		raw := n.mustKubectl("-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=loupe-agent", "-o", "jsonpath={.items[0].spec.containers[0].securityContext}")
		if err := json.Unmarshal([]byte(raw), &sc); err != nil || sc.Privileged == nil || *sc.Privileged ||
			!slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || !slices.Equal(sc.Capabilities.Add, []string{"BPF", "PERFMON", "NET_ADMIN"}) {
			t.Fatalf("agent pod securityContext %s (%v): want privileged false, drop ALL, add BPF, PERFMON, NET_ADMIN", raw, err)
		}
		b, err := os.ReadFile(conflistPath)
		if err != nil {
			t.Fatalf("conflist: %v", err)
		}
		var cl struct {
			CNIVersion string `json:"cniVersion"`
			Plugins    []struct{ Type string }
		}
		if err := json.Unmarshal(b, &cl); err != nil || cl.CNIVersion != "1.0.0" || len(cl.Plugins) != 1 || cl.Plugins[0].Type != "loupe-cni" {
			t.Fatalf("conflist %s: %v\n%s", conflistPath, err, b)
		}
		n.mustKubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
		// The relay and the DNS are loupe pods too: settle them before
		// counting links.
		n.mustKubectl("-n", "kube-system", "rollout", "status", "deploy/loupe-relay", "--timeout=120s")
		n.mustKubectl("-n", "kube-system", "rollout", "status", "deploy/loupe-dns", "--timeout=120s")
		n.clientCert()
	})

	linksBefore := n.hostLinks()
	var pods []pod
	step(t, "2. three replicas get pod IPs from loupe and reach each other", func() {
		n.mustKubectl("create", "namespace", testNS)
		if _, err := n.kubectlStdin(webDeployment+"---\n"+clientPods, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		n.mustKubectl("-n", testNS, "rollout", "status", "deploy/web", "--timeout=120s")
		pods = n.webPods()
		cidr := strings.TrimSpace(n.mustKubectl("get", "nodes", "-o", "jsonpath={.items[0].spec.podCIDR}"))
		for _, p := range pods {
			if !inCIDR(p.IP, cidr) {
				t.Fatalf("pod %s has IP %s outside the node's pod CIDR %s", p.Name, p.IP, cidr)
			}
		}
		for _, a := range pods {
			for _, b := range pods {
				if a == b {
					continue
				}
				if err := poll(20*time.Second, func() error {
					got, err := n.fetch(a, b)
					if err != nil {
						return err
					}
					if strings.TrimSpace(got) != b.Name {
						return fmt.Errorf("%s reached %q, want %s", a.Name, got, b.Name)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
		}
	})

	step(t, "3. loupe observe through the relay shows the flows with pod, workload and Service names from the API server", func() {
		n.mustKubectl("-n", "kube-system", "rollout", "status", "deploy/loupe-relay", "--timeout=120s")
		a, b := pods[0], pods[1]
		if err := poll(30*time.Second, func() error {
			if _, err := n.fetch(a, b); err != nil {
				return err
			}
			flows, err := n.observe("--from-pod", testNS+"/"+a.Name, "--to-pod", testNS+"/"+b.Name)
			if err != nil {
				return err
			}
			for _, f := range flows {
				if f.Source.PodName == a.Name && f.Source.Namespace == testNS && f.Destination.PodName == b.Name &&
					slices.ContainsFunc(f.Source.Workloads, func(w workload) bool { return w.Name == "web" && w.Kind == "Deployment" }) {
					return nil
				}
			}
			return fmt.Errorf("no flow %s -> %s with names and workload among %d flows", a.Name, b.Name, len(flows))
		}); err != nil {
			t.Fatal(err)
		}
		// Through the Service's ClusterIP (kube-proxy's DNAT between the
		// pods' TCX programs): the flow names the Service.
		svcIP := strings.TrimSpace(n.mustKubectl("-n", testNS, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"))
		if err := poll(30*time.Second, func() error {
			got, err := n.run(n.testhtp, "get", fmt.Sprintf("http://%s:8080/fetch?url=http://%s:80/", a.IP, svcIP))
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(pods, func(p pod) bool { return p.Name == strings.TrimSpace(got) }) {
				return fmt.Errorf("%s reached %q through the Service, not a web pod", a.Name, got)
			}
			flows, err := n.observe("--from-pod", testNS+"/"+a.Name, "--to-service", testNS+"/web")
			if err != nil {
				return err
			}
			for _, f := range flows {
				if f.DestinationService.Name == "web" && f.DestinationService.Namespace == testNS {
					return nil
				}
			}
			return fmt.Errorf("no flow from %s names the Service %s/web among %d flows", a.Name, testNS, len(flows))
		}); err != nil {
			t.Fatal(err)
		}
		// Hairpin: kube-proxy picks a backend at random, the pod itself
		// among them (masqueraded); every connection must work, and one
		// must come back to a.
		if err := poll(30*time.Second, func() error {
			got, err := n.run(n.testhtp, "get", fmt.Sprintf("http://%s:8080/fetch?url=http://%s:80/", a.IP, svcIP))
			if err != nil {
				t.Fatalf("%s through its own Service: %v", a.Name, err)
			}
			if strings.TrimSpace(got) != a.Name {
				return fmt.Errorf("%s never reached itself through the Service (last: %q)", a.Name, got)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	step(t, "loupe top through the relay: the web pods by their network namespace, the host-network agent pod by its cgroup", func() {
		agent := strings.TrimSpace(n.mustKubectl("-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=loupe-agent",
			"-o", "jsonpath={.items[0].metadata.name}"))
		if err := poll(30*time.Second, func() error {
			// Load in one web pod while the sample runs: its CPU must land on it.
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range 20 {
					_, _ = n.fetch(pods[0], pods[1])
				}
			}()
			rows, err := n.top()
			<-done
			if err != nil {
				return err
			}
			byPod := map[string]topRow{}
			for _, r := range rows {
				byPod[r.Namespace+"/"+r.Pod] = r
			}
			for _, p := range pods {
				if _, ok := byPod[testNS+"/"+p.Name]; !ok {
					return fmt.Errorf("loupe top has no row for %s/%s among %d rows", testNS, p.Name, len(rows))
				}
			}
			if r := byPod[testNS+"/"+pods[1].Name]; r.CPUSeconds <= 0 {
				return fmt.Errorf("%s served 20 requests in the sample but got %v CPU seconds (rows %+v)", pods[1].Name, r.CPUSeconds, rows)
			}
			// The agent runs in the node's network namespace: only its
			// cgroup tells it from the node's other tasks.
			if r, ok := byPod["kube-system/"+agent]; !ok || r.CPUSeconds <= 0 {
				return fmt.Errorf("no CPU for the host-network pod kube-system/%s (row %+v, found %v)", agent, r, ok)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	step(t, "the stock hubble CLI reads the relay over mTLS with the generated client certificate; no one reads without one", func() {
		a := pods[0]
		ip := strings.TrimSpace(n.mustKubectl("-n", "kube-system", "get", "svc", "loupe-relay", "-o", "jsonpath={.spec.clusterIP}"))
		hubble := testtools.Hubble(t, "hubble")
		tlsArgs := []string{"--tls", "--tls-ca-cert-files", n.clientFile("ca.crt"), "--tls-server-name", "instance.hubble-relay.cilium.io"}
		withCert := append(slices.Clone(tlsArgs), "--tls-client-cert-file", n.clientFile("tls.crt"), "--tls-client-key-file", n.clientFile("tls.key"))
		if err := poll(30*time.Second, func() error {
			out, err := n.run(hubble, append([]string{"observe", "--server", ip + ":4245", "--last", "200", "-o", "json", "--pod", testNS + "/" + a.Name}, withCert...)...)
			if err != nil {
				return err
			}
			if !strings.Contains(out, `"pod_name":"`+a.Name+`"`) {
				return fmt.Errorf("hubble observe through the relay: no flow of %s in %d bytes", a.Name, len(out))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		out, err := n.run(hubble, append([]string{"status", "--server", ip + ":4245"}, withCert...)...)
		if err != nil || !strings.Contains(out, "Connected Nodes: 1/1") {
			t.Fatalf("hubble status through the relay: %v\n%s", err, out)
		}
		// Without a client certificate, in plain text, or at an agent's
		// port with no certificate: refused.
		nodeIP := strings.TrimSpace(n.mustKubectl("get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`))
		for what, args := range map[string][]string{
			"relay without a client certificate": append([]string{"status", "--server", ip + ":4245", "--timeout", "3s"}, tlsArgs...),
			"relay in plain text":                {"status", "--server", ip + ":4245", "--timeout", "3s"},
			"agent in plain text":                {"status", "--server", nodeIP + ":4244", "--timeout", "3s"},
			"agent without a client certificate": append([]string{"status", "--server", nodeIP + ":4244", "--timeout", "3s"},
				"--tls", "--tls-ca-cert-files", n.clientFile("ca.crt"), "--tls-server-name", "node.default.hubble-grpc.cilium.io"),
		} {
			if out, err := n.run(hubble, args...); err == nil {
				t.Errorf("%s: hubble status succeeded:\n%s", what, out)
			}
		}
	})

	step(t, "rotated certificates (loupe certs --kubernetes --force) reach the running agent and relay without a restart", func() {
		restarts := func() string {
			return strings.TrimSpace(n.mustKubectl("-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/part-of=loupe",
				"-o", `jsonpath={range .items[*]}{.metadata.name}/{.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}`))
		}
		before := restarts()
		for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
			if err := os.Rename(n.clientFile(k), n.clientFile("old-"+k)); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := n.run(filepath.Join(n.bin, "loupe"), "certs", "--kubernetes", "--force", "--k8s-kubeconfig", filepath.Join(n.work, "kubeconfig")); err != nil {
			t.Fatalf("loupe certs --force: %v\n%s", err, out)
		}
		n.clientCert()
		ip := strings.TrimSpace(n.mustKubectl("-n", "kube-system", "get", "svc", "loupe-relay", "-o", "jsonpath={.spec.clusterIP}"))
		nodeIP := strings.TrimSpace(n.mustKubectl("get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`))
		nodeName := strings.TrimSpace(n.mustKubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"))
		hubble := testtools.Hubble(t, "hubble")
		status := func(server, name, prefix string) (string, error) {
			return n.run(hubble, "status", "--server", server, "--timeout", "3s", "--tls", "--tls-ca-cert-files", n.clientFile(prefix+"ca.crt"),
				"--tls-client-cert-file", n.clientFile(prefix+"tls.crt"), "--tls-client-key-file", n.clientFile(prefix+"tls.key"), "--tls-server-name", name)
		}
		// The kubelet updates the Secret volumes within its sync period.
		start := time.Now()
		if err := poll(180*time.Second, func() error {
			if out, err := status(ip+":4245", "instance.hubble-relay.cilium.io", ""); err != nil || !strings.Contains(out, "Connected Nodes: 1/1") {
				return fmt.Errorf("relay with the new certificates: %v %s", err, out)
			}
			_, err := status(nodeIP+":4244", contract.TLSServerName(nodeName), "")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("the relay and the agent served the new certificates %s after the rotation", time.Since(start).Round(time.Second))
		if out, err := status(ip+":4245", "instance.hubble-relay.cilium.io", "old-"); err == nil {
			t.Errorf("the relay still accepts the old CA's client:\n%s", out)
		}
		if after := restarts(); after != before {
			t.Errorf("pods restarted during the rotation:\nbefore %s\nafter  %s", before, after)
		}
	})

	step(t, "the agent restarts (an upgrade's rollout) without cutting pod traffic", func() {
		a, b := pods[0], pods[1]
		before := strings.TrimSpace(n.mustKubectl("-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=loupe-agent",
			"-o", "jsonpath={.items[*].metadata.uid}"))
		// Probe a -> b all through the restart: the programs, maps and links
		// are pinned, so the kernel keeps forwarding while no agent runs.
		stop := make(chan struct{})
		type result struct {
			probes, failures int
			last             error
		}
		done := make(chan result)
		go func() {
			var r result
			for {
				select {
				case <-stop:
					done <- r
					return
				case <-time.After(100 * time.Millisecond):
				}
				r.probes++
				if got, err := n.fetch(a, b); err != nil || strings.TrimSpace(got) != b.Name {
					r.failures++
					r.last = fmt.Errorf("%q %v", got, err)
				}
			}
		}()
		n.mustKubectl("-n", "kube-system", "rollout", "restart", "ds/loupe-agent")
		out, err := n.kubectl("-n", "kube-system", "rollout", "status", "ds/loupe-agent", "--timeout=120s")
		close(stop)
		r := <-done
		if err != nil {
			t.Fatalf("rollout: %v\n%s", err, out)
		}
		after := strings.TrimSpace(n.mustKubectl("-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=loupe-agent",
			"-o", "jsonpath={.items[*].metadata.uid}"))
		if after == before || after == "" {
			t.Fatalf("agent pod uid %q before, %q after the rollout: it did not restart", before, after)
		}
		t.Logf("%d probes %s -> %s during the restart, %d failed", r.probes, a.Name, b.Name, r.failures)
		if r.failures > 0 || r.probes == 0 {
			t.Fatalf("%d of %d probes failed while the agent restarted (last: %v)", r.failures, r.probes, r.last)
		}
		// The new agent serves flows, and the relay found it again.
		since := time.Now().UTC().Format(time.RFC3339)
		if err := poll(30*time.Second, func() error {
			if _, err := n.fetch(a, b); err != nil {
				return err
			}
			flows, err := n.observe("--since", since, "--from-pod", testNS+"/"+a.Name, "--to-pod", testNS+"/"+b.Name)
			if err != nil {
				return err
			}
			if len(flows) == 0 {
				return fmt.Errorf("no flow %s -> %s since the restart", a.Name, b.Name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	step(t, "4. a NetworkPolicy is enforced within seconds and drops name it", func() {
		applied := time.Now()
		if _, err := n.kubectlStdin(denyPolicy, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		a, b := pods[0], pods[1]
		// A blocked probe returns only at its client's timeout, so the
		// enforcement time is bracketed by probe start times: after the
		// last one that got through, by the first one that did not.
		var lastOpen, firstBlocked time.Duration
		if err := poll(10*time.Second, func() error {
			sent := time.Since(applied)
			if _, err := n.fetch(a, b); err == nil {
				lastOpen = sent
				return fmt.Errorf("%s still reaches %s", a.Name, b.Name)
			}
			firstBlocked = sent
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("policy enforced between %s and %s after kubectl apply returned",
			lastOpen.Round(10*time.Millisecond), firstBlocked.Round(10*time.Millisecond))
		if err := poll(20*time.Second, func() error {
			flows, err := n.observe("--verdict", "DROPPED", "--to-pod", testNS+"/"+b.Name)
			if err != nil {
				return err
			}
			for _, f := range flows {
				for _, p := range f.IngressDeniedBy {
					if p.Name == policyName && p.Namespace == testNS {
						return nil
					}
				}
			}
			return fmt.Errorf("no dropped flow to %s names %s/%s (%d drops)", b.Name, testNS, policyName, len(flows))
		}); err != nil {
			t.Fatal(err)
		}
	})

	step(t, "DNS: default-deny egress with allows to web and DNS: a client resolves web by name and fetches through it, one without the allow fails", func() {
		n.mustKubectl("-n", testNS, "wait", "--for=condition=Ready", "pod", "-l", "role=client", "--timeout=60s")
		n.mustKubectl("-n", testNS, "delete", "networkpolicy", policyName)
		allowed, denied := n.pod("client-allowed"), n.pod("client-denied")
		// Without egress policy both clients resolve and reach web: the
		// later failure is the policy's.
		n.fetchWebByName(allowed, denied)
		if _, err := n.kubectlStdin(egressPolicies, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		n.checkEgressByName(allowed, denied, pods)
		if err := poll(20*time.Second, func() error {
			flows, err := n.observe("--from-pod", testNS+"/"+allowed.Name, "--to-service", "kube-system/kube-dns")
			if err != nil || len(flows) == 0 {
				return fmt.Errorf("no flow from %s to the kube-dns Service (%d flows): %v", allowed.Name, len(flows), err)
			}
			flows, err = n.observe("--verdict", "DROPPED", "--from-pod", testNS+"/"+denied.Name)
			if err != nil || len(flows) == 0 {
				return fmt.Errorf("no dropped flow from %s: %v", denied.Name, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	step(t, "DNS without kube-proxy: the same with kube-proxy stopped and its rules removed: loupe's Service translation alone", func() {
		n.nodeSh("proxy-stop")
		defer n.nodeSh("proxy-start")
		if out, err := n.run("iptables-save"); err != nil || strings.Contains(out, "KUBE-SVC") || strings.Contains(out, "KUBE-SERVICES") {
			t.Fatalf("kube-proxy's rules left (%v):\n%s", err, out)
		}
		n.checkEgressByName(n.pod("client-allowed"), n.pod("client-denied"), pods)
	})

	step(t, "5. deleting the pods runs CNI DEL and leaves nothing on the host", func() {
		n.mustKubectl("-n", testNS, "delete", "deploy/web", "pod/client-allowed", "pod/client-denied", "--wait=true")
		if err := poll(60*time.Second, func() error {
			out, err := n.kubectl("-n", testNS, "get", "pods", "-o", "name")
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) != "" {
				return fmt.Errorf("pods left: %s", out)
			}
			if got := n.hostLinks(); !slices.Equal(got, linksBefore) {
				return fmt.Errorf("links %v, before the pods %v", got, linksBefore)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, p := range pods {
			if out, _ := n.run("ip", "route", "get", p.IP); strings.Contains(out, "lxc") || strings.Contains(out, "veth") {
				t.Errorf("route to deleted pod %s left: %s", p.IP, out)
			}
		}
	})

	step(t, "uninstall: delete the DaemonSet, loupe-agent cleanup, nothing left", func() {
		// The agent goes first, so the relay's pod (networked by loupe) is
		// deleted while no agent runs: its DEL must not wait for one.
		loupePodsGone := func(selector string) error {
			return poll(60*time.Second, func() error {
				out, err := n.kubectl("-n", "kube-system", "get", "pods", "-l", selector, "-o", "name")
				if err != nil || strings.TrimSpace(out) != "" {
					return fmt.Errorf("pods %s left: %s %v", selector, out, err)
				}
				return nil
			})
		}
		n.mustKubectl("-n", "kube-system", "delete", "ds/loupe-agent", "--wait=true")
		if err := loupePodsGone("app.kubernetes.io/name=loupe-agent"); err != nil {
			t.Fatal(err)
		}
		manifests := installManifests(t, loupeImageRef(t, loupeImage)) + "\n---\n" + manifestsOf(t, dnsDir, loupeImageRef(t, loupeImage))
		if _, err := n.kubectlStdin(manifests, "delete", "--ignore-not-found", "--wait=true", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		if err := loupePodsGone("app.kubernetes.io/part-of=loupe"); err != nil {
			t.Fatal(err)
		}
		// The relay's DEL removed its veth without the agent.
		for _, l := range n.hostLinks() {
			if strings.HasPrefix(l, cni.HostIfnamePrefix) {
				t.Errorf("pod veth %s left after the uninstall", l)
			}
		}
		down()
		for _, p := range []string{conflistPath, "/opt/cni/bin/loupe-cni", "/sys/fs/bpf/loupe", "/run/loupe", "/run/netns/" + n.ns} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s left on the host", p)
			}
		}
	})
	t.Logf("total %s", time.Since(total).Round(time.Second))
}

type pod struct{ Name, IP string }

func (n *node) webPods() []pod {
	out := n.mustKubectl("-n", testNS, "get", "pods", "-l", "app=web", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}`)
	var pods []pod
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 {
			pods = append(pods, pod{f[0], f[1]})
		}
	}
	if len(pods) != 3 {
		n.t.Fatalf("want 3 web pods with IPs, got %q", out)
	}
	return pods
}

// fetch asks pod a to GET pod b by pod IP.
func (n *node) fetch(a, b pod) (string, error) {
	return n.run(n.testhtp, "get", fmt.Sprintf("http://%s:8080/fetch?url=http://%s:8080/", a.IP, b.IP))
}

// hostLinks lists the node namespace's links (names only).
func (n *node) hostLinks() []string {
	out, err := n.run("ip", "-o", "link", "show")
	if err != nil {
		n.t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	slices.Sort(names)
	return names
}

type workload struct{ Name, Kind string }
type endpoint struct {
	Namespace string
	PodName   string `json:"pod_name"`
	Workloads []workload
}
type policy struct{ Name, Namespace string }
type service struct{ Name, Namespace string }
type flow struct {
	Source, Destination endpoint
	DestinationService  service `json:"destination_service"`
	Verdict             string
	IngressDeniedBy     []policy `json:"ingress_denied_by"`
}

// clientCert saves the client certificate the loupe-certs Job issued, as a
// user does (install/kubernetes/README.md).
func (n *node) clientCert() {
	n.t.Helper()
	for _, k := range []string{"tls.crt", "tls.key", "ca.crt"} {
		b64 := n.mustKubectl("-n", "kube-system", "get", "secret", "loupe-client-tls", "-o", "jsonpath={.data."+strings.ReplaceAll(k, ".", `\.`)+"}")
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil || len(b) == 0 {
			n.t.Fatalf("secret loupe-client-tls %s: %v", k, err)
		}
		if err := os.WriteFile(n.clientFile(k), b, 0o600); err != nil {
			n.t.Fatal(err)
		}
	}
}

func (n *node) clientFile(k string) string { return filepath.Join(n.work, "client-"+k) }

// relayCLI runs the loupe CLI against the relay's Service over mTLS, with
// the generated client certificate.
func (n *node) relayCLI(args ...string) (string, error) {
	ip := strings.TrimSpace(n.mustKubectl("-n", "kube-system", "get", "svc", "loupe-relay", "-o", "jsonpath={.spec.clusterIP}"))
	return n.run(filepath.Join(n.bin, "loupe"), append(args, "--server", ip+":4245",
		"--tls-ca-cert-files", n.clientFile("ca.crt"), "--tls-client-cert-file", n.clientFile("tls.crt"),
		"--tls-client-key-file", n.clientFile("tls.key"), "--tls-server-name", "instance.hubble-relay.cilium.io")...)
}

// observe runs `loupe observe` against the relay's Service over mTLS and
// decodes the flows.
func (n *node) observe(filters ...string) ([]flow, error) {
	out, err := n.relayCLI(append([]string{"observe", "--last", "2000", "-o", "json"}, filters...)...)
	if err != nil {
		return nil, err
	}
	lines, err := jsonLines[struct{ Flow *flow }](out)
	var flows []flow
	for _, r := range lines {
		if r.Flow != nil {
			flows = append(flows, *r.Flow)
		}
	}
	return flows, err
}

// topRow is one line of loupe top -o json.
type topRow struct {
	Namespace  string  `json:"namespace"`
	Pod        string  `json:"pod"`
	CPUSeconds float64 `json:"cpuSeconds"`
}

// top runs `loupe top --once -o json` against the relay's Service over mTLS.
func (n *node) top() ([]topRow, error) {
	out, err := n.relayCLI("top", "--once", "-o", "json")
	if err != nil {
		return nil, err
	}
	return jsonLines[topRow](out)
}

// jsonLines decodes a CLI's -o json output: one object per line.
func jsonLines[T any](out string) ([]T, error) {
	var rows []T
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var r T
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			return nil, fmt.Errorf("output line %q: %w", l, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func inCIDR(ip, cidr string) bool {
	a, err1 := netip.ParseAddr(ip)
	p, err2 := netip.ParsePrefix(cidr)
	return err1 == nil && err2 == nil && p.Contains(a)
}

var imageLine = regexp.MustCompile(`(?m)^(\s*image:\s*)loupe:\S+$`)

const (
	installDir = "../../install/kubernetes"
	dnsDir     = installDir + "/dns"
)

// installManifests is install/kubernetes, unchanged but for the image name.
func installManifests(t *testing.T, ref string) string {
	t.Helper()
	return manifestsOf(t, installDir, ref)
}

// manifestsOf is the YAML of dir, unchanged but for the image name.
func manifestsOf(t *testing.T, dir, ref string) string {
	t.Helper()
	var all []string
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := install.Decode(e.Name(), b); err != nil {
			t.Fatal(err)
		}
		all = append(all, imageLine.ReplaceAllString(string(b), "${1}"+ref))
	}
	return strings.Join(all, "\n---\n")
}

// loupeImageRef reads the tag make image gave the archive.
func loupeImageRef(t *testing.T, archive string) string {
	t.Helper()
	out, err := exec.Command("tar", "-xOf", archive, "manifest.json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var m []struct{ RepoTags []string }
	if err := json.Unmarshal(out, &m); err != nil || len(m) != 1 || len(m[0].RepoTags) != 1 {
		t.Fatalf("manifest.json of %s: %v %s", archive, err, out)
	}
	return m[0].RepoTags[0]
}

const webDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ` + testNS + `
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: loupe-testhttp:e2e
        imagePullPolicy: Never
        args: [serve, ":8080"]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: ` + testNS + `
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`

const denyPolicy = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: ` + policyName + `
  namespace: ` + testNS + `
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
`

// pod returns a pod of the test namespace with its IP.
func (n *node) pod(name string) pod {
	n.t.Helper()
	ip := strings.TrimSpace(n.mustKubectl("-n", testNS, "get", "pod", name, "-o", "jsonpath={.status.podIP}"))
	if ip == "" {
		n.t.Fatalf("pod %s has no IP", name)
	}
	return pod{name, ip}
}

// webNames are the names a pod of the test namespace resolves web by: the
// short name through its resolv.conf search path, and the full name.
var webNames = []string{"web", "web." + testNS + ".svc.cluster.local"}

// fetchByName asks client to GET the web Service by a DNS name; it returns
// the web pod that answered.
func (n *node) fetchByName(client pod, name string) (string, error) {
	got, err := n.run(n.testhtp, "get", fmt.Sprintf("http://%s:8080/fetch?url=http://%s/", client.IP, name))
	return strings.TrimSpace(got), err
}

// fetchWebByName requires every client to reach a web pod by every name.
func (n *node) fetchWebByName(clients ...pod) {
	n.t.Helper()
	for _, c := range clients {
		for _, name := range webNames {
			if err := poll(30*time.Second, func() error {
				got, err := n.fetchByName(c, name)
				if err == nil && !strings.HasPrefix(got, "web-") {
					err = fmt.Errorf("%s reached %q, not a web pod", c.Name, got)
				}
				if err != nil {
					return fmt.Errorf("%s by name %s: %w", c.Name, name, err)
				}
				return nil
			}); err != nil {
				n.t.Fatal(err)
			}
		}
	}
}

// checkEgressByName: under egressPolicies, the allowed client resolves and
// reaches web by name, and the other one fails.
func (n *node) checkEgressByName(allowed, denied pod, web []pod) {
	n.t.Helper()
	n.fetchWebByName(allowed)
	if got, err := n.fetchByName(allowed, webNames[0]); err != nil || !slices.ContainsFunc(web, func(p pod) bool { return p.Name == got }) {
		n.t.Fatalf("%s by name: %q %v, want one of the web pods %v", allowed.Name, got, err, web)
	}
	if err := poll(10*time.Second, func() error {
		if got, err := n.fetchByName(denied, webNames[0]); err == nil {
			return fmt.Errorf("%s, with no egress allowed, reached %q", denied.Name, got)
		}
		return nil
	}); err != nil {
		n.t.Fatal(err)
	}
}

// nodeSh runs node.sh CMD on the test's node.
func (n *node) nodeSh(cmd string) {
	n.t.Helper()
	c := exec.Command("./node.sh", cmd, n.work)
	if out, err := c.CombinedOutput(); err != nil {
		n.t.Fatalf("node.sh %s: %v\n%s", cmd, err, out)
	}
}

// Two clients of web: only client-allowed is let out, to the web pods and
// to the cluster DNS.
const clientPods = `apiVersion: v1
kind: Pod
metadata:
  name: client-allowed
  namespace: ` + testNS + `
  labels: {role: client, egress: web-and-dns}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: loupe-testhttp:e2e
    imagePullPolicy: Never
    args: [serve, ":8080"]
---
apiVersion: v1
kind: Pod
metadata:
  name: client-denied
  namespace: ` + testNS + `
  labels: {role: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: loupe-testhttp:e2e
    imagePullPolicy: Never
    args: [serve, ":8080"]
`

// Default-deny egress for the namespace, and the usual allows: the web
// pods on their container port, and the kube-dns pods on 53. Both are
// reached through a ClusterIP, so both hold only if the Service is
// translated before egress policy judges the packet.
const egressPolicies = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-egress
  namespace: ` + testNS + `
spec:
  podSelector: {}
  policyTypes: [Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web-and-dns
  namespace: ` + testNS + `
spec:
  podSelector:
    matchLabels: {egress: web-and-dns}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector:
        matchLabels: {app: web}
    ports: [{port: 8080, protocol: TCP}]
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
`
