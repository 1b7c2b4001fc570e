package otlp

import (
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// exportLogsMethod is LogsService.Export, from the OTLP descriptor.
var exportLogsMethod = func() string {
	sd := collogspb.File_opentelemetry_proto_collector_logs_v1_logs_service_proto.Services().ByName("LogsService")
	return "/" + string(sd.FullName()) + "/" + string(sd.Methods().ByName("Export").Name())
}()

// rawRequest is an ExportLogsServiceRequest already encoded by the
// exporter; rawCodec hands its bytes to gRPC as they are.
type rawRequest struct{ buf mem.Buffer }

// rawCodec sends a rawRequest's bytes without marshalling and is gRPC's
// own proto codec for everything else (the response). Its name is
// "proto", so the collector decodes the request as any other.
type rawCodec struct{}

var protoCodec = encoding.GetCodecV2(protoenc.Name)

func (rawCodec) Name() string { return protoenc.Name }

// Marshal gives gRPC a reference to the request's buffer: gRPC frees it
// once written (or once its own retries are over), and the buffer goes
// back to the exporter only when every reference is freed.
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*rawRequest); ok {
		r.buf.Ref()
		return mem.BufferSlice{r.buf}, nil
	}
	return protoCodec.Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return protoCodec.Unmarshal(data, v) }

// bufPool keeps a few batch buffers for reuse: the batcher takes one, the
// sender's last reference returns it.
type bufPool struct {
	free chan []byte
	// size is the largest batch so far, what a new buffer is made for
	// (so that it does not grow by doubling). Only the batcher uses it.
	size int
}

func newBufPool() *bufPool { return &bufPool{free: make(chan []byte, 2)} }

func (p *bufPool) get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, 0, p.size+p.size/8)
	}
}

// sized notes a batch of n bytes.
func (p *bufPool) sized(n int) { p.size = max(p.size, n) }

// sendBuf is one batch's buffer on its way to gRPC: the request bytes
// within the whole buffer, which goes back to the pool.
type sendBuf struct {
	full, req []byte
	pool      *bufPool
}

// Get and Put make sendBuf the mem.BufferPool of its own mem.Buffer.
func (s *sendBuf) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

func (s *sendBuf) Put(*[]byte) {
	select {
	case s.pool.free <- s.full[:0]:
	default: // enough spare buffers already
	}
}

// buffer wraps req for gRPC, holding one reference that release frees.
func (s *sendBuf) buffer() mem.Buffer { return mem.NewBuffer(&s.req, s) }
