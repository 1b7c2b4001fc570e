package observer

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// encodedResponse is a GetFlowsResponse already in its wire form
// (flowwire), in a buffer of gRPC's pool that gRPC frees once sent.
type encodedResponse struct{ buf mem.BufferSlice }

// wireCodec is gRPC's proto codec, except that it sends an
// encodedResponse's bytes as they are: a follower writes each flow with
// flowwire instead of the generic marshaller.
type wireCodec struct{ encoding.CodecV2 }

var serverCodec = wireCodec{encoding.GetCodecV2(protoenc.Name)}

// serverCodecOption installs wireCodec on a server whose Observer service
// then sends encodedResponses (see Observer.register).
func serverCodecOption() grpc.ServerOption { return grpc.ForceServerCodecV2(serverCodec) }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*encodedResponse); ok {
		buf := r.buf
		r.buf = nil // gRPC frees it once written
		return buf, nil
	}
	return c.CodecV2.Marshal(v)
}

// newEncodedResponse copies b, which the caller reuses, into a pooled
// buffer.
func newEncodedResponse(b []byte) *encodedResponse {
	pool := mem.DefaultBufferPool()
	buf := pool.Get(len(b))
	copy(*buf, b)
	return &encodedResponse{buf: mem.BufferSlice{mem.NewBuffer(buf, pool)}}
}
