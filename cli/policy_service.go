package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/loupe-project/loupe/policy"
	"github.com/loupe-project/loupe/service"
)

// serviceBackend is one ready backend of a Service port and its decision.
type serviceBackend struct {
	Backend string `json:"backend"` // NAMESPACE/POD, or the address of a backend that is no pod
	IP      string `json:"ip"`
	Port    int    `json:"port"` // the backend's (target) port
	policy.Decision
}

// serviceDecision is explain's answer for --to svc/NS/NAME: allowed only
// if every ready backend is, as the datapath judges the backend a
// connection is translated to.
type serviceDecision struct {
	Allowed  bool             `json:"allowed"`
	Backends []serviceBackend `json:"backends"`
}

// explainService judges src to every ready backend of Service port port/p
// of "svc/NS/NAME".
func explainService(m *policy.Model, src policy.Endpoint, to string, port int, p policy.Proto) (serviceDecision, error) {
	ns, name, ok := strings.Cut(strings.TrimPrefix(to, "svc/"), "/")
	if !ok || ns == "" || name == "" {
		return serviceDecision{}, fmt.Errorf("--to %q: want svc/NAMESPACE/NAME", to)
	}
	found, portFound := false, false
	out := serviceDecision{Backends: []serviceBackend{}}
	for _, f := range service.Frontends(m.Snapshot) {
		if f.Namespace != ns || f.Name != name {
			continue
		}
		found = true
		if int(f.Frontend.Port) != port || f.Frontend.Proto != uint8(p) || f.Frontend.Addr.Is4() != src.IP.Is4() {
			continue
		}
		portFound = true
		for _, b := range f.Backends {
			if b.Terminating {
				continue // gets no new connection
			}
			dst := m.AddrEndpoint(b.Addr)
			d := m.Allowed(src, dst, b.Port, p)
			out.Backends = append(out.Backends, serviceBackend{Backend: dst.String(), IP: b.Addr.String(), Port: int(b.Port), Decision: d})
		}
	}
	switch {
	case !found:
		return out, fmt.Errorf("--to: service %s/%s not found (or headless, or ExternalName)", ns, name)
	case !portFound:
		return out, fmt.Errorf("--to: service %s/%s has no %s port %d", ns, name, p, port)
	}
	out.Allowed = len(out.Backends) > 0
	for _, b := range out.Backends {
		out.Allowed = out.Allowed && b.Allowed
	}
	return out, nil
}

func writeServiceDecision(w io.Writer, src policy.Endpoint, to string, port int, p policy.Proto, d serviceDecision) {
	verdict := func(ok bool) string {
		if ok {
			return "ALLOWED"
		}
		return "DENIED"
	}
	fmt.Fprintf(w, "%s -> %s %d/%s: %s\n", src, to, port, p, verdict(d.Allowed))
	if len(d.Backends) == 0 {
		fmt.Fprintf(w, "  no ready backend: the connection is refused\n")
	}
	for _, b := range d.Backends {
		why := ""
		switch {
		case !b.Egress.Allowed:
			why = " (egress of " + src.String() + " denies it)"
		case !b.Ingress.Allowed:
			why = " (ingress of " + b.Backend + " denies it)"
		}
		fmt.Fprintf(w, "  backend %s (%s:%d): %s%s\n", b.Backend, b.IP, b.Port, verdict(b.Allowed), why)
	}
}

// serviceConns keeps the connections that went to a backend of Service
// port port of "svc/NS/NAME" (verify --to): through the Service they reach
// the backend's address and target port, as the datapath translated them.
func serviceConns(m *policy.Model, to string, port int, conns []policy.ConnCount) ([]policy.ConnCount, error) {
	ns, name, ok := strings.Cut(strings.TrimPrefix(to, "svc/"), "/")
	if !ok || ns == "" || name == "" || !strings.HasPrefix(to, "svc/") {
		return nil, fmt.Errorf("--to %q: want svc/NAMESPACE/NAME", to)
	}
	want := map[policy.Conn]bool{}
	found := false
	for _, f := range service.Frontends(m.Snapshot) {
		if f.Namespace != ns || f.Name != name || int(f.Frontend.Port) != port {
			continue
		}
		found = true
		for _, b := range f.Backends {
			want[policy.Conn{Dst: b.Addr, Port: b.Port, Proto: policy.Proto(f.Frontend.Proto)}] = true
		}
	}
	if !found {
		return nil, fmt.Errorf("--to: service %s/%s has no port %d", ns, name, port)
	}
	var out []policy.ConnCount
	for _, c := range conns {
		if want[policy.Conn{Dst: c.Dst.Unmap(), Port: c.Port, Proto: c.Proto}] {
			out = append(out, c)
		}
	}
	return out, nil
}
