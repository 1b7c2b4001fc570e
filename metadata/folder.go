package metadata

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// GenerationFile is the marker the writer of a manifests folder rewrites
// (atomically) after every apply or delete.
const GenerationFile = "GENERATION"

const (
	defaultRescanInterval = 5 * time.Second
	// debounce coalesces the burst of events of one apply (object files,
	// then GENERATION) into one rescan.
	debounce = 20 * time.Millisecond
)

// FolderOption changes how a Folder works.
type FolderOption func(*Folder)

// WithRescanInterval sets the period of the safety-net rescan that catches
// changes fsnotify missed (0 or less disables it).
func WithRescanInterval(d time.Duration) FolderOption {
	return func(f *Folder) { f.rescanEvery = d }
}

// Folder is a Source backed by a directory of Kubernetes manifests, one
// object per file, watched with fsnotify plus a periodic rescan.
type Folder struct {
	dir         string
	log         *slog.Logger
	rescanEvery time.Duration

	cur atomic.Pointer[Snapshot]

	// files caches parsed files by name; only the scan goroutine uses it.
	files map[string]*parsedFile
	// lastKey identifies the published state (generation + file identities).
	lastKey string

	mu   sync.Mutex
	subs map[chan struct{}]struct{}

	kick chan struct{}
}

type parsedFile struct {
	id   fileID
	objs Snapshot
}

// fileID changes whenever a file's content may have changed; writers rename
// a new file into place, so the inode changes even when size and mtime match.
type fileID struct {
	ino   uint64
	size  int64
	mtime int64
}

// NewFolder reads dir once, then keeps watching it until ctx is done.
func NewFolder(ctx context.Context, dir string, log *slog.Logger, opts ...FolderOption) (*Folder, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Folder{
		dir:         dir,
		log:         log.With("component", "metadata", "dir", dir),
		rescanEvery: defaultRescanInterval,
		files:       map[string]*parsedFile{},
		subs:        map[chan struct{}]struct{}{},
		kick:        make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(f)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("manifests dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("manifests dir: %s is not a directory", dir)
	}
	f.cur.Store(&Snapshot{})
	// Watch before the first scan so no change falls between the two.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		f.log.Warn("fsnotify unavailable, relying on rescans", "err", err)
		w = nil
	} else if err := w.Add(dir); err != nil {
		f.log.Warn("watch manifests dir, relying on rescans", "err", err)
		w.Close()
		w = nil
	}
	if err := f.scan(); err != nil {
		if w != nil {
			w.Close()
		}
		return nil, err
	}
	go f.run(ctx, w)
	return f, nil
}

// Current implements Source.
func (f *Folder) Current() *Snapshot { return f.cur.Load() }

// Subscribe implements Source.
func (f *Folder) Subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		delete(f.subs, ch)
		close(ch)
		f.mu.Unlock()
	}()
	return ch
}

// Rescan asks for a rescan now (e.g. on SIGHUP); it does not wait for it.
func (f *Folder) Rescan() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *Folder) notify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending: coalesce
		}
	}
}

func (f *Folder) run(ctx context.Context, w *fsnotify.Watcher) {
	var events <-chan fsnotify.Event
	var werrs <-chan error
	if w != nil {
		defer w.Close()
		events, werrs = w.Events, w.Errors
	}
	var tick <-chan time.Time
	if f.rescanEvery > 0 {
		t := time.NewTicker(f.rescanEvery)
		defer t.Stop()
		tick = t.C
	}
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ignored(filepath.Base(ev.Name)) && filepath.Base(ev.Name) != GenerationFile {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(debounce)
				fire = timer.C
			}
		case err, ok := <-werrs:
			if !ok {
				werrs = nil
				continue
			}
			// Overflow and the like: a full rescan recovers from any of them.
			f.log.Warn("watch error, rescanning", "err", err)
			f.rescanLogged()
		case <-fire:
			timer, fire = nil, nil
			f.rescanLogged()
		case <-tick:
			f.rescanLogged()
		case <-f.kick:
			f.rescanLogged()
		}
	}
}

