package e2e

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/dns/dnsmessage"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/internal/testtools"
	"github.com/loupe-project/loupe/lab"
)

// askDNS sends one query from pod src to the DNS pod dst, over UDP or TCP,
// and returns the answer's rcode (-1: no answer within wait).
func (c *cluster) askDNS(t *testing.T, src, dst lab.PodStatus, tcp bool, name string, wait time.Duration) int {
	t.Helper()
	q, err := (&dnsmessage.Message{
		Header:    dnsmessage.Header{ID: uint16(time.Now().UnixNano()), RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	rcode := -1
	err = ns.WithNetNSPath(c.netnsPath(src), func(ns.NetNS) error {
		network := "udp4"
		if tcp {
			network = "tcp4"
		}
		nc, err := net.DialTimeout(network, net.JoinHostPort(dst.IP, "53"), 2*time.Second)
		if err != nil {
			return err
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(wait))
		msg := q
		if tcp {
			msg = append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)
		}
		if _, err := nc.Write(msg); err != nil {
			return err
		}
		buf := make([]byte, 4096)
		var n int
		if tcp {
			if _, err := io.ReadFull(nc, buf[:2]); err != nil {
				return nil
			}
			n = int(binary.BigEndian.Uint16(buf[:2]))
			if _, err := io.ReadFull(nc, buf[:n]); err != nil {
				return nil
			}
		} else if n, err = nc.Read(buf); err != nil {
			return nil // no answer
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf[:n]); err != nil {
			return err
		}
		rcode = int(m.RCode)
		return nil
	})
	if err != nil {
		t.Fatalf("dns %s from %s/%s: %v", name, src.Namespace, src.Name, err)
	}
	return rcode
}

// TestPrivilegedL7DNS follows DNS exchanges of real pods through the
// datapath, the agents and the lab's relay to the stock hubble CLI.
func TestPrivilegedL7DNS(t *testing.T) {
	c := needLab(t)
	bin := testtools.Hubble(t, "hubble")
	dnsPod, client, api := c.pods["demo/dns"], c.pods["demo/frontend"], c.pods["demo/api"]
	if dnsPod.IP == "" || client.IP == "" || api.IP == "" {
		t.Fatalf("the demo's dns and frontend pods are missing: %v", c.pods)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tag := hex.EncodeToString(b)
	found := api.Name + "." + api.Namespace + ".pod.lab."
	missing := "missing-" + tag + ".demo.pod.lab."
	dropped := "q-" + tag + ".drop.lab."
	failing := "q-" + tag + ".fail.lab."

	if rc := c.askDNS(t, client, dnsPod, false, found, 2*time.Second); rc != 0 {
		t.Fatalf("%s: rcode %d", found, rc)
	}
	if rc := c.askDNS(t, client, dnsPod, true, found, 2*time.Second); rc != 0 {
		t.Fatalf("%s over TCP: rcode %d", found, rc)
	}
	if rc := c.askDNS(t, client, dnsPod, false, missing, 2*time.Second); rc != 3 {
		t.Fatalf("%s: rcode %d, want NXDOMAIN", missing, rc)
	}
	if rc := c.askDNS(t, client, dnsPod, false, failing, 2*time.Second); rc != 2 {
		t.Fatalf("%s: rcode %d, want SERVFAIL", failing, rc)
	}
	sent := time.Now()
	if rc := c.askDNS(t, client, dnsPod, false, dropped, 500*time.Millisecond); rc != -1 {
		t.Fatalf("%s: answered (rcode %d)", dropped, rc)
	}

	relay := c.status.RelayAddress
	var flows []*flowpb.Flow
	err := poll(20*time.Second, 500*time.Millisecond, func() error {
		out, errs, err := hubble(t, bin, "observe", "--server", relay, "--protocol", "dns", "--since", "2m", "-o", "json")
		if err != nil {
			return fmt.Errorf("hubble observe: %v\n%s", err, errs)
		}
		flows = nil
		for _, f := range flowsOf(parseFlows(t, out)) {
			if strings.Contains(f.GetL7().GetDns().GetQuery(), tag) || f.GetL7().GetDns().GetQuery() == found {
				flows = append(flows, f)
			}
		}
		for _, f := range flows {
			if f.GetL7().GetDns().GetQuery() == dropped && f.GetVerdict() == flowpb.Verdict_ERROR {
				return nil
			}
		}
		return fmt.Errorf("no timeout flow for %s yet; flows:\n%s", dropped, describeAll(flows))
	})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, f := range flows {
		d := f.GetL7().GetDns()
		if f.GetType() != flowpb.FlowType_L7 || f.GetEventType().GetType() != 129 || d.GetObservationSource() != "loupe" {
			t.Errorf("not an L7 DNS flow: %v", f)
		}
		key := d.GetQuery() + " " + f.GetL7().GetType().String()
		if f.GetVerdict() == flowpb.Verdict_ERROR {
			key += " timeout"
		}
		count[key]++
		switch {
		case f.GetL7().GetType() == flowpb.L7FlowType_REQUEST:
			if f.GetSource().GetPodName() != client.Name || f.GetDestination().GetPodName() != dnsPod.Name {
				t.Errorf("query flow endpoints: %v", f)
			}
		case d.GetQuery() == missing:
			if d.GetRcode() != 3 || f.GetL7().GetLatencyNs() == 0 || !strings.Contains(f.GetSummary(), "RCode: Non-Existent Domain") {
				t.Errorf("NXDOMAIN flow: %v", f)
			}
		case d.GetQuery() == failing:
			if d.GetRcode() != 2 {
				t.Errorf("SERVFAIL flow: %v", f)
			}
		case d.GetQuery() == found:
			if len(d.GetIps()) != 1 || d.GetIps()[0] != api.IP || f.GetL7().GetLatencyNs() == 0 || !f.GetIsReply().GetValue() {
				t.Errorf("answer flow: %v", f)
			}
		case d.GetQuery() == dropped:
			if at := f.GetTime().AsTime(); at.Sub(sent) < 4*time.Second || f.GetSource().GetPodName() != dnsPod.Name {
				t.Errorf("timeout flow at %s (query sent %s): %v", at, sent, f)
			}
		}
	}
	// Every message once in the cluster, however many veths it crossed.
	for key, want := range map[string]int{
		missing + " REQUEST": 1, missing + " RESPONSE": 1,
		failing + " REQUEST": 1, failing + " RESPONSE": 1,
		dropped + " REQUEST": 1, dropped + " RESPONSE timeout": 1,
	} {
		if count[key] != want {
			t.Errorf("%q: %d flows, want %d (all: %v)", key, count[key], want, count)
		}
	}
	if count[found+" REQUEST"] < 2 || count[found+" REQUEST"] != count[found+" RESPONSE"] {
		t.Errorf("%s: %v", found, count)
	}

	// The frontend reached api by name: its TCP flows to api carry the
	// name, so hubble's --to-fqdn finds them.
	k := c.dial(t, "TCP", client, api, 8080)
	fqdn := strings.TrimSuffix(found, ".")
	if err := poll(10*time.Second, 300*time.Millisecond, func() error {
		out, errs, err := hubble(t, bin, "observe", "--server", relay, "--to-fqdn", fqdn, "--protocol", "tcp", "--since", "1m", "-o", "json")
		if err != nil {
			return fmt.Errorf("hubble observe --to-fqdn: %v\n%s", err, errs)
		}
		for _, f := range k.matching(flowsOf(parseFlows(t, out))) {
			if len(f.GetDestinationNames()) == 1 && f.GetDestinationNames()[0] == fqdn {
				return nil
			}
		}
		return fmt.Errorf("no flow of %s with destination_names [%s]:\n%s", k, fqdn, out)
	}); err != nil {
		t.Error(err)
	}

	// The client's agent counts them in Hubble's dns family and in loupe's
	// DNS latency histogram.
	resp, err := http.Get("http://" + c.nodes[client.Node].MetricsAddress + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, re := range []string{
		`(?m)^hubble_dns_responses_total\{[^}]*rcode="Non-Existent Domain"[^}]*\} [1-9]`,
		`(?m)^hubble_dns_queries_total\{[^}]*qtypes="A"[^}]*\} [1-9]`,
		`(?m)^hubble_dns_response_types_total\{[^}]*type="A"[^}]*\} [1-9]`,
		`(?m)^loupe_dns_response_duration_seconds_count [1-9]`,
		`(?m)^loupe_dns_queries_unanswered_total [1-9]`,
	} {
		if !regexp.MustCompile(re).Match(body) {
			t.Errorf("metrics of %s lack %s", client.Node, re)
		}
	}

	// hubble's own printer shows them as Cilium's L7 DNS flows.
	out, errs, err := hubble(t, bin, "observe", "--server", relay, "--protocol", "dns", "--since", "2m", "--type", "l7")
	if err != nil {
		t.Fatalf("hubble observe: %v\n%s", err, errs)
	}
	for _, want := range []string{"dns-request", "dns-response", "DNS Query " + missing + " A", "DNS Answer RCode: Non-Existent Domain TTL: 0 (Query " + missing + " A)"} {
		if !strings.Contains(out, want) {
			t.Errorf("hubble observe lacks %q:\n%s", want, out)
		}
	}
}
