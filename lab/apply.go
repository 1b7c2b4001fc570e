package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Apply creates or updates objs (already parsed and validated on their own).
// It checks them all against the lab before it changes anything, and returns
// once every agent has applied the result.
func (l *Lab) Apply(ctx context.Context, objs []Object, warn io.Writer) error {
	if err := ValidateSet(objs); err != nil {
		return err
	}
	stored, err := l.storedObjects()
	if err != nil {
		return err
	}
	// Check everything first, so a bad object changes nothing.
	var newPods []Object
	for _, o := range objs {
		p := o.Pod()
		if p == nil {
			continue
		}
		if p.Spec.NodeName != "" {
			if _, ok := l.Node(p.Spec.NodeName); !ok {
				return fmt.Errorf("%s: spec.nodeName %q is not a lab node (nodes: %s)", o.where(), p.Spec.NodeName, l.nodeNames())
			}
		}
		old, ok := stored[o.Key()]
		if !ok {
			newPods = append(newPods, o)
			continue
		}
		op := old.Pod()
		if p.Spec.NodeName != "" && p.Spec.NodeName != op.Spec.NodeName {
			return fmt.Errorf("%s: pod exists on node %s; delete it before moving it to %s", o.where(), op.Spec.NodeName, p.Spec.NodeName)
		}
		if !slices.Equal(podPorts(p), podPorts(op)) {
			return fmt.Errorf("%s: pod exists with ports %v; delete it before changing them to %v", o.where(), podPorts(op), podPorts(p))
		}
	}

	if err := l.assignClusterIPs(objs, stored); err != nil {
		return err
	}

	// Namespaces that nothing declares are created, as kubectl users of a lab expect.
	declared := map[string]bool{}
	for _, o := range objs {
		if o.Kind == KindNamespace {
			declared[o.Name] = true
		}
	}
	var implicit []string
	for _, o := range objs {
		if o.Namespace == "" || declared[o.Namespace] {
			continue
		}
		if _, ok := stored[KindNamespace+" "+o.Namespace]; ok {
			continue
		}
		declared[o.Namespace] = true
		implicit = append(implicit, o.Namespace)
	}
	sort.Strings(implicit)
	for _, ns := range implicit {
		fmt.Fprintf(warn, "warning: namespace %q has no Namespace object; creating it\n", ns)
		objs = append(objs, Object{Kind: KindNamespace, Name: ns, Obj: &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{corev1.LabelMetadataName: ns}},
		}})
	}

	// Create the new pods; on failure undo the ones this call made.
	placed := l.placement(stored)
	var created []podRecord
	podObjs := map[string]*corev1.Pod{}
	for _, o := range newPods {
		p := o.Pod()
		node := p.Spec.NodeName
		if node == "" {
			node = placed.next()
		}
		placed.add(node)
		n, _ := l.Node(node)
		out, err := l.createPod(ctx, p, n)
		if err != nil {
			l.undoPods(created)
			return err
		}
		rec, _, _ := l.loadRecord(p.Namespace, p.Name)
		created = append(created, rec)
		podObjs[o.Key()] = out
	}

	// Store everything, namespaces first.
	sort.SliceStable(objs, func(i, j int) bool {
		return objs[i].Kind == KindNamespace && objs[j].Kind != KindNamespace
	})
	for _, o := range objs {
		obj := o.Obj
		if p := o.Pod(); p != nil {
			if out, ok := podObjs[o.Key()]; ok {
				obj = out
			} else {
				// An existing pod: new labels and annotations, same placement and status.
				old := stored[o.Key()].Pod().DeepCopy()
				old.Labels, old.Annotations = p.Labels, p.Annotations
				obj = old
			}
		}
		if err := l.writeObject(o.Kind, o.Namespace, o.Name, obj); err != nil {
			l.undoPods(created)
			return err
		}
	}
	return l.commit(ctx)
}

// commit derives the EndpointSlices, bumps the generation and waits until
// every agent has applied it.
func (l *Lab) commit(ctx context.Context) error {
	if err := l.syncEndpointSlices(); err != nil {
		return err
	}
	gen, err := l.bumpGeneration()
	if err != nil {
		return err
	}
	return l.waitAgents(ctx, gen, applyTimeout, nil)
}

func (l *Lab) undoPods(recs []podRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	for _, r := range recs {
		_ = l.destroyPod(ctx, r)
	}
}

// Delete removes objs from the lab. Deleting a Namespace deletes everything
// in it. Objects that do not exist are reported on warn.
func (l *Lab) Delete(ctx context.Context, objs []Object, warn io.Writer) error {
	stored, err := l.storedObjects()
	if err != nil {
		return err
	}
	targets := map[string]Object{}
	for _, o := range objs {
		s, ok := stored[o.Key()]
		if !ok {
			if _, rec, _ := l.loadRecord(o.Namespace, o.Name); !(o.Kind == KindPod && rec) {
				fmt.Fprintf(warn, "warning: %s %s not found\n", o.Kind, o.ID())
				continue
			}
			s = o
		}
		targets[o.Key()] = s
		if o.Kind == KindNamespace {
			for k, in := range stored {
				if in.Namespace == o.Name {
					targets[k] = in
				}
			}
		}
	}
	keys := make([]string, 0, len(targets))
	for k := range targets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		o := targets[k]
		if o.Kind == KindPod {
			rec, ok, err := l.loadRecord(o.Namespace, o.Name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if ok {
				if err := l.destroyPod(ctx, rec); err != nil {
					errs = append(errs, err)
				}
				continue
			}
		}
		if err := l.removeObject(o.Kind, o.Namespace, o.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := l.commit(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (l *Lab) nodeNames() string {
	s := ""
	for i, n := range l.Nodes {
		if i > 0 {
			s += ", "
		}
		s += n.Name
	}
	return s
}

// spread places pods without spec.nodeName on the node with the fewest pods.
type spread struct {
	order  []string
	counts map[string]int
}

func (l *Lab) placement(stored map[string]Object) *spread {
	s := &spread{counts: map[string]int{}}
	for _, n := range l.Nodes {
		s.order = append(s.order, n.Name)
		s.counts[n.Name] = 0
	}
	for _, p := range storedPods(stored) {
		if _, ok := s.counts[p.Spec.NodeName]; ok {
			s.counts[p.Spec.NodeName]++
		}
	}
	return s
}

func (s *spread) next() string {
	best := s.order[0]
	for _, n := range s.order[1:] {
		if s.counts[n] < s.counts[best] {
			best = n
		}
	}
	return best
}

func (s *spread) add(node string) { s.counts[node]++ }
