package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loupe-project/loupe/agent/ipam"
	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
	"github.com/loupe-project/loupe/api/endpoint/v1/endpointgrpc"
)

// The endpoint API (api/endpoint/v1) that loupe-cni calls: request
// validation and the answers; the table changes are in endpoint_table.go,
// the unix socket it is served on in endpoint_socket.go.

// Server implements the endpoint API on top of an Agent.
type Server struct {
	endpointgrpc.UnimplementedEndpointsServer
	a *Agent
}

// NewServer returns the endpoint API of a.
func NewServer(a *Agent) *Server { return &Server{a: a} }

// invalid turns a validation failure into InvalidArgument naming the field.
func invalid(err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return status.Errorf(codes.InvalidArgument, "%s: %s", fe.Field, fe.Msg)
	}
	return status.Error(codes.InvalidArgument, err.Error())
}

func validateKey(containerID, ifname string) error {
	if err := validateContainerID(containerID); err != nil {
		return invalid(err)
	}
	if err := validateIfname("ifname", ifname); err != nil {
		return invalid(err)
	}
	return nil
}

// Allocate reserves (or returns the existing) addresses of an attachment.
// It is ADD's first call, so it also answers for readiness: Unavailable
// (the plugin's "try again later") until the agent is ready.
func (s *Server) Allocate(_ context.Context, req *endpointv1.AllocateRequest) (*endpointv1.AllocateResponse, error) {
	if err := validateKey(req.GetContainerId(), req.GetIfname()); err != nil {
		return nil, err
	}
	if !s.a.Ready() {
		return nil, status.Error(codes.Unavailable, "agent not ready")
	}
	al, err := s.a.ipam.Allocate(ipam.Key{ContainerID: req.GetContainerId(), Ifname: req.GetIfname()},
		req.GetPodNamespace(), req.GetPodName())
	if errors.Is(err, ipam.ErrExhausted) {
		return nil, status.Error(codes.ResourceExhausted, err.Error())
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	gw4, gw6 := s.a.Gateways()
	return &endpointv1.AllocateResponse{
		Ipv4:        addrString(al.IPv4),
		Ipv6:        addrString(al.IPv6),
		GatewayIpv4: addrString(gw4),
		GatewayIpv6: addrString(gw6),
		BpfRoot:     s.a.cfg.BPFRoot,
		XdpMode:     s.a.cfg.XDPMode,
	}, nil
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// Release frees an attachment's addresses. An endpoint still registered
// for the attachment is unregistered first (link pins included), so a
// freed address is never left in the endpoint map.
func (s *Server) Release(_ context.Context, req *endpointv1.ReleaseRequest) (*endpointv1.ReleaseResponse, error) {
	if err := validateKey(req.GetContainerId(), req.GetIfname()); err != nil {
		return nil, err
	}
	if err := validateOptionalIfname(req.GetHostIfname()); err != nil {
		return nil, err
	}
	key := ipam.Key{ContainerID: req.GetContainerId(), Ifname: req.GetIfname()}
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	detachErr, err := a.detachAndUnregisterLocked(key, req.GetHostIfname())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := a.ipam.Release(key); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if detachErr != nil {
		return nil, status.Error(codes.Internal, detachErr.Error())
	}
	return &endpointv1.ReleaseResponse{}, nil
}

// Register records an endpoint and writes it to the datapath's endpoint
// map. Its addresses must be the ones allocated to its (container id,
// ifname). Registering again updates it and keeps its id.
func (s *Server) Register(_ context.Context, req *endpointv1.RegisterRequest) (*endpointv1.RegisterResponse, error) {
	pe := req.GetEndpoint()
	if pe == nil {
		return nil, status.Error(codes.InvalidArgument, "endpoint: required")
	}
	e := &Endpoint{
		ContainerID: pe.GetContainerId(), Ifname: pe.GetIfname(), Netns: pe.GetNetns(),
		PodNamespace: pe.GetPodNamespace(), PodName: pe.GetPodName(),
		HostIfname: pe.GetHostIfname(), HostIfindex: pe.GetHostIfindex(), MAC: pe.GetMac(),
	}
	var err error
	if e.IPv4, err = parseAddrField("ipv4", pe.GetIpv4()); err != nil {
		return nil, invalid(err)
	}
	if e.IPv6, err = parseAddrField("ipv6", pe.GetIpv6()); err != nil {
		return nil, invalid(err)
	}
	if err := validateEndpoint(e); err != nil {
		return nil, invalid(err)
	}
	a := s.a
	e.HostMAC = a.hostLinkMAC(e.HostIfindex)
	mode, err := a.xdpModeOr(req.GetXdpMode())
	if err != nil {
		return nil, invalid(err)
	}
	if req.GetAttach() && a.cfg.AttachHostLink == nil {
		return nil, status.Error(codes.FailedPrecondition, "this agent attaches no programs")
	}
	out, err := a.register(e)
	if err != nil {
		return nil, err
	}
	if !req.GetAttach() {
		return &endpointv1.RegisterResponse{Endpoint: out}, nil
	}
	// Outside mu: concurrent ADDs attach side by side.
	if err := a.attachRegistered(e, mode); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &endpointv1.RegisterResponse{Endpoint: out, Attached: true}, nil
}

// register checks e against its allocation and records it; its error is a
// gRPC status.
func (a *Agent) register(e *Endpoint) (*endpointv1.Endpoint, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.ipam.Get(e.key())
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition,
			"container_id/ifname: %s/%s has no allocation: call Allocate first", e.ContainerID, e.Ifname)
	}
	if al.IPv4 != e.IPv4 {
		return nil, status.Errorf(codes.InvalidArgument, "ipv4: %q is not the address allocated to %s/%s (%q)",
			addrString(e.IPv4), e.ContainerID, e.Ifname, addrString(al.IPv4))
	}
	if al.IPv6 != e.IPv6 {
		return nil, status.Errorf(codes.InvalidArgument, "ipv6: %q is not the address allocated to %s/%s (%q)",
			addrString(e.IPv6), e.ContainerID, e.Ifname, addrString(al.IPv6))
	}
	if e.PodNamespace == "" && e.PodName == "" {
		e.PodNamespace, e.PodName = al.PodNamespace, al.PodName
	}
	e.Identity = a.identityOf(e.PodNamespace, e.PodName)
	if err := a.registerLocked(e); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return e.proto(), nil
}

