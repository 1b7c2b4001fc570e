package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/loupe-project/loupe/cni/cniclient"
)

// cniPlugin is one network configuration whose ADD and DEL are timed.
type cniPlugin struct {
	key    string
	client *cniclient.Client
}

// cniSamples are the per-round percentiles of one plugin, in ms.
type cniSamples struct {
	addP50, addP95, delP50, delP95     []float64
	cAddP50, cAddP95, cDelP50, cDelP95 []float64
}

// runCNI times ADD and DEL through libcni, sequential and 20 at once, for
// loupe-cni (with the agent of node 1, BPF attach included) and for ptp +
// host-local, interleaved round by round.
func runCNI(ctx context.Context, cfg *Config, bl *benchLab) ([]Row, error) {
	n := bl.pods["c1"].Node
	cache := filepath.Join(cfg.OutDir, "cni-cache")
	loupeConf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "lbloupe",
		"plugins": []any{map[string]any{
			"type": "loupe-cni", "mtu": 1500,
			"agentSocket": bl.lab.AgentSocket(n.Name),
			"logFile":     filepath.Join(cfg.OutDir, "loupe-cni.log"),
		}},
	})
	lc, err := cniclient.New(n.NetNSPath(), []string{cfg.BinDir}, loupeConf, cniclient.Options{CacheDir: cache})
	if err != nil {
		return nil, err
	}
	pc, err := cniclient.New(n.NetNSPath(), []string{cfg.PlugDir},
		ptpConflist("lbptplat", fmt.Sprintf("10.98.%d.0/24", bl.lab.Index), filepath.Join(cfg.OutDir, "ptp-ipam")),
		cniclient.Options{CacheDir: cache})
	if err != nil {
		return nil, err
	}
	plugins := []cniPlugin{{"loupe", lc}, {"ptp", pc}}
	seq, conc := pick(cfg, 20, 10, 3), pick(cfg, 20, 20, 5)
	res := map[string]*cniSamples{"loupe": {}, "ptp": {}}
	for r := range cfg.rounds() {
		order := plugins
		if r%2 == 1 { // who goes first alternates
			order = []cniPlugin{plugins[1], plugins[0]}
		}
		add, del, err := cniBatch(ctx, cfg, order, fmt.Sprintf("r%d", r), seq, false)
		if err != nil {
			return nil, err
		}
		cadd, cdel, err := cniBatch(ctx, cfg, order, fmt.Sprintf("c%d", r), conc, true)
		if err != nil {
			return nil, err
		}
		for _, p := range plugins {
			s := res[p.key]
			s.addP50 = append(s.addP50, Percentile(add[p.key], 50, time.Millisecond))
			s.addP95 = append(s.addP95, Percentile(add[p.key], 95, time.Millisecond))
			s.delP50 = append(s.delP50, Percentile(del[p.key], 50, time.Millisecond))
			s.delP95 = append(s.delP95, Percentile(del[p.key], 95, time.Millisecond))
			s.cAddP50 = append(s.cAddP50, Percentile(cadd[p.key], 50, time.Millisecond))
			s.cAddP95 = append(s.cAddP95, Percentile(cadd[p.key], 95, time.Millisecond))
			s.cDelP50 = append(s.cDelP50, Percentile(cdel[p.key], 50, time.Millisecond))
			s.cDelP95 = append(s.cDelP95, Percentile(cdel[p.key], 95, time.Millisecond))
			cfg.Log.Info("cni", "plugin", p.key, "round", r+1, "add_p50_ms", s.addP50[r], "del_p50_ms", s.delP50[r],
				"concurrent_add_p50_ms", s.cAddP50[r])
		}
	}
	l, p := res["loupe"], res["ptp"]
	type spec struct {
		name   string
		v, b   []float64
		target float64
		note   string
	}
	specs := []spec{
		{"cni_add_p50", l.addP50, p.addP50, 1.0, "loupe-cni ADD through libcni (allocate, veth, routes, register, BPF attach) vs ptp + host-local, sequential"},
		{"cni_add_p95", l.addP95, p.addP95, 1.0, ""},
		{"cni_del_p50", l.delP50, p.delP50, 1.0, ""},
		{"cni_del_p95", l.delP95, p.delP95, 1.0, ""},
		{"cni_add_concurrent20_p50", l.cAddP50, p.cAddP50, 1.0, "20 ADDs started at once"},
		{"cni_add_concurrent20_p95", l.cAddP95, p.cAddP95, 1.0, ""},
		{"cni_del_concurrent20_p50", l.cDelP50, p.cDelP50, 1.0, "20 DELs started at once"},
		{"cni_del_concurrent20_p95", l.cDelP95, p.cDelP95, 1.0, ""},
	}
	var rows []Row
	var errs []error
	for _, sp := range specs {
		row, err := NewRow(sp.name, "ms", sp.v, sp.b, "ptp+host-local", sp.target, Lower, sp.note)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rows = append(rows, row)
	}
	return rows, errors.Join(errs...)
}

