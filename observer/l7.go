package observer

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unsafe"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/l7"
)

// L7Config configures how L7 records become flows.
type L7Config struct {
	// DNSTimeout is how long a query waits for its answer before it
	// becomes a timeout flow; 0 is l7.DefaultDNSTimeout.
	DNSTimeout time.Duration
	// MaxPending bounds the queries waiting for answers; 0 is
	// l7.DefaultMaxPending.
	MaxPending int
	// KeepQuery keeps URL query strings in HTTP flows (--l7-keep-query);
	// by default they are dropped.
	KeepQuery bool
}

// httpRequestTimeout is how long an HTTP request waits for its response
// in the pairing table before it is forgotten (its connection was cut).
const httpRequestTimeout = 2 * time.Minute

// httpRequest is what a pending request keeps for its response flow.
type httpRequest struct {
	method, url, protocol string
}

// dnsRequest is what a pending query keeps for its answer and its timeout
// flow: no payload, only the parsed fields and where it was seen.
type dnsRequest struct {
	rec    datapath.L7Record // Data is nil
	query  string
	qtypes []uint16
}

// l7State is the observer's L7 side: pairing tables and their counters.
// Guarded by Observer.mu.
type l7State struct {
	cfg       L7Config
	rec       datapath.L7Record
	dns       *l7.DNSPairer[dnsRequest]
	http      *l7.HTTPPairer[httpRequest]
	malformed *prometheus.CounterVec
	records   *prometheus.CounterVec
	timeouts  prometheus.Counter
	unpaired  prometheus.Counter
	dnsTime   prometheus.Histogram
}

func newL7State(cfg L7Config, reg prometheus.Registerer) *l7State {
	if cfg.DNSTimeout <= 0 {
		cfg.DNSTimeout = l7.DefaultDNSTimeout
	}
	s := &l7State{
		cfg:  cfg,
		dns:  l7.NewDNSPairer[dnsRequest](cfg.DNSTimeout, cfg.MaxPending),
		http: l7.NewHTTPPairer[httpRequest](0),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Name: "l7_malformed_total",
			Help: "L7 records whose payload did not parse, by protocol",
		}, []string{"protocol"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Name: "l7_records_total",
			Help: "L7 records read from the datapath, by protocol and outcome (flow: became a flow; elsewhere: another veth reports the exchange)",
		}, []string{"protocol", "outcome"}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "dns_queries_unanswered_total",
			Help: "DNS queries that saw no answer within the DNS timeout",
		}),
		unpaired: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "l7_unpaired_total",
			Help: "L7 requests not held for pairing because the pairing table was full or held the exchange already",
		}),
	}
	s.dnsTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "loupe", Name: "dns_response_duration_seconds",
		Help:    "Time from a DNS query to its answer, both kernel timestamps at the reporting veth",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	})
	reg.MustRegister(s.malformed, s.records, s.timeouts, s.unpaired, s.dnsTime)
	return s
}

// HandleL7 turns one l7_events record into (at most) one L7 flow. Every
// message is reported once in the cluster: at the client pod's veth when
// the client is a pod, else at the server pod's veth.
func (o *Observer) HandleL7(raw []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cfg.Metadata.Current() != o.lastSnap {
		o.refreshIndex()
	}
	s := o.l7
	r := &s.rec
	if err := datapath.DecodeL7Record(raw, r); err != nil {
		o.metrics.decodeErrors.Inc()
		return
	}
	switch r.Kind {
	case datapath.L7DNS:
		o.handleDNS(r)
	case datapath.L7HTTP:
		o.handleHTTP(r)
	}
}

func (o *Observer) handleDNS(r *datapath.L7Record) {
	s := o.l7
	m, err := l7.ParseDNS(r.Data, r.Proto == unix.IPPROTO_TCP, uint32(len(r.Data)) == r.PayloadLen)
	if err != nil {
		s.malformed.WithLabelValues("dns").Inc()
		return
	}
	client, server := netip.AddrPortFrom(r.Src, r.SrcPort), r.Dst
	atClient := r.Direction == contract.DirectionEgress
	if m.Response {
		client, server = netip.AddrPortFrom(r.Dst, r.DstPort), r.Src
		atClient = r.Direction == contract.DirectionIngress
	}
	ix := o.index.Load()
	if !atClient && ix.pods[client.Addr()] != nil {
		s.records.WithLabelValues("dns", "elsewhere").Inc()
		return // the client's own veth reports it
	}
	s.records.WithLabelValues("dns", "flow").Inc()
	key := l7.DNSKey{Client: client, Server: server, ID: m.ID}
	if !m.Response {
		req := dnsRequest{rec: *r, query: m.Query, qtypes: m.QTypes}
		req.rec.Data = nil
		if !s.dns.Query(key, r.TimestampNS, req) {
			s.unpaired.Inc()
		}
		o.storeL7(o.dnsFlow(r, &m, flowpb.L7FlowType_REQUEST, 0, false))
		return
	}
	if m.RCode == 0 {
		o.dec.names.learn(client.Addr(), m.Query, m.IPs, m.TTL, r.TimestampNS)
	}
	var latency uint64
	if q, ok := s.dns.Answer(key); ok && r.TimestampNS >= q.TimestampNS {
		latency = r.TimestampNS - q.TimestampNS
		s.dnsTime.Observe(float64(latency) / 1e9)
	}
	o.storeL7(o.dnsFlow(r, &m, flowpb.L7FlowType_RESPONSE, latency, false))
}

