package nlsafe

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestDumpRetriesOnlyInterruptedDumps(t *testing.T) {
	calls := 0
	v, err := Dump(func() (int, error) {
		calls++
		if calls < 3 {
			return -1, netlink.ErrDumpInterrupted
		}
		return 7, nil
	})
	if err != nil || v != 7 || calls != 3 {
		t.Fatalf("got %d, %v after %d calls; want 7 after 3", v, err, calls)
	}

	other := errors.New("permission denied")
	calls = 0
	if _, err := Dump(func() (int, error) { calls++; return 0, other }); !errors.Is(err, other) || calls != 1 {
		t.Fatalf("other errors must not be retried: %v after %d calls", err, calls)
	}

	calls = 0
	if _, err := Dump(func() (int, error) { calls++; return 0, netlink.ErrDumpInterrupted }); !errors.Is(err, netlink.ErrDumpInterrupted) || calls != Retries {
		t.Fatalf("gave up with %v after %d calls; want ErrDumpInterrupted after %d", err, calls, Retries)
	}
}
