package cni

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// The status codes the plugin tells apart are gRPC's.
func TestAgentCodesAreGRPCs(t *testing.T) {
	for mine, theirs := range map[uint32]codes.Code{
		codeOK: codes.OK, codeCanceled: codes.Canceled, codeUnknown: codes.Unknown,
		codeDeadlineExceeded: codes.DeadlineExceeded, codeInternal: codes.Internal, codeUnavailable: codes.Unavailable,
	} {
		if mine != uint32(theirs) {
			t.Errorf("code %d, gRPC's %s is %d", mine, theirs, theirs)
		}
	}
}

// The client against a real gRPC server: answers, a status with a message
// gRPC percent-encodes, a socket nobody listens on, a budget already spent,
// and a server that is not gRPC at all.
func TestAgentClientAgainstGRPC(t *testing.T) {
	msg := "naïve: 100% sure\nline two"
	f := &fakeAgent{status: &endpointv1.StatusResponse{Ready: true, NodeName: "n1", BpfRoot: "/sys/fs/bpf/x"}}
	sock := serveFake(t, f)
	c := newAgentClient(sock)
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx, &endpointv1.StatusRequest{})
	if err != nil || !st.GetReady() || st.GetNodeName() != "n1" || st.GetBpfRoot() != "/sys/fs/bpf/x" {
		t.Fatalf("status: %v %v", st, err)
	}
	al, err := c.Allocate(ctx, &endpointv1.AllocateRequest{ContainerId: "c1", Ifname: "eth0"})
	if err != nil || al.GetIpv4() != "10.1.0.5" {
		t.Fatalf("allocate: %v %v", al, err)
	}
	f.allocErrs = []error{status.Error(codes.ResourceExhausted, msg)}
	_, err = c.Allocate(ctx, &endpointv1.AllocateRequest{ContainerId: "c1", Ifname: "eth0"})
	if rpcCode(err) != uint32(codes.ResourceExhausted) || rpcMessage(err) != msg {
		t.Fatalf("status error: code %d message %q, want %d %q", rpcCode(err), rpcMessage(err), codes.ResourceExhausted, msg)
	}
	if _, err := c.CheckAttached(ctx, &endpointv1.CheckAttachedRequest{HostIfname: "lxc1"}); rpcCode(err) != uint32(codes.Unimplemented) {
		t.Fatalf("unimplemented method: %v", err)
	}

	spent, cancelSpent := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelSpent()
	if _, err := c.Status(spent, &endpointv1.StatusRequest{}); rpcCode(err) != codeDeadlineExceeded {
		t.Fatalf("spent budget: %v", err)
	}

	dead := filepath.Join(t.TempDir(), "dead.sock")
	l, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(dead); err != nil {
		t.Fatal(err)
	}
	if _, err := newAgentClient(dead).Status(ctx, &endpointv1.StatusRequest{}); rpcCode(err) != codeUnavailable {
		t.Fatalf("nobody listening: %v", err)
	}

	// An HTTP/2 server that is not the agent.
	web := filepath.Join(t.TempDir(), "web.sock")
	wl, err := net.Listen("unix", web)
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/loupe.endpoint.v1.Endpoints/Status" {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write([]byte{0, 0, 0, 0, 9, 1}) // says 9 bytes, has 1; no grpc-status
			return
		}
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})}
	go func() { _ = srv.Serve(wl) }()
	t.Cleanup(func() { srv.Close() })
	wc := newAgentClient(web)
	if _, err := wc.Status(ctx, &endpointv1.StatusRequest{}); rpcCode(err) != codeInternal {
		t.Fatalf("response without grpc-status: %v", err)
	}
	if _, err := wc.List(ctx, &endpointv1.ListRequest{}); rpcCode(err) != codeUnavailable {
		t.Fatalf("HTTP 503: %v", err)
	}
}

func TestUnaryMessage(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
		ok   bool
	}{
		{[]byte{0, 0, 0, 0, 0}, "", true},
		{[]byte{0, 0, 0, 0, 2, 'h', 'i'}, "hi", true},
		{[]byte{0, 0, 0, 0}, "", false},
		{[]byte{1, 0, 0, 0, 1, 'x'}, "", false},
		{[]byte{0, 0, 0, 0, 3, 'h', 'i'}, "", false},
		{[]byte{0, 0, 0, 0, 1, 'h', 'i'}, "", false},
		{[]byte{0, 0xff, 0xff, 0xff, 0xff}, "", false},
	} {
		m, err := unaryMessage(tc.in)
		if (err == nil) != tc.ok || (tc.ok && string(m) != tc.want) {
			t.Errorf("unaryMessage(%v) = %q, %v", tc.in, m, err)
		}
	}
	if got := grpcMessage("a%20b%zz"); got != "a%20b%zz" {
		t.Errorf("malformed percent-encoding: %q", got)
	}
}

// The response body and grpc-message come from the agent's socket.
func FuzzUnaryMessage(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 2, 'h', 'i'}, "a%20b")
	f.Add([]byte{1, 0, 0, 0, 0}, "%")
	f.Fuzz(func(t *testing.T, b []byte, msg string) {
		if m, err := unaryMessage(b); err == nil {
			if len(m)+5 != len(b) || b[0] != 0 || binary.BigEndian.Uint32(b[1:5]) != uint32(len(m)) {
				t.Fatalf("accepted %v as %v", b, m)
			}
			var resp endpointv1.ListResponse
			_ = proto.Unmarshal(m, &resp) // must not panic either
		}
		_ = grpcMessage(msg)
	})
}
