package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
)

// The per-pod resource tracepoints (bpf/res.c): the in-kernel counters per
// key (a network namespace, or a cgroup in the node's namespace), the OOM
// records and the loader. Numbers mirror bpf/res.h; TestResHeaderMatches
// ties them.
const (
	// ResSlots is the number of log2 latency buckets: bucket i counts
	// waits in [2^i, 2^(i+1)) ns (bucket 0 also 0 ns), the last one also
	// everything above.
	ResSlots   = 40 // RES_SLOTS
	resMaxKeys = 4096

	// ResKeyCgroup is set in a Snapshot key that is a cgroup v2 id (a
	// task in the node's own network namespace), not a namespace inode.
	ResKeyCgroup = 1 << 63 // RES_KEY_CGROUP

	resCntOOMLost  = 0 // RES_CNT_OOM_LOST
	resCntNsFull   = 1 // RES_CNT_NS_FULL
	resCntRQMissed = 2 // RES_CNT_RQ_MISSED

	// OOMRecordSize is sizeof(struct res_oom_event).
	OOMRecordSize = oomOffComm + 16
)

// Offsets in struct res_oom_event (TestResLayoutMatchesBTF checks them).
const (
	oomOffTs       = 0
	oomOffNetns    = 8
	oomOffCgroup   = 16
	oomOffTotalVM  = 24
	oomOffAnonRSS  = 32
	oomOffFileRSS  = 40
	oomOffShmemRSS = 48
	oomOffPid      = 56
	oomOffUID      = 60
	oomOffComm     = 64
)

// ResourceStats is what the kernel counted for one key, summed over CPUs,
// since the key's first event after load.
type ResourceStats struct {
	CPUNs      uint64 // on-CPU time
	RunqCount  uint64 // waits in the run queue
	RunqSumNs  uint64
	Runq       [ResSlots]uint64 // log2 ns histogram of the waits
	IOOps      uint64           // block requests completed
	IOBytes    uint64
	IOSumNs    uint64
	IO         [ResSlots]uint64 // log2 ns histogram of their latency
	PageFaults uint64
	OOMKills   uint64
}

// Add adds o's counts to s.
func (s *ResourceStats) Add(o ResourceStats) {
	s.CPUNs += o.CPUNs
	s.RunqCount += o.RunqCount
	s.RunqSumNs += o.RunqSumNs
	s.IOOps += o.IOOps
	s.IOBytes += o.IOBytes
	s.IOSumNs += o.IOSumNs
	s.PageFaults += o.PageFaults
	s.OOMKills += o.OOMKills
	for i := range ResSlots {
		s.Runq[i] += o.Runq[i]
		s.IO[i] += o.IO[i]
	}
}

func (s *ResourceStats) addCPU(v *resResStats) {
	s.Add(ResourceStats{CPUNs: v.CpuNs, RunqCount: v.RunqCount, RunqSumNs: v.RunqSumNs, Runq: v.Runq,
		IOOps: v.IoOps, IOBytes: v.IoBytes, IOSumNs: v.IoSumNs, IO: v.Io, PageFaults: v.Faults, OOMKills: v.Ooms})
}

// ResourceCounters are the programs' own loss counters.
type ResourceCounters struct {
	OOMLost   uint64 // OOM records lost to a full ring
	NetnsFull uint64 // updates lost: the table of keys was full
	RQMissed  uint64 // block completions of requests not seen starting
	// Skipped is how often the kernel did not run one of the programs
	// because a BPF program was already running on that CPU (its
	// recursion misses): those switches, requests or faults went uncounted.
	Skipped uint64
}

// OOMRecord is one decoded struct res_oom_event. Memory is in pages.
type OOMRecord struct {
	TimeNs   uint64 // CLOCK_BOOTTIME
	NetnsIno uint64
	CgroupID uint64
	TotalVM  uint64
	AnonRSS  uint64
	FileRSS  uint64
	ShmemRSS uint64
	PID      uint32
	UID      uint32
	Comm     string
}

