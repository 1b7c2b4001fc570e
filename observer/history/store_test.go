package history

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"
)

// testRecs makes n records from seq first, one every step from t0.
func testRecs(first, n int, t0 time.Time, step time.Duration) []Record {
	out := make([]Record, n)
	for i := range out {
		seq := first + i
		out[i] = Record{Kind: KindFlow, Seq: uint64(seq), Time: t0.Add(time.Duration(seq) * step).UnixNano(),
			Data: fmt.Appendf(nil, "flow %d with some repeated label text k8s:app=web", seq)}
	}
	return out
}

func scanAll(t *testing.T, s *Store, since, until int64) []Record {
	t.Helper()
	var out []Record
	err := s.Scan(context.Background(), since, until, func(r *Record) error {
		c := *r
		c.Data = slices.Clone(r.Data)
		out = append(out, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRoundTripAndRange(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: filepath.Join(dir, "h")})
	if err != nil {
		t.Fatal(err)
	}
	t0 := recent()
	all := testRecs(0, 1000, t0, time.Millisecond)
	for i := 0; i < len(all); i += 100 {
		if err := s.Append(7, all[i:i+100]); err != nil {
			t.Fatal(err)
		}
	}
	got := scanAll(t, s, 0, 0)
	if len(got) != len(all) {
		t.Fatalf("got %d records, want %d", len(got), len(all))
	}
	for i := range got {
		if got[i].Seq != all[i].Seq || got[i].Time != all[i].Time || string(got[i].Data) != string(all[i].Data) || got[i].Run != 7 || got[i].Kind != KindFlow {
			t.Fatalf("record %d: got %+v, want %+v", i, got[i], all[i])
		}
	}
	// An inclusive range in the middle, across block boundaries.
	got = scanAll(t, s, all[150].Time, all[349].Time)
	if len(got) != 200 || got[0].Seq != 150 || got[199].Seq != 349 {
		t.Fatalf("range: %d records, %d..%d", len(got), got[0].Seq, got[len(got)-1].Seq)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened, it has the same.
	s2, err := Open(Options{Dir: filepath.Join(dir, "h")})
	if err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, s2, 0, 0); len(got) != len(all) {
		t.Fatalf("reopened: %d records", len(got))
	}
	st, err := os.Stat(filepath.Join(dir, "h"))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v %v", st.Mode(), err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "h", "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no segments")
	}
	for _, p := range segs {
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", p, st.Mode())
		}
	}
}

// A crash tears the last block; opening cuts it and keeps every earlier one.
func TestTornTailCut(t *testing.T) {
	t0 := recent()
	for _, tc := range []struct {
		name string
		tear func(path string, size int64) error
	}{
		{"truncated mid-block", func(p string, size int64) error { return os.Truncate(p, size-7) }},
		{"truncated mid-header", func(p string, size int64) error { return os.Truncate(p, size-int64(lastBlockLen)+20) }},
		{"garbage appended", func(p string, size int64) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte("PBLK\x00\x01\x02 torn"))
			return err
		}},
		{"payload bit flip", func(p string, size int64) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			b := []byte{0}
			if _, err := f.ReadAt(b, size-3); err != nil {
				return err
			}
			b[0] ^= 0x40
			_, err = f.WriteAt(b, size-3)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if err := s.Append(1, testRecs(i*50, 50, t0, time.Millisecond)); err != nil {
					t.Fatal(err)
				}
			}
			seg := s.segs[len(s.segs)-1]
			lastBlockLen = int(seg.size - seg.blocks[len(seg.blocks)-1].off)
			size := seg.size
			path := seg.path
			s.file.Close() // as kill -9: no sync, no index kept
			if err := tc.tear(path, size); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			got := scanAll(t, s2, 0, 0)
			want := 250
			if tc.name != "garbage appended" {
				want = 200 // the torn block is gone, the others stay
			}
			if len(got) != want {
				t.Fatalf("%d records after recovery, want %d", len(got), want)
			}
			for i, r := range got {
				if r.Seq != uint64(i) {
					t.Fatalf("record %d has seq %d", i, r.Seq)
				}
			}
			// The file was cut, so the next start sees a clean end.
			if st, _ := os.Stat(path); st.Size() != s2.segs[len(s2.segs)-1].size {
				t.Fatalf("file %d bytes, index %d", st.Size(), s2.segs[len(s2.segs)-1].size)
			}
			// And it writes on, in a new segment.
			if err := s2.Append(2, testRecs(250, 10, t0, time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if got := scanAll(t, s2, 0, 0); len(got) != want+10 {
				t.Fatalf("%d records after more writes", len(got))
			}
		})
	}
}

var lastBlockLen int

