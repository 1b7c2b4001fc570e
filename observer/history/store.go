package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"
)

// Defaults of the agent's --history-retention and --history-max-bytes.
const (
	DefaultRetention = 24 * time.Hour
	DefaultMaxBytes  = 1 << 30
)

const (
	segSuffix   = ".seg"
	expiredFile = "expired.json"
	maxExpired  = 1024
)

// Options configures a Store.
type Options struct {
	// Dir holds the segments; it is created with mode 0700.
	Dir string
	// Retention is how long records are kept, counted from Now to the
	// newest record of a segment; 0 means DefaultRetention.
	Retention time.Duration
	// MaxBytes bounds the segments' total size; 0 means DefaultMaxBytes.
	MaxBytes int64
	// Log defaults to a discarding logger.
	Log *slog.Logger
	// Now is the clock retention counts from; nil means time.Now. Tests
	// that compress hours of traffic into seconds set it.
	Now func() time.Time
}

// Store is an on-disk flow history: one writer (Append), any number of
// readers (Scan).
type Store struct {
	opts   Options
	log    *slog.Logger
	segMax int64
	segAge int64 // ns

	// writeMu serializes Append and Enforce; mu guards the index, which
	// readers copy.
	writeMu sync.Mutex
	file    *os.File
	wbuf    []byte
	scratch []byte

	mu      sync.Mutex
	segs    []*segment
	total   int64
	nextNum uint64
	expired []Span
	closed  bool
}

// segment is one file's index: its blocks in file order.
type segment struct {
	num        uint64
	path       string
	size       int64
	blocks     []block
	minT, maxT int64
	writing    bool
}

type block struct {
	off int64
	h   header
}

// Span is a stretch of removed history: First and Last are unix ns.
type Span struct {
	First int64  `json:"first"`
	Last  int64  `json:"last"`
	Count uint64 `json:"count"`
}

// Open opens (or creates) the store in opts.Dir and cuts a torn tail left
// by a crash at the last good block.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("history: no directory")
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	if err := os.Chmod(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	s := &Store{
		opts: opts, log: opts.Log.With("component", "history"),
		// A segment is at most an eighth of the bound, so removing whole
		// segments keeps the total within it; and it spans at most a 24th
		// of the retention, so expiry goes in small steps.
		segMax: min(max(opts.MaxBytes/8, 64<<10), 64<<20),
		segAge: max(int64(opts.Retention/24), int64(time.Second)),
	}
	s.loadExpired()
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
	ents, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	var nums []uint64
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			continue
		}
		nums = append(nums, n)
	}
	slices.Sort(nums)
	for i, n := range nums {
		path := s.segPath(n)
		seg, err := loadSegment(path, n, i == len(nums)-1)
		if err != nil {
			s.log.Warn("history segment unreadable, removed", "file", path, "error", err)
			_ = os.Remove(path)
			continue
		}
		if len(seg.blocks) == 0 {
			_ = os.Remove(path)
			continue
		}
		s.segs = append(s.segs, seg)
		s.total += seg.size
	}
	if len(nums) > 0 {
		s.nextNum = nums[len(nums)-1] + 1
	}
	return nil
}

func (s *Store) segPath(n uint64) string {
	return filepath.Join(s.opts.Dir, fmt.Sprintf("%020d%s", n, segSuffix))
}

// loadSegment indexes a segment's blocks. It stops at the first block that
// is cut short or fails its checks (full: also CRC, decompression and
// records) and truncates the file there.
func loadSegment(path string, num uint64, full bool) (*segment, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	seg := &segment{num: num, path: path, minT: math.MaxInt64, maxT: math.MinInt64}
	magic := make([]byte, len(segMagic))
	if _, err := f.ReadAt(magic, 0); err != nil || string(magic) != segMagic {
		return nil, errors.New("not a history segment")
	}
	good, err := indexBlocks(f, size, full, func(b block) {
		seg.blocks = append(seg.blocks, b)
		seg.minT, seg.maxT = min(seg.minT, b.h.minT), max(seg.maxT, b.h.maxT)
	})
	if err != nil {
		return nil, err
	}
	if good < size {
		if err := f.Truncate(good); err != nil {
			return nil, fmt.Errorf("cut torn tail: %w", err)
		}
	}
	seg.size = good
	return seg, nil
}

// indexBlocks walks the blocks of a segment from its magic to its end, and
// returns where the last good one ends.
func indexBlocks(r io.ReaderAt, size int64, full bool, add func(block)) (int64, error) {
	off := int64(len(segMagic))
	hdr := make([]byte, headerSize)
	var payload, raw []byte
	for off+headerSize <= size {
		if _, err := r.ReadAt(hdr, off); err != nil {
			return off, nil
		}
		h, err := parseHeader(hdr)
		if err != nil || off+headerSize+int64(h.payloadLen) > size {
			return off, nil
		}
		if full {
			payload = slices.Grow(payload[:0], int(h.payloadLen))[:h.payloadLen]
			if _, err := r.ReadAt(payload, off+headerSize); err != nil {
				return off, nil
			}
			raw, err = decodePayload(h, hdr, payload, raw)
			if err != nil || eachRecord(h, raw, func(*Record) bool { return true }) != nil {
				return off, nil
			}
		}
		add(block{off: off, h: h})
		off += headerSize + int64(h.payloadLen)
	}
	return off, nil
}

