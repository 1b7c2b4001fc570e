package observer

import (
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A follower that has read everything in the ring gets, about every
// WatermarkInterval, a watermark: a GetFlowsResponse with no response type,
// only node_name and time, promising that no flow it receives later is older
// than that time. loupe-relay uses it to release a live flow as soon as every
// node has passed it, instead of waiting out its drain timeout for quiet
// nodes. Hubble's clients skip a response without a type (hubble observe
// prints nothing for it) and Hubble Relay passes it on to them.
const WatermarkInterval = 50 * time.Millisecond

// watermarkSlack covers an event stamped just before the caught-up instant
// and reserved in the ring buffer just after it, within one program run.
const watermarkSlack = time.Millisecond

// watermark returns a flow time (unix ns, the clock of flow times) that no
// flow written to the ring from now on will be older than; 0 if unknown.
func (o *Observer) watermark() int64 {
	boot := bootNow()
	if o.cfg.EventsCaughtUp != nil {
		boot = o.cfg.EventsCaughtUp()
	}
	if boot == 0 {
		return 0
	}
	return o.dec.bootOffset + boot - int64(watermarkSlack)
}

func bootNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// watermarks paces the watermarks of one follow stream.
type watermarks struct {
	next time.Time // when the next one is due
	last int64     // the newest sent, unix ns
}

// due returns the watermark to send to a follower that has read up to seq,
// or nil: not due yet, unknown, not newer, or the ring has grown since (the
// follower must first read those entries, which may be older).
func (w *watermarks) due(o *Observer, seq uint64, now time.Time) *observerpb.GetFlowsResponse {
	if now.Before(w.next) {
		return nil
	}
	// On the interval's wall-clock boundaries: every node of a cluster marks
	// at about the same instant, so a flow waits for one round of watermarks,
	// not for the latest of many unaligned ones.
	w.next = now.Truncate(WatermarkInterval).Add(WatermarkInterval)
	t := o.watermark() // before the head check: it covers what the head holds
	if t <= w.last || o.ring.head.Load() > seq {
		return nil
	}
	w.last = t
	return &observerpb.GetFlowsResponse{NodeName: o.cfg.NodeName, Time: timestamppb.New(time.Unix(0, t))}
}
