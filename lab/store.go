package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const generationFile = "GENERATION"

// objectFile is the manifests-folder file of an object (see docs/contracts.md,
// "Manifests folder").
func objectFile(kind, namespace, name string) string {
	if namespace == "" {
		namespace = "_"
	}
	return strings.ToLower(kind) + "." + namespace + "." + name + ".yaml"
}

// writeObject stores obj in the manifests folder, atomically.
func (l *Lab) writeObject(kind, namespace, name string, obj any) error {
	setTypeMeta(kind, obj)
	b, err := yaml.Marshal(obj)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", kind, name, err)
	}
	return writeFileAtomic(filepath.Join(l.ManifestsDir(), objectFile(kind, namespace, name)), b, 0o644)
}

func setTypeMeta(kind string, obj any) {
	tm := metav1.TypeMeta{Kind: kind, APIVersion: apiVersions[kind]}
	switch o := obj.(type) {
	case *corev1.Namespace:
		o.TypeMeta = tm
	case *corev1.Pod:
		o.TypeMeta = tm
	case *corev1.Service:
		o.TypeMeta = tm
	case *networkingv1.NetworkPolicy:
		o.TypeMeta = tm
	case *corev1.Node:
		o.TypeMeta = metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}
	}
}

// removeObject deletes an object's file; a missing file is fine.
func (l *Lab) removeObject(kind, namespace, name string) error {
	err := os.Remove(filepath.Join(l.ManifestsDir(), objectFile(kind, namespace, name)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s %s/%s: %w", kind, namespace, name, err)
	}
	return nil
}

// storedObjects reads every Namespace, Pod, Service and NetworkPolicy in the
// manifests folder, keyed by Object.Key.
func (l *Lab) storedObjects() (map[string]Object, error) {
	entries, err := os.ReadDir(l.ManifestsDir())
	if errors.Is(err, os.ErrNotExist) {
		return map[string]Object{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	out := map[string]Object{}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".yaml") || strings.HasPrefix(n, "node.") ||
			strings.HasPrefix(n, strings.ToLower(KindEndpointSlice)+".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(l.ManifestsDir(), n))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read manifests: %w", err)
		}
		objs, err := ParseManifests(bytes.NewReader(b), n)
		if err != nil {
			return nil, fmt.Errorf("read manifests: %w", err)
		}
		for _, o := range objs {
			out[o.Key()] = o
		}
	}
	return out, nil
}

// storedPods returns the stored pods sorted by namespace/name.
func storedPods(objs map[string]Object) []*corev1.Pod {
	var pods []*corev1.Pod
	for _, o := range objs {
		if p := o.Pod(); p != nil {
			pods = append(pods, p)
		}
	}
	sort.Slice(pods, func(i, j int) bool {
		if pods[i].Namespace != pods[j].Namespace {
			return pods[i].Namespace < pods[j].Namespace
		}
		return pods[i].Name < pods[j].Name
	})
	return pods
}

// generation reads GENERATION (0 if absent).
func (l *Lab) generation() (int64, error) {
	b, err := os.ReadFile(filepath.Join(l.ManifestsDir(), generationFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read generation: %w", err)
	}
	g, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse generation: %w", err)
	}
	return g, nil
}

// bumpGeneration tells the agents that the folder changed, and returns the
// generation they must reach.
func (l *Lab) bumpGeneration() (int64, error) {
	g, err := l.generation()
	if err != nil {
		return 0, err
	}
	g++
	if err := writeFileAtomic(filepath.Join(l.ManifestsDir(), generationFile), []byte(strconv.FormatInt(g, 10)+"\n"), 0o644); err != nil {
		return 0, err
	}
	return g, nil
}

// writeNode stores the Node object of n.
func (l *Lab) writeNode(n Node) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name,
			Labels: map[string]string{
				"kubernetes.io/hostname": n.Name,
				"kubernetes.io/os":       "linux",
			},
			Annotations: map[string]string{"loupe.dev/observer-address": n.ObserverAddress()},
		},
		Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR, PodCIDRs: []string{n.PodCIDR}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.IP},
				{Type: corev1.NodeHostName, Address: n.Name},
			},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	return l.writeObject("Node", "", n.Name, node)
}
