package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Kind says what a record's bytes hold.
type Kind uint8

const (
	// KindFlow is a flow.Flow.
	KindFlow Kind = 1
	// KindLost is a flow.LostEvent.
	KindLost Kind = 2
)

// Record is one stored flow or lost event.
type Record struct {
	Kind Kind
	// Run identifies the agent run that wrote the record, Seq its position
	// in that run's flow ring: together they tell a reader where the ring
	// takes over.
	Run  uint64
	Seq  uint64
	Time int64 // unix ns
	// Data is the message's protobuf wire bytes. In Scan, it is valid only
	// during the callback.
	Data []byte
}

const (
	segMagic   = "LOUPEH1\n"
	blockMagic = 0x4b4c4250
	headerSize = 48
	flagZstd   = 1
	flagS2     = 2
	// fastRate is the rate (records per second of a block's time span)
	// above which a block is compressed with S2 rather than zstd: about
	// five times cheaper in CPU for twice the bytes, so a node under a
	// flood of flows keeps up, and a quiet one keeps the smaller history.
	fastRate = 2000
	// MaxBlockRaw bounds a block's uncompressed size, and so the memory a
	// reader needs for a corrupt or hostile length.
	MaxBlockRaw = 32 << 20
	// maxBlockRecords bounds the records a writer puts in one block.
	maxBlockRecords = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is a block's fixed part.
type header struct {
	payloadLen, rawLen, count, flags uint32
	minT, maxT                       int64
	run                              uint64
}

func (h *header) put(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], blockMagic)
	binary.LittleEndian.PutUint32(b[8:], h.payloadLen)
	binary.LittleEndian.PutUint32(b[12:], h.rawLen)
	binary.LittleEndian.PutUint32(b[16:], h.count)
	binary.LittleEndian.PutUint32(b[20:], h.flags)
	binary.LittleEndian.PutUint64(b[24:], uint64(h.minT))
	binary.LittleEndian.PutUint64(b[32:], uint64(h.maxT))
	binary.LittleEndian.PutUint64(b[40:], h.run)
}

var errCorrupt = errors.New("corrupt block")

// parseHeader checks the parts of a header that need no payload.
func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize || binary.LittleEndian.Uint32(b) != blockMagic {
		return header{}, fmt.Errorf("%w: bad magic", errCorrupt)
	}
	h := header{
		payloadLen: binary.LittleEndian.Uint32(b[8:]),
		rawLen:     binary.LittleEndian.Uint32(b[12:]),
		count:      binary.LittleEndian.Uint32(b[16:]),
		flags:      binary.LittleEndian.Uint32(b[20:]),
		minT:       int64(binary.LittleEndian.Uint64(b[24:])),
		maxT:       int64(binary.LittleEndian.Uint64(b[32:])),
		run:        binary.LittleEndian.Uint64(b[40:]),
	}
	switch {
	case h.rawLen > MaxBlockRaw || h.payloadLen > MaxBlockRaw:
		return header{}, fmt.Errorf("%w: block of %d bytes", errCorrupt, max(h.rawLen, h.payloadLen))
	case h.flags&^(flagZstd|flagS2) != 0 || h.flags == flagZstd|flagS2:
		return header{}, fmt.Errorf("%w: unknown flags %#x", errCorrupt, h.flags)
	case h.maxT < h.minT:
		return header{}, fmt.Errorf("%w: time span ends before it starts", errCorrupt)
	case h.count == 0 || h.count > maxBlockRecords:
		return header{}, fmt.Errorf("%w: %d records", errCorrupt, h.count)
	}
	return h, nil
}

func blockCRC(hdr, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[8:headerSize])
	return crc32.Update(c, castagnoli, payload)
}

// One encoder and decoder for the process: both are safe for concurrent
// EncodeAll/DecodeAll and keep their own pools.
var (
	codecOnce sync.Once
	encoder   *zstd.Encoder
	decoder   *zstd.Decoder
)

func codecs() (*zstd.Encoder, *zstd.Decoder) {
	codecOnce.Do(func() {
		var err error
		// The fastest level: flows repeat their labels and names, so even
		// it shrinks them several times, at a few hundred MB/s per core.
		encoder, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
		if err != nil {
			panic(err) // only bad options fail
		}
		decoder, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(MaxBlockRaw), zstd.WithDecoderMaxWindow(MaxBlockRaw))
		if err != nil {
			panic(err)
		}
	})
	return encoder, decoder
}

