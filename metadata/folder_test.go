package metadata

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeAtomic writes like the lab does: a temp file, then a rename.
func writeAtomic(t *testing.T, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func podYAML(ns, name, ip string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {app: %s}}
spec: {nodeName: n1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: %s, podIPs: [{ip: %s}]}
`, name, ns, name, ip, ip)
}

// waitGen waits for a signal until the snapshot reaches generation gen.
func waitGen(t *testing.T, f *Folder, sig <-chan struct{}, gen string) *Snapshot {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if s := f.Current(); s.Generation == gen {
			return s
		}
		select {
		case <-sig:
		case <-deadline:
			t.Fatalf("generation %q never seen; have %q", gen, f.Current().Generation)
		}
	}
}

func TestFolderWatchesChanges(t *testing.T) {
	dir := t.TempDir()
	writeAtomic(t, dir, "pod.x.a.yaml", podYAML("x", "a", "10.0.0.1"))
	writeAtomic(t, dir, GenerationFile, "1\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// No periodic rescan: changes must arrive through fsnotify.
	f, err := NewFolder(ctx, dir, slog.New(slog.DiscardHandler), WithRescanInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Current()
	if s.Generation != "1" || len(s.Pods) != 1 {
		t.Fatalf("initial snapshot: gen %q, %d pods", s.Generation, len(s.Pods))
	}
	sig := f.Subscribe(ctx)

	// Apply: new pod, a temp file left behind, a broken file, an unknown kind.
	writeAtomic(t, dir, "pod.x.b.yaml", podYAML("x", "b", "10.0.0.2"))
	if err := os.WriteFile(filepath.Join(dir, "pod.x.c.yaml.tmp"), []byte(podYAML("x", "c", "10.0.0.3")), 0o644); err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, dir, "pod.x.broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: [\n")
	writeAtomic(t, dir, "deployment.x.d.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: x}\n")
	writeAtomic(t, dir, GenerationFile, "2\n")
	s = waitGen(t, f, sig, "2")
	if len(s.Pods) != 2 || s.Pods[0].Name != "a" || s.Pods[1].Name != "b" {
		t.Fatalf("after apply: pods %v", names(s))
	}

	// Update in place and delete.
	writeAtomic(t, dir, "pod.x.a.yaml", podYAML("x", "a", "10.0.0.9"))
	if err := os.Remove(filepath.Join(dir, "pod.x.b.yaml")); err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, dir, GenerationFile, "3\n")
	s = waitGen(t, f, sig, "3")
	if len(s.Pods) != 1 || s.Pods[0].Status.PodIP != "10.0.0.9" {
		t.Fatalf("after update+delete: pods %v", names(s))
	}

	// Subscribers are closed with their context.
	sctx, scancel := context.WithCancel(ctx)
	ch := f.Subscribe(sctx)
	scancel()
	for range ch {
	}
}

func TestFolderRescanCatchesWhatWatchMissed(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, err := NewFolder(ctx, dir, nil, WithRescanInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	sig := f.Subscribe(ctx)
	writeAtomic(t, dir, "pod.x.a.yaml", podYAML("x", "a", "10.0.0.1"))
	writeAtomic(t, dir, GenerationFile, "7")
	f.Rescan()
	if s := waitGen(t, f, sig, "7"); len(s.Pods) != 1 {
		t.Fatalf("pods %v", names(s))
	}
}

func TestNewFolderMissingDir(t *testing.T) {
	if _, err := NewFolder(context.Background(), filepath.Join(t.TempDir(), "nope"), nil); err == nil {
		t.Fatal("want an error for a missing dir")
	}
}

func names(s *Snapshot) []string {
	var out []string
	for _, p := range s.Pods {
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}
