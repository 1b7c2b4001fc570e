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
	seq, conc := 20, 20
	if cfg.Quick {
		seq = 10
	}
	res := map[string]*cniSamples{"loupe": {}, "ptp": {}}
	for r := range cfg.rounds() {
		for _, p := range plugins {
			s := res[p.key]
			add, del, err := cniBatch(ctx, cfg, p, fmt.Sprintf("r%d", r), seq, false)
			if err != nil {
				return nil, err
			}
			s.addP50 = append(s.addP50, Percentile(add, 50, time.Millisecond))
			s.addP95 = append(s.addP95, Percentile(add, 95, time.Millisecond))
			s.delP50 = append(s.delP50, Percentile(del, 50, time.Millisecond))
			s.delP95 = append(s.delP95, Percentile(del, 95, time.Millisecond))
			add, del, err = cniBatch(ctx, cfg, p, fmt.Sprintf("c%d", r), conc, true)
			if err != nil {
				return nil, err
			}
			s.cAddP50 = append(s.cAddP50, Percentile(add, 50, time.Millisecond))
			s.cAddP95 = append(s.cAddP95, Percentile(add, 95, time.Millisecond))
			s.cDelP50 = append(s.cDelP50, Percentile(del, 50, time.Millisecond))
			s.cDelP95 = append(s.cDelP95, Percentile(del, 95, time.Millisecond))
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

// cniBatch creates count pod netns, times ADD on each (one after the other,
// or all at once), then DEL, and removes the netns. Netns creation is not
// timed: a runtime makes the sandbox before it calls CNI.
func cniBatch(ctx context.Context, cfg *Config, p cniPlugin, tag string, count int, concurrent bool) (add, del []time.Duration, err error) {
	ats := make([]cniclient.Attachment, count)
	for i := range ats {
		name := fmt.Sprintf("%s-l%s%s%d", cfg.LabName, p.key[:1], tag, i)
		delNetns(name)
		if err := addNetns(ctx, name); err != nil {
			return nil, nil, err
		}
		ats[i] = cniclient.Attachment{ContainerID: fmt.Sprintf("lat%s%s%d%d", p.key, tag, i, time.Now().UnixNano()),
			Netns: netnsPath(name), IfName: "eth0", PodNamespace: benchNS, PodName: fmt.Sprintf("lat-%s-%d", tag, i)}
	}
	added := make([]bool, count)
	defer func() {
		for i, at := range ats {
			if added[i] {
				_ = p.client.Del(context.Background(), at)
			}
			delNetns(filepath.Base(at.Netns))
		}
	}()
	time1 := func(f func(cniclient.Attachment) error, at cniclient.Attachment) (time.Duration, error) {
		t0 := time.Now()
		err := f(at)
		return time.Since(t0), err
	}
	doAdd := func(at cniclient.Attachment) error { _, err := p.client.Add(ctx, at); return err }
	doDel := func(at cniclient.Attachment) error { return p.client.Del(ctx, at) }
	phase := func(f func(cniclient.Attachment) error, isAdd bool) ([]time.Duration, error) {
		ds := make([]time.Duration, count)
		errs := make([]error, count)
		var wg sync.WaitGroup
		for i, at := range ats {
			one := func() {
				ds[i], errs[i] = time1(f, at)
				if isAdd && errs[i] == nil {
					added[i] = true
				} else if !isAdd && errs[i] == nil {
					added[i] = false
				}
			}
			if concurrent {
				wg.Go(one)
			} else {
				one()
			}
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("cni %s %s: %w", p.key, map[bool]string{true: "add", false: "del"}[isAdd], err)
		}
		return ds, nil
	}
	if add, err = phase(doAdd, true); err != nil {
		return nil, nil, err
	}
	if del, err = phase(doDel, false); err != nil {
		return nil, nil, err
	}
	return add, del, nil
}
