package cli

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/observer/conndelta"
)

// FuzzConnectionExtension feeds arbitrary Struct bytes, as a server could
// send them in a flow's extensions, to the printer and to conndelta: bad
// values (negative, NaN, huge, strings) must neither crash nor hang.
func FuzzConnectionExtension(f *testing.F) {
	good, _ := proto.Marshal(&structpb.Struct{Fields: map[string]*structpb.Value{
		contract.ExtConnection: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			contract.ExtConnPacketsSent: structpb.NewNumberValue(3), contract.ExtConnBytesSent: structpb.NewNumberValue(1e300),
			contract.ExtConnBytesReceived: structpb.NewNumberValue(-5), contract.ExtConnHandshakeNS: structpb.NewStringValue("x"),
		}}),
	}})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x08})
	f.Fuzz(func(t *testing.T, b []byte) {
		fl := &flowpb.Flow{
			IP:         &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2"},
			L4:         &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 1, DestinationPort: 2}}},
			Extensions: &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Struct", Value: b},
		}
		_ = connectionSummary(fl)
		tr := conndelta.New()
		tr.Add(fl)
		tr.Add(fl)
	})
}
