package cni

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// agentClient calls the agent's endpoint API, which the agent serves with
// gRPC on its unix socket, through net/http's HTTP/2 (prior knowledge, no
// TLS) and the protobuf messages. A unary gRPC call is one POST: the body
// is one length-prefixed message each way, and the outcome is the
// grpc-status trailer. The gRPC library doubled the plugin's binary and
// its start-up, paid on every ADD and DEL (issue #25); the plugin needs
// none of its balancing, retries or streaming.
type agentClient struct {
	hc *http.Client
}

func newAgentClient(socket string) *agentClient {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &agentClient{hc: &http.Client{Transport: &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

func (c *agentClient) close() { c.hc.CloseIdleConnections() }

// The gRPC status codes the plugin tells apart (numbers from the gRPC
// spec; a test ties them to google.golang.org/grpc/codes).
const (
	codeOK               = 0
	codeCanceled         = 1
	codeUnknown          = 2
	codeDeadlineExceeded = 4
	codeInternal         = 13
	codeUnavailable      = 14
)

// rpcError is a failed call: the agent's status, or codeUnavailable when
// the agent could not be reached.
type rpcError struct {
	Code uint32
	Msg  string
}

func (e *rpcError) Error() string {
	return fmt.Sprintf("rpc error: code = %d desc = %s", e.Code, e.Msg)
}

// rpcCode is the status code of a call's error (codeOK for nil, codeUnknown
// for an error that is no rpcError).
func rpcCode(err error) uint32 {
	if err == nil {
		return codeOK
	}
	var re *rpcError
	if errors.As(err, &re) {
		return re.Code
	}
	return codeUnknown
}

// rpcMessage is the agent's message of a call's error.
func rpcMessage(err error) string {
	var re *rpcError
	if errors.As(err, &re) {
		return re.Msg
	}
	return err.Error()
}

// maxAgentMessage bounds a response (List of a full node is far smaller).
const maxAgentMessage = 64 << 20

const endpointsService = "http://loupe-agent/loupe.endpoint.v1.Endpoints/"

func (c *agentClient) call(ctx context.Context, method string, req, resp proto.Message) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return &rpcError{Code: codeInternal, Msg: "marshal request: " + err.Error()}
	}
	body := make([]byte, 5+len(b)) // flag 0: not compressed; big-endian length
	binary.BigEndian.PutUint32(body[1:5], uint32(len(b)))
	copy(body[5:], b)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, endpointsService+method, bytes.NewReader(body))
	if err != nil {
		return &rpcError{Code: codeInternal, Msg: err.Error()}
	}
	hr.Header.Set("Content-Type", "application/grpc")
	hr.Header.Set("Te", "trailers")
	if dl, ok := ctx.Deadline(); ok {
		hr.Header.Set("Grpc-Timeout", strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10)+"m")
	}
	res, err := c.hc.Do(hr)
	if err != nil {
		return transportError(ctx, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxAgentMessage+6))
	if err != nil {
		return transportError(ctx, err)
	}
	if res.StatusCode != http.StatusOK {
		code := uint32(codeUnknown)
		if res.StatusCode == http.StatusServiceUnavailable || res.StatusCode == http.StatusBadGateway || res.StatusCode == http.StatusGatewayTimeout {
			code = codeUnavailable
		}
		return &rpcError{Code: code, Msg: "agent answered HTTP " + res.Status}
	}
	// A failure before any message comes as headers only ("trailers-only").
	st, msg := res.Trailer.Get("Grpc-Status"), res.Trailer.Get("Grpc-Message")
	if st == "" {
		st, msg = res.Header.Get("Grpc-Status"), res.Header.Get("Grpc-Message")
	}
	code, err := strconv.ParseUint(st, 10, 32)
	if err != nil {
		return &rpcError{Code: codeInternal, Msg: fmt.Sprintf("agent response without a valid grpc-status (%q)", st)}
	}
	if code != codeOK {
		return &rpcError{Code: uint32(code), Msg: grpcMessage(msg)}
	}
	m, err := unaryMessage(data)
	if err != nil {
		return &rpcError{Code: codeInternal, Msg: "agent response: " + err.Error()}
	}
	if err := proto.Unmarshal(m, resp); err != nil {
		return &rpcError{Code: codeInternal, Msg: "agent response: " + err.Error()}
	}
	return nil
}

// transportError: the agent was not reached, or the budget ran out.
func transportError(ctx context.Context, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &rpcError{Code: codeDeadlineExceeded, Msg: err.Error()}
	case ctx.Err() != nil:
		return &rpcError{Code: codeCanceled, Msg: err.Error()}
	}
	return &rpcError{Code: codeUnavailable, Msg: err.Error()}
}

// unaryMessage is the one uncompressed message of a unary response body.
func unaryMessage(b []byte) ([]byte, error) {
	if len(b) < 5 {
		return nil, fmt.Errorf("%d bytes, shorter than a message header", len(b))
	}
	if b[0] != 0 {
		return nil, fmt.Errorf("message flag %#x: compressed, though no compression was offered", b[0])
	}
	if n := binary.BigEndian.Uint32(b[1:5]); uint64(n) != uint64(len(b)-5) {
		return nil, fmt.Errorf("message header says %d bytes, %d follow", n, len(b)-5)
	}
	return b[5:], nil
}

// grpcMessage undoes grpc-message's percent-encoding; a malformed one is
// shown as it came.
func grpcMessage(s string) string {
	if d, err := url.PathUnescape(s); err == nil {
		return d
	}
	return s
}

func invoke[R any, PR interface {
	*R
	proto.Message
}](ctx context.Context, c *agentClient, method string, req proto.Message) (PR, error) {
	out := PR(new(R))
	if err := c.call(ctx, method, req, out); err != nil {
		return nil, err
	}
	return out, nil
}

// The endpoint API's methods that the plugin calls.

func (c *agentClient) Allocate(ctx context.Context, r *endpointv1.AllocateRequest) (*endpointv1.AllocateResponse, error) {
	return invoke[endpointv1.AllocateResponse](ctx, c, "Allocate", r)
}

func (c *agentClient) Release(ctx context.Context, r *endpointv1.ReleaseRequest) (*endpointv1.ReleaseResponse, error) {
	return invoke[endpointv1.ReleaseResponse](ctx, c, "Release", r)
}

func (c *agentClient) Register(ctx context.Context, r *endpointv1.RegisterRequest) (*endpointv1.RegisterResponse, error) {
	return invoke[endpointv1.RegisterResponse](ctx, c, "Register", r)
}

func (c *agentClient) Unregister(ctx context.Context, r *endpointv1.UnregisterRequest) (*endpointv1.UnregisterResponse, error) {
	return invoke[endpointv1.UnregisterResponse](ctx, c, "Unregister", r)
}

func (c *agentClient) CheckAttached(ctx context.Context, r *endpointv1.CheckAttachedRequest) (*endpointv1.CheckAttachedResponse, error) {
	return invoke[endpointv1.CheckAttachedResponse](ctx, c, "CheckAttached", r)
}

func (c *agentClient) List(ctx context.Context, r *endpointv1.ListRequest) (*endpointv1.ListResponse, error) {
	return invoke[endpointv1.ListResponse](ctx, c, "List", r)
}

func (c *agentClient) Status(ctx context.Context, r *endpointv1.StatusRequest) (*endpointv1.StatusResponse, error) {
	return invoke[endpointv1.StatusResponse](ctx, c, "Status", r)
}
