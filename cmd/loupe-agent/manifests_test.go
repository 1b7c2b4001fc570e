package main

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/loupe-project/loupe/install"
	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

// The install manifests run this binary: every flag they pass must exist.
func TestInstallManifestsUseExistingFlags(t *testing.T) {
	objs, err := install.Objects(install.Kubernetes, "kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, o := range objs {
		ds, ok := o.Obj.(*appsv1.DaemonSet)
		if !ok || ds.Name != "loupe-agent" {
			continue
		}
		for _, c := range append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...) {
			if len(c.Command) == 0 || c.Command[0] != "/usr/bin/loupe-agent" {
				t.Errorf("%s runs %v", c.Name, c.Command)
				continue
			}
			root := newRootCommand()
			cmd, rest, err := root.Find(c.Command[1:])
			if err != nil {
				t.Errorf("%s: %v", c.Name, err)
				continue
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Errorf("%s: %v: %v", c.Name, c.Command, err)
			}
			checked++
		}
	}
	if checked != 2 {
		t.Fatalf("checked %d containers, want the init container and the agent", checked)
	}
}

// The DaemonSet enables the same Hubble metrics as the lab, whose
// Prometheus test runs the dashboards' queries against them.
func TestInstallManifestEnablesDashboardMetrics(t *testing.T) {
	objs, err := install.Objects(install.Kubernetes, "kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		ds, ok := o.Obj.(*appsv1.DaemonSet)
		if !ok || ds.Name != "loupe-agent" {
			continue
		}
		for _, c := range ds.Spec.Template.Spec.Containers {
			for _, a := range c.Command {
				v, ok := strings.CutPrefix(a, "--metrics=")
				if !ok {
					continue
				}
				specs, err := parseMetrics(v)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := hubblemetrics.String(specs), hubblemetrics.String(hubblemetrics.MustParse(hubblemetrics.Dashboards)); got != want {
					t.Fatalf("--metrics\n got %s\nwant %s", got, want)
				}
				return
			}
		}
	}
	t.Fatal("the agent DaemonSet passes no --metrics")
}
