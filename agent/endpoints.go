package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/loupe-project/loupe/agent/internal/atomicfile"
	"github.com/loupe-project/loupe/agent/ipam"
)

// endpointsStateVersion is the layout version of <state-dir>/endpoints.json.
const endpointsStateVersion = 1

const maxEndpointsStateSize = 64 << 20

// Endpoint is one registered pod attachment, as the agent persists it.
type Endpoint struct {
	ContainerID  string     `json:"containerID"`
	Ifname       string     `json:"ifname"`
	Netns        string     `json:"netns,omitempty"`
	PodNamespace string     `json:"podNamespace,omitempty"`
	PodName      string     `json:"podName,omitempty"`
	HostIfname   string     `json:"hostIfname"`
	HostIfindex  uint32     `json:"hostIfindex"`
	IPv4         netip.Addr `json:"ipv4,omitzero"`
	IPv6         netip.Addr `json:"ipv6,omitzero"`
	MAC          string     `json:"mac,omitempty"`
	// HostMAC is the host veth's, read by the agent (hostLinkMAC): with MAC
	// it lets the datapath deliver local pods' packets straight into this one.
	HostMAC  string `json:"hostMac,omitempty"`
	ID       uint32 `json:"id"`
	Identity uint32 `json:"identity"`
	// Policy enforcement, set by the policy engine (SetEndpointPolicy).
	PolicyIngress bool `json:"policyIngress,omitempty"`
	PolicyEgress  bool `json:"policyEgress,omitempty"`
}

func (e *Endpoint) key() ipam.Key { return ipam.Key{ContainerID: e.ContainerID, Ifname: e.Ifname} }

// info is the datapath's view of the endpoint.
func (e *Endpoint) info() EndpointInfo {
	return EndpointInfo{ID: e.ID, Identity: e.Identity, IPv4: e.IPv4, IPv6: e.IPv6,
		PolicyIngress: e.PolicyIngress, PolicyEgress: e.PolicyEgress,
		PodMAC: ethernetMAC(e.MAC), HostMAC: ethernetMAC(e.HostMAC)}
}

// ethernetMAC is s as a 6-byte MAC, or zero (no local delivery) when s is
// empty or another kind of hardware address.
func ethernetMAC(s string) [6]byte {
	var out [6]byte
	if m, err := net.ParseMAC(s); err == nil && len(m) == len(out) {
		copy(out[:], m)
	}
	return out
}

// macString is ethernetMAC's inverse: "" for zero.
func macString(m [6]byte) string {
	if m == [6]byte{} {
		return ""
	}
	return net.HardwareAddr(m[:]).String()
}

// hostLinkMAC is Config.HostLinkMAC, "" without one.
func (a *Agent) hostLinkMAC(ifindex uint32) string {
	if a.cfg.HostLinkMAC == nil {
		return ""
	}
	return a.cfg.HostLinkMAC(ifindex)
}

// endpointsState is the on-disk form of the endpoint table.
type endpointsState struct {
	Version   int        `json:"version"`
	NextID    uint32     `json:"nextID"`
	Endpoints []Endpoint `json:"endpoints"`
}

// parseEndpointsState decodes and validates <state-dir>/endpoints.json. It
// rejects anything that would put two endpoints on one map key or one id.
func parseEndpointsState(b []byte) (*endpointsState, error) {
	if len(b) > maxEndpointsStateSize {
		return nil, fmt.Errorf("state file larger than %d bytes", maxEndpointsStateSize)
	}
	var st endpointsState
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode: trailing data after the state object")
	}
	if st.Version != endpointsStateVersion {
		return nil, fmt.Errorf("unsupported version %d (want %d)", st.Version, endpointsStateVersion)
	}
	keys := map[ipam.Key]bool{}
	ids := map[uint32]bool{}
	ifindexes := map[uint32]bool{}
	for i := range st.Endpoints {
		e := &st.Endpoints[i]
		if err := validateEndpoint(e); err != nil {
			return nil, fmt.Errorf("endpoint %d: %w", i, err)
		}
		if e.ID == 0 || e.ID > maxEndpointID {
			return nil, fmt.Errorf("endpoint %d: id %d out of range", i, e.ID)
		}
		if keys[e.key()] || ids[e.ID] || ifindexes[e.HostIfindex] {
			return nil, fmt.Errorf("endpoint %d: duplicate key, id or host ifindex", i)
		}
		keys[e.key()], ids[e.ID], ifindexes[e.HostIfindex] = true, true, true
	}
	return &st, nil
}

