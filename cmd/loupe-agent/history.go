package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/loupe-project/loupe/observer/history"
)

// historyDirName is the history's folder in --state-dir.
const historyDirName = "history"

// historyFlags are the on-disk flow history's settings.
type historyFlags struct {
	retention time.Duration
	maxBytes  string
}

func (h *historyFlags) register(f *pflag.FlagSet) {
	f.DurationVar(&h.retention, "history-retention", history.DefaultRetention, "how long the on-disk flow history (in --state-dir/"+historyDirName+") keeps flows; 0 turns the history off")
	f.StringVar(&h.maxBytes, "history-max-bytes", "1Gi", `size bound of the on-disk flow history, in bytes or with a suffix (500Mi, 2Gi); the oldest flows go first; 0 turns the history off`)
}

// open opens the history in stateDir, or returns nil when it is off.
func (h *historyFlags) open(stateDir string, log *slog.Logger) (*history.Store, error) {
	if h == nil {
		return nil, nil
	}
	q, err := resource.ParseQuantity(h.maxBytes)
	if err != nil || q.Sign() < 0 {
		return nil, fmt.Errorf("--history-max-bytes %q: want a byte count such as 1073741824 or 1Gi", h.maxBytes)
	}
	if h.retention < 0 {
		return nil, fmt.Errorf("--history-retention %v: must not be negative", h.retention)
	}
	if q.IsZero() || h.retention == 0 {
		return nil, nil
	}
	return history.Open(history.Options{
		Dir: filepath.Join(stateDir, historyDirName), Retention: h.retention, MaxBytes: q.Value(), Log: log,
	})
}
