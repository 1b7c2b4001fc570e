package agent

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A corrupt state file is moved aside and rebuilt from the pinned endpoint
// map and the host veths: running pods keep their datapath entries and
// their addresses, and no held address is handed out again.
func TestCorruptStateFileKeepsRunningPods(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt []string
		// realKeys: the endpoints keep their container id and pod name.
		realKeys bool
	}{
		{"endpoints", []string{EndpointsStateFile}, true},
		{"ipam", []string{IPAMStateFile}, true},
		{"both", []string{EndpointsStateFile, IPAMStateFile}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.links = map[uint32]string{11: "lxc11", 12: "lxc12", 13: "lxc13"}
			f.restart(t)
			ep1 := f.register(t, "c1", "eth0", 11, f.allocate(t, "c1", "eth0"))
			ep2 := f.register(t, "c2", "eth0", 12, f.allocate(t, "c2", "eth0"))
			ep3 := f.register(t, "c3", "eth0", 13, f.allocate(t, "c3", "eth0"))
			if err := f.a.SetEndpointPolicy(map[uint32]EndpointPolicy{ep2.Id: {Identity: 4242, Ingress: true}}); err != nil {
				t.Fatal(err)
			}
			before := map[uint32]EndpointInfo{11: f.dp.eps[11], 12: f.dp.eps[12]}
			held := map[string]bool{ep1.Ipv4: true, ep1.Ipv6: true, ep2.Ipv4: true, ep2.Ipv6: true}
			// The pod behind lxc13 goes away with the agent.
			delete(f.links, 13)

			for _, name := range tc.corrupt {
				if err := os.WriteFile(filepath.Join(f.dir, name), []byte(`{"version":1,"endpoi`), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			f.restart(t)

			// Each corrupt file is kept aside, logged and recorded.
			recs := f.a.StateRecoveries()
			if len(recs) != len(tc.corrupt) {
				t.Fatalf("recoveries %+v, want %v", recs, tc.corrupt)
			}
			for _, name := range tc.corrupt {
				aside, _ := filepath.Glob(filepath.Join(f.dir, name+".corrupt-*"))
				if len(aside) != 1 {
					t.Fatalf("%s moved aside as %v", name, aside)
				}
				if b, _ := os.ReadFile(aside[0]); string(b) != `{"version":1,"endpoi` {
					t.Fatalf("%s: the moved file holds %q", aside[0], b)
				}
				found := false
				for _, r2 := range recs {
					if r2.File == name && r2.MovedTo == aside[0] && r2.Recovered >= 2 && r2.Err != nil {
						found = true
					}
				}
				if !found {
					t.Fatalf("no recovery record for %s in %+v", name, recs)
				}
			}
			if logs := f.logs.String(); !strings.Contains(logs, "state file was corrupt") || !strings.Contains(logs, ".corrupt-") {
				t.Fatalf("no log line for the recovery:\n%s", logs)
			}

			// The live pods keep their datapath entries, ipcache entries and
			// addresses; the gone pod's entry is removed.
			if len(f.dp.eps) != 2 || f.dp.eps[11] != before[11] || f.dp.eps[12] != before[12] {
				t.Fatalf("datapath after recovery %v, before %v", f.dp.eps, before)
			}
			if f.dp.ipc[netip.MustParsePrefix(ep2.Ipv4+"/32")] != 4242 || f.dp.ipc[netip.MustParsePrefix(ep1.Ipv6+"/128")] != ep1.Identity {
				t.Fatalf("ipcache after recovery %v", f.dp.ipc)
			}
			if _, ok := f.dp.ipc[netip.MustParsePrefix(ep3.Ipv4+"/32")]; ok {
				t.Fatalf("ipcache keeps the gone pod's %s", ep3.Ipv4)
			}
			eps := f.a.Endpoints()
			if len(eps) != 2 {
				t.Fatalf("endpoints after recovery %+v", eps)
			}
			for i, want := range []struct {
				cid, host string
				idx       uint32
				id        uint32
				v4, v6    string
			}{{"c1", "lxc11", 11, ep1.Id, ep1.Ipv4, ep1.Ipv6}, {"c2", "lxc12", 12, ep2.Id, ep2.Ipv4, ep2.Ipv6}} {
				e := eps[i]
				if e.HostIfindex != want.idx || e.HostIfname != want.host || e.ID != want.id ||
					e.IPv4.String() != want.v4 || e.IPv6.String() != want.v6 {
					t.Fatalf("endpoint %d after recovery %+v, want %+v", i, e, want)
				}
				wantCID, wantPod := want.cid, "pod-"+want.cid
				if !tc.realKeys {
					wantCID, wantPod = RecoveredContainerPrefix+want.host, ""
				}
				if e.ContainerID != wantCID || e.PodName != wantPod {
					t.Fatalf("endpoint %d after recovery is %s (pod %q), want %s (pod %q)", i, e.ContainerID, e.PodName, wantCID, wantPod)
				}
				al, ok := f.a.ipam.Get(e.key())
				if !ok || al.IPv4 != e.IPv4 || al.IPv6 != e.IPv6 {
					t.Fatalf("endpoint %s: allocation %+v, %v", e.ContainerID, al, ok)
				}
			}
			if eps[1].Identity != 4242 || !eps[1].PolicyIngress {
				t.Fatalf("endpoint 2 lost its identity or policy flags: %+v", eps[1])
			}

			// New pods never get an address a live pod holds.
			for i := range 20 {
				r := f.allocate(t, "new"+string(rune('a'+i)), "eth0")
				if held[r.Ipv4] || held[r.Ipv6] {
					t.Fatalf("allocation %d handed out a held address: %s %s", i, r.Ipv4, r.Ipv6)
				}
			}
			f.links[14] = "lxc14"
			ep5 := f.register(t, "n1", "eth0", 14, f.allocate(t, "n1", "eth0"))
			if ep5.Id == ep1.Id || ep5.Id == ep2.Id {
				t.Fatalf("endpoint id %d reused", ep5.Id)
			}

			// The rebuilt state is on disk: the next start needs no recovery.
			f.restart(t)
			if len(f.a.StateRecoveries()) != 0 || len(f.a.Endpoints()) != 3 {
				t.Fatalf("second restart: recoveries %+v, endpoints %+v", f.a.StateRecoveries(), f.a.Endpoints())
			}

			// The pod's DEL removes its veth; the sweep then releases the
			// recovered endpoint and its addresses, under whatever key.
			delete(f.links, 11)
			if _, err := f.a.SweepDead(); err != nil {
				t.Fatalf("SweepDead: %v", err)
			}
			if len(f.a.Endpoints()) != 2 {
				t.Fatalf("endpoints after the sweep %+v", f.a.Endpoints())
			}
			if _, ok := f.dp.eps[11]; ok {
				t.Fatal("the deleted pod's datapath entry stays")
			}
			for _, al := range f.a.ipam.List() {
				if al.IPv4.String() == ep1.Ipv4 {
					t.Fatalf("the deleted pod's address stays allocated to %+v", al)
				}
			}
		})
	}
}

// A state file that cannot be read (as opposed to parsed) still stops the
// agent: moving it aside would lose a good file.
func TestUnreadableStateFileStopsAgent(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, EndpointsStateFile), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{NodeName: "n", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")},
		StateDir: dir, Datapath: newMemDatapath()})
	if err == nil {
		t.Fatal("New succeeded on an unreadable endpoints file")
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, "*.corrupt-*")); len(aside) != 0 {
		t.Fatalf("moved aside: %v", aside)
	}
}
