package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func TestLabDNSZone(t *testing.T) {
	dir := t.TempDir()
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nstatus: {podIP: 10.244.1.5, podIPs: [{ip: 10.244.1.5}, {ip: \"fd00:1::5\"}]}\n"
	if err := os.WriteFile(filepath.Join(dir, objectFile("Pod", "x", "a")), []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: x}\nspec: {clusterIP: 10.96.0.7, clusterIPs: [10.96.0.7], ports: [{port: 80}]}\n"
	if err := os.WriteFile(filepath.Join(dir, objectFile("Service", "x", "web")), []byte(svc), 0o644); err != nil {
		t.Fatal(err)
	}
	s := dnsServer{manifests: dir}
	ask := func(name string, typ dnsmessage.Type) *dnsmessage.Message {
		t.Helper()
		q, err := (&dnsmessage.Message{Header: dnsmessage.Header{ID: 42},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}}}).Pack()
		if err != nil {
			t.Fatal(err)
		}
		r := s.answer(q)
		if r == nil {
			return nil
		}
		var m dnsmessage.Message
		if err := m.Unpack(r); err != nil || m.ID != 42 || !m.Response {
			t.Fatalf("%s: bad answer %v %+v", name, err, m.Header)
		}
		return &m
	}
	m := ask("a.x.pod.lab.", dnsmessage.TypeA)
	if m.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 1 || netip.AddrFrom4(m.Answers[0].Body.(*dnsmessage.AResource).A).String() != "10.244.1.5" {
		t.Fatalf("A: %+v", m)
	}
	if m = ask("A.X.pod.lab.", dnsmessage.TypeAAAA); len(m.Answers) != 1 || m.Answers[0].Header.TTL != dnsTTL {
		t.Fatalf("AAAA: %+v", m)
	}
	if m = ask("web.x.svc.lab.", dnsmessage.TypeA); m.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 1 || netip.AddrFrom4(m.Answers[0].Body.(*dnsmessage.AResource).A).String() != "10.96.0.7" {
		t.Fatalf("service A: %+v", m)
	}
	for name, want := range map[string]dnsmessage.RCode{
		"nope.x.svc.lab.":     dnsmessage.RCodeNameError,
		"b.x.pod.lab.":        dnsmessage.RCodeNameError,
		"example.com.":        dnsmessage.RCodeNameError,
		"a/b.x.pod.lab.":      dnsmessage.RCodeNameError,
		"fail.lab.":           dnsmessage.RCodeServerFailure,
		"any.thing.fail.lab.": dnsmessage.RCodeServerFailure,
	} {
		if m := ask(name, dnsmessage.TypeA); m == nil || m.RCode != want || len(m.Answers) != 0 {
			t.Errorf("%s: %+v, want rcode %v", name, m, want)
		}
	}
	if m := ask("q.drop.lab.", dnsmessage.TypeA); m != nil {
		t.Errorf("drop.lab answered: %+v", m)
	}
	if s.answer([]byte("loupe-probe 1")) != nil {
		t.Error("a non-DNS payload was answered")
	}
}
