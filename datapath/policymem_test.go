package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/contract"
)

// memcgV1 is the directory of this process's cgroup-v1 memory cgroup, or
// "" when there is none (cgroup v2 cannot move one thread).
func memcgV1(tb testing.TB) string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && parts[1] == "memory" {
			dir := filepath.Join("/sys/fs/cgroup/memory", parts[2])
			if _, err := os.Stat(filepath.Join(dir, "memory.usage_in_bytes")); err == nil {
				return dir
			}
		}
	}
	return ""
}

func readInt(tb testing.TB, path string) int64 {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// The policy map as the programs declare it, created from a memory cgroup
// of its own (the kernel charges a map's allocations to the cgroup it was
// created in) and filled to its capacity with random keys of every prefix
// length: the charge stays within PolicyEntryBytes an entry, so the memory
// the agent reports is an upper bound, and the full map within 128 MiB;
// one entry more is refused by the kernel.
func TestPrivilegedPolicyMapMemory(t *testing.T) {
	requireRoot(t)
	parent := memcgV1(t)
	if parent == "" {
		t.Skip("needs a cgroup-v1 memory controller to charge one thread's map to")
	}
	spec, err := loadLoupe()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps[MapPolicy].Copy()
	ms.Pinning = ebpf.PinNone
	capacity, err := PolicyMapCapacity()
	if err != nil || capacity != int(ms.MaxEntries) {
		t.Fatalf("capacity %d %v, spec %d", capacity, err, ms.MaxEntries)
	}

	cg := filepath.Join(parent, fmt.Sprintf("loupe-policymem-%08x", rand.Uint32()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("cannot create a memory cgroup: %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	var m *ebpf.Map
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid := fmt.Sprint(unix.Gettid())
		if err := os.WriteFile(filepath.Join(cg, "tasks"), []byte(tid), 0); err != nil {
			t.Skipf("cannot move a thread into the memory cgroup: %v", err)
		}
		defer func() {
			if err := os.WriteFile(filepath.Join(parent, "tasks"), []byte(tid), 0); err != nil {
				t.Errorf("move the thread back: %v", err)
			}
		}()
		if m, err = ebpf.NewMap(ms); err != nil {
			t.Fatal(err)
		}
	}()
	defer m.Close()
	empty := readInt(t, filepath.Join(cg, "memory.usage_in_bytes"))

	rng := rand.New(rand.NewPCG(1, 2))
	n := 0
	for n < capacity {
		k := PolicyKey{EndpointID: 1 + rng.Uint32N(500), PeerIdentity: 256 + rng.Uint32N(1<<24), Direction: contract.DirectionIngress + uint8(rng.IntN(2))}
		switch rng.IntN(3) {
		case 0:
		case 1:
			k.Proto = protoTCP
		default:
			k.Proto, k.PortWildBits = protoTCP, uint8(rng.IntN(4))
			k.Port = uint16(1+rng.IntN(65534)) &^ (uint16(1)<<k.PortWildBits - 1)
			if k.Port == 0 {
				k.Port = 1 << k.PortWildBits
			}
		}
		rk, err := k.raw()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Update(&rk, loupePolicyValue{RuleId: 1, Verdict: policyAllow}, ebpf.UpdateNoExist); err != nil {
			if errors.Is(err, ebpf.ErrKeyExist) {
				continue
			}
			t.Fatalf("entry %d of %d: %v", n+1, capacity, err)
		}
		n++
	}
	used := readInt(t, filepath.Join(cg, "memory.usage_in_bytes")) - empty
	per := float64(used) / float64(n)
	t.Logf("%d entries: %.1f MiB charged, %.0f bytes an entry (bound %d)", n, float64(used)/(1<<20), per, PolicyEntryBytes)
	// The memory cgroup charges in batches of up to 64 pages per CPU.
	slack := int64(runtime.NumCPU()) * 64 * int64(os.Getpagesize())
	if used > int64(n)*PolicyEntryBytes+slack {
		t.Errorf("%d entries cost %d bytes, more than %d an entry", n, used, PolicyEntryBytes)
	}
	if used > 128<<20 {
		t.Errorf("a full policy map costs %.1f MiB, over 128 MiB", float64(used)/(1<<20))
	}
	// The kernel refuses the entry past the capacity.
	rk, _ := PolicyKey{EndpointID: 501, Direction: contract.DirectionIngress}.raw()
	if err := m.Put(&rk, loupePolicyValue{RuleId: 1, Verdict: policyAllow}); !errors.Is(err, unix.E2BIG) && !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("entry past the capacity: %v, want ENOSPC", err)
	}
}
