package datapath

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// attachTracing pins prog as progs/<name> and attaches it as a tp_btf
// program with a link pinned at tracing/<name>. A tracing link cannot be
// moved to a new program, so a restart attaches the new one, renames its
// pin over the old and then detaches the old: no event goes unseen, one
// may be seen twice at the switch. The caller holds the root's lock.
func attachTracing(root, name string, prog *ebpf.Program) error {
	final := filepath.Join(root, progsDir, name)
	tmp := filepath.Join(root, progsDir, "tmp_"+name)
	_ = os.Remove(tmp)
	if err := prog.Pin(tmp); err != nil {
		return fmt.Errorf("pin program %s: %w", name, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("pin program %s: %w", name, err)
	}

	pin := filepath.Join(root, tracingDir, name)
	old, oerr := link.LoadPinnedLink(pin, nil)
	closeOld := func() {
		if oerr == nil {
			old.Close()
		}
	}
	nl, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		closeOld()
		return fmt.Errorf("attach tp_btf/%s: %w", name, err)
	}
	defer nl.Close()
	ltmp := filepath.Join(root, tracingDir, "tmp_"+name)
	_ = os.Remove(ltmp)
	if err := nl.Pin(ltmp); err != nil {
		closeOld()
		return fmt.Errorf("pin link: %w", err)
	}
	if err := os.Rename(ltmp, pin); err != nil {
		_ = nl.Unpin()
		closeOld()
		return fmt.Errorf("pin link: %w", err)
	}
	if oerr == nil {
		// The rename dropped the old pin; closing the last fd detaches it.
		_ = old.Detach()
		old.Close()
	}
	return nil
}

// setTracingAttached detaches the tracepoint pinned as name (on false) or
// attaches its pinned program again (on true), leaving the maps alone: for
// benchmarks that measure the machine with and without it. Attaching when
// it is attached is a no-op.
func setTracingAttached(bpfRoot, name string, on bool) error {
	pin := filepath.Join(bpfRoot, tracingDir, name)
	if !on {
		return removeLink(pin)
	}
	if _, err := os.Stat(pin); err == nil {
		return nil
	}
	return withPinnedProgram(bpfRoot, name, func(prog *ebpf.Program) error {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return fmt.Errorf("attach tp_btf/%s: %w", name, err)
		}
		defer l.Close()
		if err := l.Pin(pin); err != nil {
			return fmt.Errorf("pin link: %w", err)
		}
		return nil
	})
}
