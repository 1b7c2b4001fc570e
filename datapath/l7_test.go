package datapath

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/loupe-project/loupe/contract"
)

// withPayload builds p's frame with data as its L4 payload.
func withPayload(p pkt, data []byte) []byte {
	p.payload = len(data)
	b := p.build()
	copy(b[len(b)-len(data):], data)
	return b
}

func dnsQuery(tb testing.TB, id uint16, name string) []byte {
	tb.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func drainL7(tb testing.TB, d *Datapath) []L7Record {
	tb.Helper()
	rd, err := ringbuf.NewReader(d.objs.L7Events)
	if err != nil {
		tb.Fatalf("ringbuf reader: %v", err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now())
	var out []L7Record
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			tb.Fatalf("read l7 ring: %v", err)
		}
		var r L7Record
		if err := DecodeL7Record(rec.RawSample, &r); err != nil {
			tb.Fatalf("decode l7 record: %v", err)
		}
		r.Data = append([]byte(nil), r.Data...)
		out = append(out, r)
	}
}

func TestPrivilegedL7DNSCapture(t *testing.T) {
	for _, fam := range []struct {
		name      string
		pod, peer netip.Addr
	}{{"ipv4", podIP, peerIP}, {"ipv6", podIP6, peerIP6}} {
		t.Run(fam.name, func(t *testing.T) {
			d := newTestDatapath(t, Config{L7: L7DNS | L7HTTP})
			withEndpoint(t, d, EndpointInfo{})
			q := dnsQuery(t, 0x1234, "a.x.pod.lab.")
			udp := pkt{src: fam.pod, dst: fam.peer, proto: protoUDP, sport: 40000, dport: 53}
			if ret := run(t, d.objs.LoupeFromPod, withPayload(udp, q)); ret != retTCXNext {
				t.Fatalf("query: got %d", ret)
			}
			// The answer comes back to the pod from port 53.
			run(t, d.objs.LoupeToPod, withPayload(udp.reply(), q))
			// TCP DNS on the second default port: 2-byte length, then the message.
			tcp := pkt{src: fam.pod, dst: fam.peer, proto: protoTCP, sport: 40001, dport: 5353, flags: tcpSYN}
			run(t, d.objs.LoupeFromPod, tcp.build())
			tcp.flags = tcpACK | 0x08
			framed := append([]byte{0, byte(len(q))}, q...)
			run(t, d.objs.LoupeFromPod, withPayload(tcp, framed))
			// Not DNS: another UDP port, and TCP payload that is no HTTP.
			run(t, d.objs.LoupeFromPod, withPayload(pkt{src: fam.pod, dst: fam.peer, proto: protoUDP, sport: 40002, dport: 54}, q))
			run(t, d.objs.LoupeFromPod, withPayload(pkt{src: fam.pod, dst: fam.peer, proto: protoTCP, sport: 40003, dport: 80, flags: tcpSYN}, []byte("xGET / HTTP/1.1\r\n")))

			recs := drainL7(t, d)
			if len(recs) != 3 {
				t.Fatalf("got %d l7 records, want 3: %+v", len(recs), recs)
			}
			want := []struct {
				src          netip.Addr
				sport, dport uint16
				proto, dir   uint8
				data         []byte
			}{
				{fam.pod, 40000, 53, protoUDP, contract.DirectionEgress, q},
				{fam.peer, 53, 40000, protoUDP, contract.DirectionIngress, q},
				{fam.pod, 40001, 5353, protoTCP, contract.DirectionEgress, framed},
			}
			for i, w := range want {
				r := recs[i]
				if r.Kind != L7DNS || r.Src != w.src || r.SrcPort != w.sport || r.DstPort != w.dport ||
					r.Proto != w.proto || r.Direction != w.dir || r.EndpointID != testEP ||
					r.Ifindex != loIfindex || r.PayloadLen != uint32(len(w.data)) || !bytes.Equal(r.Data, w.data) || r.TimestampNS == 0 {
					t.Errorf("record %d: %+v, want %+v", i, r, w)
				}
			}
			// Flow events are unaffected: the L7 records are on their own ring.
			if evs := drainEvents(t, d); len(evs) == 0 {
				t.Errorf("no flow events")
			}
		})
	}
}

