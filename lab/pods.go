package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// podRecord is the lab's own note of a pod, written before anything is made,
// so a crash leaves enough to undo it.
type podRecord struct {
	Namespace   string   `json:"namespace"`
	Name        string   `json:"name"`
	Node        string   `json:"node"`
	NetNS       string   `json:"netns"`
	ContainerID string   `json:"containerID"`
	UID         string   `json:"uid"`
	IP          string   `json:"ip,omitempty"`
	Ports       []string `json:"ports"`
}

func (r podRecord) netnsPath() string { return netnsPath(r.NetNS) }

func (l *Lab) saveRecord(r podRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode pod record: %w", err)
	}
	return writeFileAtomic(l.podFile(r.Namespace, r.Name, ".json"), append(b, '\n'), 0o644)
}

func (l *Lab) loadRecord(namespace, name string) (podRecord, bool, error) {
	var r podRecord
	b, err := os.ReadFile(l.podFile(namespace, name, ".json"))
	if errors.Is(err, os.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("read pod record: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("parse pod record %s/%s: %w", namespace, name, err)
	}
	return r, true, nil
}

// records lists every pod record, sorted.
func (l *Lab) records() ([]podRecord, error) {
	entries, err := os.ReadDir(l.PodsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pods: %w", err)
	}
	var out []podRecord
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(l.PodsDir(), e.Name()))
		if err != nil {
			continue
		}
		var r podRecord
		if json.Unmarshal(b, &r) == nil && r.Name != "" {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// serverMarker identifies a pod's server process by its command line.
func (r podRecord) serverMarker() string { return "--id=" + r.NetNS }

// createPod makes the pod's netns, runs CNI ADD on its node, starts its
// servers, and returns the Pod object to store. On error everything it made
// is undone.
func (l *Lab) createPod(ctx context.Context, pod *corev1.Pod, node Node) (_ *corev1.Pod, err error) {
	rec := podRecord{
		Namespace:   pod.Namespace,
		Name:        pod.Name,
		Node:        node.Name,
		NetNS:       l.PodNetNS(pod.Namespace, pod.Name),
		ContainerID: strings.ReplaceAll(uuid.NewString(), "-", ""),
		UID:         uuid.NewString(),
		Ports:       podPorts(pod),
	}
	if err := os.MkdirAll(l.PodsDir(), 0o755); err != nil {
		return nil, fmt.Errorf("pods dir: %w", err)
	}
	// A record without a stored Pod is what a killed apply leaves: undo it first.
	if old, ok, err := l.loadRecord(pod.Namespace, pod.Name); err != nil {
		return nil, err
	} else if ok {
		if err := l.destroyPod(ctx, old); err != nil {
			return nil, fmt.Errorf("pod %s/%s: clean up an interrupted create: %w", pod.Namespace, pod.Name, err)
		}
	}
	if err := l.saveRecord(rec); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = l.destroyPod(cctx, rec)
		}
	}()
	if _, err := createNetNS(rec.NetNS); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	// A runtime brings up the pod's loopback (CNI's loopback plugin does it
	// for containerd); loupe-cni only makes eth0.
	if err := loUp(rec.netnsPath()); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	ip, err := l.cniAdd(ctx, node, rec.ContainerID, rec.netnsPath(), pod.Namespace, pod.Name)
	if err != nil {
		return nil, err
	}
	rec.IP = ip
	if err := l.saveRecord(rec); err != nil {
		return nil, err
	}
	if err := l.startServer(rec); err != nil {
		return nil, err
	}
	out := pod.DeepCopy()
	out.UID = types.UID(rec.UID)
	out.Spec.NodeName = node.Name
	now := metav1.Now()
	out.CreationTimestamp = now
	out.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    node.IP,
		HostIPs:   []corev1.HostIP{{IP: node.IP}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
	}
	return out, nil
}

// startServer runs `loupe lab serve` in the pod's netns and waits until it
// listens on every port.
func (l *Lab) startServer(rec podRecord) error {
	if pidFromFile(l.podFile(rec.Namespace, rec.Name, ".pid"), rec.serverMarker()) != 0 {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pod %s/%s: server: %w", rec.Namespace, rec.Name, err)
	}
	defer r.Close()
	argv := []string{self, "lab", "serve", rec.serverMarker(),
		"--lab-dir=" + l.Dir,
		"--pod=" + rec.Namespace + "/" + rec.Name,
		"--ports=" + strings.Join(rec.Ports, ","),
		"--ready-fd=3",
	}
	d := detached{netns: rec.netnsPath(), argv: argv, logFile: l.podFile(rec.Namespace, rec.Name, ".log"),
		pidFile: l.podFile(rec.Namespace, rec.Name, ".pid"), extra: []*os.File{w}}
	_, _, err = d.start()
	w.Close()
	if err != nil {
		return fmt.Errorf("pod %s/%s: server: %w", rec.Namespace, rec.Name, err)
	}
	// The server writes "ok" once every port listens, then closes the pipe;
	// if it dies first, the pipe closes empty.
	_ = r.SetReadDeadline(time.Now().Add(15 * time.Second))
	b, _ := io.ReadAll(r)
	if strings.TrimSpace(string(b)) != "ok" {
		return fmt.Errorf("pod %s/%s: server did not start: %s", rec.Namespace, rec.Name, tail(d.logFile, 1000))
	}
	return nil
}

// destroyPod stops the pod's server, runs CNI DEL, and removes its netns,
// object and record. Every step tolerates a missing piece.
func (l *Lab) destroyPod(ctx context.Context, rec podRecord) error {
	var errs []error
	if pid := pidFromFile(l.podFile(rec.Namespace, rec.Name, ".pid"), rec.serverMarker()); pid != 0 {
		stopPIDs([]int{pid}, 3*time.Second)
	}
	if n, ok := l.Node(rec.Node); ok {
		if err := l.cniDel(ctx, n, rec.ContainerID, rec.netnsPath(), rec.Namespace, rec.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteNetNS(rec.NetNS); err != nil {
		errs = append(errs, err)
	}
	if err := l.removeObject(KindPod, rec.Namespace, rec.Name); err != nil {
		errs = append(errs, err)
	}
	for _, ext := range []string{".pid", ".log", ".json"} {
		_ = os.Remove(l.podFile(rec.Namespace, rec.Name, ext))
	}
	return errors.Join(errs...)
}
