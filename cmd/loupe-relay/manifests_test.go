package main

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/loupe-project/loupe/install"
)

// The install manifests run this binary: every flag they pass must exist.
func TestInstallManifestsUseExistingFlags(t *testing.T) {
	objs, err := install.Objects(install.Kubernetes, "kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, o := range objs {
		d, ok := o.Obj.(*appsv1.Deployment)
		if !ok || d.Name != "loupe-relay" {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if len(c.Command) == 0 || c.Command[0] != "/usr/bin/loupe-relay" {
				t.Fatalf("%s runs %v", c.Name, c.Command)
			}
			if err := newCommand().ParseFlags(c.Command[1:]); err != nil {
				t.Errorf("%v: %v", c.Command, err)
			}
			checked++
		}
	}
	if checked != 1 {
		t.Fatalf("checked %d relay containers", checked)
	}
}
