package observer

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/observer/flowwire"
)

// Each flow is written to its wire form once, by the ring's writer while
// the flow is still in the CPU's cache, and the history writer and every
// follower reuse the bytes: written later by each, from flows gone cold,
// it cost them several times more. The bytes live in slabs without
// pointers, which the garbage collector does not scan; a slab is freed
// once the ring has overwritten every flow in it.
const (
	wireSlabSize = 256 << 10
	// wireSlabSpare is the room a flow is expected to fit in; a larger one
	// still fits, in an array of its own.
	wireSlabSpare = 8 << 10
)

type wireWriter struct {
	enc  *flowwire.Encoder
	slab []byte
}

func newWireWriter() *wireWriter { return &wireWriter{enc: flowwire.NewEncoder()} }

// write returns f's wire form, or nil if f cannot be encoded (a string
// that is not UTF-8): readers then encode it themselves and fail as
// proto.Marshal would.
func (w *wireWriter) write(f *flowpb.Flow) []byte {
	if cap(w.slab)-len(w.slab) < wireSlabSpare {
		w.slab = make([]byte, 0, wireSlabSize)
	}
	start := len(w.slab)
	out, err := w.enc.Append(w.slab, f)
	if err != nil {
		return nil
	}
	if cap(out) != cap(w.slab) {
		// Larger than the spare room: append moved it to a new array.
		return out[start:len(out):len(out)]
	}
	w.slab = out
	return out[start:len(out):len(out)]
}
