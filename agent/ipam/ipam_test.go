package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func mustNew(t *testing.T, path string, cidrs ...string) *Allocator {
	t.Helper()
	var ps []netip.Prefix
	for _, c := range cidrs {
		ps = append(ps, netip.MustParsePrefix(c))
	}
	a, err := New(Config{CIDRs: ps, StatePath: path})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func TestNewRejectsBadCIDRs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cidrs []string
	}{
		{"none", nil},
		{"host bits", []string{"10.0.0.1/24"}},
		{"too small v4", []string{"10.0.0.0/31"}},
		{"too small v6", []string{"fd00::/127"}},
		{"two v4", []string{"10.0.0.0/24", "10.1.0.0/24"}},
		{"two v6", []string{"fd00::/64", "fd01::/64"}},
		{"4in6", []string{"::ffff:10.0.0.0/120"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ps []netip.Prefix
			for _, c := range tc.cidrs {
				ps = append(ps, netip.MustParsePrefix(c))
			}
			if _, err := New(Config{CIDRs: ps}); err == nil {
				t.Fatalf("New(%v) succeeded", tc.cidrs)
			}
		})
	}
}

func TestGatewaysAndReservedAddresses(t *testing.T) {
	a := mustNew(t, "", "10.1.2.0/30", "fd00:1::/126")
	gw4, gw6 := a.Gateways()
	if gw4 != netip.MustParseAddr("10.1.2.1") || gw6 != netip.MustParseAddr("fd00:1::1") {
		t.Fatalf("gateways %s %s", gw4, gw6)
	}
	// A /30 has exactly one address left once network, gateway and
	// broadcast are reserved.
	al, err := a.Allocate(Key{"c1", "eth0"}, "ns", "p")
	if err != nil {
		t.Fatal(err)
	}
	if al.IPv4 != netip.MustParseAddr("10.1.2.2") || al.IPv6 != netip.MustParseAddr("fd00:1::2") {
		t.Fatalf("got %s %s", al.IPv4, al.IPv6)
	}
	if _, err := a.Allocate(Key{"c2", "eth0"}, "ns", "p"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("second allocation in a /30: err %v, want ErrExhausted", err)
	}
	// A failed dual-stack allocation must not leak the address it got first.
	if n := len(a.List()); n != 1 {
		t.Fatalf("%d allocations after exhaustion, want 1", n)
	}
}

func TestAllocateIsIdempotentAndReleaseFrees(t *testing.T) {
	a := mustNew(t, "", "10.0.0.0/24")
	k := Key{"abc", "eth0"}
	first, err := a.Allocate(k, "default", "pod")
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.Allocate(k, "default", "pod")
	if err != nil {
		t.Fatal(err)
	}
	if first.IPv4 != again.IPv4 {
		t.Fatalf("re-allocation changed %s -> %s", first.IPv4, again.IPv4)
	}
	if first.IPv6.IsValid() {
		t.Fatalf("ipv6 %s without a v6 cidr", first.IPv6)
	}
	other, err := a.Allocate(Key{"abc", "net1"}, "default", "pod")
	if err != nil {
		t.Fatal(err)
	}
	if other.IPv4 == first.IPv4 {
		t.Fatal("second ifname of the same container got the same address")
	}
	if err := a.Release(k); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Get(k); ok {
		t.Fatal("released key still allocated")
	}
	if err := a.Release(k); err != nil {
		t.Fatalf("release of unknown key: %v", err)
	}
	if err := a.Release(Key{"never", "eth0"}); err != nil {
		t.Fatalf("release of unknown key: %v", err)
	}
}

func TestNextFitDoesNotReuseAtOnce(t *testing.T) {
	a := mustNew(t, "", "10.0.0.0/29") // usable .2 .. .6
	x, _ := a.Allocate(Key{"x", "eth0"}, "", "")
	if err := a.Release(Key{"x", "eth0"}); err != nil {
		t.Fatal(err)
	}
	y, _ := a.Allocate(Key{"y", "eth0"}, "", "")
	if x.IPv4 == y.IPv4 {
		t.Fatalf("released %s handed out again at once", x.IPv4)
	}
	// Fill the pool: every address .2 .. .6 is handed out exactly once,
	// including the released one after wrapping around.
	seen := map[netip.Addr]bool{y.IPv4: true}
	for i := 0; i < 4; i++ {
		al, err := a.Allocate(Key{fmt.Sprint("f", i), "eth0"}, "", "")
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if seen[al.IPv4] {
			t.Fatalf("%s handed out twice", al.IPv4)
		}
		seen[al.IPv4] = true
	}
	for _, s := range []string{"10.0.0.0", "10.0.0.1", "10.0.0.7"} {
		if seen[netip.MustParseAddr(s)] {
			t.Fatalf("reserved %s handed out", s)
		}
	}
	if _, err := a.Allocate(Key{"full", "eth0"}, "", ""); !errors.Is(err, ErrExhausted) {
		t.Fatalf("err %v, want ErrExhausted", err)
	}
}

