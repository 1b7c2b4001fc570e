package datapath

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// caughtUpPoll bounds how stale EventsCaughtUp is while no events come: the
// reader wakes this often to note that the ring buffer is still empty.
const caughtUpPoll = 5 * time.Millisecond

// Slots of the event_stats map (STAT_* in bpf/events.h).
const (
	statRingbufFull       = 0 // an event was lost: no room in the ring
	statDropEventLimited  = 1 // a drop event was suppressed by the rate limit
	statKernelDropLimited = 2 // a kernel-drop event was suppressed by its rate limit
	statKernelDropNoNetns = 3 // a kernel drop with no device and no socket: no namespace
)

// EventStats tells how complete the event stream is.
type EventStats struct {
	Read              uint64 // records handed to ReadEvents sinks
	Short             uint64 // records shorter than EventSize, skipped
	Lost              uint64 // events the datapath could not write: ring buffer full
	DropEventsLimited uint64 // drop events held back by the rate limit (counters stay exact)
	// KernelDropsLimited are kernel-drop events held back by their own
	// per-CPU rate limit (their LostEvents).
	KernelDropsLimited uint64
	// KernelDropsNoNetns are kernel drops of packets with neither device
	// nor socket, which no agent can tie to a namespace (not reported).
	KernelDropsNoNetns uint64
}

// ReadEvents hands every ring-buffer record to sink until ctx is done, then
// returns nil. raw is only valid during the call. Only one reader at a time.
func (d *Datapath) ReadEvents(ctx context.Context, sink func(raw []byte)) error {
	return readRingPolled(ctx, d.objs.Events, &d.caughtUp, "read events", func(raw []byte) {
		if len(raw) < EventSize {
			d.eventsShort.Add(1)
			return
		}
		d.eventsRead.Add(1)
		sink(raw)
	})
}

// A reader that took at least busyBurst records since the ring was last
// empty pauses busyPause when it finds the ring empty, before it waits on
// it. Without the pause a reader that is just faster than the datapath
// waits on the ring after nearly every record, and the kernel wakes it for
// the next one: an interrupt on the writing CPU (irq_work, which in a VM
// is an exit to the hypervisor) and a wakeup, an epoll_wait and a switch on
// the reader's, per event. After the pause it takes the records that
// gathered in one pass; the ring (16 MiB) holds far more than a pause's
// worth, and a flow is late by at most busyPause. Below about busyBurst
// records per wakeup the reader waits at once, as an idle node should.
const (
	busyBurst = 32
	busyPause = time.Millisecond
)

// busyWait is time.Sleep; a test counts the pauses.
var busyWait = time.Sleep

// ctxCheckEvery is how many records a busy reader hands on between two
// looks at its context.
const ctxCheckEvery = 4096

// readRingPolled hands every record of ring buffer m to sink until ctx is
// done, and keeps caughtUp (see EventsCaughtUp). It stops by itself, never
// by a Close from another goroutine: AvailableBytes reads the ring's
// mapped pages without the reader's lock, and a concurrent Close unmaps
// them (an agent stopping under load crashed that way). An empty ring
// waits at most caughtUpPoll, so ctx is seen within that.
func readRingPolled(ctx context.Context, m *ebpf.Map, caughtUp *atomic.Int64, what string, sink func(raw []byte)) error {
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer rd.Close()

	var rec ringbuf.Record
	burst := 0 // records taken since the ring was last empty
	for n := 1; ; n++ {
		if n%ctxCheckEvery == 0 && ctx.Err() != nil {
			return nil
		}
		// t is taken before the second check: every record stamped before
		// t was reserved before it, so an empty ring means all of them
		// reached the sink. The first check keeps the clock's syscall off
		// the path of a busy ring.
		if rd.AvailableBytes() == 0 {
			if ctx.Err() != nil {
				return nil
			}
			if burst >= busyBurst {
				// A busy ring: let records gather instead of being woken
				// for each (see busyPause).
				busyWait(busyPause)
			}
			burst = 0
			if t := bootNow(); rd.AvailableBytes() == 0 {
				caughtUp.Store(t)
			}
			// The deadline matters only when ReadInto waits, on an empty
			// ring: a busy ring skips the clock read.
			rd.SetDeadline(time.Now().Add(caughtUpPoll))
		}
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		burst++
		sink(rec.RawSample)
	}
}

// EventsCaughtUp returns a CLOCK_BOOTTIME instant (ns, the clock of the
// events' ts_ns) such that every event stamped before it has been handed to
// the ReadEvents sink; 0 before ReadEvents runs. It lags real time by at most
// caughtUpPoll (plus busyPause on a busy ring) while the reader keeps up, and
// stops while it is behind.
func (d *Datapath) EventsCaughtUp() int64 { return d.caughtUp.Load() }

func bootNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// EventStats returns the reader's counts and the datapath's lost and
// rate-limited event counts.
func (d *Datapath) EventStats() (EventStats, error) {
	s := EventStats{Read: d.eventsRead.Load(), Short: d.eventsShort.Load()}
	for slot, dst := range map[uint32]*uint64{statRingbufFull: &s.Lost, statDropEventLimited: &s.DropEventsLimited,
		statKernelDropLimited: &s.KernelDropsLimited, statKernelDropNoNetns: &s.KernelDropsNoNetns} {
		var vals []uint64
		if err := d.objs.EventStats.Lookup(slot, &vals); err != nil {
			return s, fmt.Errorf("event stats: %w", err)
		}
		for _, v := range vals {
			*dst += v
		}
	}
	return s, nil
}
