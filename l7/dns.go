package l7

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"
)

// Bounds on what one message may contribute, so a hostile answer cannot
// make a flow (or the FQDN cache) large.
const (
	maxDNSAnswers  = 32
	maxDNSQuestion = 4
)

// ObservationSource is what loupe's DNS flows carry in
// l7.dns.observation_source (Cilium's proxy writes "proxy").
const ObservationSource = "loupe"

// DNS is the part of a DNS message a flow shows.
type DNS struct {
	ID       uint16
	Response bool
	Query    string   // the first question's name, with its trailing dot (as Cilium)
	QTypes   []uint16 // types of the questions
	RCode    uint16
	IPs      []netip.Addr // A and AAAA answers
	TTL      uint32       // the smallest TTL of the answers (0 without answers)
	CNAMEs   []string
	RRTypes  []uint16 // types of the answers
	// Partial is set when the capture ended inside the answers: the
	// answers read before it are kept.
	Partial bool
}

// ErrMalformed wraps every parse failure, so callers can count them.
var ErrMalformed = errors.New("malformed")

// ParseDNS parses a DNS message from payload, the start of a UDP or TCP
// payload (tcp: a 2-byte length comes first). whole says payload is the
// packet's entire payload; else a message cut inside its answers is
// accepted as Partial.
func ParseDNS(payload []byte, tcp, whole bool) (DNS, error) {
	var m DNS
	b := payload
	if tcp {
		if len(b) < 2 {
			return m, fmt.Errorf("dns: %w: no length prefix", ErrMalformed)
		}
		n := int(b[0])<<8 | int(b[1])
		b = b[2:]
		if n < 12 || n < len(b) {
			return m, fmt.Errorf("dns: %w: length prefix %d for %d bytes", ErrMalformed, n, len(b))
		}
		if n > len(b) { // the message goes on in later segments
			whole = false
		}
	}
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return m, fmt.Errorf("dns: %w: header: %v", ErrMalformed, err)
	}
	if h.OpCode != 0 {
		return m, fmt.Errorf("dns: %w: opcode %d", ErrMalformed, h.OpCode)
	}
	m.ID, m.Response, m.RCode = h.ID, h.Response, uint16(h.RCode)
	for i := 0; ; i++ {
		q, err := p.Question()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return m, fmt.Errorf("dns: %w: question: %v", ErrMalformed, err)
		}
		if i >= maxDNSQuestion {
			return m, fmt.Errorf("dns: %w: more than %d questions", ErrMalformed, maxDNSQuestion)
		}
		if i == 0 {
			m.Query = q.Name.String()
		}
		m.QTypes = append(m.QTypes, uint16(q.Type))
	}
	if m.Query == "" {
		return m, fmt.Errorf("dns: %w: no question", ErrMalformed)
	}
	if !m.Response {
		return m, nil
	}
	first := true
	for range maxDNSAnswers {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			if !whole {
				m.Partial = true
				return m, nil
			}
			return m, fmt.Errorf("dns: %w: answer: %v", ErrMalformed, err)
		}
		var rerr error
		switch rh.Type {
		case dnsmessage.TypeA:
			var r dnsmessage.AResource
			if r, rerr = p.AResource(); rerr == nil {
				m.IPs = append(m.IPs, netip.AddrFrom4(r.A))
			}
		case dnsmessage.TypeAAAA:
			var r dnsmessage.AAAAResource
			if r, rerr = p.AAAAResource(); rerr == nil {
				m.IPs = append(m.IPs, netip.AddrFrom16(r.AAAA))
			}
		case dnsmessage.TypeCNAME:
			var r dnsmessage.CNAMEResource
			if r, rerr = p.CNAMEResource(); rerr == nil {
				m.CNAMEs = append(m.CNAMEs, r.CNAME.String())
			}
		default:
			rerr = p.SkipAnswer()
		}
		if rerr != nil {
			if !whole {
				m.Partial = true
				return m, nil
			}
			return m, fmt.Errorf("dns: %w: answer: %v", ErrMalformed, rerr)
		}
		m.RRTypes = append(m.RRTypes, uint16(rh.Type))
		if first || rh.TTL < m.TTL {
			m.TTL = rh.TTL
		}
		first = false
	}
	return m, nil
}

// TypeName names a DNS type as Hubble does (gopacket's names).
func TypeName(t uint16) string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return "Unknown"
}

var typeNames = map[uint16]string{
	1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
	10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT",
	28: "AAAA", 33: "SRV", 35: "NAPTR", 41: "OPT", 46: "RRSIG", 48: "DNSKEY", 64: "SVCB",
	65: "HTTPS", 256: "URI",
}

// RCodeName names a response code as Hubble's DNS summaries do.
func RCodeName(c uint16) string {
	if s, ok := rcodeNames[c]; ok {
		return s
	}
	return "Unknown"
}

var rcodeNames = map[uint16]string{
	0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
	4: "Not Implemented", 5: "Query Refused", 6: "Name Exists when it should not",
	7: "RR Set Exists when it should not", 8: "RR Set that should exist does not",
	9: "Server Not Authoritative for zone", 10: "Name not contained in zone",
	16: "Bad OPT Version", 17: "Key not recognized", 18: "Signature out of time window",
	19: "Bad TKEY Mode", 20: "Duplicate key name", 21: "Algorithm not supported",
	22: "Bad Truncation", 23: "Bad Cookie",
}
