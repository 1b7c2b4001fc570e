package datapath

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// XDPMode says whether and how the XDP prefilter is attached.
type XDPMode string

const (
	XDPNative  XDPMode = "native"
	XDPGeneric XDPMode = "generic"
	XDPOff     XDPMode = "off"
)

// ParseXDPMode accepts "native", "generic" and "off".
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(s); m {
	case XDPNative, XDPGeneric, XDPOff:
		return m, nil
	}
	return "", fmt.Errorf("xdp mode %q: want native, generic or off", s)
}

func (m XDPMode) attachFlags() link.XDPAttachFlags {
	if m == XDPNative {
		return link.XDPDriverMode
	}
	return link.XDPGenericMode
}

// netlinkMode is the IFLA_XDP_ATTACHED value the kernel reports for m.
func (m XDPMode) netlinkMode() uint32 {
	if m == XDPNative {
		return 1 // XDP_ATTACHED_DRV
	}
	return 2 // XDP_ATTACHED_SKB
}

func linkDir(bpfRoot, ifname string) (string, error) {
	// bpffs refuses names with dots; host veths (lxc...) never have one.
	if ifname == "" || strings.ContainsAny(ifname, "./") {
		return "", fmt.Errorf("interface name %q cannot be pinned", ifname)
	}
	return filepath.Join(bpfRoot, linksDir, ifname), nil
}

// Attach attaches the pinned programs to the host-side veth hostIfname: TCX
// ingress and egress always, XDP in mode (mode off removes an XDP link we
// made earlier). Links are pinned under links/<ifname>/. Attach is
// idempotent: an existing link on the same interface is updated to the
// current program, and a link left by an earlier interface of the same name
// is replaced.
func Attach(bpfRoot, hostIfname string, mode XDPMode) error {
	if _, err := ParseXDPMode(string(mode)); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	dir, err := linkDir(bpfRoot, hostIfname)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if err := requireBPFFS(bpfRoot); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	unlock, err := lockRoot(bpfRoot, true)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer unlock()

	iface, err := net.InterfaceByName(hostIfname)
	if err != nil {
		return fmt.Errorf("attach %s: %w", hostIfname, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("attach %s: %w", hostIfname, err)
	}

	for _, t := range []struct {
		pin    string
		attach ebpf.AttachType
	}{{PinTCXIngress, ebpf.AttachTCXIngress}, {PinTCXEgress, ebpf.AttachTCXEgress}} {
		err := withPinnedProgram(bpfRoot, t.pin, func(prog *ebpf.Program) error {
			return ensureLink(filepath.Join(dir, t.pin), iface.Index, prog, nil, func() (link.Link, error) {
				return link.AttachTCX(link.TCXOptions{Interface: iface.Index, Program: prog, Attach: t.attach})
			})
		})
		if err != nil {
			return fmt.Errorf("attach %s %s: %w", t.pin, hostIfname, err)
		}
	}

	xdpPin := filepath.Join(dir, PinXDP)
	if mode == XDPOff {
		if err := removeLink(xdpPin); err != nil {
			return fmt.Errorf("attach: remove xdp from %s: %w", hostIfname, err)
		}
		return nil
	}
	err = withPinnedProgram(bpfRoot, PinXDP, func(prog *ebpf.Program) error {
		sameMode := func() bool { return xdpModeIs(iface.Index, mode) }
		return ensureLink(xdpPin, iface.Index, prog, sameMode, func() (link.Link, error) {
			return link.AttachXDP(link.XDPOptions{Interface: iface.Index, Program: prog, Flags: mode.attachFlags()})
		})
	})
	if err != nil {
		return fmt.Errorf("attach xdp (%s) %s: %w", mode, hostIfname, err)
	}
	return nil
}

func withPinnedProgram(bpfRoot, name string, fn func(*ebpf.Program) error) error {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(bpfRoot, progsDir, name), nil)
	if err != nil {
		return fmt.Errorf("load pinned program: %w", err)
	}
	defer prog.Close()
	return fn(prog)
}

// ensureLink makes the link pinned at pin point prog at ifindex: it updates
// a live pinned link in place (no gap), and replaces one that belongs to
// another (vanished) interface or fails keep().
func ensureLink(pin string, ifindex int, prog *ebpf.Program, keep func() bool, attach func() (link.Link, error)) error {
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		info, ierr := l.Info()
		if ierr == nil && linkIfindex(info) == uint32(ifindex) && (keep == nil || keep()) {
			uerr := l.Update(prog)
			l.Close()
			if uerr == nil {
				return nil
			}
			if err := removeLink(pin); err != nil {
				return err
			}
			break
		}
		l.Close()
		if err := removeLink(pin); err != nil {
			return err
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		// Not a link (or unreadable): drop the stale file and start over.
		if rerr := os.Remove(pin); rerr != nil {
			return fmt.Errorf("load pinned link: %w", err)
		}
	}

	nl, err := attach()
	if err != nil {
		return err
	}
	defer nl.Close()
	if err := nl.Pin(pin); err != nil {
		return fmt.Errorf("pin link: %w", err)
	}
	return nil
}

// removeLink detaches and unpins the link pinned at pin; a missing pin is fine.
func removeLink(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		if rerr := os.Remove(pin); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("remove pin %s: %w", pin, rerr)
		}
		return nil
	}
	defer l.Close()
	// Detach explicitly: another process may still hold an fd to the link.
	if err := l.Detach(); err != nil && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOLINK) &&
		!errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("detach %s: %w", pin, err)
	}
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", pin, err)
	}
	return nil
}

func xdpModeIs(ifindex int, mode XDPMode) bool {
	nl, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return false
	}
	x := nl.Attrs().Xdp
	return x != nil && x.Attached && x.AttachMode == mode.netlinkMode()
}

