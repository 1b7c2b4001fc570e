package ui

import (
	"math"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// Edge traffic: what connection flows (extensions.connection) add to an
// edge, counted once per connection by conndelta. Rates are over a
// sliding window of rateWindow plus the part of the current one, so a
// burst shows at once and fades within two windows; Decay keeps fading
// edges that no longer get flows.
const (
	rateWindow = 10 * time.Second
	// Handshake histogram: bucket i holds times below 1 µs·2^(i/2), so
	// percentiles are within a factor √2; 48 buckets reach 11 s.
	hsBuckets = 48
)

type edgeTraffic struct {
	bytesSent, bytesRecv, pktSent, pktRecv, conns uint64

	winStart            int64 // ns
	now                 int64 // latest flow or Decay, ns
	curBytes, prevBytes uint64
	curConns, prevConns uint64
	handshakes          uint32
	hs                  [hsBuckets]uint32
}

// addTraffic folds a connection flow into its edge.
func (a *Aggregator) addTraffic(e *edge, f *flowpb.Flow, t int64) {
	d, ok := a.conns.Add(f)
	if !ok {
		return
	}
	tr := e.traffic
	if tr == nil {
		tr = &edgeTraffic{winStart: t}
		e.traffic = tr
	}
	tr.roll(t)
	tr.now = max(tr.now, t)
	tr.bytesSent += d.BytesSent
	tr.bytesRecv += d.BytesReceived
	tr.pktSent += d.PacketsSent
	tr.pktRecv += d.PacketsReceived
	tr.curBytes += d.BytesSent + d.BytesReceived
	if d.New {
		tr.conns++
		tr.curConns++
	}
	if d.Handshake > 0 {
		tr.handshakes++
		tr.hs[hsBucket(d.Handshake)]++
	}
	if a.active == nil {
		a.active = map[*edge]struct{}{}
	}
	a.active[e] = struct{}{}
}

// Decay marks for the next Flush the edges whose rates changed because
// time passed, and forgets the ones that went quiet.
func (a *Aggregator) Decay(now time.Time) {
	t := now.UnixNano()
	for e := range a.active {
		if e.gone {
			delete(a.active, e)
			continue
		}
		quiet := true
		if tr := e.traffic; tr != nil {
			before := tr.winStart
			tr.roll(t)
			tr.now = max(tr.now, t)
			if tr.winStart != before {
				a.touchEdge(e)
			}
			quiet = tr.curBytes == 0 && tr.prevBytes == 0 && tr.curConns == 0 && tr.prevConns == 0
		}
		if x := e.l7; x != nil {
			before := x.winStart
			x.roll(t)
			x.now = max(x.now, t)
			if x.winStart != before {
				a.touchEdge(e)
			}
			quiet = quiet && x.curReq == 0 && x.prevReq == 0
		}
		if quiet {
			delete(a.active, e)
		}
	}
}

// roll moves the window forward to t.
func (tr *edgeTraffic) roll(t int64) {
	w := int64(rateWindow)
	if t < tr.winStart+w {
		return
	}
	if t < tr.winStart+2*w {
		tr.prevBytes, tr.prevConns = tr.curBytes, tr.curConns
	} else {
		tr.prevBytes, tr.prevConns = 0, 0
	}
	tr.curBytes, tr.curConns = 0, 0
	tr.winStart += (t - tr.winStart) / w * w
}

// rates are per second over the previous window and the current one, or
// the edge's life when it is younger.
func (tr *edgeTraffic) rates(now, first int64) (bytes, conns float64) {
	span := float64(int64(rateWindow) + max(0, now-tr.winStart))
	if life := float64(now - first); life < span {
		span = life
	}
	span = max(span, float64(time.Second)) / 1e9
	return float64(tr.prevBytes+tr.curBytes) / span, float64(tr.prevConns+tr.curConns) / span
}

func hsBucket(d time.Duration) int {
	us := float64(d) / 1e3
	if us < 1 {
		return 0
	}
	return min(hsBuckets-1, int(2*math.Log2(us))+1)
}

// percentile returns the q-quantile's bucket as its geometric middle, in µs.
func (tr *edgeTraffic) percentile(q float64) float64 {
	if tr.handshakes == 0 {
		return 0
	}
	want := uint32(math.Ceil(q * float64(tr.handshakes)))
	var sum uint32
	for i, c := range tr.hs {
		sum += c
		if sum >= max(want, 1) {
			if i == 0 {
				return 0.5
			}
			return math.Pow(2, (float64(i)-0.5)/2) // between 2^((i-1)/2) and 2^(i/2)
		}
	}
	return math.Pow(2, float64(hsBuckets-1)/2)
}

// TrafficView is an edge's connection traffic as the browser sees it.
type TrafficView struct {
	BytesSent       uint64  `json:"bytesSent"` // client to server
	BytesReceived   uint64  `json:"bytesReceived"`
	PacketsSent     uint64  `json:"packetsSent"`
	PacketsReceived uint64  `json:"packetsReceived"`
	Connections     uint64  `json:"connections"`
	BytesPerSec     float64 `json:"bytesPerSec"`
	ConnsPerSec     float64 `json:"connsPerSec"`
	Handshakes      uint32  `json:"handshakes"`
	HandshakeP50    float64 `json:"handshakeP50Us,omitempty"` // µs, within a factor √2
	HandshakeP99    float64 `json:"handshakeP99Us,omitempty"`
}

func (tr *edgeTraffic) view(now, first int64) *TrafficView {
	b, c := tr.rates(now, first)
	return &TrafficView{BytesSent: tr.bytesSent, BytesReceived: tr.bytesRecv, PacketsSent: tr.pktSent, PacketsReceived: tr.pktRecv,
		Connections: tr.conns, BytesPerSec: math.Round(b), ConnsPerSec: math.Round(c*100) / 100,
		Handshakes: tr.handshakes, HandshakeP50: tr.percentile(0.5), HandshakeP99: tr.percentile(0.99)}
}
