package bench

import (
	"errors"
	"fmt"

	"github.com/loupe-project/loupe/datapath"
)

// setConnStats reloads the datapath of the pods' nodes with per-connection
// bytes and handshake timing on or off (datapath.Config.NoConnStats, the
// agent's --connection-stats). Load moves every pinned link to the new
// programs and keeps the maps, so the running agents keep reading the
// same ring; only the measured switch differs between the variants.
func setConnStats(pods []labPod, on bool) error {
	done := map[string]bool{}
	var errs []error
	for _, p := range pods {
		if done[p.BPFRoot] {
			continue
		}
		done[p.BPFRoot] = true
		d, err := datapath.Load(datapath.Config{BPFRoot: p.BPFRoot, NoConnStats: !on})
		if err != nil {
			errs = append(errs, fmt.Errorf("connection stats %v on %s: %w", on, p.Node.Name, err))
			continue
		}
		d.Close()
	}
	return errors.Join(errs...)
}