// Detach removes every loupe attachment from hostIfname and its pins. A
// missing interface or pin is success.
func Detach(bpfRoot, hostIfname string) error {
	dir, err := linkDir(bpfRoot, hostIfname)
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	unlock, err := lockRoot(bpfRoot, true)
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	defer unlock()
	return detachDir(dir)
}

func detachDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	for _, e := range entries {
		if err := removeLink(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("detach: %w", err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("detach: %w", err)
	}
	return nil
}

// CheckAttached asks the kernel whether hostIfname runs the pinned programs:
// TCX ingress and egress through our pinned links, and XDP in mode (or no XDP
// link of ours when mode is off).
func CheckAttached(bpfRoot, hostIfname string, mode XDPMode) error {
	if _, err := ParseXDPMode(string(mode)); err != nil {
		return fmt.Errorf("check attached: %w", err)
	}
	dir, err := linkDir(bpfRoot, hostIfname)
	if err != nil {
		return fmt.Errorf("check attached: %w", err)
	}
	if err := requireBPFFS(bpfRoot); err != nil {
		return fmt.Errorf("check attached: %w", err)
	}
	unlock, err := lockRoot(bpfRoot, false)
	if err != nil {
		return fmt.Errorf("check attached: %w", err)
	}
	defer unlock()

	iface, err := net.InterfaceByName(hostIfname)
	if err != nil {
		return fmt.Errorf("check attached %s: %w", hostIfname, err)
	}
	for _, t := range []struct {
		pin    string
		attach ebpf.AttachType
	}{{PinTCXIngress, ebpf.AttachTCXIngress}, {PinTCXEgress, ebpf.AttachTCXEgress}} {
		progID, err := pinnedProgramID(bpfRoot, t.pin)
		if err != nil {
			return fmt.Errorf("check attached %s: %w", hostIfname, err)
		}
		linkID, err := pinnedLinkID(filepath.Join(dir, t.pin))
		if err != nil {
			return fmt.Errorf("check attached %s %s: %w", t.pin, hostIfname, err)
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: iface.Index, Attach: t.attach})
		if err != nil {
			return fmt.Errorf("check attached %s %s: %w", t.pin, hostIfname, err)
		}
		found := false
		for _, ap := range res.Programs {
			if id, ok := ap.LinkID(); ok && id == linkID && ap.ID == progID {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("check attached: %s on %s: program %d not attached through link %d", t.pin, hostIfname, progID, linkID)
		}
	}

	xdpPin := filepath.Join(dir, PinXDP)
	nl, err := netlink.LinkByIndex(iface.Index)
	if err != nil {
		return fmt.Errorf("check attached %s: %w", hostIfname, err)
	}
	x := nl.Attrs().Xdp
	if mode == XDPOff {
		if _, err := os.Stat(xdpPin); err == nil {
			return fmt.Errorf("check attached: %s has an xdp link but mode is off", hostIfname)
		}
		return nil
	}
	progID, err := pinnedProgramID(bpfRoot, PinXDP)
	if err != nil {
		return fmt.Errorf("check attached %s: %w", hostIfname, err)
	}
	if _, err := pinnedLinkID(xdpPin); err != nil {
		return fmt.Errorf("check attached xdp %s: %w", hostIfname, err)
	}
	if x == nil || !x.Attached || ebpf.ProgramID(x.ProgId) != progID {
		return fmt.Errorf("check attached: xdp program %d not attached to %s", progID, hostIfname)
	}
	if x.AttachMode != mode.netlinkMode() {
		return fmt.Errorf("check attached: xdp on %s in kernel mode %d, want %s", hostIfname, x.AttachMode, mode)
	}
	return nil
}

func pinnedProgramID(bpfRoot, name string) (ebpf.ProgramID, error) {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(bpfRoot, progsDir, name), nil)
	if err != nil {
		return 0, fmt.Errorf("load pinned program %s: %w", name, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return 0, fmt.Errorf("program %s info: %w", name, err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, fmt.Errorf("program %s: no id", name)
	}
	return id, nil
}

func pinnedLinkID(pin string) (link.ID, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return 0, fmt.Errorf("load pinned link: %w", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return 0, fmt.Errorf("link info: %w", err)
	}
	return info.ID, nil
}

// Cleanup detaches every pinned link and removes every pin under bpfRoot
// (uninstall, lab down). If bpfRoot is a bpffs mounted on its own (as Load
// does), it is unmounted too; the system bpffs at /sys/fs/bpf never is.
func Cleanup(bpfRoot string) error {
	if _, err := os.Stat(bpfRoot); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ok, err := isBPFFS(bpfRoot)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	if !ok {
		return nil // nothing can be pinned outside a bpffs
	}
	if err := cleanupPins(bpfRoot); err != nil {
		return err
	}
	mp, err := isMountPoint(bpfRoot)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	if mp && filepath.Clean(bpfRoot) != systemBPFFS {
		if err := unix.Unmount(bpfRoot, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("cleanup: unmount %s: %w", bpfRoot, err)
		}
	}
	return nil
}

func cleanupPins(bpfRoot string) error {
	unlock, err := lockRoot(bpfRoot, true)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	defer unlock()
	ifaces, err := os.ReadDir(filepath.Join(bpfRoot, linksDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cleanup: %w", err)
	}
	for _, ifc := range ifaces {
		if err := detachDir(filepath.Join(bpfRoot, linksDir, ifc.Name())); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	if err := detachDir(filepath.Join(bpfRoot, tracingDir)); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	for _, d := range []string{linksDir, progsDir, mapsDir} {
		if err := os.RemoveAll(filepath.Join(bpfRoot, d)); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	return nil
}
