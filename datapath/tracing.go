package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// tracingLoad is a rate-limited tracepoint object that writes into the
// datapath's pinned events ring: the kernel drops' and the TCP events'.
type tracingLoad struct {
	what     string                               // for errors: "load <what>: ..."
	spec     func() (*ebpf.CollectionSpec, error) // the generated loader
	rate     uint64                               // events per second over all CPUs
	rateVars [2]string                            // the rate and burst variables, per CPU
}

// load loads l's object into objs against the maps pinned under root, then
// calls attach (which pins and attaches the programs) with the root's lock
// held; on an error from attach it closes objs. objs is the generated
// objects struct, as ebpf.CollectionSpec.LoadAndAssign takes it.
func (l tracingLoad) load(root string, objs interface{ Close() error }, attach func() error) error {
	wrap := func(err error) error { return fmt.Errorf("load %s: %w", l.what, err) }
	if err := requireBPFFS(root); err != nil {
		return wrap(err)
	}
	if err := os.MkdirAll(filepath.Join(root, tracingDir), 0o700); err != nil {
		return wrap(err)
	}
	unlock, err := lockRoot(root, true)
	if err != nil {
		return wrap(err)
	}
	defer unlock()

	spec, err := l.spec()
	if err != nil {
		return wrap(err)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return wrap(fmt.Errorf("possible cpus: %w", err))
	}
	perCPU := max(1, (l.rate+uint64(ncpu)-1)/uint64(ncpu))
	for _, name := range l.rateVars {
		v, ok := spec.Variables[name]
		if !ok {
			return wrap(fmt.Errorf("variable %s missing from object", name))
		}
		if err := v.Set(perCPU); err != nil {
			return wrap(fmt.Errorf("set %s: %w", name, err))
		}
	}
	if err := matchPinnedRing(spec, root); err != nil {
		return wrap(err)
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: filepath.Join(root, mapsDir)}}
	if err := loadAndAssign(spec, objs, opts, l.what); err != nil {
		return err
	}
	if err := attach(); err != nil {
		return errors.Join(wrap(err), objs.Close())
	}
	return nil
}

// loadAndAssign loads spec into objs; a verifier rejection is returned with
// the verifier's whole log, which is what explains it.
func loadAndAssign(spec *ebpf.CollectionSpec, objs any, opts *ebpf.CollectionOptions, what string) error {
	if err := spec.LoadAndAssign(objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load %s: verifier: %+v", what, ve)
		}
		return fmt.Errorf("load %s: %w", what, err)
	}
	return nil
}

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
