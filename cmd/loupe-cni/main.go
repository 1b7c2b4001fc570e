// Command loupe-cni is loupe's CNI plugin. The container runtime executes
// it; see package cni for what each command does. It imports no eBPF code:
// the agent attaches the programs (a smaller binary starts faster).
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/loupe-project/loupe/cni"
	"github.com/loupe-project/loupe/internal/version"
)

// Namespace switches (setns) apply to one OS thread; keep main on the
// thread group leader so that the plugin's netns is the node's throughout.
func init() { runtime.LockOSThread() }

func main() {
	skel.PluginMainFuncs((&cni.Plugin{}).Funcs(), cni.PluginVersions(), "loupe-cni "+version.Version)
}
