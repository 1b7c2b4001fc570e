package l7

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func packDNS(tb testing.TB, m dnsmessage.Message) []byte {
	tb.Helper()
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func answer(tb testing.TB, rcode dnsmessage.RCode, name string, ips ...netip.Addr) []byte {
	tb.Helper()
	n := dnsmessage.MustNewName(name)
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 77, Response: true, RCode: rcode},
		Questions: []dnsmessage.Question{{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	for i, ip := range ips {
		h := dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: uint32(30 - i)}
		if ip.Is4() {
			h.Type = dnsmessage.TypeA
			m.Answers = append(m.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: ip.As4()}})
		} else {
			h.Type = dnsmessage.TypeAAAA
			m.Answers = append(m.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: ip.As16()}})
		}
	}
	return packDNS(tb, m)
}

func TestParseDNS(t *testing.T) {
	q := packDNS(t, dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 9, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("a.x.pod.lab."), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET}},
	})
	m, err := ParseDNS(q, false, true)
	if err != nil || m.Response || m.ID != 9 || m.Query != "a.x.pod.lab." || !slices.Equal(m.QTypes, []uint16{28}) {
		t.Fatalf("query: %+v %v", m, err)
	}
	a4, a6 := netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("fd00::5")
	r := answer(t, dnsmessage.RCodeSuccess, "a.x.pod.lab.", a4, a6)
	m, err = ParseDNS(r, false, true)
	if err != nil || !m.Response || m.ID != 77 || !slices.Equal(m.IPs, []netip.Addr{a4, a6}) || m.TTL != 29 ||
		!slices.Equal(m.RRTypes, []uint16{1, 28}) || m.RCode != 0 || m.Partial {
		t.Fatalf("answer: %+v %v", m, err)
	}
	// TCP framing.
	framed := append([]byte{byte(len(r) >> 8), byte(len(r))}, r...)
	if m2, err := ParseDNS(framed, true, true); err != nil || !slices.Equal(m2.IPs, m.IPs) {
		t.Fatalf("tcp: %+v %v", m2, err)
	}
	// NXDOMAIN.
	m, err = ParseDNS(answer(t, dnsmessage.RCodeNameError, "nope.lab."), false, true)
	if err != nil || m.RCode != 3 || RCodeName(m.RCode) != "Non-Existent Domain" || len(m.IPs) != 0 {
		t.Fatalf("nxdomain: %+v %v", m, err)
	}
	// A capture cut inside the answers keeps the header, question and the
	// answers before the cut, but only when the payload was longer.
	cut := r[:len(r)-5]
	if m, err = ParseDNS(cut, false, false); err != nil || !m.Partial || len(m.IPs) != 1 || m.Query != "a.x.pod.lab." {
		t.Fatalf("cut: %+v %v", m, err)
	}
	if _, err = ParseDNS(cut, false, true); err == nil {
		t.Fatal("a whole payload cut short parsed")
	}
	for name, b := range map[string][]byte{
		"empty":       nil,
		"short":       q[:8],
		"no question": packDNS(t, dnsmessage.Message{Header: dnsmessage.Header{ID: 1}}),
		"tcp short":   {0},
		"tcp length":  append([]byte{0, 5}, q...),
		"http":        []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	} {
		if _, err := ParseDNS(b, name[:3] == "tcp", true); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	if TypeName(1) != "A" || TypeName(28) != "AAAA" || TypeName(999) != "Unknown" {
		t.Error("type names")
	}
}

func TestDNSPairer(t *testing.T) {
	p := NewDNSPairer[string](5*time.Second, 2)
	c := netip.MustParseAddrPort("10.0.0.2:4000")
	s := netip.MustParseAddr("10.0.0.3")
	k1, k2, k3 := DNSKey{c, s, 1}, DNSKey{c, s, 2}, DNSKey{c, s, 3}
	sec := uint64(time.Second)
	if !p.Query(k1, 1*sec, "one") || !p.Query(k2, 2*sec, "two") {
		t.Fatal("query refused")
	}
	if p.Query(k1, 2*sec, "again") {
		t.Fatal("duplicate pending accepted")
	}
	if p.Query(k3, 3*sec, "three") {
		t.Fatal("full table accepted a query")
	}
	if q, ok := p.Answer(k2); !ok || q.Request != "two" || q.TimestampNS != 2*sec {
		t.Fatalf("answer: %+v %v", q, ok)
	}
	if _, ok := p.Answer(k2); ok {
		t.Fatal("answered twice")
	}
	var expired []string
	p.Expire(5*sec, func(_ DNSKey, q Pending[string]) { expired = append(expired, q.Request) })
	if len(expired) != 0 {
		t.Fatalf("expired early: %v", expired)
	}
	p.Expire(6*sec, func(_ DNSKey, q Pending[string]) { expired = append(expired, q.Request) })
	if !slices.Equal(expired, []string{"one"}) || p.Len() != 0 {
		t.Fatalf("expired %v, %d left", expired, p.Len())
	}
}

func FuzzParseDNS(f *testing.F) {
	f.Add(answer(f, dnsmessage.RCodeSuccess, "a.x.pod.lab.", netip.MustParseAddr("10.0.0.1")), false, true)
	f.Add(answer(f, dnsmessage.RCodeNameError, "b.lab."), false, false)
	f.Add([]byte{0, 12, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, true, true)
	f.Fuzz(func(t *testing.T, b []byte, tcp, whole bool) {
		m, err := ParseDNS(b, tcp, whole)
		if err != nil {
			return
		}
		if m.Query == "" || len(m.IPs) > maxDNSAnswers || len(m.QTypes) > maxDNSQuestion {
			t.Fatalf("accepted %+v", m)
		}
	})
}