func (f *Folder) rescanLogged() {
	if err := f.scan(); err != nil {
		f.log.Error("rescan manifests", "err", err)
	}
}

// ignored reports whether a directory entry is not a manifest: temp files
// of atomic writers, editor leftovers, hidden files, other extensions.
func ignored(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") {
		return true
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return false
	}
	return true
}

// scan reads the folder and publishes a new snapshot if anything changed.
// GENERATION is read first: objects read afterwards are at least that new.
func (f *Folder) scan() error {
	gen, err := os.ReadFile(filepath.Join(f.dir, GenerationFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read generation: %w", err)
	}
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return fmt.Errorf("read manifests dir: %w", err)
	}
	var key strings.Builder
	key.WriteString(strings.TrimSpace(string(gen)))
	seen := make(map[string]bool, len(entries))
	var names []string
	for _, e := range entries {
		name := e.Name()
		if ignored(name) || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since ReadDir
		}
		if !info.Mode().IsRegular() {
			continue
		}
		id := fileID{size: info.Size(), mtime: info.ModTime().UnixNano()}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			id.ino = st.Ino
		}
		pf := f.files[name]
		if pf == nil || pf.id != id {
			pf = f.parseFile(name, id)
			if pf == nil {
				continue
			}
			f.files[name] = pf
		}
		seen[name] = true
		names = append(names, name)
		fmt.Fprintf(&key, "|%s:%d:%d:%d", name, id.ino, id.size, id.mtime)
	}
	for name := range f.files {
		if !seen[name] {
			delete(f.files, name)
		}
	}
	if key.String() == f.lastKey {
		return nil
	}
	f.lastKey = key.String()
	slices.Sort(names)
	snap := &Snapshot{Generation: strings.TrimSpace(string(gen))}
	for _, n := range names {
		o := &f.files[n].objs
		snap.Namespaces = append(snap.Namespaces, o.Namespaces...)
		snap.Pods = append(snap.Pods, o.Pods...)
		snap.Services = append(snap.Services, o.Services...)
		snap.EndpointSlices = append(snap.EndpointSlices, o.EndpointSlices...)
		snap.NetworkPolicies = append(snap.NetworkPolicies, o.NetworkPolicies...)
		snap.Nodes = append(snap.Nodes, o.Nodes...)
	}
	snap.Namespaces = dedupe(snap.Namespaces)
	snap.Pods = dedupe(snap.Pods)
	snap.Services = dedupe(snap.Services)
	snap.EndpointSlices = dedupe(snap.EndpointSlices)
	snap.NetworkPolicies = dedupe(snap.NetworkPolicies)
	snap.Nodes = dedupe(snap.Nodes)
	f.cur.Store(snap)
	f.log.Debug("manifests changed", "generation", snap.Generation, "files", len(names))
	f.notify()
	return nil
}

func (f *Folder) parseFile(name string, id fileID) *parsedFile {
	data, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			f.log.Warn("read manifest", "file", name, "err", err)
		}
		return nil
	}
	pf := &parsedFile{id: id}
	skipped, err := ParseManifests(data, &pf.objs)
	for _, k := range skipped {
		f.log.Info("skipping object of unused kind", "file", name, "kind", k)
	}
	if err != nil {
		// Keep what parsed; remember the file so it is not reparsed (and
		// logged) on every scan until it changes.
		f.log.Warn("parse manifest", "file", name, "err", err)
	}
	return pf
}

type nsNamed interface {
	GetNamespace() string
	GetName() string
}

// dedupe sorts by namespace/name and keeps the last definition of an object
// defined twice (files are merged in name order).
func dedupe[T nsNamed](objs []T) []T {
	slices.SortStableFunc(objs, func(a, b T) int {
		if c := strings.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
			return c
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
	out := objs[:0]
	for i, o := range objs {
		if i+1 < len(objs) && objs[i+1].GetNamespace() == o.GetNamespace() && objs[i+1].GetName() == o.GetName() {
			continue
		}
		out = append(out, o)
	}
	return out
}
