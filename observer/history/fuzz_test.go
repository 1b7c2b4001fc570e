package history

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzOpenSegment feeds arbitrary bytes as a segment file (torn, corrupt
// or hostile files on disk): opening and reading must return an error or
// records, never panic or allocate past MaxBlockRaw per block, and the
// store must stay writable.
func FuzzOpenSegment(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	t0 := recent()
	_ = s.Append(3, testRecs(0, 20, t0, time.Millisecond))
	_ = s.Append(3, testRecs(20, 5, t0, time.Millisecond))
	_ = s.Append(3, testRecs(25, 50, t0, time.Microsecond)) // an S2 block
	s.Close()
	good, err := os.ReadFile(s.segs[0].path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-9])
	f.Add([]byte(segMagic))
	f.Add(append([]byte(segMagic), good[8:60]...))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := memDir(t)
		if err := os.WriteFile(filepath.Join(dir, "00000000000000000001.seg"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Options{Dir: dir})
		if err != nil {
			return
		}
		defer s.Close()
		n := 0
		if err := s.Scan(context.Background(), 0, 0, func(r *Record) error {
			n++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(4, testRecs(0, 3, t0, time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		m := 0
		_ = s.Scan(context.Background(), 0, 0, func(*Record) error { m++; return nil })
		if m != n+3 {
			t.Fatalf("%d records before a write of 3, %d after", n, m)
		}
	})
}

// FuzzDecodeBlock runs the block decoder on arbitrary header and payload
// bytes.
func FuzzDecodeBlock(f *testing.F) {
	b, _, err := encodeBlock(nil, 1, testRecs(0, 4, recent(), time.Second), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		// What a relay does with a block an agent sent.
		n := 0
		if _, err := DecodeBlock(b, nil, func(*Record) bool { n++; return true }); err == nil && n == 0 {
			t.Fatal("a block of no records decoded")
		}
		h, err := parseHeader(b)
		if err != nil || len(b) < headerSize {
			return
		}
		raw, err := decodePayload(h, b[:headerSize], b[headerSize:], nil)
		if err != nil {
			return
		}
		_ = eachRecord(h, raw, func(*Record) bool { return true })
	})
}

// memDir is a temporary folder on tmpfs where there is one: the store
// syncs segments it closes, which on a busy disk takes most of a fuzz run.
func memDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "loupe-history-fuzz")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
