package lab

import (
	"context"
	"fmt"
	"golang.org/x/net/dns/dnsmessage"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// flow is one kind of request the traffic generator sends.
type flow struct {
	kind   string // http, dns, tcp, udp, closed, bypass
	src    podRecord
	dst    podRecord
	port   int
	proto  string
	weight int
}

func (f flow) label() string {
	return fmt.Sprintf("%-7s %s/%s -> %s/%s %d/%s", f.kind, f.src.Namespace, f.src.Name, f.dst.Namespace, f.dst.Name, f.port, f.proto)
}

// trafficPlan derives the requests from the pods: the demo application's
// call graph when its `app` labels are there, every declared port otherwise.
func (l *Lab) trafficPlan() ([]flow, error) {
	recs, err := l.records()
	if err != nil {
		return nil, err
	}
	stored, err := l.storedObjects()
	if err != nil {
		return nil, err
	}
	byApp := map[string][]podRecord{}
	var live []podRecord
	for _, r := range recs {
		if r.IP == "" {
			continue
		}
		live = append(live, r)
		if o, ok := stored[KindPod+" "+r.Namespace+"/"+r.Name]; ok {
			if app := o.Pod().Labels["app"]; app != "" {
				byApp[app] = append(byApp[app], r)
			}
		}
	}
	if len(live) < 2 {
		return nil, fmt.Errorf("traffic needs at least two pods; apply examples/demo.yaml first")
	}
	var plan []flow
	add := func(kind, from, to string, proto string, want func(portSpec) bool, weight int, closed int) {
		for _, s := range byApp[from] {
			for _, d := range byApp[to] {
				if closed > 0 {
					plan = append(plan, flow{kind, s, d, closed, proto, weight})
					continue
				}
				ports, _ := parsePorts(strings.Join(d.Ports, ","))
				for _, p := range ports {
					if p.Proto == proto && want(p) {
						plan = append(plan, flow{kind, s, d, p.Port, p.Proto, weight})
					}
				}
			}
		}
	}
	httpPort := isHTTPPort
	any := func(portSpec) bool { return true }
	dnsPort := func(p portSpec) bool { return p.Port == 53 }
	add("http", "frontend", "api", "TCP", httpPort, 40, 0)
	add("tcp", "api", "db", "TCP", any, 20, 0)
	add("dns", "frontend", "dns", "UDP", dnsPort, 10, 0)
	add("dns", "api", "dns", "UDP", dnsPort, 10, 0)
	add("closed", "frontend", "api", "TCP", nil, 4, 9090)
	add("closed", "api", "db", "TCP", nil, 4, 6379)
	// Would be denied once db only admits api.
	add("bypass", "frontend", "db", "TCP", any, 4, 0)
	if len(plan) > 0 {
		return plan, nil
	}
	for _, s := range live {
		for _, d := range live {
			if s.NetNS == d.NetNS {
				continue
			}
			ports, _ := parsePorts(strings.Join(d.Ports, ","))
			for _, p := range ports {
				kind := strings.ToLower(p.Proto)
				if isHTTPPort(p) {
					kind = "http"
				}
				plan = append(plan, flow{kind, s, d, p.Port, p.Proto, 10})
			}
			plan = append(plan, flow{"closed", s, d, 9999, "TCP", 1})
		}
	}
	return plan, nil
}

// Traffic sends rate requests a second for duration (0 = until ctx ends) and
// prints a summary.
func (l *Lab) Traffic(ctx context.Context, rate float64, duration time.Duration, out io.Writer) error {
	if rate <= 0 {
		return fmt.Errorf("--rate %v: want > 0", rate)
	}
	plan, err := l.trafficPlan()
	if err != nil {
		return err
	}
	total := 0
	for _, f := range plan {
		total += f.weight
	}
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	type counts struct{ ok, fail atomic.Int64 }
	stats := make([]counts, len(plan))
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		n := rand.IntN(total)
		i := 0
		for ; n >= plan[i].weight; i++ {
			n -= plan[i].weight
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // too many in flight: skip rather than queue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if sendFlow(context.WithoutCancel(ctx), plan[i]) {
				stats[i].ok.Add(1)
			} else {
				stats[i].fail.Add(1)
			}
		}()
	}
	wg.Wait()
	var lines []string
	for i, f := range plan {
		if ok, fail := stats[i].ok.Load(), stats[i].fail.Load(); ok+fail > 0 {
			lines = append(lines, fmt.Sprintf("%s  ok %d  failed %d", f.label(), ok, fail))
		}
	}
	sort.Strings(lines)
	fmt.Fprintln(out, strings.Join(lines, "\n"))
	return nil
}

// sendFlow makes one request; it reports whether it got an answer.
func sendFlow(ctx context.Context, f flow) bool {
	const timeout = time.Second
	if f.kind == "http" { // planned only for ports that serve HTTP
		return sendHTTP(ctx, f)
	}
	if f.kind != "dns" {
		return probe(ctx, f.src.netnsPath(), f.dst.IP, declaredPort(f.dst, f.port, f.proto), timeout)
	}
	conn, err := dialIn(ctx, f.src.netnsPath(), "udp4", net.JoinHostPort(f.dst.IP, strconv.Itoa(f.port)), timeout)
	if err != nil {
		return false
	}
	defer conn.Close()
	_, _, err = dnsAsk(conn, false, trafficDNSName(f.dst), dnsmessage.TypeA, time.Now().Add(timeout))
	return err == nil
}

// trafficDNSName is a lookup of the lab's zone: mostly the DNS pod's own
// name, sometimes a name that does not exist (NXDOMAIN) or that fails.
func trafficDNSName(dst podRecord) string {
	switch n := rand.IntN(10); {
	case n < 7:
		return dst.Name + "." + dst.Namespace + dnsZonePods
	case n < 9:
		return "missing-" + strconv.Itoa(rand.IntN(100)) + "." + dst.Namespace + dnsZonePods
	default:
		return "x." + dnsZoneFail
	}
}
