package lab

import (
	"errors"
	"os/exec"
	"testing"
)

// A command that dies of a signal gives 128+N, as a shell does; a command
// that exits gives its code. Real processes, no fakes.
func TestExitStatus(t *testing.T) {
	for _, c := range []struct {
		script string
		want   int
	}{
		{"exit 3", 3},
		{"kill -KILL $$", 137},
		{"kill -TERM $$", 143},
		{"true", 0},
	} {
		cmd := exec.Command("sh", "-c", c.script)
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%s: %v", c.script, err)
		}
		if got := exitStatus(cmd.ProcessState); got != c.want {
			t.Errorf("%s: status %d, want %d", c.script, got, c.want)
		}
	}
}
