package datapath

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"

	"github.com/loupe-project/loupe/contract"
)

// Kernel enums named at run time: their numbering is not UAPI and differs
// between kernels, so loupe never compiles a table of them in.
const (
	EnumSkbDropReason = "skb_drop_reason"
	DropReasonPrefix  = contract.KernelDropReasonPrefix
)

// KernelEnum returns the values of the running kernel's enum name, as its
// BTF (/sys/kernel/btf/vmlinux) spells them.
func KernelEnum(name string) (map[uint32]string, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("kernel btf: %w", err)
	}
	return enumValues(spec, name)
}

func enumValues(spec *btf.Spec, name string) (map[uint32]string, error) {
	var e *btf.Enum
	if err := spec.TypeByName(name, &e); err != nil {
		return nil, fmt.Errorf("enum %s in kernel btf: %w", name, err)
	}
	out := make(map[uint32]string, len(e.Values))
	for _, v := range e.Values {
		if _, dup := out[uint32(v.Value)]; !dup {
			out[uint32(v.Value)] = v.Name
		}
	}
	return out, nil
}

// KnownReasons is want without the names this kernel's enum lacks (a
// default list that names reasons newer kernels added).
func KnownReasons(names map[uint32]string, prefix string, want []string) []string {
	var out []string
	for _, w := range want {
		if _, err := ReasonValues(names, prefix, []string{w}); err == nil {
			out = append(out, w)
		}
	}
	return out
}

// ReasonValues maps reason names, with or without prefix and in any case
// ("NO_SOCKET", "SKB_DROP_REASON_NO_SOCKET"), to their values in names. An
// unknown name is an error that lists none of the others (there are
// hundreds): the caller can print them.
func ReasonValues(names map[uint32]string, prefix string, want []string) ([]uint32, error) {
	byName := make(map[string]uint32, len(names))
	for v, n := range names {
		byName[n] = v
	}
	var out []uint32
	for _, w := range want {
		w = strings.ToUpper(strings.TrimSpace(w))
		if w == "" {
			continue
		}
		v, ok := byName[w]
		if !ok {
			v, ok = byName[prefix+w]
		}
		if !ok {
			return nil, fmt.Errorf("%q is not a value of this kernel's %s", w, strings.TrimSuffix(strings.ToLower(prefix), "_"))
		}
		out = append(out, v)
	}
	return out, nil
}