// ExpireL7 turns the queries that waited longer than the DNS timeout at
// now (CLOCK_BOOTTIME ns) into timeout flows. The agent calls it every
// second; tests call it with the time they want.
func (o *Observer) ExpireL7(now uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if now > uint64(httpRequestTimeout) {
		o.l7.http.Expire(now - uint64(httpRequestTimeout))
	}
	o.l7.dns.Expire(now, func(_ l7.DNSKey, q l7.Pending[dnsRequest]) {
		o.l7.timeouts.Inc()
		req := q.Request
		// The flow stands for the answer that never came: from the
		// server to the client, at the time the wait ended.
		r := req.rec
		r.Src, r.Dst, r.SrcPort, r.DstPort = r.Dst, r.Src, r.DstPort, r.SrcPort
		if r.Direction == contract.DirectionEgress {
			r.Direction = contract.DirectionIngress
		} else {
			r.Direction = contract.DirectionEgress
		}
		r.SrcIdentity, r.DstIdentity = r.DstIdentity, r.SrcIdentity
		r.TimestampNS = q.TimestampNS + uint64(o.l7.cfg.DNSTimeout)
		m := l7.DNS{Response: true, Query: req.query, QTypes: req.qtypes}
		o.storeL7(o.dnsFlow(&r, &m, flowpb.L7FlowType_RESPONSE, uint64(o.l7.cfg.DNSTimeout), true))
	})
}

// handleHTTP reads every message that begins in the captured bytes:
// pipelined requests sent in one segment, and their responses, each pair
// in order.
func (o *Observer) handleHTTP(r *datapath.L7Record) {
	ms, err := l7.ParseHTTPMessages(r.Data, o.l7.cfg.KeepQuery)
	if err != nil {
		o.l7.malformed.WithLabelValues("http").Inc()
		return
	}
	for i := range ms {
		o.handleHTTPMessage(r, &ms[i])
	}
}

func (o *Observer) handleHTTPMessage(r *datapath.L7Record, m *l7.HTTP) {
	s := o.l7
	conn := l7.ConnKey{Client: netip.AddrPortFrom(r.Src, r.SrcPort), Server: netip.AddrPortFrom(r.Dst, r.DstPort)}
	atClient := r.Direction == contract.DirectionEgress
	if m.Response {
		conn.Client, conn.Server = conn.Server, conn.Client
		atClient = r.Direction == contract.DirectionIngress
	}
	if !atClient && o.index.Load().pods[conn.Client.Addr()] != nil {
		s.records.WithLabelValues("http", "elsewhere").Inc()
		return
	}
	s.records.WithLabelValues("http", "flow").Inc()
	if !m.Response {
		req := httpRequest{method: m.Method, protocol: m.Protocol, url: httpURL(m, conn.Server)}
		if !s.http.Request(conn, r.TimestampNS, req) {
			s.unpaired.Inc()
		}
		o.storeL7(o.httpFlow(r, m, req, 0))
		return
	}
	var req httpRequest
	var latency uint64
	if q, ok := s.http.Response(conn); ok {
		req = q.Request
		if r.TimestampNS >= q.TimestampNS {
			latency = r.TimestampNS - q.TimestampNS
		}
	}
	o.storeL7(o.httpFlow(r, m, req, latency))
}

// httpURL is the request's URL as Cilium's proxy writes it: absolute, with
// the Host header's authority (else the server's address).
func httpURL(m *l7.HTTP, server netip.AddrPort) string {
	host := m.Header("Host")
	if host == "" || strings.ContainsAny(host, "/?#@ ") {
		host = server.String()
	}
	if strings.HasPrefix(m.Path, "http://") || strings.HasPrefix(m.Path, "https://") {
		return m.Path
	}
	return "http://" + host + m.Path
}

