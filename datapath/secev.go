package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// The runtime-security tracepoints (bpf/secev.c): records, filter and
// loader. Numbers mirror bpf/secev.h; TestSecevHeaderMatches ties them.
const (
	SecevPathMax  = 256 // SECEV_PATH_MAX
	SecevArgvMax  = 512 // SECEV_ARGV_MAX
	SecevLPMBytes = 128 // SECEV_LPM_BYTES
	SecevNameMax  = 16  // SECEV_NAME_MAX

	SecevExec = 1 // SECEV_EXEC
	SecevExit = 2 // SECEV_EXIT
	SecevOpen = 3 // SECEV_OPEN

	SecevSysOpen    = 0 // SECEV_SYS_OPEN
	SecevSysOpenat  = 1 // SECEV_SYS_OPENAT
	SecevSysOpenat2 = 2 // SECEV_SYS_OPENAT2

	SecevFlagRelative  = 0x1 // SECEV_F_RELATIVE
	SecevFlagPathTrunc = 0x2 // SECEV_F_PATH_TRUNC
	SecevFlagArgvTrunc = 0x4 // SECEV_F_ARGV_TRUNC

	secevCfgExec     = 0 // SECEV_CFG_EXEC
	secevCfgOpen     = 1 // SECEV_CFG_OPEN
	secevCfgExit     = 2 // SECEV_CFG_EXIT
	secevCfgRelative = 3 // SECEV_CFG_RELATIVE

	secevStatSent     = 0 // SECEV_STAT_SENT
	secevStatFiltered = 1 // SECEV_STAT_FILTERED
	secevStatLimited  = 2 // SECEV_STAT_LIMITED
	secevStatFull     = 3 // SECEV_STAT_FULL

	// SecevRecordSize is sizeof(struct secev_event).
	SecevRecordSize = secevEventSize

	DefaultSecurityEventsPerSecond = 4000
)

// Offsets in struct secev_event (TestSecevLayoutMatchesBTF checks them).
const (
	secOffTs       = 0
	secOffNetns    = 8
	secOffCgroup   = 16
	secOffType     = 24
	secOffPid      = 28
	secOffTid      = 32
	secOffPpid     = 36
	secOffUID      = 40
	secOffGID      = 44
	secOffRet      = 48
	secOffFlags    = 52
	secOffMode     = 56
	secOffSyscall  = 60
	secOffEvFlags  = 62
	secOffArgvLen  = 64
	secOffDirfd    = 68
	secOffComm     = 72
	secOffPcomm    = 88
	secOffPath     = 104
	secOffArgv     = 104 + SecevPathMax
	secevEventSize = secOffArgv + SecevArgvMax
)

// SecurityRecord is one decoded struct secev_event.
type SecurityRecord struct {
	TimeNs   uint64 // CLOCK_BOOTTIME
	NetnsIno uint64
	CgroupID uint64
	Type     uint32 // SecevExec, SecevExit or SecevOpen
	PID, TID uint32
	PPID     uint32
	UID, GID uint32
	Ret      int32 // open: fd or -errno; exit: exit code
	Flags    uint32
	Mode     uint32
	Syscall  uint16
	EvFlags  uint16
	Dirfd    int32
	Comm     string
	PComm    string
	Path     string
	Argv     []string
}

// DecodeSecurityRecord decodes one ring record. It never panics on short
// or garbled input: a short record is an error, strings end at their NUL
// or their field's end.
func DecodeSecurityRecord(b []byte) (SecurityRecord, error) {
	if len(b) < secevEventSize {
		return SecurityRecord{}, fmt.Errorf("security record: %d bytes, want %d", len(b), secevEventSize)
	}
	le := binary.LittleEndian
	r := SecurityRecord{
		TimeNs:   le.Uint64(b[secOffTs:]),
		NetnsIno: le.Uint64(b[secOffNetns:]),
		CgroupID: le.Uint64(b[secOffCgroup:]),
		Type:     le.Uint32(b[secOffType:]),
		PID:      le.Uint32(b[secOffPid:]),
		TID:      le.Uint32(b[secOffTid:]),
		PPID:     le.Uint32(b[secOffPpid:]),
		UID:      le.Uint32(b[secOffUID:]),
		GID:      le.Uint32(b[secOffGID:]),
		Ret:      int32(le.Uint32(b[secOffRet:])),
		Flags:    le.Uint32(b[secOffFlags:]),
		Mode:     le.Uint32(b[secOffMode:]),
		Syscall:  le.Uint16(b[secOffSyscall:]),
		EvFlags:  le.Uint16(b[secOffEvFlags:]),
		Dirfd:    int32(le.Uint32(b[secOffDirfd:])),
		Comm:     cstring(b[secOffComm : secOffComm+16]),
		PComm:    cstring(b[secOffPcomm : secOffPcomm+16]),
		Path:     cstring(b[secOffPath : secOffPath+SecevPathMax]),
	}
	if r.Type < SecevExec || r.Type > SecevOpen {
		return SecurityRecord{}, fmt.Errorf("security record: unknown type %d", r.Type)
	}
	n := int(min(le.Uint32(b[secOffArgvLen:]), SecevArgvMax))
	argv := b[secOffArgv : secOffArgv+n]
	argv = bytes.TrimRight(argv, "\x00")
	if len(argv) > 0 {
		for a := range bytes.SplitSeq(argv, []byte{0}) {
			r.Argv = append(r.Argv, string(a))
		}
	}
	return r, nil
}