func TestConcurrentAllocationsAreDistinct(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	a := mustNew(t, path, "10.10.0.0/24", "fd10::/64")
	const n = 50
	var wg sync.WaitGroup
	res := make([]Allocation, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = a.Allocate(Key{fmt.Sprintf("c%02d", i), "eth0"}, "ns", "p")
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("allocation %d: %v", i, errs[i])
		}
		for _, ip := range []netip.Addr{res[i].IPv4, res[i].IPv6} {
			if seen[ip] {
				t.Fatalf("%s handed out twice", ip)
			}
			seen[ip] = true
		}
	}
	// What is on disk matches what was handed out.
	b := mustNew(t, path, "10.10.0.0/24", "fd10::/64")
	for i := 0; i < n; i++ {
		got, ok := b.Get(Key{fmt.Sprintf("c%02d", i), "eth0"})
		if !ok || got.IPv4 != res[i].IPv4 || got.IPv6 != res[i].IPv6 {
			t.Fatalf("restored %d: %+v ok=%v, want %+v", i, got, ok, res[i])
		}
	}
}

func TestPersistAndRestore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	a := mustNew(t, path, "10.0.0.0/24", "fd00::/64")
	k1, k2 := Key{"one", "eth0"}, Key{"two", "eth0"}
	a1, _ := a.Allocate(k1, "ns1", "p1")
	a2, _ := a.Allocate(k2, "ns2", "p2")
	if err := a.Release(k1); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state mode %v", fi.Mode().Perm())
	}
	b := mustNew(t, path, "10.0.0.0/24", "fd00::/64")
	if _, ok := b.Get(k1); ok {
		t.Fatal("released allocation restored")
	}
	got, ok := b.Get(k2)
	if !ok || got != a2 {
		t.Fatalf("restored %+v, want %+v", got, a2)
	}
	// The cursor survives the restart: the released address is not next.
	a3, _ := b.Allocate(Key{"three", "eth0"}, "", "")
	if a3.IPv4 == a1.IPv4 || a3.IPv4 == a2.IPv4 {
		t.Fatalf("after restart got %s (a1 %s a2 %s)", a3.IPv4, a1.IPv4, a2.IPv4)
	}
	// No temporary files left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("state dir holds %d files, want 1", len(ents))
	}
}

func TestRestoreDropsAllocationsOutsideNewCIDR(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	a := mustNew(t, path, "10.0.0.0/24")
	if _, err := a.Allocate(Key{"old", "eth0"}, "", ""); err != nil {
		t.Fatal(err)
	}
	b := mustNew(t, path, "10.5.0.0/24")
	if n := len(b.List()); n != 0 {
		t.Fatalf("%d allocations restored outside the cidr", n)
	}
}

func TestCorruptStateFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"allocations":[{"containerID":"a","ifname":"eth0","ipv4":"10.0.0.2"},{"containerID":"b","ifname":"eth0","ipv4":"10.0.0.2"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, StatePath: path}); err == nil {
		t.Fatal("state with a duplicate address accepted")
	}
}

func TestPersistFailureRollsBack(t *testing.T) {
	dir := t.TempDir()
	a := mustNew(t, filepath.Join(dir, "missing", "ipam.json"), "10.0.0.0/24")
	if _, err := a.Allocate(Key{"c", "eth0"}, "", ""); err == nil {
		t.Fatal("allocation succeeded although the state could not be written")
	}
	if n := len(a.List()); n != 0 {
		t.Fatalf("%d allocations kept after a failed write", n)
	}
}

func TestReserve(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	a, err := New(Config{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/29")}, StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := Key{"c1", "eth0"}, Key{"c2", "eth0"}
	held := netip.MustParseAddr("10.0.0.2")
	if err := a.Reserve(Allocation{Key: k1, IPv4: held, PodName: "p1"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Reserve(Allocation{Key: k1, IPv4: held}); err != nil {
		t.Fatalf("Reserve is not idempotent: %v", err)
	}
	if err := a.Reserve(Allocation{Key: k2, IPv4: held}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Reserve of a held address: %v", err)
	}
	for _, bad := range []string{"10.0.0.1", "10.0.0.7", "10.0.1.2"} {
		if err := a.Reserve(Allocation{Key: k2, IPv4: netip.MustParseAddr(bad)}); err == nil {
			t.Fatalf("Reserve(%s) succeeded", bad)
		}
	}
	// Next-fit starts where it was, and skips the reserved address.
	al, err := a.Allocate(k2, "", "")
	if err != nil || al.IPv4 != netip.MustParseAddr("10.0.0.3") {
		t.Fatalf("Allocate = %+v, %v", al, err)
	}
	b, err := New(Config{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/29")}, StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := b.Get(k1); !ok || got.IPv4 != held || got.PodName != "p1" {
		t.Fatalf("reservation not persisted: %+v %v", got, ok)
	}
}

func TestCorruptStateIsErrCorruptState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/29")}, StatePath: path}); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("New on a corrupt file: %v", err)
	}
}