func TestRetentionByAge(t *testing.T) {
	t0 := recent()
	now := t0
	s, err := Open(Options{Dir: t.TempDir(), Retention: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	// Two hours of records, one a second, in one-minute batches.
	for m := range 120 {
		now = t0.Add(time.Duration(m+1) * time.Minute)
		if err := s.Append(1, testRecs(m*60, 60, t0, time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	oldest, ok := s.Oldest()
	if !ok {
		t.Fatal("empty")
	}
	cutoff := now.Add(-time.Hour).UnixNano()
	// Whole segments go (each spans at most retention/24), so at most one
	// segment's worth older than the cutoff stays.
	if oldest > cutoff || oldest < cutoff-int64(time.Hour/24)-int64(time.Minute) {
		t.Fatalf("oldest %v, cutoff %v", time.Unix(0, oldest), time.Unix(0, cutoff))
	}
	kept := len(scanAll(t, s, 0, 0))
	n, first, last := s.Expired(0)
	if n+uint64(kept) != 120*60 {
		t.Fatalf("expired %d + kept %d != %d", n, kept, 120*60)
	}
	if first != t0.UnixNano() || last >= oldest {
		t.Fatalf("expired span %v..%v, oldest kept %v", time.Unix(0, first), time.Unix(0, last), time.Unix(0, oldest))
	}
	// A query starting after the removed span has lost nothing.
	if n, _, _ := s.Expired(oldest); n != 0 {
		t.Fatalf("expired after the oldest kept: %d", n)
	}
	// The spans survive a restart.
	s.Close()
	s2, err := Open(Options{Dir: s.opts.Dir, Retention: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if n2, _, _ := s2.Expired(0); n2 != n {
		t.Fatalf("expired after reopen %d, want %d", n2, n)
	}
}

func TestRetentionBySize(t *testing.T) {
	const limit = 1 << 20
	s, err := Open(Options{Dir: t.TempDir(), MaxBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	rng := rand.NewChaCha8([32]byte{1})
	var written uint64
	for range 400 {
		recs := make([]Record, 50)
		for j := range recs {
			// Incompressible bytes, so the bound is reached.
			data := make([]byte, 200)
			rng.Read(data)
			recs[j] = Record{Kind: KindFlow, Seq: written, Time: t0.Add(time.Duration(written)).UnixNano(), Data: data}
			written++
		}
		if err := s.Append(1, recs); err != nil {
			t.Fatal(err)
		}
		if s.Size() > limit {
			t.Fatalf("store is %d bytes, over %d", s.Size(), limit)
		}
	}
	var onDisk int64
	segs, _ := filepath.Glob(filepath.Join(s.opts.Dir, "*.seg"))
	for _, p := range segs {
		st, _ := os.Stat(p)
		onDisk += st.Size()
	}
	if onDisk != s.Size() || onDisk > limit {
		t.Fatalf("on disk %d, index %d", onDisk, s.Size())
	}
	kept := len(scanAll(t, s, 0, 0))
	n, _, _ := s.Expired(0)
	if n == 0 || n+uint64(kept) != written {
		t.Fatalf("expired %d + kept %d != written %d", n, kept, written)
	}
	// What is kept is the newest.
	got := scanAll(t, s, 0, 0)
	if got[len(got)-1].Seq != written-1 {
		t.Fatalf("newest kept %d", got[len(got)-1].Seq)
	}
}

// A block whose bytes rot after it was written is reported as lost.
func TestCorruptBlockReportedLost(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t0 := recent()
	for i := range 3 {
		if err := s.Append(1, testRecs(i*10, 10, t0, time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	seg := s.segs[0]
	f, _ := os.OpenFile(seg.path, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff, 0xff}, seg.blocks[1].off+headerSize+2)
	f.Close()
	var flows, lost int
	err = s.Scan(context.Background(), 0, 0, func(r *Record) error {
		if r.Kind == KindLost {
			var le flowpb.LostEvent
			if err := proto.Unmarshal(r.Data, &le); err != nil || le.NumEventsLost != 10 {
				t.Fatalf("lost record %v %v", &le, err)
			}
			lost++
		} else {
			flows++
		}
		return nil
	})
	if err != nil || flows != 20 || lost != 1 {
		t.Fatalf("flows %d lost %d err %v", flows, lost, err)
	}
}

func TestScanStopsOnError(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(1, testRecs(0, 100, time.Now(), time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	n := 0
	err = s.Scan(context.Background(), 0, 0, func(*Record) error {
		n++
		if n == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 5 {
		t.Fatalf("err %v after %d", err, n)
	}
}

// recent is a time within the default retention.
func recent() time.Time { return time.Now().Add(-time.Hour).Truncate(time.Second) }

// TestBlockCompressionFollowsRate: a block of records close together (a
// flood) is written with S2, a sparse one with zstd, and both read back.
func TestBlockCompressionFollowsRate(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := recent()
	dense := testRecs(0, 500, t0, 10*time.Microsecond) // 100,000 records/s
	sparse := testRecs(500, 500, t0, time.Millisecond) // 1,000 records/s
	var flags []uint32
	for _, recs := range [][]Record{dense, sparse} {
		var buf []byte
		buf, _, err := encodeBlock(buf, 1, recs, nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := parseHeader(buf)
		if err != nil {
			t.Fatal(err)
		}
		flags = append(flags, h.flags)
		if err := s.Append(1, recs); err != nil {
			t.Fatal(err)
		}
	}
	if flags[0] != flagS2 || flags[1] != flagZstd {
		t.Fatalf("block flags %v, want S2 (%d) for the dense block and zstd (%d) for the sparse one", flags, flagS2, flagZstd)
	}
	got := scanAll(t, s, 0, 0)
	if len(got) != 1000 {
		t.Fatalf("read back %d records, want 1000", len(got))
	}
	for i, r := range got {
		want := append(dense, sparse...)[i]
		if r.Seq != want.Seq || r.Time != want.Time || string(r.Data) != string(want.Data) {
			t.Fatalf("record %d: %+v, want %+v", i, r, want)
		}
	}
}