// Append writes recs as one block with one write, starting a new segment
// when the current one is full or long, then removes what the bounds no
// longer allow. Records must not be empty; run names the writer's run.
func (s *Store) Append(run uint64, recs []Record) error {
	return s.AppendEach(run, recs, nil)
}

// AppendEach is Append that also hands each block it wrote to written,
// header and compressed payload as in the segment (DecodeBlock reads
// them); the bytes are valid only during the call.
func (s *Store) AppendEach(run uint64, recs []Record, written func(block []byte)) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	for len(recs) > 0 {
		n := min(len(recs), maxBlockRecords)
		if err := s.appendBlock(run, recs[:n]); err != nil {
			return err
		}
		if written != nil {
			written(s.wbuf)
		}
		recs = recs[n:]
	}
	return s.enforce()
}

func (s *Store) appendBlock(run uint64, recs []Record) error {
	var err error
	s.wbuf, s.scratch, err = encodeBlock(s.wbuf[:0], run, recs, s.scratch)
	if err != nil {
		return err
	}
	h, _ := parseHeader(s.wbuf)
	s.mu.Lock()
	closed := s.closed
	cur := s.current()
	s.mu.Unlock()
	if closed {
		return errors.New("history: closed")
	}
	if cur == nil || cur.size+int64(len(s.wbuf)) > s.segMax || h.maxT-cur.minT > s.segAge {
		if cur, err = s.rotate(); err != nil {
			return err
		}
	}
	if _, err := s.file.Write(s.wbuf); err != nil {
		// Leave no half block behind for readers or the next start.
		_ = s.file.Truncate(cur.size)
		_, _ = s.file.Seek(cur.size, io.SeekStart)
		return fmt.Errorf("history: write: %w", err)
	}
	s.mu.Lock()
	cur.blocks = append(cur.blocks, block{off: cur.size, h: h})
	cur.minT, cur.maxT = min(cur.minT, h.minT), max(cur.maxT, h.maxT)
	cur.size += int64(len(s.wbuf))
	s.total += int64(len(s.wbuf))
	s.mu.Unlock()
	return nil
}

// current is the segment this run writes; s.mu held.
func (s *Store) current() *segment {
	if n := len(s.segs); n > 0 && s.segs[n-1].writing {
		return s.segs[n-1]
	}
	return nil
}

// rotate closes the segment being written and starts the next one.
func (s *Store) rotate() (*segment, error) {
	if err := s.closeFile(); err != nil {
		s.log.Warn("history segment close", "error", err)
	}
	s.mu.Lock()
	num := s.nextNum
	s.nextNum++
	s.mu.Unlock()
	path := s.segPath(num)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	if _, err := f.WriteString(segMagic); err != nil {
		f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("history: %w", err)
	}
	seg := &segment{num: num, path: path, size: int64(len(segMagic)), minT: math.MaxInt64, maxT: math.MinInt64, writing: true}
	s.file = f
	s.mu.Lock()
	s.segs = append(s.segs, seg)
	s.total += seg.size
	s.mu.Unlock()
	return seg, nil
}

// closeFile syncs and closes the segment being written; writeMu held.
func (s *Store) closeFile() error {
	if s.file == nil {
		return nil
	}
	s.mu.Lock()
	if cur := s.current(); cur != nil {
		cur.writing = false
	}
	s.mu.Unlock()
	err := errors.Join(s.file.Sync(), s.file.Close())
	s.file = nil
	return err
}

// Enforce removes what is older than the retention or over the size bound.
// Append does it after every block; an idle writer calls it now and then.
func (s *Store) Enforce() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.enforce()
}

