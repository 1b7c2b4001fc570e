package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/agent/daemon"
)

// agentBinary is $LOUPE_BIN/loupe-agent, or this package built.
func agentBinary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("LOUPE_BIN"); d != "" {
		return filepath.Join(d, "loupe-agent")
	}
	bin := filepath.Join(t.TempDir(), "loupe-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build loupe-agent: %v\n%s", err, out)
	}
	return bin
}

// listeningTCP returns the listening TCP sockets of a network namespace,
// read through a process inside it (/proc/PID/net/tcp{,6}, state 0A).
func listeningTCP(t *testing.T, pid int) []string {
	t.Helper()
	var out []string
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "net", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(l); len(fs) > 3 && fs[3] == "0A" {
				out = append(out, f+" "+fs[1])
			}
		}
	}
	return out
}

// loupe-agent started with no listen or TLS flags stays up, serves the
// Observer API on its unix socket, and listens on no TCP port at all in its
// network namespace. --listen without the TLS files refuses to start and
// says which flags it needs.
func TestPrivilegedAgentDefaultServesOnlyTheUnixSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bin := agentBinary(t)

	out, err := exec.Command(bin, "--node-name", "sec14-n1", "--pod-cidr", "10.244.77.0/24", "--listen", ":4244").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs --tls-cert-file, --tls-key-file and --tls-client-ca-file") ||
		!strings.Contains(string(out), "--insecure-listen :4244") {
		t.Fatalf("--listen without TLS: %v\n%s", err, out)
	}

	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	suffix := hex.EncodeToString(rnd[:])
	ns := "sec14-agent-" + suffix
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	dir := t.TempDir()
	bpfRoot := "/sys/fs/bpf/sec14-" + suffix
	sock := filepath.Join(dir, "agent.sock")
	state := filepath.Join(dir, "state")
	t.Cleanup(func() {
		out, err := exec.Command("nsenter", "--net=/run/netns/"+ns, bin, "cleanup", "--bpf-root", bpfRoot,
			"--state-dir", state, "--socket", sock, "--cni-conflist", "").CombinedOutput()
		if err != nil {
			t.Errorf("cleanup: %v\n%s", err, out)
		}
		_ = os.Remove(bpfRoot)
	})

	var log bytes.Buffer
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns, bin, "--node-name", "sec14-n1", "--pod-cidr", "10.244.77.0/24",
		"--state-dir", state, "--bpf-root", bpfRoot, "--socket", sock)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", log.String())
		}
	})

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, daemon.ObserverSocketName), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := observerpb.NewObserverClient(conn).ServerStatus(rctx, &observerpb.ServerStatusRequest{})
		rcancel()
		if err == nil {
			t.Logf("unix socket: %d flows max, %d nodes", st.GetMaxFlows(), st.GetNumConnectedNodes().GetValue())
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("agent exited: %v", err)
		case <-ctx.Done():
			t.Fatalf("observer socket never answered: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// nsenter execs the agent, so cmd's pid is the agent's, in the netns.
	if l := listeningTCP(t, cmd.Process.Pid); len(l) != 0 {
		t.Errorf("the agent's network namespace has listening TCP sockets: %v", l)
	}
	select {
	case err := <-exited:
		t.Fatalf("agent exited: %v", err)
	default:
	}
}
