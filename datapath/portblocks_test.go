package datapath

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// minBlocks is the fewest aligned blocks that partition first..last, by
// dynamic programming over every partition: an oracle that shares nothing
// with PortBlocks' greedy choice.
func minBlocks(first, last uint16) int {
	n := int(last) - int(first) + 1
	f := make([]int, n+1) // f[i]: blocks for first+i .. last
	for i := n - 1; i >= 0; i-- {
		x := int(first) + i
		f[i] = -1
		for w := 0; w < 16 && x%(1<<w) == 0; w++ {
			if x+1<<w-1 > int(last) {
				break
			}
			if c := f[i+1<<w] + 1; f[i] < 0 || c < f[i] {
				f[i] = c
			}
		}
	}
	return f[0]
}

// checkPortBlocks: the blocks are valid policy keys, cover first..last in
// order without gap or overlap, and are as few as possible.
func checkPortBlocks(t *testing.T, first, last uint16) {
	t.Helper()
	bs := PortBlocks(first, last)
	if first == 0 || first > last {
		if bs != nil {
			t.Fatalf("PortBlocks(%d, %d) = %v, want nil", first, last, bs)
		}
		return
	}
	next := int(first)
	for _, b := range bs {
		k := PolicyKey{Port: b.Port, PortWildBits: b.WildBits, Proto: 6}
		if err := k.Validate(); err != nil {
			t.Fatalf("PortBlocks(%d, %d): %v", first, last, err)
		}
		if int(b.Port) != next {
			t.Fatalf("PortBlocks(%d, %d) = %v: block %v does not start at %d", first, last, bs, b, next)
		}
		next = int(k.EndPort()) + 1
	}
	if next != int(last)+1 {
		t.Fatalf("PortBlocks(%d, %d) = %v: ends at %d", first, last, bs, next-1)
	}
	if want := minBlocks(first, last); len(bs) != want {
		t.Fatalf("PortBlocks(%d, %d): %d blocks, %d suffice", first, last, len(bs), want)
	}
}

func TestPortBlocks(t *testing.T) {
	for _, tc := range []struct {
		first, last uint16
		want        []PortBlock
	}{
		{80, 80, []PortBlock{{80, 0}}},
		{1000, 65535, []PortBlock{{1000, 3}, {1008, 4}, {1024, 10}, {2048, 11}, {4096, 12}, {8192, 13}, {16384, 14}, {32768, 15}}},
		{1, 65535, []PortBlock{{1, 0}, {2, 1}, {4, 2}, {8, 3}, {16, 4}, {32, 5}, {64, 6}, {128, 7}, {256, 8}, {512, 9},
			{1024, 10}, {2048, 11}, {4096, 12}, {8192, 13}, {16384, 14}, {32768, 15}}},
		{8080, 8100, []PortBlock{{8080, 4}, {8096, 2}, {8100, 0}}},
		{65535, 65535, []PortBlock{{65535, 0}}},
		{0, 100, nil},
		{200, 100, nil},
	} {
		if got := PortBlocks(tc.first, tc.last); !slices.Equal(got, tc.want) {
			t.Errorf("PortBlocks(%d, %d) = %v, want %v", tc.first, tc.last, got, tc.want)
		}
		checkPortBlocks(t, tc.first, tc.last)
	}
	// The worst case: 15 blocks up to 32767, 15 down from 65534.
	if n := len(PortBlocks(1, 65534)); n != 30 {
		t.Errorf("1-65534: %d blocks, want 30", n)
	}
	// Edges around every power of two, and random ranges.
	var edges []uint16
	for w := 0; w < 16; w++ {
		p := 1 << w
		edges = append(edges, uint16(p-1), uint16(p), uint16(p+1))
	}
	edges = append(edges, 65534, 65535)
	for _, a := range edges {
		for _, b := range edges {
			if int(b)-int(a) < 4096 { // keep the oracle cheap
				checkPortBlocks(t, a, b)
			}
		}
	}
	r := rand.New(rand.NewPCG(15, 15))
	for range 100 {
		a, b := uint16(r.IntN(65536)), uint16(r.IntN(65536))
		checkPortBlocks(t, min(a, b), max(a, b))
	}
}

func FuzzPortBlocks(f *testing.F) {
	f.Add(uint16(1000), uint16(65535))
	f.Add(uint16(1), uint16(65535))
	f.Add(uint16(0), uint16(0))
	f.Add(uint16(32767), uint16(32768))
	f.Fuzz(func(t *testing.T, first, last uint16) { checkPortBlocks(t, first, last) })
}

// Every key the map can hold survives the trip through the LPM encoding,
// and nothing else is accepted.
func TestPolicyKeyEncoding(t *testing.T) {
	for _, k := range []PolicyKey{
		{EndpointID: 1, PeerIdentity: 2, Direction: 1},
		{EndpointID: 1, PeerIdentity: 2, Proto: 17, Direction: 2},
		{EndpointID: 1, Proto: 6, Port: 65535},
	} {
		rk, err := k.raw()
		if err != nil || policyKeyFrom(rk) != k {
			t.Errorf("%+v: %+v %v -> %+v", k, rk, err, policyKeyFrom(rk))
		}
	}
	for w := uint8(0); w < 16; w++ {
		for p := 1 << w; p < 1<<16; p += 1 << w {
			k := PolicyKey{EndpointID: 9, PeerIdentity: 300, Port: uint16(p), PortWildBits: w, Proto: 6, Direction: 1}
			rk, err := k.raw()
			if err != nil {
				t.Fatalf("%+v: %v", k, err)
			}
			if rk.Prefixlen != policyPrefixFull-uint32(w) || policyKeyFrom(rk) != k {
				t.Fatalf("%+v: prefix %d, back %+v", k, rk.Prefixlen, policyKeyFrom(rk))
			}
		}
	}
	for _, k := range []PolicyKey{
		{Port: 80},                              // a port without a protocol
		{PortWildBits: 2, Proto: 6},             // a block at 0
		{Port: 1002, PortWildBits: 2, Proto: 6}, // not aligned
		{Port: 32768, PortWildBits: 16, Proto: 6},
	} {
		if _, err := k.raw(); err == nil {
			t.Errorf("%+v accepted", k)
		}
	}
}