func (s *Store) enforce() error {
	cutoff := s.opts.Now().Add(-s.opts.Retention).UnixNano()
	var gone []*segment
	s.mu.Lock()
	for len(s.segs) > 0 {
		seg := s.segs[0]
		old := len(seg.blocks) > 0 && seg.maxT < cutoff
		if !old && s.total <= s.opts.MaxBytes {
			break
		}
		if seg.writing {
			if !old && len(s.segs) > 1 {
				break // cannot happen: the writing segment is the newest
			}
			s.mu.Unlock()
			err := s.closeFile() // the next Append starts a new one
			s.mu.Lock()
			if err != nil {
				s.log.Warn("history segment close", "error", err)
			}
		}
		s.segs = s.segs[1:]
		s.total -= seg.size
		gone = append(gone, seg)
	}
	for _, seg := range gone {
		var n uint64
		for _, b := range seg.blocks {
			n += uint64(b.h.count)
		}
		if n > 0 {
			s.expired = append(s.expired, Span{First: seg.minT, Last: seg.maxT, Count: n})
		}
	}
	if over := len(s.expired) - maxExpired; over > 0 {
		// Fold the oldest spans into one: counts stay exact, times coarser.
		m := s.expired[0]
		for _, sp := range s.expired[1 : over+1] {
			m.Last, m.Count = max(m.Last, sp.Last), m.Count+sp.Count
		}
		s.expired = append([]Span{m}, s.expired[over+1:]...)
	}
	exp := slices.Clone(s.expired)
	s.mu.Unlock()
	if len(gone) == 0 {
		return nil
	}
	var errs []error
	for _, seg := range gone {
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.saveExpired(exp))
	return errors.Join(errs...)
}

// Expired says how many records with a time at or after since were
// removed, and the span they covered.
func (s *Store) Expired(since int64) (n uint64, first, last int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first = math.MaxInt64
	for _, sp := range s.expired {
		if sp.Last >= since {
			n += sp.Count
			first, last = min(first, max(sp.First, since)), max(last, sp.Last)
		}
	}
	if n == 0 {
		return 0, 0, 0
	}
	return n, first, last
}

func (s *Store) loadExpired() {
	b, err := os.ReadFile(filepath.Join(s.opts.Dir, expiredFile))
	if err != nil {
		return
	}
	var spans []Span
	if err := json.Unmarshal(b, &spans); err != nil {
		s.log.Warn("history: unreadable "+expiredFile+", forgotten", "error", err)
		return
	}
	if len(spans) > maxExpired {
		spans = spans[len(spans)-maxExpired:]
	}
	s.expired = spans
}

func (s *Store) saveExpired(spans []Span) error {
	b, err := json.Marshal(spans)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.opts.Dir, "."+expiredFile+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(s.opts.Dir, expiredFile))
}

// Size is the segments' total size in bytes.
func (s *Store) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Oldest is the time of the oldest stored record (unix ns), false when the
// store is empty.
func (s *Store) Oldest() (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := int64(math.MaxInt64), false
	for _, seg := range s.segs {
		if len(seg.blocks) > 0 {
			t, ok = min(t, seg.minT), true
		}
	}
	return t, ok
}

// Close syncs and closes the segment being written.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.closeFile()
}

// Scan calls fn for every record with since <= Time <= until (unix ns; 0
// until means no end), in the order written. It stops when ctx is done or fn
// returns an error, and returns that error. A block that fails its checks
// is reported to fn as a LostEvent record of its count, not skipped
// silently.
func (s *Store) Scan(ctx context.Context, since, until int64, fn func(*Record) error) error {
	if until == 0 {
		until = math.MaxInt64
	}
	type segView struct {
		path   string
		blocks []block
	}
	var view []segView
	s.mu.Lock()
	for _, seg := range s.segs {
		if len(seg.blocks) > 0 && seg.maxT >= since && seg.minT <= until {
			view = append(view, segView{seg.path, seg.blocks[:len(seg.blocks):len(seg.blocks)]})
		}
	}
	s.mu.Unlock()
	var buf, raw []byte
	for _, sv := range view {
		f, err := os.Open(sv.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by retention since the copy
		}
		if err != nil {
			return fmt.Errorf("history: %w", err)
		}
		err = func() error {
			defer f.Close()
			for _, b := range sv.blocks {
				if b.h.maxT < since || b.h.minT > until {
					continue
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				buf = slices.Grow(buf[:0], headerSize+int(b.h.payloadLen))[:headerSize+int(b.h.payloadLen)]
				var rerr error
				if _, rerr = f.ReadAt(buf, b.off); rerr == nil {
					raw, rerr = decodePayload(b.h, buf[:headerSize], buf[headerSize:], raw)
				}
				var ferr error
				if rerr == nil {
					rerr = eachRecord(b.h, raw, func(r *Record) bool {
						if r.Time < since || r.Time > until {
							return true
						}
						ferr = fn(r)
						return ferr == nil
					})
				}
				if ferr != nil {
					return ferr
				}
				if rerr != nil {
					s.log.Warn("history block unreadable", "file", sv.path, "offset", b.off, "error", rerr)
					if err := fn(corruptRecord(b.h)); err != nil {
						return err
					}
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}

// corruptRecord stands for the records of a block that cannot be read.
func corruptRecord(h header) *Record {
	data, _ := proto.Marshal(&flowpb.LostEvent{
		Source:        flowpb.LostEventSource_UNKNOWN_LOST_EVENT_SOURCE,
		NumEventsLost: uint64(h.count),
	})
	return &Record{Kind: KindLost, Run: h.run, Time: h.minT, Data: data}
}
