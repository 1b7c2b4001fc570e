package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/relay/relaytest"
)

// farmEnv makes the test binary a farm of fake agents (for benchmarks that
// measure the relay's memory apart from the agents'): "peers,flowsPerPeer".
const farmEnv = "LOUPE_RELAYTEST_FARM"

func TestMain(m *testing.M) {
	if spec := os.Getenv(farmEnv); spec != "" {
		os.Exit(runFarm(spec))
	}
	os.Exit(m.Run())
}

// runFarm starts the agents, prints their addresses, and serves until stdin closes.
func runFarm(spec string) int {
	var peers, perPeer int
	if _, err := fmt.Sscanf(spec, "%d,%d", &peers, &perPeer); err != nil {
		fmt.Fprintln(os.Stderr, "farm:", err)
		return 2
	}
	base := time.Now().Add(-time.Hour)
	for k := range peers {
		a, err := relaytest.Start(relaytest.Options{Name: "node-" + strconv.Itoa(k+1), Capacity: perPeer})
		if err != nil {
			fmt.Fprintln(os.Stderr, "farm:", err)
			return 1
		}
		fs := make([]*flowpb.Flow, perPeer)
		for i := range fs {
			fs[i] = relaytest.Flow(a.Name(), base.Add(time.Duration(k+i*peers)*time.Microsecond), i)
		}
		a.Add(fs...)
		fmt.Println(a.Addr())
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// startFarm runs a farm in a child process and returns its agents' addresses.
func startFarm(tb testing.TB, peers, perPeer int) []string {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d", farmEnv, peers, perPeer))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	var addrs []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "ready" {
			return addrs
		}
		addrs = append(addrs, line)
	}
	tb.Fatalf("farm ended before it was ready: %v", sc.Err())
	return nil
}
