package observer

import flowpb "github.com/cilium/cilium/api/v1/flow"

// translatedService is the Service of a datapath record's ServiceID, one
// shared value per Service (flows are never modified after decoding).
func (d *Decoder) translatedService(id uint32) *flowpb.Service {
	if id == 0 || d.serviceByID == nil {
		return nil
	}
	ns, name, ok := d.serviceByID(id)
	if !ok {
		return nil
	}
	if s := d.svcByID[id]; s != nil && s.Namespace == ns && s.Name == name {
		return s
	}
	if d.svcByID == nil {
		d.svcByID = map[uint32]*flowpb.Service{}
	}
	s := &flowpb.Service{Namespace: ns, Name: name}
	d.svcByID[id] = s
	return s
}
