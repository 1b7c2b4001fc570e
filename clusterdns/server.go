// Package clusterdns is loupe's small authoritative DNS server: the wire
// side (parse one query, build its answer, serve UDP and TCP) for any Zone,
// and the Zone of a Kubernetes cluster's Service ClusterIPs that the
// loupe-dns command serves as the cluster DNS. The lab serves its own zone
// with the same wire code.
package clusterdns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// TTL is the TTL of every answer: short, since Services come and go.
const TTL = 30

// A Zone resolves one question name (lower case, fully qualified, with its
// trailing dot).
type Zone interface {
	// Lookup returns the name's addresses and the reply's rcode, or
	// reply false for no reply at all.
	Lookup(name string) (ips []netip.Addr, rcode dnsmessage.RCode, reply bool)
}

// Answer returns the reply to one DNS query in wire format, or nil for no
// reply (not a query, unparseable, or the zone said so). It reads only the
// header and the first question; the answers are the question's A or AAAA
// records among the zone's addresses.
func Answer(z Zone, query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	var answers []netip.Addr
	switch {
	case h.OpCode != 0:
		rh.RCode = dnsmessage.RCodeNotImplemented
	default:
		ips, rcode, reply := z.Lookup(strings.ToLower(q.Name.String()))
		if !reply {
			return nil
		}
		rh.RCode = rcode
		for _, ip := range ips {
			if (q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL) && ip.Is4() ||
				(q.Type == dnsmessage.TypeAAAA || q.Type == dnsmessage.TypeALL) && ip.Is6() {
				answers = append(answers, ip)
			}
		}
	}
	// At most a 255-byte name and a Service's two ClusterIPs, compressed:
	// always under UDP's 512 bytes, so no truncation.
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil
	}
	for _, ip := range answers {
		ah := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: TTL}
		if ip.Is4() {
			err = b.AResource(ah, dnsmessage.AResource{A: ip.As4()})
		} else {
			err = b.AAAAResource(ah, dnsmessage.AAAAResource{AAAA: ip.As16()})
		}
		if err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// ObjectName splits "<name>.<ns><zone>" (zone with its leading and
// trailing dots, e.g. ".svc.cluster.local.") into name and namespace.
func ObjectName(name, zone string) (obj, ns string, ok bool) {
	rest, ok := strings.CutSuffix(name, zone)
	if !ok {
		return "", "", false
	}
	obj, ns, ok = strings.Cut(rest, ".")
	if !ok || obj == "" || ns == "" || strings.Contains(ns, ".") || strings.ContainsAny(rest, "/\\") {
		return "", "", false
	}
	return obj, ns, true
}

// ServeUDP answers the queries arriving on pc until it is closed.
func ServeUDP(z Zone, pc net.PacketConn) error {
	buf := make([]byte, 64*1024)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dns udp read: %w", err)
		}
		if r := Answer(z, buf[:n]); r != nil {
			_, _ = pc.WriteTo(r, from)
		}
	}
}

// MaxTCPConns bounds the TCP connections served at once; more are closed
// on accept, so idle clients cannot pin unbounded goroutines and buffers.
const MaxTCPConns = 256

// tcpIdle is how long a TCP connection may wait for its next query.
const tcpIdle = 30 * time.Second

// ServeTCP answers queries on the connections ln accepts, with TCP's
// two-byte length framing (RFC 1035 4.2.2), until ln is closed.
func ServeTCP(z Zone, ln net.Listener) error {
	slots := make(chan struct{}, MaxTCPConns)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dns tcp accept: %w", err)
		}
		select {
		case slots <- struct{}{}:
		default:
			c.Close()
			continue
		}
		go func() {
			defer func() { c.Close(); <-slots }()
			serveConn(z, c)
		}()
	}
}

func serveConn(z Zone, c net.Conn) {
	msg := make([]byte, 0, 512)
	for {
		_ = c.SetDeadline(time.Now().Add(tcpIdle))
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(l[:]))
		if n > cap(msg) {
			msg = make([]byte, n)
		}
		msg = msg[:n]
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		r := Answer(z, msg)
		if r == nil {
			continue
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(r)), uint16(len(r)))
		if _, err := c.Write(append(out, r...)); err != nil {
			return
		}
	}
}

// ListenAndServe serves z on UDP and TCP at addr until ctx is done. ready,
// if not nil, is called once both sockets listen.
func ListenAndServe(ctx context.Context, z Zone, addr string, ready func()) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: %w", err)
	}
	if ready != nil {
		ready()
	}
	errc := make(chan error, 2)
	go func() { errc <- ServeUDP(z, pc) }()
	go func() { errc <- ServeTCP(z, ln) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	pc.Close()
	ln.Close()
	return err
}