// DecodeOOMRecord decodes one ring record; a short record is an error.
func DecodeOOMRecord(b []byte) (OOMRecord, error) {
	if len(b) < OOMRecordSize {
		return OOMRecord{}, fmt.Errorf("oom record: %d bytes, want %d", len(b), OOMRecordSize)
	}
	le := binary.LittleEndian
	return OOMRecord{
		TimeNs:   le.Uint64(b[oomOffTs:]),
		NetnsIno: le.Uint64(b[oomOffNetns:]),
		CgroupID: le.Uint64(b[oomOffCgroup:]),
		TotalVM:  le.Uint64(b[oomOffTotalVM:]),
		AnonRSS:  le.Uint64(b[oomOffAnonRSS:]),
		FileRSS:  le.Uint64(b[oomOffFileRSS:]),
		ShmemRSS: le.Uint64(b[oomOffShmemRSS:]),
		PID:      le.Uint32(b[oomOffPid:]),
		UID:      le.Uint32(b[oomOffUID:]),
		Comm:     cstring(b[oomOffComm : oomOffComm+16]),
	}, nil
}

// Resources is one agent's loaded and attached resource tracepoints. Like
// the security tracepoints they are not pinned: the counters start when
// the agent does, and nothing is left behind on the node.
type Resources struct {
	objs  resObjects
	links []link.Link

	mu   sync.Mutex
	last map[uint64]ResourceStats // the last Snapshot (see neverBack)
}

// LoadResources loads and attaches the scheduler, block, fault and OOM
// tracepoints. Tasks in network namespace nodeNetns (the node's own) are
// counted by cgroup (keys with ResKeyCgroup), the others by namespace;
// with nodeNetns 0 every task is counted by namespace.
func LoadResources(nodeNetns uint64) (*Resources, error) {
	spec, err := resSpec(nodeNetns)
	if err != nil {
		return nil, fmt.Errorf("load resources: %w", err)
	}
	r := &Resources{}
	if err := loadAndAssign(spec, &r.objs, nil, "resources"); err != nil {
		return nil, err
	}
	if err := r.Attach(); err != nil {
		r.Close()
		return nil, fmt.Errorf("load resources: %w", err)
	}
	return r, nil
}

// Attach attaches the programs (LoadResources does); after Detach, it
// attaches them again with their counters kept.
func (r *Resources) Attach() error {
	if len(r.links) > 0 {
		return nil
	}
	// Each CPU's current task, as the switch program last saw it, is
	// stale after a Detach: forget it (and what it held).
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("reset res_cur: %w", err)
	}
	if err := r.objs.ResCur.Put(uint32(0), make([]resResCur, ncpu)); err != nil {
		return fmt.Errorf("reset res_cur: %w", err)
	}
	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"sched_switch", r.objs.LoupeResSwitch},
		{"block_io_start", r.objs.LoupeResIoStart},
		{"block_rq_insert", r.objs.LoupeResRqInsert},
		{"block_rq_issue", r.objs.LoupeResRqIssue},
		{"block_rq_complete", r.objs.LoupeResRqComplete},
		{"page_fault_user", r.objs.LoupeResFault},
		{"mark_victim", r.objs.LoupeResOom},
	} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			_ = r.Detach()
			return fmt.Errorf("attach tp_btf/%s: %w", p.name, err)
		}
		r.links = append(r.links, l)
	}
	return nil
}

// Detach detaches the programs and keeps the maps (for a benchmark's
// with-and-without slices).
func (r *Resources) Detach() error {
	var errs []error
	for _, l := range slices.Backward(r.links) {
		errs = append(errs, l.Close())
	}
	r.links = nil
	return errors.Join(errs...)
}

// resSpec is the programs' spec with every variable set.
func resSpec(nodeNetns uint64) (*ebpf.CollectionSpec, error) {
	spec, err := loadRes()
	if err != nil {
		return nil, err
	}
	if err := setMMCounters(spec); err != nil {
		return nil, err
	}
	if err := spec.Variables[resVarResNodeNetns].Set(nodeNetns); err != nil {
		return nil, fmt.Errorf("set %s: %w", resVarResNodeNetns, err)
	}
	return spec, nil
}

