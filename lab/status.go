package lab

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Status is the stable JSON form of `loupe lab status -o json`.
type Status struct {
	Nodes []NodeStatus `json:"nodes"`
	Pods  []PodStatus  `json:"pods"`
	// Services are the lab's Services with their ClusterIPs (ServiceCIDR).
	Services     []ServiceStatus `json:"services"`
	RelayAddress string          `json:"relayAddress"`
	UIURL        string          `json:"uiURL"`
}

// NodeStatus is one node in Status.
type NodeStatus struct {
	Name            string `json:"name"`
	Address         string `json:"address"`
	PodCIDR         string `json:"podCIDR"`
	ObserverAddress string `json:"observerAddress"`
	MetricsAddress  string `json:"metricsAddress"` // the agent's /metrics (Prometheus)
	Healthy         bool   `json:"healthy"`
	// FlowBufferSize is the flow ring size the agent reports; when it
	// cannot be asked, the size it was started with.
	FlowBufferSize int `json:"flowBufferSize"`
}

// PodStatus is one pod in Status.
type PodStatus struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Node      string            `json:"node"`
	IP        string            `json:"ip"`
	Labels    map[string]string `json:"labels"`
	Ports     []PortStatus      `json:"ports"`
}

// PortStatus is a declared container port.
type PortStatus struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	Name     string `json:"name,omitempty"`
}

// Status collects the lab's nodes (asking each agent whether it is ready) and pods.
func (l *Lab) Status(ctx context.Context) (*Status, error) {
	st := &Status{Nodes: []NodeStatus{}, Pods: []PodStatus{}, Services: []ServiceStatus{}, RelayAddress: l.RelayAddress, UIURL: l.UIURL}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range l.Nodes {
		ns := NodeStatus{Name: n.Name, Address: n.IP, PodCIDR: n.PodCIDR, ObserverAddress: n.ObserverAddress(), MetricsAddress: n.MetricsAddress()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if l.agentPID(n) != 0 {
				if s, err := l.agentStatus(cctx, n); err == nil && s.GetReady() {
					ns.Healthy = true
				}
			}
			ns.FlowBufferSize = l.configuredFlowBufferSize()
			if size, err := l.flowBufferSize(cctx, n); err == nil && ns.Healthy {
				ns.FlowBufferSize = size
			}
			mu.Lock()
			st.Nodes = append(st.Nodes, ns)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(st.Nodes, func(i, j int) bool { return nodeNum(st.Nodes[i].Name) < nodeNum(st.Nodes[j].Name) })
	stored, err := l.storedObjects()
	if err != nil {
		return nil, err
	}
	for _, p := range storedPods(stored) {
		ps := PodStatus{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, IP: p.Status.PodIP,
			Labels: map[string]string{}, Ports: []PortStatus{}}
		for k, v := range p.Labels {
			ps.Labels[k] = v
		}
		specs, _ := parsePorts(strings.Join(podPorts(p), ","))
		for _, s := range specs {
			ps.Ports = append(ps.Ports, PortStatus{Port: s.Port, Protocol: s.Proto, Name: s.Name})
		}
		st.Pods = append(st.Pods, ps)
	}
	st.Services = serviceStatuses(stored)
	return st, nil
}

func nodeNum(name string) int {
	i := strings.LastIndex(name, "-node")
	if i < 0 {
		return 0
	}
	n, _ := strconv.Atoi(name[i+5:])
	return n
}

// printStatus writes the human form of Status.
func printStatus(w interface{ Write([]byte) (int, error) }, l *Lab, st *Status) {
	fmt.Fprintf(w, "lab %s (%s), underlay %s\n\n", l.Name, l.Dir, l.Underlay())
	fmt.Fprintf(w, "%-16s %-15s %-16s %-21s %-21s %s\n", "NODE", "ADDRESS", "POD CIDR", "OBSERVER", "METRICS", "HEALTHY")
	for _, n := range st.Nodes {
		fmt.Fprintf(w, "%-16s %-15s %-16s %-21s %-21s %v\n", n.Name, n.Address, n.PodCIDR, n.ObserverAddress, n.MetricsAddress, n.Healthy)
	}
	fmt.Fprintf(w, "\n%-24s %-16s %-15s %-30s %s\n", "POD", "NODE", "IP", "PORTS", "LABELS")
	for _, p := range st.Pods {
		var ports []string
		for _, pt := range p.Ports {
			ports = append(ports, portSpec{pt.Port, pt.Protocol, pt.Name}.String())
		}
		var labels []string
		for k, v := range p.Labels {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		fmt.Fprintf(w, "%-24s %-16s %-15s %-30s %s\n", p.Namespace+"/"+p.Name, p.Node, p.IP, strings.Join(ports, ","), strings.Join(labels, ","))
	}
	if st.RelayAddress != "" {
		fmt.Fprintf(w, "\nrelay: %s\n", st.RelayAddress)
	}
	if st.UIURL != "" {
		fmt.Fprintf(w, "ui:    %s\n", st.UIURL)
	}
}
