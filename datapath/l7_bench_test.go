package datapath

import (
	"bytes"
	"testing"
)

// benchL7Hook measures, in the kernel, an established TCP packet from the
// pod with the L7 hook compiled in (mode) or out (0): what --l7 costs
// packets that are neither DNS nor HTTP.
func benchL7Hook(b *testing.B, mode uint8, payload int) {
	requireRoot(b)
	d := newTestDatapath(b, Config{L7: mode})
	withEndpoint(b, d, EndpointInfo{})
	p := benchTCP
	p.payload = payload
	data := withPayload(p, bytes.Repeat([]byte{'x'}, payload))
	run(b, d.objs.LoupeFromPod, data)
	drainEvents(b, d)
	benchProg(b, d.objs.LoupeFromPod, data)
}

func BenchmarkL7HookOnBulk(b *testing.B)  { benchL7Hook(b, L7DNS|L7HTTP, 1400) }
func BenchmarkL7HookOffBulk(b *testing.B) { benchL7Hook(b, 0, 1400) }
func BenchmarkL7HookOnRR(b *testing.B)    { benchL7Hook(b, L7DNS|L7HTTP, 1) }
func BenchmarkL7HookOffRR(b *testing.B)   { benchL7Hook(b, 0, 1) }
