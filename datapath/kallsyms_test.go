package datapath

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

const kallsymsSample = `ffffffff81000000 T _stext
ffffffff81001000 t helper_a
ffffffff81001200 T kfree_skb_reason
ffffffff81001400 d some_data
ffffffff81002000 t udp_rcv	[udp_mod]
0000000000000000 T hidden
`

func TestNearestSymbol(t *testing.T) {
	for _, c := range []struct {
		addr uint64
		name string
		off  uint64
	}{
		{0xffffffff81001234, "kfree_skb_reason", 0x34},
		{0xffffffff81001200, "kfree_skb_reason", 0},
		{0xffffffff81001500, "kfree_skb_reason", 0x300}, // data symbols are skipped
		{0xffffffff81002010, "udp_rcv", 0x10},
		{0xffffffff80000000, "", 0},
	} {
		name, off, err := NearestSymbol(strings.NewReader(kallsymsSample), c.addr)
		if err != nil || name != c.name || off != c.off {
			t.Errorf("%#x: %q+%#x, %v; want %q+%#x", c.addr, name, off, err, c.name, c.off)
		}
	}
	if _, _, err := NearestSymbol(strings.NewReader("zz T x\n"), 1); err == nil {
		t.Error("a bad address parsed")
	}
	if _, _, err := NearestSymbol(strings.NewReader("ffff\n"), 1); err == nil {
		t.Error("a short line parsed")
	}
}

// TestKallsymsRunningKernel names a function of the running kernel from its
// own address in /proc/kallsyms.
func TestKallsymsRunningKernel(t *testing.T) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	var addr uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 3 && fs[2] == "kfree_skb_reason" || len(fs) >= 3 && fs[2] == "sk_skb_reason_drop" {
			addr, _ = strconv.ParseUint(fs[0], 16, 64)
			break
		}
	}
	if addr == 0 {
		t.Skip("kallsyms addresses hidden (kptr_restrict) or no kfree_skb_reason")
	}
	got := NewKallsyms("").Function(addr + 1)
	if got != "kfree_skb_reason" && got != "sk_skb_reason_drop" {
		t.Errorf("Function(%#x) = %q", addr+1, got)
	}
}

func FuzzNearestSymbol(f *testing.F) {
	f.Add([]byte(kallsymsSample), uint64(0xffffffff81001234))
	f.Add([]byte("0 T a\n"), uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, addr uint64) {
		name, off, err := NearestSymbol(strings.NewReader(string(b)), addr)
		if err != nil && name != "" {
			t.Fatalf("name %q with error %v", name, err)
		}
		if name == "" && off != 0 {
			t.Fatalf("offset %d without a name", off)
		}
	})
}
