package cniclient

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// A process started inside InNetns runs in that netns, and the caller's
// own thread does not move.
func TestPrivilegedInNetnsChildInherits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	name := fmt.Sprintf("lcni-client-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	path := "/run/netns/" + name

	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	before, _ := os.Readlink("/proc/thread-self/ns/net")

	var got []byte
	err := InNetns(path, func() error {
		var err error
		got, err = exec.Command("readlink", "/proc/self/ns/net").Output()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != want {
		t.Fatalf("child ran in %s, want %s", got, want)
	}
	after, _ := os.Readlink("/proc/thread-self/ns/net")
	if before != after {
		t.Fatalf("caller moved from %s to %s", before, after)
	}
	if err := InNetns("/run/netns/does-not-exist", func() error { return nil }); err == nil {
		t.Fatal("InNetns of a missing netns succeeded")
	}
}

func TestNewRejectsBadConflist(t *testing.T) {
	if _, err := New("", nil, []byte(`{"name":"x"`), Options{}); err == nil {
		t.Fatal("accepted broken JSON")
	}
}

func TestCode(t *testing.T) {
	wrapped := fmt.Errorf("plugin failed: %w", types.NewError(11, "try again", ""))
	if Code(wrapped) != 11 || Code(errors.New("x")) != 0 || Code(nil) != 0 {
		t.Fatal("Code does not unwrap CNI errors")
	}
}
