package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
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

	SecevRename = 4 // SECEV_RENAME
	SecevUnlink = 5 // SECEV_UNLINK
	SecevChmod  = 6 // SECEV_CHMOD

	SecevSysRename    = 3  // SECEV_SYS_RENAME
	SecevSysRenameat  = 4  // SECEV_SYS_RENAMEAT
	SecevSysRenameat2 = 5  // SECEV_SYS_RENAMEAT2
	SecevSysUnlink    = 6  // SECEV_SYS_UNLINK
	SecevSysUnlinkat  = 7  // SECEV_SYS_UNLINKAT
	SecevSysRmdir     = 8  // SECEV_SYS_RMDIR
	SecevSysChmod     = 9  // SECEV_SYS_CHMOD
	SecevSysFchmod    = 10 // SECEV_SYS_FCHMOD
	SecevSysFchmodat  = 11 // SECEV_SYS_FCHMODAT
	SecevSysFchmodat2 = 12 // SECEV_SYS_FCHMODAT2

	SecevFlagRelative  = 0x1 // SECEV_F_RELATIVE
	SecevFlagPathTrunc = 0x2 // SECEV_F_PATH_TRUNC
	SecevFlagArgvTrunc = 0x4 // SECEV_F_ARGV_TRUNC
	SecevFlagResolved  = 0x8 // SECEV_F_RESOLVED

	SecevFlagPath2Relative = 0x10 // SECEV_F_PATH2_RELATIVE
	SecevFlagPath2Trunc    = 0x20 // SECEV_F_PATH2_TRUNC
	SecevFlagPath2Resolved = 0x40 // SECEV_F_PATH2_RESOLVED

	secevCfgExec     = 0 // SECEV_CFG_EXEC
	secevCfgOpen     = 1 // SECEV_CFG_OPEN
	secevCfgExit     = 2 // SECEV_CFG_EXIT
	secevCfgRelative = 3 // SECEV_CFG_RELATIVE
	secevCfgRename   = 4 // SECEV_CFG_RENAME
	secevCfgUnlink   = 5 // SECEV_CFG_UNLINK
	secevCfgChmod    = 6 // SECEV_CFG_CHMOD
	secevCfgMax      = 7 // SECEV_CFG_MAX

	secevKRename = 0x1 // SECEV_K_RENAME
	secevKUnlink = 0x2 // SECEV_K_UNLINK
	secevKChmod  = 0x4 // SECEV_K_CHMOD

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
	secOffPath2    = secOffArgv + SecevArgvMax // appended for file operations
	secOffDirfd2   = secOffPath2 + SecevPathMax
	secOffPad2     = secOffDirfd2 + 4
	secevEventSize = secOffPad2 + 4
)

// SecurityRecord is one decoded struct secev_event.
type SecurityRecord struct {
	TimeNs   uint64 // CLOCK_BOOTTIME
	NetnsIno uint64
	CgroupID uint64
	Type     uint32 // SecevExec, SecevExit, SecevOpen, SecevRename, SecevUnlink or SecevChmod
	PID, TID uint32
	PPID     uint32
	UID, GID uint32
	Ret      int32 // open: fd or -errno; other file ops: 0 or -errno; exit: exit code
	Flags    uint32
	Mode     uint32 // open: mode; chmod: the new mode
	Syscall  uint16
	EvFlags  uint16
	Dirfd    int32 // fchmod: the fd
	Comm     string
	PComm    string
	Path     string // rename: the old path
	Argv     []string
	Path2    string // rename: the new path
	Dirfd2   int32
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
		Path2:    cstring(b[secOffPath2 : secOffPath2+SecevPathMax]),
		Dirfd2:   int32(le.Uint32(b[secOffDirfd2:])),
	}
	if r.Type < SecevExec || r.Type > SecevChmod {
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
	copy(b[secOffPath2:secOffPath2+SecevPathMax-1], r.Path2)
	le.PutUint32(b[secOffDirfd2:], uint32(r.Dirfd2))
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
	Relative  bool     // and opens (and file operations) of paths that could not be made absolute
	Exits     bool     // process exits
	// Renames (from or to), unlinks and rmdirs, chmods: all, or those of
	// paths under these prefixes.
	Renames, Unlinks, Chmods FileOpFilter
}