// httpFlow builds the flow of one HTTP message; a response carries its
// request's method and URL.
func (o *Observer) httpFlow(r *datapath.L7Record, m *l7.HTTP, req httpRequest, latency uint64) *entry {
	typ := flowpb.L7FlowType_REQUEST
	if m.Response {
		typ = flowpb.L7FlowType_RESPONSE
	}
	f := o.l7Flow(r, typ, latency, false)
	h := &flowpb.HTTP{Method: req.method, Url: req.url, Protocol: m.Protocol}
	if m.Response {
		h.Code = uint32(m.Code)
	}
	for _, kv := range m.Headers {
		h.Headers = append(h.Headers, &flowpb.HTTPHeader{Key: kv[0], Value: kv[1]})
	}
	f.L7.Record = &flowpb.Layer7_Http{Http: h}
	// Cilium's summaries (pkg/hubble/parser/seven/http.go).
	if m.Response {
		f.Summary = fmt.Sprintf("%s %d %dms (%s %s)", h.Protocol, h.Code, latency/uint64(time.Millisecond), h.Method, h.Url)
	} else {
		f.Summary = fmt.Sprintf("%s %s %s", h.Protocol, h.Method, h.Url)
	}
	return &entry{flow: f}
}

func (o *Observer) storeL7(e *entry) {
	o.orderFlow(e.flow, true)
	o.metrics.observe(e.flow)
	o.ring.write(e)
	o.seen.Add(1)
	for _, s := range o.sinks {
		s.Flow(e.flow)
	}
}

// l7Flow builds what every L7 flow has, in the shape of Cilium's proxy
// flows (Type L7, event type 129): time, addresses, ports, endpoints,
// direction, reply. The caller adds the L7 record and the summary.
func (o *Observer) l7Flow(r *datapath.L7Record, typ flowpb.L7FlowType, latency uint64, timedOut bool) *flowpb.Flow {
	d := o.dec
	b := &flowBlock{}
	f := &b.flow
	b.entry.flow = f
	ns := d.bootOffset + int64(r.TimestampNS)
	b.time.Seconds, b.time.Nanos = ns/1e9, int32(ns%1e9)
	f.Time = &b.time
	d.uuid(&b.uuid)
	f.Uuid = unsafe.String(&b.uuid[0], len(b.uuid))
	f.Type = flowpb.FlowType_L7
	f.NodeName = d.nodeName
	f.Verdict = flowpb.Verdict_FORWARDED
	if timedOut {
		f.Verdict = flowpb.Verdict_ERROR
	}
	b.etype.Type = contract.MessageTypeAccessLog
	f.EventType = &b.etype

	b.ip.Source, b.ip.Destination = d.addrString(r.Src), d.addrString(r.Dst)
	b.ip.IpVersion = flowpb.IPVersion_IPv4
	if r.Src.Is6() {
		b.ip.IpVersion = flowpb.IPVersion_IPv6
	}
	f.IP = &b.ip
	if r.Proto == unix.IPPROTO_TCP {
		t := &tcpBlock{}
		t.tcp.SourcePort, t.tcp.DestinationPort = uint32(r.SrcPort), uint32(r.DstPort)
		t.oneof.TCP = &t.tcp
		b.l4.Protocol = &t.oneof
	} else {
		u := &udpBlock{}
		u.udp.SourcePort, u.udp.DestinationPort = uint32(r.SrcPort), uint32(r.DstPort)
		u.oneof.UDP = &u.udp
		b.l4.Protocol = &u.oneof
	}
	f.L4 = &b.l4

	reply := typ == flowpb.L7FlowType_RESPONSE
	b.reply.Value = reply
	f.IsReply, f.Reply = &b.reply, reply
	// The connection's direction, seen from the pod whose veth reports it:
	// the client's is egress, the server's ingress.
	egress := r.Direction == contract.DirectionEgress
	if reply {
		egress = !egress
	}
	f.TrafficDirection = flowpb.TrafficDirection_INGRESS
	if egress {
		f.TrafficDirection = flowpb.TrafficDirection_EGRESS
	}
	if r.Ifindex != 0 {
		b.iface.Index = r.Ifindex
		b.iface.Name = d.ifName(r.Ifindex)
		f.Interface = &b.iface
	}
	ix := o.index.Load()
	var srcID, dstID uint32
	if r.Direction == contract.DirectionEgress {
		srcID = r.EndpointID
	} else {
		dstID = r.EndpointID
	}
	f.Source = d.endpoint(ix, r.Src, srcID, r.SrcIdentity)
	f.Destination = d.endpoint(ix, r.Dst, dstID, r.DstIdentity)
	if len(ix.services) > 0 {
		f.SourceService = ix.services[netip.AddrPortFrom(r.Src, r.SrcPort)]
		f.DestinationService = ix.services[netip.AddrPortFrom(r.Dst, r.DstPort)]
	}

	f.L7 = &flowpb.Layer7{Type: typ, LatencyNs: latency}
	return f
}