func TestPrivilegedL7HTTPCapture(t *testing.T) {
	d := newTestDatapath(t, Config{L7: L7DNS | L7HTTP, HTTPCaptureLen: 64})
	withEndpoint(t, d, EndpointInfo{})
	req := []byte("GET /status/500?secret=1 HTTP/1.1\r\nHost: b\r\nUser-Agent: test-agent-with-a-long-name\r\n\r\n")
	c := pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 40000, dport: 8080, flags: tcpSYN}
	run(t, d.objs.LoupeFromPod, c.build())
	c.flags = tcpACK | 0x08
	run(t, d.objs.LoupeFromPod, withPayload(c, req))
	run(t, d.objs.LoupeToPod, withPayload(c.reply(), []byte("HTTP/1.1 500 Internal Server Error\r\n\r\n")))
	// A body segment is not copied.
	run(t, d.objs.LoupeToPod, withPayload(c.reply(), bytes.Repeat([]byte("x"), 1000)))
	recs := drainL7(t, d)
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2: %+v", len(recs), recs)
	}
	if r := recs[0]; r.Kind != L7HTTP || r.PayloadLen != uint32(len(req)) || !bytes.Equal(r.Data, req[:64]) {
		t.Errorf("request record %+v", r)
	}
	if r := recs[1]; r.Kind != L7HTTP || r.Direction != contract.DirectionIngress || !bytes.HasPrefix(r.Data, []byte("HTTP/1.1 500")) {
		t.Errorf("response record %+v", r)
	}
}

func TestPrivilegedL7Switch(t *testing.T) {
	q := dnsQuery(t, 7, "a.x.pod.lab.")
	dns := withPayload(pkt{src: podIP, dst: peerIP, proto: protoUDP, sport: 40000, dport: 53}, q)
	http := withPayload(pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 40001, dport: 80, flags: tcpSYN | 0x08}, []byte("GET / HTTP/1.1\r\n\r\n"))
	custom := withPayload(pkt{src: podIP, dst: peerIP, proto: protoUDP, sport: 40002, dport: 1053}, q)
	for _, tc := range []struct {
		name  string
		cfg   Config
		kinds []uint8
	}{
		{"off", Config{}, nil},
		{"dns", Config{L7: L7DNS}, []uint8{L7DNS}},
		{"http", Config{L7: L7HTTP}, []uint8{L7HTTP}},
		{"dns,http", Config{L7: L7DNS | L7HTTP}, []uint8{L7DNS, L7HTTP}},
		{"dns ports", Config{L7: L7DNS, DNSPorts: []uint16{1053}}, []uint8{L7DNS}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDatapath(t, tc.cfg)
			withEndpoint(t, d, EndpointInfo{})
			for _, b := range [][]byte{dns, http, custom} {
				run(t, d.objs.LoupeFromPod, b)
			}
			var kinds []uint8
			for _, r := range drainL7(t, d) {
				kinds = append(kinds, r.Kind)
				if tc.cfg.DNSPorts != nil && r.DstPort != 1053 {
					t.Errorf("captured port %d with ports %v", r.DstPort, tc.cfg.DNSPorts)
				}
			}
			if !bytes.Equal(kinds, tc.kinds) {
				t.Fatalf("kinds %v, want %v", kinds, tc.kinds)
			}
		})
	}
}

// L7 records have their own budget: a full rate limit counts in l7_stats and
// leaves the flow events' drop-event bucket and loss counts alone.
func TestPrivilegedL7RateLimitOwnBudget(t *testing.T) {
	d := newTestDatapath(t, Config{L7: L7DNS, L7EventsPerSecond: 1})
	withEndpoint(t, d, EndpointInfo{})
	q := dnsQuery(t, 9, "a.x.pod.lab.")
	for i := range 50 {
		run(t, d.objs.LoupeFromPod, withPayload(pkt{src: podIP, dst: peerIP, proto: protoUDP, sport: uint16(40000 + i), dport: 53}, q))
	}
	recs := drainL7(t, d)
	st, err := d.L7Stats()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || len(recs) >= 50 || st.Limited != uint64(50-len(recs)) || st.Lost != 0 {
		t.Fatalf("%d records, stats %+v", len(recs), st)
	}
	es, err := d.EventStats()
	if err != nil {
		t.Fatal(err)
	}
	if es.Lost != 0 || es.DropEventsLimited != 0 {
		t.Fatalf("flow event stats touched: %+v", es)
	}
}

