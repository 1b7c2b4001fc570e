package clusterdns

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// testZone is the Services zone of cluster.local over a real client-go
// lister, filled as an informer fills it.
func testZone(t testing.TB) *Services {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, s := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.7", ClusterIPs: []string{"10.96.0.7", "fd00:96::7"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"},
			Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, ClusterIPs: []string{corev1.ClusterIPNone}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10"}},
	} {
		if err := idx.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	z, err := NewServices("Cluster.Local.", corelisters.NewServiceLister(idx))
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func query(t testing.TB, id uint16, name string, typ dnsmessage.Type) []byte {
	q, err := (&dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}}}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func addrs(m *dnsmessage.Message) []string {
	var out []string
	for _, a := range m.Answers {
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(b.A).String())
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(b.AAAA).String())
		}
	}
	return out
}

func TestServicesZoneAnswers(t *testing.T) {
	z := testZone(t)
	for _, c := range []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		want  []string
	}{
		{"web.shop.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"10.96.0.7"}},
		{"WEB.Shop.SVC.cluster.local.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []string{"fd00:96::7"}},
		{"kube-dns.kube-system.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"10.96.0.10"}},
		{"kube-dns.kube-system.svc.cluster.local.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, nil},
		{"web.shop.svc.cluster.local.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, nil},
		{"db.shop.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, nil},
		{"web.other.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"nope.shop.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		// The search path's first tries for a fully qualified name.
		{"web.shop.svc.cluster.local.shop.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"shop.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"web.shop.svc.cluster.example.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"example.com.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"a/b.shop.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
	} {
		r := Answer(z, query(t, 7, c.name, c.typ))
		var m dnsmessage.Message
		if err := m.Unpack(r); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if m.ID != 7 || !m.Response || !m.Authoritative || !m.RecursionDesired || len(m.Questions) != 1 || m.Questions[0].Name.String() != c.name {
			t.Errorf("%s: header %+v questions %v", c.name, m.Header, m.Questions)
		}
		if m.RCode != c.rcode || !slices.Equal(addrs(&m), c.want) {
			t.Errorf("%s %v: rcode %v answers %v, want %v %v", c.name, c.typ, m.RCode, addrs(&m), c.rcode, c.want)
		}
		for _, a := range m.Answers {
			if a.Header.TTL != TTL {
				t.Errorf("%s: TTL %d", c.name, a.Header.TTL)
			}
		}
	}
}

func TestAnswerRefusesNonQueries(t *testing.T) {
	z := testZone(t)
	q := query(t, 9, "web.shop.svc.cluster.local.", dnsmessage.TypeA)
	resp := slices.Clone(q)
	resp[2] |= 0x80 // QR: a response is never answered
	notify := slices.Clone(q)
	notify[2] |= 4 << 3 // opcode NOTIFY
	for what, msg := range map[string][]byte{
		"empty": nil, "short header": q[:11], "no question": q[:12], "cut question": q[:20],
		"a response": resp, "not DNS": []byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		if r := Answer(z, msg); r != nil {
			t.Errorf("%s answered: %x", what, r)
		}
	}
	var m dnsmessage.Message
	if err := m.Unpack(Answer(z, notify)); err != nil || m.RCode != dnsmessage.RCodeNotImplemented || len(m.Answers) != 0 {
		t.Errorf("NOTIFY: %v %+v", err, m.Header)
	}
	if _, err := NewServices("not a domain", nil); err == nil {
		t.Error("a bad cluster domain was accepted")
	}
}

// Go's own resolver, over UDP and then TCP, against ListenAndServe on
// loopback: the wire framing of both transports.
func TestServeUDPAndTCPToGoResolver(t *testing.T) {
	z := testZone(t)
	ctx, cancel := context.WithCancel(context.Background())
	var addr string
	var done chan error
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		pc.Close()
		ready, served := make(chan struct{}), make(chan error, 1)
		go func() { served <- ListenAndServe(ctx, z, addr, func() { close(ready) }) }()
		select {
		case <-ready:
			done = served
		case err := <-served:
			// A free UDP port's TCP twin can be another process's (one
			// CI run): take another port.
			if errors.Is(err, syscall.EADDRINUSE) && attempt < 20 {
				continue
			}
			t.Fatal(err)
		}
		break
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for _, network := range []string{"udp", "tcp"} {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		ips, err := r.LookupNetIP(qctx, "ip", "web.shop.svc.cluster.local.")
		if err != nil || len(ips) != 2 {
			t.Errorf("%s: web: %v %v", network, ips, err)
		}
		_, err = r.LookupNetIP(qctx, "ip4", "gone.shop.svc.cluster.local.")
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("%s: gone: %v, want not found", network, err)
		}
		qcancel()
	}
	// TCP: several framed queries on one connection, one of them the
	// largest length a frame can announce but never delivers in full.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for id := uint16(1); id <= 3; id++ {
		q := query(t, id, "kube-dns.kube-system.svc.cluster.local.", dnsmessage.TypeA)
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var l [2]byte
		if _, err := c.Read(l[:]); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := readFull(c, buf); err != nil {
			t.Fatal(err)
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf); err != nil || m.ID != id || !slices.Equal(addrs(&m), []string{"10.96.0.10"}) {
			t.Fatalf("tcp query %d: %v %+v", id, err, m)
		}
	}
	if _, err := c.Write([]byte{0xff, 0xff, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// FuzzAnswer: any bytes get no reply or a well-formed response to the
// same id with at most the question and its addresses.
func FuzzAnswer(f *testing.F) {
	f.Add(query(f, 1, "web.shop.svc.cluster.local.", dnsmessage.TypeA))
	f.Add(query(f, 2, "web.shop.svc.cluster.local.", dnsmessage.TypeAAAA))
	f.Add(query(f, 3, "example.com.", dnsmessage.TypeA))
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1})
	z := testZone(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := Answer(z, data)
		if r == nil {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(r); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if !m.Response || m.ID != binary.BigEndian.Uint16(data) || len(m.Questions) != 1 || len(m.Answers) > 2 {
			t.Fatalf("reply %+v to %x", m, data)
		}
		if len(r) > 512 {
			t.Fatalf("reply of %d bytes exceeds UDP's 512", len(r))
		}
	})
}
