package datapath

import (
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// TestDropReasonsMatchRunningKernel checks the names loupe gives kernel drop
// reasons against /sys/kernel/btf/vmlinux itself, read here with a parser
// of its own (the raw file, not the kernel spec loupe's code uses).
func TestDropReasonsMatchRunningKernel(t *testing.T) {
	f, err := os.Open("/sys/kernel/btf/vmlinux")
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	defer f.Close()
	raw, err := btf.LoadSpecFromReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var e *btf.Enum
	if err := raw.TypeByName(EnumSkbDropReason, &e); err != nil {
		t.Fatal(err)
	}
	names, err := KernelEnum(EnumSkbDropReason)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for _, v := range e.Values {
		if seen[uint32(v.Value)] {
			continue
		}
		seen[uint32(v.Value)] = true
		if got := names[uint32(v.Value)]; got != v.Name {
			t.Errorf("reason %d: loupe names it %q, vmlinux %q", v.Value, got, v.Name)
		}
	}
	if len(names) != len(seen) {
		t.Errorf("loupe has %d reasons, vmlinux %d", len(names), len(seen))
	}
	for _, want := range []string{"SKB_DROP_REASON_NO_SOCKET", "SKB_DROP_REASON_NETFILTER_DROP", "SKB_DROP_REASON_QUEUE_PURGE"} {
		if !slices.Contains(slices.Collect(maps.Values(names)), want) {
			t.Errorf("%s missing", want)
		}
	}
}

func TestReasonValues(t *testing.T) {
	names := map[uint32]string{2: "SKB_DROP_REASON_NO_SOCKET", 7: "SKB_DROP_REASON_QUEUE_PURGE"}
	got, err := ReasonValues(names, DropReasonPrefix, []string{"no_socket", "SKB_DROP_REASON_QUEUE_PURGE", " "})
	if err != nil || !slices.Equal(got, []uint32{2, 7}) {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := ReasonValues(names, DropReasonPrefix, []string{"NOPE"}); err == nil || !strings.Contains(err.Error(), "NOPE") {
		t.Errorf("unknown name: %v", err)
	}
}

// TestKnownReasons drops the names a kernel lacks and keeps the others.
func TestKnownReasons(t *testing.T) {
	names := map[uint32]string{2: "SKB_DROP_REASON_NO_SOCKET", 7: "SKB_DROP_REASON_QUEUE_PURGE"}
	got := KnownReasons(names, DropReasonPrefix, []string{"QUEUE_PURGE", "TC_EGRESS", "no_socket"})
	if strings.Join(got, ",") != "QUEUE_PURGE,no_socket" {
		t.Fatalf("KnownReasons = %q", got)
	}
}