// marshal encodes the state deterministically (endpoints sorted by id).
func (st *endpointsState) marshal() ([]byte, error) {
	cp := *st
	cp.Endpoints = slices.Clone(st.Endpoints)
	slices.SortFunc(cp.Endpoints, func(x, y Endpoint) int { return int(x.ID) - int(y.ID) })
	if cp.Endpoints == nil {
		cp.Endpoints = []Endpoint{}
	}
	b, err := json.MarshalIndent(&cp, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func writeEndpointsState(path string, st *endpointsState) error {
	b, err := st.marshal()
	if err != nil {
		return fmt.Errorf("encode endpoints: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("write endpoints: %w", err)
	}
	return nil
}

// FieldError names the request field that failed validation.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// validateEndpoint checks the fields every stored or registered endpoint
// must have. The id and identity are the agent's, not checked here.
func validateEndpoint(e *Endpoint) error {
	if err := validateContainerID(e.ContainerID); err != nil {
		return err
	}
	if err := validateIfname("ifname", e.Ifname); err != nil {
		return err
	}
	if err := validateIfname("host_ifname", e.HostIfname); err != nil {
		return err
	}
	if e.HostIfindex == 0 || e.HostIfindex > 1<<31-1 {
		return &FieldError{"host_ifindex", "must be a positive interface index"}
	}
	if !e.IPv4.IsValid() && !e.IPv6.IsValid() {
		return &FieldError{"ipv4", "an endpoint needs an ipv4 or an ipv6 address"}
	}
	if e.IPv4.IsValid() && !e.IPv4.Is4() {
		return &FieldError{"ipv4", fmt.Sprintf("%s is not an IPv4 address", e.IPv4)}
	}
	if e.IPv6.IsValid() && (!e.IPv6.Is6() || e.IPv6.Is4In6() || e.IPv6.Zone() != "") {
		return &FieldError{"ipv6", fmt.Sprintf("%s is not a global IPv6 address", e.IPv6)}
	}
	if e.MAC != "" {
		if _, err := net.ParseMAC(e.MAC); err != nil {
			return &FieldError{"mac", fmt.Sprintf("%q is not a MAC address", e.MAC)}
		}
	}
	if e.HostMAC != "" {
		if _, err := net.ParseMAC(e.HostMAC); err != nil {
			return &FieldError{"hostMac", fmt.Sprintf("%q is not a MAC address", e.HostMAC)}
		}
	}
	return nil
}

// validateContainerID applies the CNI spec's rule: non-empty, alphanumeric
// first, then alphanumerics, '_', '.', '-'.
func validateContainerID(id string) error {
	if id == "" {
		return &FieldError{"container_id", "required"}
	}
	if len(id) > 1024 {
		return &FieldError{"container_id", "longer than 1024 bytes"}
	}
	for i, c := range []byte(id) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return &FieldError{"container_id", fmt.Sprintf("%q: only alphanumerics, '_', '.' and '-' (not first) are allowed", id)}
		}
	}
	return nil
}

// validateIfname applies Linux's rule for interface names.
func validateIfname(field, name string) error {
	if name == "" {
		return &FieldError{field, "required"}
	}
	if len(name) > 15 {
		return &FieldError{field, fmt.Sprintf("%q longer than 15 bytes", name)}
	}
	if name == "." || name == ".." {
		return &FieldError{field, fmt.Sprintf("%q is not an interface name", name)}
	}
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return &FieldError{field, fmt.Sprintf("%q contains '/', ':', a space or a control character", name)}
		}
	}
	return nil
}
