package bench

import (
	"errors"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// wireResp is one GetFlowsResponse as it came over the wire; the buffer is
// reused from message to message.
type wireResp struct{ b []byte }

// wireCodec is the proto codec, except that it copies a wireResp's bytes
// without decoding them.
type wireCodec struct{ encoding.CodecV2 }

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*wireResp)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	n := data.Len()
	if cap(r.b) < n {
		r.b = make([]byte, n)
	}
	r.b = r.b[:n]
	data.CopyTo(r.b)
	return nil
}

var errWire = errors.New("malformed GetFlowsResponse")

// flowTime reads a GetFlowsResponse: whether it carries a flow (field 1)
// and that flow's time (flow.Flow field 1, a Timestamp), in unix ns.
func flowTime(b []byte) (t int64, isFlow bool, err error) {
	err = eachField(b, func(num protowire.Number, v []byte) error {
		if num != 1 {
			return nil
		}
		isFlow = true
		return eachField(v, func(num protowire.Number, v []byte) error {
			if num != 1 {
				return nil
			}
			var sec, nanos int64
			for len(v) > 0 {
				n, typ, l := protowire.ConsumeTag(v)
				if l < 0 || typ != protowire.VarintType {
					return errWire
				}
				x, m := protowire.ConsumeVarint(v[l:])
				if m < 0 {
					return errWire
				}
				v = v[l+m:]
				if n == 1 {
					sec = int64(x)
				} else if n == 2 {
					nanos = int64(int32(x))
				}
			}
			t = sec*1e9 + nanos
			return nil
		})
	})
	return t, isFlow, err
}

// eachField calls f with every length-delimited field of b and skips others.
func eachField(b []byte, f func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return errWire
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if err := f(num, v); err != nil {
			return err
		}
	}
	return nil
}
