package observer

import (
	"fmt"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// fieldMask is a parsed GetFlowsRequest.field_mask: a tree of flow fields to
// keep. Leaves copy the whole field.
type fieldMask map[protoreflect.FieldNumber]fieldMask

func newFieldMask(fm *fieldmaskpb.FieldMask) (fieldMask, error) {
	if len(fm.GetPaths()) == 0 {
		return nil, nil
	}
	root := fieldMask{}
	desc := (&flowpb.Flow{}).ProtoReflect().Descriptor()
	for _, path := range fm.GetPaths() {
		node, md := root, desc
		parts := strings.Split(path, ".")
		for i, name := range parts {
			if md == nil {
				return nil, fmt.Errorf("field_mask: %q: %q is not a message", path, parts[i-1])
			}
			fd := md.Fields().ByName(protoreflect.Name(name))
			if fd == nil {
				return nil, fmt.Errorf("field_mask: %q: no field %q in %s", path, name, md.FullName())
			}
			last := i == len(parts)-1
			child, seen := node[fd.Number()]
			switch {
			case last:
				node[fd.Number()] = nil // the whole field
			case seen && child == nil:
				// The whole field is already kept.
			default:
				if child == nil {
					child = fieldMask{}
					node[fd.Number()] = child
				}
			}
			if last || (seen && child == nil) {
				break
			}
			node = child
			md = nil
			if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
				md = fd.Message()
			}
		}
	}
	return root, nil
}

// apply copies the masked fields of src into a new flow. Sub-messages kept
// whole are shared, not cloned: flows are never modified after decoding.
func (m fieldMask) apply(src *flowpb.Flow) *flowpb.Flow {
	dst := &flowpb.Flow{}
	copyMasked(dst.ProtoReflect(), src.ProtoReflect(), m)
	return dst
}

func copyMasked(dst, src protoreflect.Message, m fieldMask) {
	fields := src.Descriptor().Fields()
	for num, child := range m {
		fd := fields.ByNumber(num)
		if !src.Has(fd) {
			continue
		}
		if child == nil {
			dst.Set(fd, src.Get(fd))
			continue
		}
		copyMasked(dst.Mutable(fd).Message(), src.Get(fd).Message(), child)
	}
}
