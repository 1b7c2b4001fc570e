// Package service turns Kubernetes Services and EndpointSlices into the
// datapath's ClusterIP frontends (datapath.Services) and keeps them in step
// with the metadata source, writing only what changed.
//
// One frontend is one ClusterIP, port and protocol of a Service. Its
// backends are the EndpointSlice endpoints of the same port name and
// protocol: ready endpoints get new connections, terminating ones keep the
// connections they have. A frontend keeps its id across agent restarts (it
// is read back from the pinned maps), because conntrack and the events
// carry it. ExternalName and headless Services, and SCTP ports, are not
// translated; NodePort and LoadBalancer get their ClusterIP translated
// only.
//
// EndpointSlicesFor derives the slices from pod selectors, as the
// endpoints controller does, named targetPorts included: the lab uses it in
// place of kube-controller-manager.
package service