// dnsFlow builds the flow of one DNS message, with Hubble's summary.
func (o *Observer) dnsFlow(r *datapath.L7Record, m *l7.DNS, typ flowpb.L7FlowType, latency uint64, timedOut bool) *entry {
	f := o.l7Flow(r, typ, latency, timedOut)
	reply := typ == flowpb.L7FlowType_RESPONSE
	dns := &flowpb.DNS{Query: m.Query, ObservationSource: l7.ObservationSource}
	qtypes := make([]string, len(m.QTypes))
	for i, t := range m.QTypes {
		qtypes[i] = l7.TypeName(t)
	}
	dns.Qtypes = qtypes
	if reply {
		dns.Rcode = uint32(m.RCode)
		dns.Ttl = m.TTL
		dns.Cnames = m.CNAMEs
		dns.Ips = make([]string, len(m.IPs))
		for i, ip := range m.IPs {
			dns.Ips[i] = ip.String()
		}
		dns.Rrtypes = make([]string, len(m.RRTypes))
		for i, t := range m.RRTypes {
			dns.Rrtypes[i] = l7.TypeName(t)
		}
	}
	f.L7.Record = &flowpb.Layer7_Dns{Dns: dns}
	f.Summary = dnsSummary(typ, dns, timedOut, latency)
	return &entry{flow: f}
}

// dnsSummary writes Cilium's DNS summaries (pkg/hubble/parser/seven), so
// hubble observe prints loupe's DNS flows as it prints Cilium's.
func dnsSummary(typ flowpb.L7FlowType, d *flowpb.DNS, timedOut bool, latency uint64) string {
	qtypes := strings.Join(d.Qtypes, ",")
	if typ == flowpb.L7FlowType_REQUEST {
		return fmt.Sprintf("DNS Query %s %s", d.Query, qtypes)
	}
	if timedOut {
		return fmt.Sprintf("DNS Answer none: no answer in %s (Query %s %s)", time.Duration(latency), d.Query, qtypes)
	}
	var answer string
	if d.Rcode != 0 {
		answer = "RCode: " + l7.RCodeName(uint16(d.Rcode))
	} else {
		var parts []string
		if len(d.Ips) > 0 {
			parts = append(parts, fmt.Sprintf("%q", strings.Join(d.Ips, ",")))
		}
		if len(d.Cnames) > 0 {
			parts = append(parts, fmt.Sprintf("CNAMEs: %q", strings.Join(d.Cnames, ",")))
		}
		answer = strings.Join(parts, " ")
	}
	return fmt.Sprintf("DNS Answer %s TTL: %d (Query %s %s)", answer, d.Ttl, d.Query, qtypes)
}

// L7LossSource reports the datapath's L7 loss counts (datapath.L7Stats).
type L7LossSource func() (datapath.L7Stats, error)

// RunL7 expires unanswered DNS queries and turns the growth of the L7
// loss counts into LostEvents, every second until ctx is done: records
// the l7_events ring had no room for as PERF_EVENT_RING_BUFFER, records
// the L7 rate limit held back as UNKNOWN_LOST_EVENT_SOURCE (as drop events
// held back by theirs).
func (o *Observer) RunL7(ctx context.Context, losses L7LossSource) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last datapath.L7Stats
	if losses != nil {
		last, _ = losses() // counted before this agent started: not its losses to report
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := bootNowNS(); now > 0 {
			o.ExpireL7(uint64(now))
		}
		if losses == nil {
			continue
		}
		cur, err := losses()
		if err != nil {
			o.log.Warn("reading l7 loss counts", "err", err)
			continue
		}
		if cur.Lost >= last.Lost {
			o.AddLostEvents(cur.Lost - last.Lost)
		}
		if cur.Limited >= last.Limited {
			o.AddRateLimitedDropEvents(cur.Limited - last.Limited)
		}
		last = cur
	}
}

func bootNowNS() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// orderFlow keeps each agent's flow stream in time order, which followers
// and the relay's merge rely on, now that two rings feed it: L7 records
// and flow events are read by two goroutines, so a flow can reach the ring
// after a newer one. Such a flow's time moves forward to the newest
// written (by the other reader's lag, typically microseconds). Watermarks
// cover both rings (the agent's EventsCaughtUp is the older of the two
// readers'). l7.latency_ns is computed from the kernel timestamps and does
// not move. Called with o.mu held.
func (o *Observer) orderFlow(f *flowpb.Flow, _ bool) {
	t := f.GetTime()
	if t == nil {
		return
	}
	ns := t.Seconds*1e9 + int64(t.Nanos)
	least := o.lastFlowNS
	if ns < least {
		ns = least
		t.Seconds, t.Nanos = ns/1e9, int32(ns%1e9)
	}
	o.lastFlowNS = ns
}