func TestL7RecordRoundTrip(t *testing.T) {
	r := L7Record{TimestampNS: 5, Ifindex: 3, EndpointID: 4, SrcIdentity: 5, DstIdentity: 6,
		Src: podIP6, Dst: peerIP6, SrcPort: 1, DstPort: 53, Proto: protoUDP, Kind: L7DNS,
		Direction: contract.DirectionEgress, PayloadLen: 700, Data: []byte("abc")}
	b, err := EncodeL7Record(&r)
	if err != nil {
		t.Fatal(err)
	}
	var got L7Record
	if err := DecodeL7Record(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Src != r.Src || got.PayloadLen != 700 || string(got.Data) != "abc" || got.Kind != L7DNS || got.TimestampNS != 5 {
		t.Fatalf("got %+v", got)
	}
	for _, s := range []string{"dns,http", "dns", "http", "off"} {
		if _, err := ParseL7Mode(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if _, err := ParseL7Mode("kafka"); err == nil {
		t.Error("kafka accepted")
	}
}

func FuzzDecodeL7Record(f *testing.F) {
	r := L7Record{Src: podIP, Dst: peerIP, Proto: protoUDP, Kind: L7DNS, PayloadLen: 3, Data: []byte("abc")}
	b, _ := EncodeL7Record(&r)
	f.Add(b)
	f.Add(b[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		var r L7Record
		if err := DecodeL7Record(b, &r); err != nil {
			return
		}
		if len(r.Data) > L7DataLen || uint32(len(r.Data)) > r.PayloadLen {
			t.Fatalf("data %d bytes, payload %d", len(r.Data), r.PayloadLen)
		}
		again, err := EncodeL7Record(&r)
		if err != nil {
			t.Fatal(err)
		}
		var r2 L7Record
		if err := DecodeL7Record(again, &r2); err != nil || !bytes.Equal(r2.Data, r.Data) || r2.Src != r.Src {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// TestL7HeaderMatchesGo ties bpf/l7.h's numbers and struct loupe_l7_record's
// layout (from the compiled object's BTF) to the Go decoder.
func TestL7HeaderMatchesGo(t *testing.T) {
	c, where := headerDefines(t)
	for name, want := range map[string]uint64{
		"LOUPE_L7_DNS": uint64(L7DNS), "LOUPE_L7_HTTP": uint64(L7HTTP), "LOUPE_L7_DATA_LEN": L7DataLen,
		"LOUPE_L7_DNS_PORTS": L7MaxDNSPorts, "L7_STAT_RINGBUF_FULL": l7StatRingbufFull, "L7_STAT_LIMITED": l7StatLimited,
	} {
		if got, ok := c[name]; !ok || got != want {
			t.Errorf("%s: %s says %d (defined: %v), Go says %d", name, where[name], got, ok, want)
		}
	}
	spec, err := loadLoupe()
	if err != nil {
		t.Fatal(err)
	}
	var s *btf.Struct
	if err := spec.Types.TypeByName("loupe_l7_record", &s); err != nil {
		t.Fatalf("loupe_l7_record in BTF: %v", err)
	}
	if s.Size != L7RecordSize {
		t.Errorf("sizeof(struct loupe_l7_record) = %d, L7RecordSize = %d", s.Size, L7RecordSize)
	}
	want := map[string]uint32{
		"ts_ns": l7OffTimestamp, "ifindex": l7OffIfindex, "ep_id": l7OffEndpointID, "src_identity": l7OffSrcIdentity,
		"dst_identity": l7OffDstIdentity, "saddr": l7OffSaddr, "daddr": l7OffDaddr, "sport": l7OffSport, "dport": l7OffDport,
		"family": l7OffFamily, "proto": l7OffProto, "kind": l7OffKind, "direction": l7OffDirection, "tcp_flags": l7OffTCPFlags,
		"payload_len": l7OffPayloadLen, "cap_len": l7OffCapLen, "data": l7OffData,
	}
	for _, m := range s.Members {
		if off, ok := want[m.Name]; ok && m.Offset.Bytes() != off {
			t.Errorf("member %s at %d in BTF, %d in Go", m.Name, m.Offset.Bytes(), off)
		}
		delete(want, m.Name)
	}
	if len(want) != 0 {
		t.Errorf("Go decodes members BTF lacks: %v", want)
	}
}

// Two pipelined requests in one segment: the record carries both heads
// (the default 256-byte capture), so the observer reads both
// (observer's TestL7HTTPPipelinedInOneSegment feeds it the same bytes).
func TestPrivilegedL7HTTPPipelinedCapture(t *testing.T) {
	d := newTestDatapath(t, Config{L7: L7DNS | L7HTTP})
	withEndpoint(t, d, EndpointInfo{})
	two := []byte("GET /status/500 HTTP/1.1\r\nHost: db:8080\r\n\r\nGET /ok HTTP/1.1\r\nHost: db:8080\r\n\r\n")
	c := pkt{src: podIP, dst: peerIP, proto: protoTCP, sport: 40001, dport: 8080, flags: tcpSYN}
	run(t, d.objs.LoupeFromPod, c.build())
	c.flags = tcpACK | 0x08
	run(t, d.objs.LoupeFromPod, withPayload(c, two))
	recs := drainL7(t, d)
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1: %+v", len(recs), recs)
	}
	if r := recs[0]; r.Kind != L7HTTP || r.PayloadLen != uint32(len(two)) || !bytes.Equal(r.Data, two) {
		t.Errorf("record %+v, want both requests whole", r)
	}
}
