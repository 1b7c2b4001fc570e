// Command loupe-cni is loupe's CNI plugin. The container runtime executes
// it; see package cni for what each command does.
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/loupe-project/loupe/cni"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/internal/version"
)

// Namespace switches (setns) apply to one OS thread; keep main on the
// thread group leader so that the plugin's netns is the node's throughout.
func init() { runtime.LockOSThread() }

func main() {
	p := &cni.Plugin{Datapath: cni.Datapath{
		Attach: func(bpfRoot, hostIfname, mode string) error {
			m, err := datapath.ParseXDPMode(mode)
			if err != nil {
				return err
			}
			return datapath.Attach(bpfRoot, hostIfname, m)
		},
		Detach: datapath.Detach,
		CheckAttached: func(bpfRoot, hostIfname, mode string) error {
			m, err := datapath.ParseXDPMode(mode)
			if err != nil {
				return err
			}
			return datapath.CheckAttached(bpfRoot, hostIfname, m)
		},
	}}
	skel.PluginMainFuncs(p.Funcs(), cni.PluginVersions(), "loupe-cni "+version.Version)
}
