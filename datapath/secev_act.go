package datapath

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// Rule actions of the security tracepoints (bpf/secev_act.h).

// SecevFlagKilled marks a record whose task a kill rule sent SIGKILL
// (SECEV_F_KILLED).
const SecevFlagKilled = 0x4000

// MaxKillRules is how many kill rules the kernel tells apart (one bit each).
const MaxKillRules = 64

// KillPath is one path a kill rule protects: the path itself, or (Prefix)
// every path that starts with it.
type KillPath struct {
	Path   string
	Prefix bool
	Rules  uint64 // the kill rules (bits) that name it
}

// KillSet is the kill rules as the kernel decides them: what they match,
// by rule bit. Which pods each rule selects is set apart (SetKillNetns),
// as pods come and go.
type KillSet struct {
	Paths []KillPath
	Execs map[string]uint64 // executable name (up to 15 bytes) -> rules
	// Rules that kill only opens for reading, for writing.
	NeedRead, NeedWrite uint64
}

// Validate refuses what the kernel cannot decide exactly.
func (k KillSet) Validate() error {
	for _, p := range k.Paths {
		switch {
		case !strings.HasPrefix(p.Path, "/"):
			return fmt.Errorf("kill path %q: not absolute", p.Path)
		case p.Prefix && len(p.Path) > SecevLPMBytes:
			return fmt.Errorf("kill path prefix %q: longer than the kernel compares (%d bytes)", p.Path, SecevLPMBytes)
		case !p.Prefix && len(p.Path) >= SecevLPMBytes:
			return fmt.Errorf("kill path %q: longer than the kernel compares exactly (%d bytes)", p.Path, SecevLPMBytes-1)
		}
	}
	for n := range k.Execs {
		if n == "" || len(n) > SecevNameMax-1 {
			return fmt.Errorf("kill executable name %q: the kernel sees names of 1 to %d bytes", n, SecevNameMax-1)
		}
	}
	return nil
}

// killEntries is the trie's content: each entry with the rules of every
// shorter entry that is its prefix (the trie returns only the longest).
func killEntries(paths []KillPath) map[secevSecevLpmKey]uint64 {
	type ent struct {
		bytes string // with the NUL for an exact path
		rules uint64
	}
	var ents []ent
	for _, p := range paths {
		b := p.Path
		if !p.Prefix {
			b += "\x00"
		}
		ents = append(ents, ent{b, p.Rules})
	}
	out := map[secevSecevLpmKey]uint64{}
	for _, e := range ents {
		r := uint64(0)
		for _, o := range ents {
			if strings.HasPrefix(e.bytes, o.bytes) {
				r |= o.rules
			}
		}
		var k secevSecevLpmKey
		copy(k.Path[:], toInt8(e.bytes))
		k.Prefixlen = uint32(len(e.bytes) * 8)
		out[k] |= r
	}
	return out
}

// SetKills replaces the kill rules' kernel data. Entries are written
// before stale ones go, so a rule in both sets never stops acting.
func (s *SecurityEvents) SetKills(k KillSet) error {
	if err := k.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	paths := killEntries(k.Paths)
	for key, v := range paths {
		if err := s.objs.SecevKillPaths.Put(key, v); err != nil {
			return fmt.Errorf("kill paths: %w", err)
		}
	}
	names := map[secevSecevName]uint64{}
	for n, v := range k.Execs {
		var key secevSecevName
		copy(key.Name[:SecevNameMax-1], toInt8(n))
		names[key] = v
		if err := s.objs.SecevKillExecs.Put(key, v); err != nil {
			return fmt.Errorf("kill executables: %w", err)
		}
	}
	for slot, v := range []uint64{k.NeedRead, k.NeedWrite} {
		if err := s.objs.SecevKillCfg.Put(uint32(slot), v); err != nil {
			return fmt.Errorf("kill config: %w", err)
		}
	}
	deleteStale(s.objs.SecevKillPaths, paths)
	deleteStale(s.objs.SecevKillExecs, names)
	return nil
}

// SetKillNetns replaces which pods (by netns inode) each kill rule selects.
func (s *SecurityEvents) SetKillNetns(sel map[uint64]uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ino, v := range sel {
		if v == 0 {
			continue
		}
		if err := s.objs.SecevKillNetns.Put(ino, v); err != nil {
			return fmt.Errorf("kill pods: %w", err)
		}
	}
	keep := map[uint64]uint64{}
	for ino, v := range sel {
		if v != 0 {
			keep[ino] = v
		}
	}
	deleteStale(s.objs.SecevKillNetns, keep)
	return nil
}

func deleteStale[K comparable, V any](m *ebpf.Map, keep map[K]V) {
	var stale []K
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := keep[k]; !ok {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		_ = m.Delete(k)
	}
}

// Kills is how many tasks the kill rules sent SIGKILL, summed over CPUs.
func (s *SecurityEvents) Kills() (uint64, error) {
	var per []uint64
	if err := s.objs.SecevKillStats.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("kill stats: %w", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// ProbeBPFLSM loads and attaches a BPF LSM program that allows everything
// (lsm/file_open returning 0) and removes it at once. nil means the kernel
// runs BPF LSM programs, which `action: deny` needs; the error says what
// the kernel refused. Listing "bpf" in the LSMs is not enough: some
// kernels still refuse the program at load.
func ProbeBPFLSM() error {
	lsms := "unknown"
	if b, err := os.ReadFile("/sys/kernel/security/lsm"); err == nil {
		lsms = strings.TrimSpace(string(b))
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "loupe_lsm_probe",
		Type:         ebpf.LSM,
		AttachType:   ebpf.AttachLSMMac,
		AttachTo:     "file_open",
		License:      "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("the kernel refused a BPF LSM program at load (needs CONFIG_BPF_LSM and \"bpf\" in the active LSMs, which are: %s): %w", lsms, err)
	}
	defer prog.Close()
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("the kernel refused to attach a BPF LSM program (active LSMs: %s): %w", lsms, err)
	}
	return errors.Join(l.Close())
}