// FileOpFilter is the in-kernel filter of one kind of file operation.
type FileOpFilter struct {
	All      bool
	Prefixes []string
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

// LoadSecurityEvents loads and attaches the exec, exit, open, rename,
// unlink and chmod tracepoints with an initial filter.
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
	if err := loadAndAssign(spec, &s.objs, nil, "security events"); err != nil {
		return nil, err
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

type secevTracepoint struct {
	group, name string
	prog        *ebpf.Program
	optional    bool // missing on some kernels (fchmodat2: 6.6)
}

// fileOpTracepoints are the renames', unlinks' and chmods' tracepoints:
// one enter program per syscall, one exit program for all.
func (s *SecurityEvents) fileOpTracepoints() []secevTracepoint {
	o := &s.objs
	// Exits first (and, links closing in reverse, detached last): an
	// enter seen always has its exit, so no pending entry is left over
	// for another syscall's exit to report.
	var exits, enters []secevTracepoint
	for _, e := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"rename", o.LoupeSecevEnterRename}, {"renameat", o.LoupeSecevEnterRenameat}, {"renameat2", o.LoupeSecevEnterRenameat2},
		{"unlink", o.LoupeSecevEnterUnlink}, {"unlinkat", o.LoupeSecevEnterUnlinkat}, {"rmdir", o.LoupeSecevEnterRmdir},
		{"chmod", o.LoupeSecevEnterChmod}, {"fchmod", o.LoupeSecevEnterFchmod}, {"fchmodat", o.LoupeSecevEnterFchmodat},
		{"fchmodat2", o.LoupeSecevEnterFchmodat2},
	} {
		opt := e.name == "fchmodat2"
		enters = append(enters, secevTracepoint{"syscalls", "sys_enter_" + e.name, e.prog, opt})
		exits = append(exits, secevTracepoint{"syscalls", "sys_exit_" + e.name, o.LoupeSecevExitFileop, opt})
	}
	return append(exits, enters...)
}

func (s *SecurityEvents) attachFileOps() error {
	for _, tp := range s.fileOpTracepoints() {
		l, err := link.Tracepoint(tp.group, tp.name, tp.prog, nil)
		if err != nil && tp.optional && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("attach tracepoint %s/%s: %w", tp.group, tp.name, err)
		}
		s.links = append(s.links, l)
	}
	return nil
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
	return s.attachFileOps()
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
	fileops, err := s.putFileOpPrefixes(f)
	if err != nil {
		return err
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
		secevCfgRename:   mode(f.Renames.All, len(f.Renames.Prefixes)),
		secevCfgUnlink:   mode(f.Unlinks.All, len(f.Unlinks.Prefixes)),
		secevCfgChmod:    mode(f.Chmods.All, len(f.Chmods.Prefixes)),
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
	s.dropStale(s.objs.SecevFileopPrefixes, fileops)
	return nil
}

// fileOpPrefixes is the file-operation trie's content for f: each prefix
// with the kinds of every prefix of it in the set (the trie answers with
// the longest match only, which must carry the shorter ones' kinds).
func fileOpPrefixes(f SecurityFilter) map[secevSecevLpmKey]uint8 {
	kinds := map[string]uint8{}
	for _, k := range []struct {
		f   FileOpFilter
		bit uint8
	}{{f.Renames, secevKRename}, {f.Unlinks, secevKUnlink}, {f.Chmods, secevKChmod}} {
		if k.f.All {
			continue // the kind's config passes everything
		}
		for _, p := range k.f.Prefixes {
			if len(p) > SecevLPMBytes {
				p = p[:SecevLPMBytes]
			}
			kinds[p] |= k.bit
		}
	}
	out := map[secevSecevLpmKey]uint8{}
	for p, bits := range kinds {
		for q, qb := range kinds {
			if strings.HasPrefix(p, q) {
				bits |= qb
			}
		}
		out[lpmKey(p)] = bits
	}
	return out
}

// putFileOpPrefixes writes the file-operation trie's entries (before the
// modes that use them) and returns them.
func (s *SecurityEvents) putFileOpPrefixes(f SecurityFilter) (map[secevSecevLpmKey]uint8, error) {
	want := fileOpPrefixes(f)
	for k, v := range want {
		if err := s.objs.SecevFileopPrefixes.Put(k, v); err != nil {
			return nil, fmt.Errorf("security filter: file operation prefix: %w", err)
		}
	}
	return want, nil
}

// dropStale removes the trie entries not in want (after the modes
// changed).
func (s *SecurityEvents) dropStale(m *ebpf.Map, want map[secevSecevLpmKey]uint8) {
	var stale []secevSecevLpmKey
	var k secevSecevLpmKey
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		_ = m.Delete(k)
	}
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
