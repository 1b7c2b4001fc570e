package ui

import (
	"os/exec"
	"testing"
	"time"

	"github.com/loupe-project/loupe/relay/relaytest"
)

func TestProf(t *testing.T) {
	a, _ := relaytest.Start(relaytest.Options{Name: "node-1", Capacity: 16383})
	t.Cleanup(a.Stop)
	a.Add(scaleFlows(2000, 10000, time.Now().Add(-time.Minute))...)
	_, addr := startUI(t, startRelay(t, a))
	cmd := exec.Command("node", "web/test/prof.mjs")
	cmd.Env = append(cmd.Environ(), "LOUPE_UI_URL=http://"+addr+"/")
	out, err := cmd.CombinedOutput()
	t.Log(string(out), err)
}