// encode lays out recs as one block: header and compressed payload,
// appended to dst.
func encodeBlock(dst []byte, run uint64, recs []Record, scratch []byte) (out, raw []byte, err error) {
	if len(recs) == 0 || len(recs) > maxBlockRecords {
		return dst, scratch, fmt.Errorf("history: %d records in a block", len(recs))
	}
	minT, maxT := recs[0].Time, recs[0].Time
	for i := range recs {
		minT, maxT = min(minT, recs[i].Time), max(maxT, recs[i].Time)
	}
	raw = scratch[:0]
	for i := range recs {
		r := &recs[i]
		raw = append(raw, byte(r.Kind))
		raw = binary.AppendUvarint(raw, r.Seq)
		raw = binary.AppendUvarint(raw, uint64(r.Time-minT))
		raw = binary.AppendUvarint(raw, uint64(len(r.Data)))
		raw = append(raw, r.Data...)
	}
	if len(raw) > MaxBlockRaw {
		return dst, raw, fmt.Errorf("history: block of %d bytes is over %d", len(raw), MaxBlockRaw)
	}
	start := len(dst)
	dst = append(dst, make([]byte, headerSize)...)
	flags := uint32(flagZstd)
	if int64(len(recs))*(1e9/fastRate) > maxT-minT {
		flags = flagS2
		n := s2.MaxEncodedLen(len(raw))
		dst = slices.Grow(dst, n)
		dst = dst[:len(dst)+len(s2.Encode(dst[len(dst):len(dst)+n], raw))]
	} else {
		enc, _ := codecs()
		dst = enc.EncodeAll(raw, dst)
	}
	h := header{payloadLen: uint32(len(dst) - start - headerSize), rawLen: uint32(len(raw)),
		count: uint32(len(recs)), flags: flags, minT: minT, maxT: maxT, run: run}
	hb := dst[start : start+headerSize]
	h.put(hb)
	binary.LittleEndian.PutUint32(hb[4:], blockCRC(hb, dst[start+headerSize:]))
	return dst, raw, nil
}

// decodePayload checks the CRC and returns the raw records of a block
// (hdr is the 48 header bytes, payload follows), reusing buf.
func decodePayload(h header, hdr, payload, buf []byte) ([]byte, error) {
	if uint32(len(payload)) != h.payloadLen {
		return nil, fmt.Errorf("%w: short payload", errCorrupt)
	}
	if blockCRC(hdr, payload) != binary.LittleEndian.Uint32(hdr[4:]) {
		return nil, fmt.Errorf("%w: CRC mismatch", errCorrupt)
	}
	switch {
	case h.flags&flagS2 != 0:
		if n, err := s2.DecodedLen(payload); err != nil || uint32(n) != h.rawLen {
			return nil, fmt.Errorf("%w: S2 length", errCorrupt)
		}
		if cap(buf) < int(h.rawLen) {
			buf = make([]byte, h.rawLen)
		}
		raw, err := s2.Decode(buf[:cap(buf)], payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errCorrupt, err)
		}
		return raw, nil
	case h.flags&flagZstd == 0:
		if h.rawLen != h.payloadLen {
			return nil, fmt.Errorf("%w: raw length", errCorrupt)
		}
		return payload, nil
	}
	_, dec := codecs()
	if cap(buf) < int(h.rawLen) {
		buf = make([]byte, 0, h.rawLen)
	}
	raw, err := dec.DecodeAll(payload, buf[:0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	if uint32(len(raw)) != h.rawLen {
		return nil, fmt.Errorf("%w: raw length %d, header says %d", errCorrupt, len(raw), h.rawLen)
	}
	return raw, nil
}

// DecodeBlock reads one whole block as AppendEach hands it out (header
// and payload, nothing after), checks it as a segment's reader does and
// calls fn for each record in order until fn returns false. buf is reused
// for the uncompressed records (which rec.Data points into) and returned
// for the next call.
func DecodeBlock(b, buf []byte, fn func(rec *Record) bool) ([]byte, error) {
	h, err := parseHeader(b)
	if err != nil {
		return buf, err
	}
	if uint64(len(b)) != headerSize+uint64(h.payloadLen) {
		return buf, fmt.Errorf("%w: block of %d bytes, header says %d", errCorrupt, len(b), headerSize+uint64(h.payloadLen))
	}
	raw, err := decodePayload(h, b[:headerSize], b[headerSize:], buf)
	if err != nil {
		return buf, err
	}
	if h.flags&(flagS2|flagZstd) != 0 {
		buf = raw // uncompressed payloads are b itself, not buf
	}
	return buf, eachRecord(h, raw, fn)
}

// eachRecord calls fn for every record of a raw payload, in order, and
// checks that there are exactly h.count of them within the span.
func eachRecord(h header, raw []byte, fn func(*Record) bool) error {
	var r Record
	r.Run = h.run
	for n := uint32(0); n < h.count; n++ {
		if len(raw) < 1 {
			return fmt.Errorf("%w: %d of %d records", errCorrupt, n, h.count)
		}
		r.Kind = Kind(raw[0])
		if r.Kind != KindFlow && r.Kind != KindLost {
			return fmt.Errorf("%w: record kind %d", errCorrupt, r.Kind)
		}
		raw = raw[1:]
		var ok bool
		if r.Seq, raw, ok = uvarint(raw); !ok {
			return fmt.Errorf("%w: record seq", errCorrupt)
		}
		var dt, l uint64
		if dt, raw, ok = uvarint(raw); !ok || dt > uint64(h.maxT-h.minT) {
			return fmt.Errorf("%w: record time", errCorrupt)
		}
		if l, raw, ok = uvarint(raw); !ok || l > uint64(len(raw)) {
			return fmt.Errorf("%w: record length", errCorrupt)
		}
		r.Time = h.minT + int64(dt)
		r.Data = raw[:l:l]
		raw = raw[l:]
		if !fn(&r) {
			return nil
		}
	}
	if len(raw) != 0 {
		return fmt.Errorf("%w: %d bytes after the last record", errCorrupt, len(raw))
	}
	return nil
}

func uvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, b, false
	}
	return v, b[n:], true
}
