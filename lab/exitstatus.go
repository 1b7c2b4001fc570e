package lab

import (
	"os"
	"syscall"
)

// exitStatus is the status a shell gives a finished command: its exit
// code, or 128+N when signal N ended it (137 for SIGKILL).
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