func validateOptionalIfname(name string) error {
	if name == "" {
		return nil
	}
	if err := validateIfname("host_ifname", name); err != nil {
		return invalid(err)
	}
	return nil
}

func parseAddrField(field, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, &FieldError{field, fmt.Sprintf("%q is not an IP address", s)}
	}
	return ip, nil
}

// Unregister removes an endpoint and its link pins; unknown endpoints
// succeed.
func (s *Server) Unregister(_ context.Context, req *endpointv1.UnregisterRequest) (*endpointv1.UnregisterResponse, error) {
	if err := validateKey(req.GetContainerId(), req.GetIfname()); err != nil {
		return nil, err
	}
	if err := validateOptionalIfname(req.GetHostIfname()); err != nil {
		return nil, err
	}
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	detachErr, err := a.detachAndUnregisterLocked(ipam.Key{ContainerID: req.GetContainerId(), Ifname: req.GetIfname()}, req.GetHostIfname())
	if err = errors.Join(err, detachErr); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &endpointv1.UnregisterResponse{}, nil
}

// List returns every endpoint and every allocation without an endpoint.
func (s *Server) List(context.Context, *endpointv1.ListRequest) (*endpointv1.ListResponse, error) {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &endpointv1.ListResponse{}
	eps := slices.Collect(maps.Values(a.endpoints))
	slices.SortFunc(eps, func(x, y *Endpoint) int { return int(x.ID) - int(y.ID) })
	for _, e := range eps {
		resp.Endpoints = append(resp.Endpoints, e.proto())
	}
	for _, al := range a.ipam.List() {
		if _, ok := a.endpoints[al.Key]; !ok {
			resp.Allocations = append(resp.Allocations, &endpointv1.ReleaseRequest{ContainerId: al.ContainerID, Ifname: al.Ifname})
		}
	}
	return resp, nil
}

// Status reports readiness and the node's settings.
func (s *Server) Status(context.Context, *endpointv1.StatusRequest) (*endpointv1.StatusResponse, error) {
	a := s.a
	resp := &endpointv1.StatusResponse{
		Ready:             a.Ready(),
		NodeName:          a.cfg.NodeName,
		PodCidr:           a.PodCIDRs(),
		Version:           a.cfg.Version,
		BpfRoot:           a.cfg.BPFRoot,
		AppliedGeneration: a.AppliedGeneration(),
	}
	if resp.Ready {
		resp.Message = "datapath loaded, endpoints restored"
	} else {
		resp.Message = "not ready"
	}
	return resp, nil
}

func (e *Endpoint) proto() *endpointv1.Endpoint {
	return &endpointv1.Endpoint{
		ContainerId: e.ContainerID, Ifname: e.Ifname, Netns: e.Netns,
		PodNamespace: e.PodNamespace, PodName: e.PodName,
		HostIfname: e.HostIfname, HostIfindex: e.HostIfindex,
		Ipv4: addrString(e.IPv4), Ipv6: addrString(e.IPv6), Mac: e.MAC,
		Id: e.ID, Identity: e.Identity,
	}
}
