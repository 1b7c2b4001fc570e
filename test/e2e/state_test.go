package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/agent"
	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
	"github.com/loupe-project/loupe/api/endpoint/v1/endpointgrpc"
)

// endpointClient talks to a node's agent over its endpoint API socket, as
// loupe-cni does.
func (c *cluster) endpointClient(t *testing.T, node string) endpointgrpc.EndpointsClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(c.dir, "nodes", node, "agent.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return endpointgrpc.NewEndpointsClient(conn)
}

// podAddresses lists a node's endpoints as "ns/pod hostIfindex ipv4".
func podAddresses(t *testing.T, cl endpointgrpc.EndpointsClient) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cl.List(ctx, &endpointv1.ListRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range res.GetEndpoints() {
		out[fmt.Sprint(e.GetHostIfindex())] = e.GetIpv4()
	}
	return out
}

// killAgent kills a node's agent and waits until it is gone.
func (c *cluster) killAgent(t *testing.T, node string) {
	t.Helper()
	pid := c.agentPID(t, node)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	awaitGone(t, pid)
}

// awaitGone waits until a killed process pid is gone: a zombie leader is
// not enough, its other threads may still be exiting, and the sockets (the
// metrics port) close only with the last of them, after the BPF links they
// detach.
func awaitGone(t *testing.T, pid int) {
	t.Helper()
	if err := poll(10*time.Second, 50*time.Millisecond, func() error {
		if syscall.Kill(pid, 0) == nil {
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(st), ") Z ") {
				return fmt.Errorf("agent %d still running", pid)
			}
			if tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); len(tasks) > 1 {
				return fmt.Errorf("agent %d: %d threads still exiting", pid, len(tasks)-1)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A corrupt state file costs running pods nothing: the restarted agent
// sets the file aside, keeps every pod's datapath entry and address, hands
// none of those addresses out again, and the pods stay reachable.
func TestPrivilegedCorruptStateKeepsPods(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	victim, client := names[1], c.podsOn(names[0])[0]
	pods := c.podsOn(victim)
	t.Cleanup(func() {
		// Leave a whole lab for the tests after this one, whatever happened.
		if out, errs, code := c.lab("up"); code != 0 {
			t.Errorf("loupe lab up after the test: exit %d\n%s%s", code, out, errs)
		}
	})
	for _, file := range []string{agent.EndpointsStateFile, agent.IPAMStateFile} {
		t.Run(file, func(t *testing.T) {
			before := podAddresses(t, c.endpointClient(t, victim))
			held := map[string]bool{}
			for _, ip := range before {
				held[ip] = true
			}
			for _, p := range pods {
				if !held[p.IP] {
					t.Fatalf("%s has no endpoint with %s/%s's address %s: %v", victim, p.Namespace, p.Name, p.IP, before)
				}
			}
			c.killAgent(t, victim)
			path := filepath.Join(c.dir, "nodes", victim, "state", file)
			if err := os.WriteFile(path, []byte(`{"version": 1, "endpoints": [`), 0o600); err != nil {
				t.Fatal(err)
			}
			c.mustLab(t, "up")

			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) == 0 {
				t.Errorf("%s was not set aside", path)
			}
			cl := c.endpointClient(t, victim)
			after := podAddresses(t, cl)
			for ifindex, ip := range before {
				if after[ifindex] != ip {
					t.Errorf("endpoint on ifindex %s had %s, has %q after the restart", ifindex, ip, after[ifindex])
				}
			}
			// A new pod gets none of the addresses the running pods hold.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range 3 {
				id := fmt.Sprintf("e2e-corrupt-%s-%d", strings.TrimSuffix(file, ".json"), i)
				res, err := cl.Allocate(ctx, &endpointv1.AllocateRequest{ContainerId: id, Ifname: "eth0", PodNamespace: "e2e", PodName: id})
				if err != nil {
					t.Fatal(err)
				}
				if held[res.GetIpv4()] {
					t.Errorf("allocation %d got %s, which a running pod holds", i, res.GetIpv4())
				}
				defer func() {
					if _, err := cl.Release(context.Background(), &endpointv1.ReleaseRequest{ContainerId: id, Ifname: "eth0"}); err != nil {
						t.Errorf("release %s: %v", id, err)
					}
				}()
			}
			for _, p := range pods {
				c.dial(t, "TCP", client, p, 80)
			}
		})
	}
}