// EncodeSecurityRecord is DecodeSecurityRecord's inverse, for tests and
// benchmarks that feed the engine without the kernel.
func EncodeSecurityRecord(r SecurityRecord) []byte {
	b := make([]byte, secevEventSize)
	le := binary.LittleEndian
	le.PutUint64(b[secOffTs:], r.TimeNs)
	le.PutUint64(b[secOffNetns:], r.NetnsIno)
	le.PutUint64(b[secOffCgroup:], r.CgroupID)
	le.PutUint32(b[secOffType:], r.Type)
	le.PutUint32(b[secOffPid:], r.PID)
	le.PutUint32(b[secOffTid:], r.TID)
	le.PutUint32(b[secOffPpid:], r.PPID)
	le.PutUint32(b[secOffUID:], r.UID)
	le.PutUint32(b[secOffGID:], r.GID)
	le.PutUint32(b[secOffRet:], uint32(r.Ret))
	le.PutUint32(b[secOffFlags:], r.Flags)
	le.PutUint32(b[secOffMode:], r.Mode)
	le.PutUint16(b[secOffSyscall:], r.Syscall)
	le.PutUint16(b[secOffEvFlags:], r.EvFlags)
	le.PutUint32(b[secOffDirfd:], uint32(r.Dirfd))
	copy(b[secOffComm:secOffComm+15], r.Comm)
	copy(b[secOffPcomm:secOffPcomm+15], r.PComm)
	copy(b[secOffPath:secOffPath+SecevPathMax-1], r.Path)
	var argv []byte
	for _, a := range r.Argv {
		argv = append(argv, a...)
		argv = append(argv, 0)
	}
	n := copy(b[secOffArgv:secOffArgv+SecevArgvMax], argv)
	le.PutUint32(b[secOffArgvLen:], uint32(n))
	return b
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// SecurityFilter is what may leave the kernel: the rule engine derives it
// from the loaded rules, so that nothing no rule could match is sent.
type SecurityFilter struct {
	AllExecs  bool     // every exec
	ExecNames []string // else execs of these file names (basename, up to 15 bytes)
	AllOpens  bool     // every open
	Prefixes  []string // else opens of absolute paths under these prefixes
	Relative  bool     // and opens of relative paths
	Exits     bool     // process exits
}

// SecurityStats are the tracepoints' counters, summed over CPUs.
type SecurityStats struct {
	Sent     uint64 // records written to the ring
	Filtered uint64 // events the in-kernel filter kept in the kernel
	Limited  uint64 // records held back by the rate limit (lost events)
	Full     uint64 // records lost to a full ring (lost events)
}

// SecurityEventsConfig configures LoadSecurityEvents.
type SecurityEventsConfig struct {
	// EventsPerSecond limits records for the node, split evenly across
	// CPUs. 0 = DefaultSecurityEventsPerSecond.
	EventsPerSecond uint32
	Filter          SecurityFilter
}

// SecurityEvents is one agent's loaded and attached runtime-security
// tracepoints. They are not pinned: they live as long as the agent, and
// leave nothing behind on the node.
type SecurityEvents struct {
	objs  secevObjects
	links []link.Link
	mu    sync.Mutex // SetFilter
}

// LoadSecurityEvents loads and attaches the exec, exit and open
// tracepoints with an initial filter.
func LoadSecurityEvents(cfg SecurityEventsConfig) (*SecurityEvents, error) {
	spec, err := loadSecev()
	if err != nil {
		return nil, fmt.Errorf("load security events: %w", err)
	}
	rate := uint64(cfg.EventsPerSecond)
	if rate == 0 {
		rate = DefaultSecurityEventsPerSecond
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("load security events: possible cpus: %w", err)
	}
	perCPU := max(1, (rate+uint64(ncpu)-1)/uint64(ncpu))
	for _, name := range []string{secevVarSecevRate, secevVarSecevBurst} {
		if err := spec.Variables[name].Set(perCPU); err != nil {
			return nil, fmt.Errorf("load security events: set %s: %w", name, err)
		}
	}
	s := &SecurityEvents{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load security events: verifier: %+v", ve)
		}
		return nil, fmt.Errorf("load security events: %w", err)
	}
	if err := s.SetFilter(cfg.Filter); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.attach(); err != nil {
		s.Close()
		return nil, fmt.Errorf("load security events: %w", err)
	}
	return s, nil
}

