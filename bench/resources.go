package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/datapath"
)

const (
	resPingPongTarget = 0.95
	// Budgets for the cost rows: a core's share per 100k switches/s.
	resKernelBudget = 0.10
	resAgentBudget  = 0.01
	resReadInterval = time.Second
)

// runResources measures what the per-pod resource tracepoints cost: a
// context-switch-heavy load (a pipe ping-pong between two threads) with
// and without them, alternating in each round; then, with BPF run-time
// statistics on, the programs' CPU and the agent's (reading the counters
// once a second, as loupe top and a scrape do), per 100k switches/s.
func runResources(ctx context.Context, cfg *Config) ([]Row, error) {
	d := pick(cfg, 2*time.Second, time.Second, 300*time.Millisecond)
	// The harness runs in the node's namespace, as the agent's node tasks
	// do: the ping-pong's threads are counted by cgroup, as there.
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("resources: own netns: %w", err)
	}
	k, err := datapath.LoadResources(st.Ino)
	if err != nil {
		return nil, err
	}
	defer k.Close()
	var with, without, kernel, agent, budgetK, budgetA []float64
	for r := range cfg.rounds() {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		on, base, err := pingPongSlices(k, d)
		if err != nil {
			return nil, err
		}
		if err := k.Attach(); err != nil {
			return nil, err
		}
		kc, ac, sw, err := resourcesCost(k, d)
		if err != nil {
			return nil, err
		}
		with, without = append(with, on), append(without, base)
		kernel, agent = append(kernel, kc), append(agent, ac)
		budgetK, budgetA = append(budgetK, resKernelBudget), append(budgetA, resAgentBudget)
		cfg.Log.Info("resources", "round", r+1, "round_trips_per_s", fmt.Sprintf("%.0f", on), "without", fmt.Sprintf("%.0f", base),
			"switches_per_s", fmt.Sprintf("%.0f", sw), "kernel_cores_per_100k", fmt.Sprintf("%.4f", kc), "agent_cores_per_100k", fmt.Sprintf("%.5f", ac))
	}
	var rows []Row
	for _, spec := range []struct {
		name, unit string
		v, b       []float64
		baseName   string
		target     float64
		better     Better
		note       string
	}{
		{"resources_pingpong_rate", "round trips/s", with, without, "no tracepoints", resPingPongTarget, Higher,
			fmt.Sprintf("pipe ping-pong between two threads pinned to one CPU, with the per-pod resource tracepoints (sched, block, fault, OOM) attached vs detached, in %d alternating slices of %v a round; a round's figure is each side's best slice (others' load on the shared machine only lowers a slice)", resSlices, d/resSlices)},
		{"resources_kernel_cpu", "cores per 100k switches/s", kernel, budgetK, fmt.Sprintf("budget %.2f", resKernelBudget), 1, Lower,
			"the tracepoints' summed BPF run time (kernel.bpf_stats) over the ping-pong, per 100k context switches a second"},
		{"resources_agent_cpu", "cores per 100k switches/s", agent, budgetA, fmt.Sprintf("budget %.2f", resAgentBudget), 1, Lower,
			"the agent's reads of the per-pod counters (one a second, as loupe top or a scrape), thread CPU time, per 100k context switches a second"},
	} {
		row, err := NewRow(spec.name, spec.unit, spec.v, spec.b, spec.baseName, spec.target, spec.better, spec.note)
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// resSlices is how many slices of each side a ping-pong round has.
const resSlices = 8

// pingPongSlices alternates slices with the programs attached and
// detached, and returns each side's best rate.
func pingPongSlices(k *datapath.Resources, d time.Duration) (with, without float64, err error) {
	for i := range 2 * resSlices {
		on := i%4 == 1 || i%4 == 2 // off, on, on, off, ...: neither side always first
		if on {
			err = k.Attach()
		} else {
			err = k.Detach()
		}
		if err != nil {
			return 0, 0, err
		}
		rate, err := pingPong(d / resSlices)
		if err != nil {
			return 0, 0, err
		}
		if on {
			with = max(with, rate)
		} else {
			without = max(without, rate)
		}
	}
	return with, without, nil
}

// resourcesCost runs the ping-pong again with BPF statistics on and the
// counters read every resReadInterval, and returns the kernel's and the
// reader's cores per 100k switches/s, and the switches/s.
func resourcesCost(k *datapath.Resources, d time.Duration) (kernel, agent, switches float64, err error) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("bpf stats: %w", err)
	}
	defer stats.Close()
	c0, err := k.Cost()
	if err != nil {
		return 0, 0, 0, err
	}
	stop := make(chan struct{})
	readCPU := make(chan time.Duration, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var used time.Duration
		t := time.NewTicker(resReadInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				readCPU <- used
				return
			case <-t.C:
			}
			before := threadCPU()
			_, _ = k.Snapshot()
			used += threadCPU() - before
		}
	}()
	start := time.Now()
	_, perr := pingPong(max(d, 2*resReadInterval))
	wall := time.Since(start)
	close(stop)
	used := <-readCPU
	if perr != nil {
		return 0, 0, 0, perr
	}
	c1, err := k.Cost()
	if err != nil {
		return 0, 0, 0, err
	}
	switches = float64(c1.Switches-c0.Switches) / wall.Seconds()
	if switches <= 0 {
		return 0, 0, 0, fmt.Errorf("resources: no context switches counted")
	}
	per := 1e5 / switches
	kernel = (c1.Runtime - c0.Runtime).Seconds() / wall.Seconds() * per
	agent = used.Seconds() / wall.Seconds() * per
	return kernel, agent, switches, nil
}