// cniBatch creates count pod netns per plugin, times ADD on each, then DEL,
// and removes the netns. Sequential batches alternate the plugins call by
// call, so that the machine's drift hits both alike; concurrent ones run
// count calls of one plugin at once, one plugin after the other. Netns
// creation is not timed: a runtime makes the sandbox before it calls CNI.
func cniBatch(ctx context.Context, cfg *Config, plugins []cniPlugin, tag string, count int, concurrent bool) (add, del map[string][]time.Duration, err error) {
	type job struct {
		p     cniPlugin
		at    cniclient.Attachment
		added bool
		add   time.Duration
		del   time.Duration
		err   error
	}
	var jobs []*job // sequential order: plugin calls interleaved
	for i := range count {
		for _, p := range plugins {
			name := fmt.Sprintf("%s-l%s%s%d", cfg.LabName, p.key[:1], tag, i)
			delNetns(name)
			if err := addNetns(ctx, name); err != nil {
				return nil, nil, err
			}
			jobs = append(jobs, &job{p: p, at: cniclient.Attachment{
				ContainerID: fmt.Sprintf("lat%s%s%d%d", p.key, tag, i, time.Now().UnixNano()),
				Netns:       netnsPath(name), IfName: "eth0", PodNamespace: benchNS, PodName: fmt.Sprintf("lat-%s%s-%d", p.key, tag, i),
			}})
		}
	}
	defer func() {
		for _, j := range jobs {
			if j.added {
				_ = j.p.client.Del(context.Background(), j.at)
			}
			delNetns(filepath.Base(j.at.Netns))
		}
	}()
	doAdd := func(j *job) {
		t0 := time.Now()
		_, j.err = j.p.client.Add(ctx, j.at)
		j.add = time.Since(t0)
		j.added = j.err == nil
	}
	doDel := func(j *job) {
		t0 := time.Now()
		j.err = j.p.client.Del(ctx, j.at)
		j.del = time.Since(t0)
		if j.err == nil {
			j.added = false
		}
	}
	phase := func(f func(*job), what string) error {
		if !concurrent {
			for _, j := range jobs {
				f(j)
			}
		} else {
			for _, p := range plugins {
				var wg sync.WaitGroup
				for _, j := range jobs {
					if j.p.key == p.key {
						wg.Go(func() { f(j) })
					}
				}
				wg.Wait()
			}
		}
		var errs []error
		for _, j := range jobs {
			if j.err != nil {
				errs = append(errs, fmt.Errorf("cni %s %s: %w", j.p.key, what, j.err))
			}
		}
		return errors.Join(errs...)
	}
	if err := phase(doAdd, "add"); err != nil {
		return nil, nil, err
	}
	if err := phase(doDel, "del"); err != nil {
		return nil, nil, err
	}
	add, del = map[string][]time.Duration{}, map[string][]time.Duration{}
	for _, j := range jobs {
		add[j.p.key] = append(add[j.p.key], j.add)
		del[j.p.key] = append(del[j.p.key], j.del)
	}
	return add, del, nil
}
