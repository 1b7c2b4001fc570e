package lab

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/loupe-project/loupe/clusterdns"
	"github.com/loupe-project/loupe/service"
)

// The lab's DNS zone, served by every pod that declares port 53 (UDP and
// TCP, RFC 1035 4.2.2 length framing on TCP):
//
//	<pod>.<ns>.pod.lab.   A / AAAA of the pod's addresses (TTL dnsTTL)
//	<svc>.<ns>.svc.lab.   A / AAAA of the Service's ClusterIPs
//	*.fail.lab.           SERVFAIL
//	*.drop.lab.           no answer at all (an unanswered query)
//	anything else         NXDOMAIN
const (
	dnsZonePods = ".pod.lab."
	dnsZoneSvcs = ".svc.lab."
	dnsZoneFail = "fail.lab."
	dnsZoneDrop = "drop.lab."
	dnsTTL      = clusterdns.TTL
)

// dnsServer answers from the lab's manifests folder, read per query: the
// pods it names may come and go while it runs.
type dnsServer struct {
	manifests string
}

// isDNSPort reports whether a declared port is served as DNS.
func isDNSPort(p int) bool { return p == 53 }

// answer returns the reply to query, or nil for no reply.
func (s dnsServer) answer(query []byte) []byte { return clusterdns.Answer(s, query) }

// Lookup implements clusterdns.Zone for the lab's zone.
func (s dnsServer) Lookup(name string) ([]netip.Addr, dnsmessage.RCode, bool) {
	switch {
	case name == dnsZoneDrop || strings.HasSuffix(name, "."+dnsZoneDrop):
		return nil, 0, false
	case name == dnsZoneFail || strings.HasSuffix(name, "."+dnsZoneFail):
		return nil, dnsmessage.RCodeServerFailure, true
	}
	ips, ok := s.podIPs(name)
	if !ok {
		ips, ok = s.serviceIPs(name)
	}
	if !ok {
		return nil, dnsmessage.RCodeNameError, true
	}
	return ips, dnsmessage.RCodeSuccess, true
}

// serviceIPs resolves <svc>.<ns>.svc.lab. from the Service's manifest.
func (s dnsServer) serviceIPs(name string) ([]netip.Addr, bool) {
	svc, ns, ok := clusterdns.ObjectName(name, dnsZoneSvcs)
	if !ok {
		return nil, false
	}
	raw, err := os.ReadFile(filepath.Join(s.manifests, objectFile(KindService, ns, svc)))
	if err != nil {
		return nil, false
	}
	var o corev1.Service
	if err := yaml.Unmarshal(raw, &o); err != nil {
		return nil, false
	}
	return service.ClusterIPs(&o), true
}

// podIPs resolves <pod>.<ns>.pod.lab. from the pod's manifest.
func (s dnsServer) podIPs(name string) ([]netip.Addr, bool) {
	pod, ns, ok := clusterdns.ObjectName(name, dnsZonePods)
	if !ok {
		return nil, false
	}
	raw, err := os.ReadFile(filepath.Join(s.manifests, objectFile("Pod", ns, pod)))
	if err != nil {
		return nil, false
	}
	var p corev1.Pod
	if err := yaml.Unmarshal(raw, &p); err != nil {
		return nil, false
	}
	var ips []netip.Addr
	for _, pi := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(pi.IP); err == nil {
			ips = append(ips, a.Unmap())
		}
	}
	if len(ips) == 0 && p.Status.PodIP != "" {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			ips = append(ips, a.Unmap())
		}
	}
	return ips, true
}

func (s dnsServer) serveUDP(pc net.PacketConn) error { return clusterdns.ServeUDP(s, pc) }

func (s dnsServer) serveTCP(ln net.Listener) error { return clusterdns.ServeTCP(s, ln) }

// dnsAsk sends a query for name over conn (with TCP's length framing when
// tcp) and waits until deadline for the answer with its id, resending a UDP
// query every udpResend. It returns the answer's rcode and addresses.
func dnsAsk(conn net.Conn, tcp bool, name string, qtype dnsmessage.Type, deadline time.Time) (dnsmessage.RCode, []netip.Addr, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return 0, nil, err
	}
	id := uint16(time.Now().UnixNano())
	q, err := (&dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: n, Type: qtype, Class: dnsmessage.ClassINET}},
	}).Pack()
	if err != nil {
		return 0, nil, err
	}
	if tcp {
		q = append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)
	}
	buf := make([]byte, 64*1024)
	for time.Now().Before(deadline) {
		next := deadline
		if !tcp && time.Until(next) > udpResend {
			next = time.Now().Add(udpResend)
		}
		if _, err := conn.Write(q); err != nil {
			if tcp {
				return 0, nil, err
			}
			time.Sleep(time.Until(next)) // an ICMP error from an earlier datagram
			continue
		}
		_ = conn.SetReadDeadline(next)
		for {
			var msg []byte
			if tcp {
				var l [2]byte
				if _, err := io.ReadFull(conn, l[:]); err != nil {
					return 0, nil, err
				}
				msg = buf[:binary.BigEndian.Uint16(l[:])]
				if _, err := io.ReadFull(conn, msg); err != nil {
					return 0, nil, err
				}
			} else {
				k, err := conn.Read(buf)
				if err != nil {
					break
				}
				msg = buf[:k]
			}
			var m dnsmessage.Message
			if m.Unpack(msg) != nil || !m.Response || m.ID != id {
				continue
			}
			var ips []netip.Addr
			for _, a := range m.Answers {
				switch b := a.Body.(type) {
				case *dnsmessage.AResource:
					ips = append(ips, netip.AddrFrom4(b.A))
				case *dnsmessage.AAAAResource:
					ips = append(ips, netip.AddrFrom16(b.AAAA))
				}
			}
			return m.RCode, ips, nil
		}
	}
	return 0, nil, fmt.Errorf("dns %s: no answer", name)
}