// pinLastCPU pins the calling (locked) thread to the last CPU it may use,
// and returns what puts its affinity back.
func pinLastCPU() func() {
	var old, one unix.CPUSet
	if unix.SchedGetaffinity(0, &old) != nil {
		return func() {}
	}
	last := -1
	for i := range 1024 {
		if old.IsSet(i) {
			last = i
		}
	}
	if last < 0 {
		return func() {}
	}
	one.Set(last)
	_ = unix.SchedSetaffinity(0, &one)
	return func() { _ = unix.SchedSetaffinity(0, &old) }
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// pingPong bounces a byte between two threads over two pipes for d, with
// blocking reads (each a sleep, a wake-up and a switch), and returns the
// round trips a second. Both threads are pinned to the last CPU, as
// `perf bench sched pipe` under taskset: every round trip is two context
// switches there, and no migration adds noise.
func pingPong(d time.Duration) (float64, error) {
	var there, back [2]int
	if err := unix.Pipe2(there[:], unix.O_CLOEXEC); err != nil {
		return 0, err
	}
	if err := unix.Pipe2(back[:], unix.O_CLOEXEC); err != nil {
		unix.Close(there[0])
		unix.Close(there[1])
		return 0, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		restore := pinLastCPU()
		defer restore()
		b := []byte{0}
		for {
			if n, err := unix.Read(there[0], b); n != 1 || err != nil {
				return
			}
			if _, err := unix.Write(back[1], b); err != nil {
				return
			}
		}
	}()
	runtime.LockOSThread()
	restore := pinLastCPU()
	b := []byte{0}
	n := 0
	start := time.Now()
	var err error
	for time.Since(start) < d {
		if _, err = unix.Write(there[1], b); err != nil {
			break
		}
		if _, err = unix.Read(back[0], b); err != nil {
			break
		}
		n++
	}
	el := time.Since(start)
	restore()
	runtime.UnlockOSThread()
	unix.Close(there[1]) // the echo thread reads EOF and ends
	<-done
	for _, fd := range []int{there[0], back[0], back[1]} {
		unix.Close(fd)
	}
	if err != nil {
		return 0, fmt.Errorf("ping-pong: %w", err)
	}
	return float64(n) / el.Seconds(), nil
}