func (s *SecurityEvents) attach() error {
	l, err := link.AttachTracing(link.TracingOptions{Program: s.objs.LoupeSecevExec, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		return fmt.Errorf("attach tp_btf/sched_process_exec: %w", err)
	}
	s.links = append(s.links, l)
	tps := []struct {
		group, name string
		prog        *ebpf.Program
	}{
		{"sched", "sched_process_exit", s.objs.LoupeSecevExit},
		{"syscalls", "sys_enter_open", s.objs.LoupeSecevEnterOpen},
		{"syscalls", "sys_enter_openat", s.objs.LoupeSecevEnterOpenat},
		{"syscalls", "sys_enter_openat2", s.objs.LoupeSecevEnterOpenat2},
		{"syscalls", "sys_exit_open", s.objs.LoupeSecevExitOpen},
		{"syscalls", "sys_exit_openat", s.objs.LoupeSecevExitOpenat},
		{"syscalls", "sys_exit_openat2", s.objs.LoupeSecevExitOpenat2},
	}
	for _, tp := range tps {
		l, err := link.Tracepoint(tp.group, tp.name, tp.prog, nil)
		if err != nil {
			return fmt.Errorf("attach tracepoint %s/%s: %w", tp.group, tp.name, err)
		}
		s.links = append(s.links, l)
	}
	return nil
}

// SetFilter replaces the in-kernel filter. Prefixes are written before
// the mode that uses them, and stale ones removed after, so an event a
// rule of either filter could match passes during the switch.
func (s *SecurityEvents) SetFilter(f SecurityFilter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.objs.SecevPrefixes
	want := map[secevSecevLpmKey]bool{}
	for _, p := range f.Prefixes {
		k := lpmKey(p)
		want[k] = true
		if err := m.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("security filter: prefix %q: %w", p, err)
		}
	}
	names := map[secevSecevName]bool{}
	for _, n := range f.ExecNames {
		var k secevSecevName
		copy(k.Name[:SecevNameMax-1], toInt8(n))
		names[k] = true
		if err := s.objs.SecevExecNames.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("security filter: exec name %q: %w", n, err)
		}
	}
	mode := func(all bool, n int) uint32 {
		switch {
		case all:
			return 1
		case n > 0:
			return 2
		}
		return 0
	}
	cfg := map[uint32]uint32{
		secevCfgExec:     mode(f.AllExecs, len(f.ExecNames)),
		secevCfgOpen:     mode(f.AllOpens, len(f.Prefixes)),
		secevCfgExit:     b2u(f.Exits),
		secevCfgRelative: b2u(f.Relative),
	}
	if cfg[secevCfgOpen] == 0 && f.Relative {
		cfg[secevCfgOpen] = 2
	}
	for k, v := range cfg {
		if err := s.objs.SecevConfig.Put(k, v); err != nil {
			return fmt.Errorf("security filter: config: %w", err)
		}
	}
	var stale []secevSecevLpmKey
	var k secevSecevLpmKey
	it := m.Iterate()
	var v uint8
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		_ = m.Delete(k)
	}
	var staleN []secevSecevName
	var n secevSecevName
	it = s.objs.SecevExecNames.Iterate()
	for it.Next(&n, &v) {
		if !names[n] {
			staleN = append(staleN, n)
		}
	}
	for _, n := range staleN {
		_ = s.objs.SecevExecNames.Delete(n)
	}
	return nil
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func toInt8(s string) []int8 {
	out := make([]int8, len(s))
	for i := range len(s) {
		out[i] = int8(s[i])
	}
	return out
}

// lpmKey is a prefix as the trie holds it: its bytes, up to the trie's
// width (a longer prefix is cut, which only widens the filter).
func lpmKey(p string) secevSecevLpmKey {
	var k secevSecevLpmKey
	if len(p) > SecevLPMBytes {
		p = p[:SecevLPMBytes]
	}
	copy(k.Path[:], toInt8(p))
	k.Prefixlen = uint32(len(p) * 8)
	return k
}

// Read hands every record to sink until ctx is done. raw is valid only
// during the call.
func (s *SecurityEvents) Read(ctx context.Context, sink func(raw []byte)) error {
	return readRing(ctx, s.objs.SecevEvents, "read security events", sink)
}

// Stats sums the tracepoints' counters over CPUs.
func (s *SecurityEvents) Stats() (SecurityStats, error) {
	var out SecurityStats
	for slot, dst := range map[uint32]*uint64{secevStatSent: &out.Sent, secevStatFiltered: &out.Filtered,
		secevStatLimited: &out.Limited, secevStatFull: &out.Full} {
		var per []uint64
		if err := s.objs.SecevStats.Lookup(slot, &per); err != nil {
			return out, fmt.Errorf("security event stats: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	return out, nil
}

// Close detaches the tracepoints and frees the maps.
func (s *SecurityEvents) Close() error {
	var errs []error
	for _, l := range slices.Backward(s.links) {
		errs = append(errs, l.Close())
	}
	s.links = nil
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}
