package clusterdns

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/loupe-project/loupe/service"
)

// Services is the zone of a cluster's Services:
//
//	<svc>.<ns>.svc.<domain>.   A / AAAA of the Service's ClusterIPs
//	anything else              NXDOMAIN
//
// A headless or ExternalName Service exists but has no ClusterIP: its name
// answers NOERROR with no address.
type Services struct {
	zone   string // ".svc.<domain>."
	lister corelisters.ServiceLister
}

// NewServices serves domain (e.g. "cluster.local") from lister.
func NewServices(domain string, lister corelisters.ServiceLister) (*Services, error) {
	d := strings.Trim(strings.ToLower(domain), ".")
	if errs := validation.IsDNS1123Subdomain(d); len(errs) > 0 {
		return nil, fmt.Errorf("cluster domain %q: %s", domain, strings.Join(errs, "; "))
	}
	return &Services{zone: ".svc." + d + ".", lister: lister}, nil
}

// Lookup implements Zone.
func (s *Services) Lookup(name string) ([]netip.Addr, dnsmessage.RCode, bool) {
	svc, ns, ok := ObjectName(name, s.zone)
	if !ok {
		return nil, dnsmessage.RCodeNameError, true
	}
	o, err := s.lister.Services(ns).Get(svc)
	if err != nil {
		return nil, dnsmessage.RCodeNameError, true
	}
	return service.ClusterIPs(o), dnsmessage.RCodeSuccess, true
}

// WatchServices starts an informer on the cluster's Services (list and
// watch, nothing else) and returns its lister once the first list is in.
func WatchServices(ctx context.Context, client kubernetes.Interface) (corelisters.ServiceLister, error) {
	f := informers.NewSharedInformerFactory(client, 0)
	inf := f.Core().V1().Services()
	lister := inf.Lister()
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("dns: %v informer did not sync", typ)
		}
	}
	return lister, nil
}
