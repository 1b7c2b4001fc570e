// Package cniclient drives CNI plugins the way a container runtime does,
// through libcni, with the plugin processes running in a chosen network
// namespace (a node's, in tests and the lab).
//
// A plugin process inherits the network namespace of the OS thread that
// forks it. Each call therefore runs libcni on a fresh goroutine locked to
// its own OS thread, which first joins the node's netns; the goroutine
// returns without unlocking, so that thread is discarded and no other
// goroutine ever runs in the node's netns by accident. The mount namespace
// is the caller's, so bpffs pins made by an agent started with
// `nsenter --net=` are visible to the plugin.
package cniclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
)

// Client runs one network configuration list's plugins.
type Client struct {
	// NodeNetns is the path of the netns the plugins run in, such as
	// /run/netns/NAME or /proc/PID/ns/net; empty means the caller's.
	NodeNetns string
	// List is the parsed conflist.
	List *libcni.NetworkConfigList

	cni *libcni.CNIConfig
}

// Options tune a Client. The zero value is valid.
type Options struct {
	// CacheDir holds libcni's result cache (prevResult for CHECK and DEL);
	// empty means libcni's default, /var/lib/cni. Give each node its own.
	CacheDir string
	// Stderr receives the plugins' stderr; nil means os.Stderr.
	Stderr io.Writer
}

// New parses conflist and finds plugins in binDirs.
func New(nodeNetns string, binDirs []string, conflist []byte, opts Options) (*Client, error) {
	list, err := libcni.NetworkConfFromBytes(conflist)
	if err != nil {
		return nil, fmt.Errorf("cniclient: parse conflist: %w", err)
	}
	stderr := opts.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: stderr}, PluginDecoder: version.PluginDecoder{}}
	return &Client{
		NodeNetns: nodeNetns,
		List:      list,
		cni:       libcni.NewCNIConfigWithCacheDir(binDirs, opts.CacheDir, exec),
	}, nil
}

// Attachment names one pod interface, as a runtime would pass it.
type Attachment struct {
	ContainerID  string
	Netns        string // path of the pod's netns
	IfName       string // e.g. eth0
	PodNamespace string // CNI_ARGS K8S_POD_NAMESPACE, omitted when empty
	PodName      string // CNI_ARGS K8S_POD_NAME, omitted when empty
}

func (a Attachment) runtimeConf() *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: a.ContainerID, NetNS: a.Netns, IfName: a.IfName}
	// The keys kubelet passes; IgnoreUnknown tells plugins that do not know
	// one of them to carry on.
	rt.Args = append(rt.Args, [2]string{"IgnoreUnknown", "1"})
	if a.PodNamespace != "" {
		rt.Args = append(rt.Args, [2]string{"K8S_POD_NAMESPACE", a.PodNamespace})
	}
	if a.PodName != "" {
		rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", a.PodName})
	}
	rt.Args = append(rt.Args, [2]string{"K8S_POD_INFRA_CONTAINER_ID", a.ContainerID})
	return rt
}

// Add runs ADD and returns the result converted to the current spec.
func (c *Client) Add(ctx context.Context, a Attachment) (*current.Result, error) {
	var res types.Result
	err := InNetns(c.NodeNetns, func() error {
		var err error
		res, err = c.cni.AddNetworkList(ctx, c.List, a.runtimeConf())
		return err
	})
	if err != nil {
		return nil, err
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("cniclient: convert result: %w", err)
	}
	return cur, nil
}

// Del runs DEL, with the cached result as prevResult when there is one.
func (c *Client) Del(ctx context.Context, a Attachment) error {
	return InNetns(c.NodeNetns, func() error { return c.cni.DelNetworkList(ctx, c.List, a.runtimeConf()) })
}

// Check runs CHECK against the cached result of the last ADD.
func (c *Client) Check(ctx context.Context, a Attachment) error {
	return InNetns(c.NodeNetns, func() error { return c.cni.CheckNetworkList(ctx, c.List, a.runtimeConf()) })
}

// Status runs STATUS (spec 1.1.0 conflists; a no-op for older ones).
func (c *Client) Status(ctx context.Context) error {
	return InNetns(c.NodeNetns, func() error { return c.cni.GetStatusNetworkList(ctx, c.List) })
}

// GC runs DEL for cached attachments not in valid, then the plugins' GC.
func (c *Client) GC(ctx context.Context, valid []types.GCAttachment) error {
	return InNetns(c.NodeNetns, func() error {
		return c.cni.GCNetworkList(ctx, c.List, &libcni.GCArgs{ValidAttachments: valid})
	})
}

// Version asks the list's first plugin which spec versions it speaks.
func (c *Client) Version(ctx context.Context) (version.PluginInfo, error) {
	if len(c.List.Plugins) == 0 {
		return nil, errors.New("cniclient: conflist has no plugins")
	}
	var info version.PluginInfo
	err := InNetns(c.NodeNetns, func() error {
		var err error
		info, err = c.cni.GetVersionInfo(ctx, c.List.Plugins[0].Network.Type)
		return err
	})
	return info, err
}

// Add is a one-shot ADD with libcni's default cache dir.
func Add(ctx context.Context, nodeNetns, binDir string, conflist []byte, containerID, podNetns, ifname, podNamespace, podName string) (*current.Result, error) {
	c, err := New(nodeNetns, []string{binDir}, conflist, Options{})
	if err != nil {
		return nil, err
	}
	return c.Add(ctx, Attachment{ContainerID: containerID, Netns: podNetns, IfName: ifname, PodNamespace: podNamespace, PodName: podName})
}

// Del is a one-shot DEL with libcni's default cache dir.
func Del(ctx context.Context, nodeNetns, binDir string, conflist []byte, containerID, podNetns, ifname, podNamespace, podName string) error {
	c, err := New(nodeNetns, []string{binDir}, conflist, Options{})
	if err != nil {
		return err
	}
	return c.Del(ctx, Attachment{ContainerID: containerID, Netns: podNetns, IfName: ifname, PodNamespace: podNamespace, PodName: podName})
}

// Check is a one-shot CHECK with libcni's default cache dir.
func Check(ctx context.Context, nodeNetns, binDir string, conflist []byte, containerID, podNetns, ifname, podNamespace, podName string) error {
	c, err := New(nodeNetns, []string{binDir}, conflist, Options{})
	if err != nil {
		return err
	}
	return c.Check(ctx, Attachment{ContainerID: containerID, Netns: podNetns, IfName: ifname, PodNamespace: podNamespace, PodName: podName})
}

// InNetns runs f on a new OS thread that has joined the network namespace
// at path (the caller's own when path is empty). Processes f starts, and
// sockets it opens, belong to that namespace. The thread is discarded
// afterwards. f must not start goroutines that expect the namespace.
func InNetns(path string, f func() error) error {
	if path == "" {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine exits locked, so Go ends the thread
		// instead of returning it, still in the node's netns, to the pool.
		runtime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("cniclient: open netns %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		_ = unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("cniclient: enter netns %s: %w", path, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Code returns the CNI error code in err (0 when there is none): 7 bad
// config, 11 try again later, 50 plugin not available, ...
func Code(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}