// setMMCounters sets the rss counter indexes the OOM record reads, from
// the running kernel's BTF.
func setMMCounters(spec *ebpf.CollectionSpec) error {
	kspec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("kernel btf: %w", err)
	}
	vals, err := enumValueByName(kspec, "MM_FILEPAGES", "MM_ANONPAGES", "MM_SHMEMPAGES")
	if err != nil {
		return err
	}
	for v, name := range map[string]string{resVarResMmFilepages: "MM_FILEPAGES", resVarResMmAnonpages: "MM_ANONPAGES",
		resVarResMmShmempages: "MM_SHMEMPAGES"} {
		if err := spec.Variables[v].Set(vals[name]); err != nil {
			return fmt.Errorf("set %s: %w", v, err)
		}
	}
	return nil
}

// enumValueByName finds enumerators by name in any enum of spec, named
// or not (the mm counters' enum has no name).
func enumValueByName(spec *btf.Spec, names ...string) (map[string]uint32, error) {
	out := map[string]uint32{}
	for typ, err := range spec.All() {
		if err != nil {
			return nil, fmt.Errorf("kernel btf: %w", err)
		}
		e, ok := typ.(*btf.Enum)
		if !ok {
			continue
		}
		for _, v := range e.Values {
			if slices.Contains(names, v.Name) {
				out[v.Name] = uint32(v.Value)
			}
		}
		if len(out) == len(names) {
			return out, nil
		}
	}
	return nil, fmt.Errorf("kernel btf: enumerators %v: found only %v", names, out)
}

// Snapshot returns every key's counters, summed over CPUs: a network
// namespace inode, or a cgroup id with ResKeyCgroup set.
//
// A key's switch counts are in two places: res_keys, and each CPU's
// res_cur slots until a switch flushes them into res_keys. The two maps
// cannot be read at once, so Snapshot reads res_keys, then res_cur, then
// res_keys again: when the two res_keys reads agree on every CPU's switch
// counts, no flush fell between them and the sum counts each switch once.
// Otherwise it reads again, up to snapshotTries times, and then returns
// the first res_keys read with res_cur, which may miss a flushed slot for
// this snapshot (never count one twice); neverBack then reports such a
// key as the last snapshot did. Without the check a snapshot
// taken across a flush came out lower than the one before it.
func (r *Resources) Snapshot() (map[uint64]ResourceStats, error) {
	const snapshotTries = 8
	for try := 1; ; try++ {
		before, err := r.readKeys()
		if err != nil {
			return nil, err
		}
		var cur []resResCur
		if err := r.objs.ResCur.Lookup(uint32(0), &cur); err != nil {
			return nil, fmt.Errorf("resource snapshot: res_cur: %w", err)
		}
		after, err := r.readKeys()
		if err != nil {
			return nil, err
		}
		if try < snapshotTries && !sameSwitchCounts(before, after) {
			continue
		}
		return r.neverBack(sumSnapshot(before, cur)), nil
	}
}

// neverBack keeps counters from going back when every try saw a flush
// (a busy node: the first read may miss one): a key that came out behind
// the last snapshot's, or not at all, is reported as it was then, whole, so
// its histograms still add up to its counts.
func (r *Resources) neverBack(out map[uint64]ResourceStats) map[uint64]ResourceStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, last := range r.last {
		if s, ok := out[key]; !ok || behind(s, last) {
			out[key] = last
		}
	}
	r.last = maps.Clone(out)
	return out
}

// behind tells whether any counter of s is below last's.
func behind(s, last ResourceStats) bool {
	return s.CPUNs < last.CPUNs || s.RunqCount < last.RunqCount || s.RunqSumNs < last.RunqSumNs ||
		s.IOOps < last.IOOps || s.IOBytes < last.IOBytes || s.IOSumNs < last.IOSumNs ||
		s.PageFaults < last.PageFaults || s.OOMKills < last.OOMKills
}

// readKeys reads res_keys: each key's per-CPU entries.
func (r *Resources) readKeys() (map[uint64][]resResStats, error) {
	out := map[uint64][]resResStats{}
	var key uint64
	var per []resResStats
	it := r.objs.ResKeys.Iterate()
	for it.Next(&key, &per) {
		out[key] = slices.Clone(per)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("resource snapshot: %w", err)
	}
	return out, nil
}

