package lab

import (
	"os"
	"testing"
)

func TestAncestorsIncludeSelfAndParent(t *testing.T) {
	a := ancestors()
	if !a[os.Getpid()] || !a[os.Getppid()] {
		t.Fatalf("ancestors %v lack this process %d or its parent %d", a, os.Getpid(), os.Getppid())
	}
	if a[1] {
		t.Fatalf("init must never be in the set: %v", a)
	}
}