// sameSwitchCounts tells whether no CPU flushed switch counts into any key
// between two reads of res_keys (a flush always moves cpu_ns or a wait).
func sameSwitchCounts(a, b map[uint64][]resResStats) bool {
	if len(a) != len(b) {
		return false
	}
	for key, pa := range a {
		pb, ok := b[key]
		if !ok || len(pa) != len(pb) {
			return false
		}
		for c := range pa {
			if pa[c].CpuNs != pb[c].CpuNs || pa[c].RunqCount != pb[c].RunqCount {
				return false
			}
		}
	}
	return true
}

// sumSnapshot adds every key's per-CPU entries and the switch counts each
// CPU still holds for its recent keys.
func sumSnapshot(keys map[uint64][]resResStats, cur []resResCur) map[uint64]ResourceStats {
	out := make(map[uint64]ResourceStats, len(keys))
	for key, per := range keys {
		var s ResourceStats
		for i := range per {
			s.addCPU(&per[i])
		}
		out[key] = s
	}
	for c := range cur {
		for i, p := range cur[c].Pending {
			key := cur[c].Keys[i]
			if key == 0 || p.CpuNs == 0 && p.RunqCount == 0 {
				continue
			}
			s := out[key]
			s.Add(ResourceStats{CPUNs: p.CpuNs, RunqCount: p.RunqCount, RunqSumNs: p.RunqSumNs, Runq: p.Runq})
			out[key] = s
		}
	}
	return out
}

// Counters sums the programs' loss counters over CPUs.
func (r *Resources) Counters() (ResourceCounters, error) {
	var out ResourceCounters
	for slot, dst := range map[uint32]*uint64{resCntOOMLost: &out.OOMLost, resCntNsFull: &out.NetnsFull, resCntRQMissed: &out.RQMissed} {
		var per []uint64
		if err := r.objs.ResCounters.Lookup(slot, &per); err != nil {
			return out, fmt.Errorf("resource counters: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	for _, p := range r.programs() {
		st, err := p.Stats()
		if err != nil {
			return out, fmt.Errorf("resource program stats: %w", err)
		}
		out.Skipped += st.RecursionMisses
	}
	return out, nil
}

func (r *Resources) programs() []*ebpf.Program {
	return []*ebpf.Program{r.objs.LoupeResSwitch,
		r.objs.LoupeResIoStart, r.objs.LoupeResRqInsert, r.objs.LoupeResRqIssue, r.objs.LoupeResRqComplete,
		r.objs.LoupeResFault, r.objs.LoupeResOom}
}

// ProgramCost is what the programs cost the kernel while BPF run-time
// statistics are on (ebpf.EnableStats): their summed run time, and how
// many context switches the switch program saw.
type ProgramCost struct {
	Runtime  time.Duration
	Switches uint64
}

// Cost sums the programs' run-time statistics.
func (r *Resources) Cost() (ProgramCost, error) {
	var c ProgramCost
	for _, p := range r.programs() {
		st, err := p.Stats()
		if err != nil {
			return c, fmt.Errorf("resource program stats: %w", err)
		}
		c.Runtime += st.Runtime
		if p == r.objs.LoupeResSwitch {
			c.Switches = st.RunCount
		}
	}
	return c, nil
}

// ReadOOM hands every OOM record to sink until ctx is done. raw is valid
// only during the call.
func (r *Resources) ReadOOM(ctx context.Context, sink func(raw []byte)) error {
	return readRing(ctx, r.objs.ResOom, "read oom records", sink)
}

// readRing hands every record of a ring buffer map to sink until ctx is
// done; what prefixes errors.
func readRing(ctx context.Context, m *ebpf.Map, what string, sink func(raw []byte)) error {
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer rd.Close()
	stop := context.AfterFunc(ctx, func() { rd.Close() })
	defer stop()
	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if ctx.Err() != nil && (errors.Is(err, os.ErrClosed) || errors.Is(err, ringbuf.ErrClosed)) {
				return nil
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		sink(rec.RawSample)
	}
}

// Close detaches the tracepoints and frees the maps.
func (r *Resources) Close() error {
	return errors.Join(r.Detach(), r.objs.Close())
}
