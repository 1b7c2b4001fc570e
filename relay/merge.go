package relay

import (
	"context"
	"math"
	"sort"
	"sync"
	"time"
)

// item is one response waiting in a merge structure.
type item struct {
	r       *frame
	t       int64 // flow time, unix ns
	arrival int64 // relay clock, unix ns
	seq     uint64
}

// before orders items by flow time, then arrival order.
func (a *item) before(b *item) bool {
	if a.t != b.t {
		return a.t < b.t
	}
	return a.seq < b.seq
}

// frameTime is the time a response is ordered by: the flow's own time,
// else the response's, else when it reached the relay.
func frameTime(f *frame, arrival int64) int64 {
	if f.t != 0 {
		return f.t
	}
	return arrival
}

// minHeap and maxHeap are hand-rolled binary heaps: container/heap's
// interface boxing costs more than the comparisons at a million flows a second.
type itemHeap struct {
	a    []item
	less func(a, b *item) bool
}

func (h *itemHeap) len() int { return len(h.a) }

func (h *itemHeap) push(it item) {
	h.a = append(h.a, it)
	i := len(h.a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(&h.a[i], &h.a[p]) {
			break
		}
		h.a[i], h.a[p] = h.a[p], h.a[i]
		i = p
	}
}

func (h *itemHeap) pop() item {
	top := h.a[0]
	last := len(h.a) - 1
	h.a[0] = h.a[last]
	h.a[last] = item{}
	h.a = h.a[:last]
	h.down(0)
	return top
}

func (h *itemHeap) down(i int) {
	n := len(h.a)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(&h.a[r], &h.a[l]) {
			m = r
		}
		if !h.less(&h.a[m], &h.a[i]) {
			return
		}
		h.a[i], h.a[m] = h.a[m], h.a[i]
		i = m
	}
}

func oldestFirst(a, b *item) bool { return a.before(b) }
func newestFirst(a, b *item) bool { return b.before(a) }

// window merges live (follow) streams by flow time. It holds at most size
// responses. A response leaves the window when no open source can still send
// an older one (every peer's stream is in time order, and a watermark says
// how far a quiet peer has got), when the window is full (oldest first), or
// when it has waited the drain timeout. push never
// blocks and emit must not block: the client queue drops and counts instead.
type window struct {
	mu      sync.Mutex
	h       itemHeap
	size    int
	drain   int64
	seq     uint64
	srcs    map[int]*int64 // source id → watermark (newest flow time pushed or marked)
	nextSrc int
	minWM   int64
	minOK   bool
	emit    func(*frame) bool
	dead    bool
}

func newWindow(ctx context.Context, size int, drain time.Duration, emit func(*frame) bool) *window {
	w := &window{
		h:     itemHeap{a: make([]item, 0, min(size, 4096)), less: oldestFirst},
		size:  size,
		drain: int64(drain),
		srcs:  map[int]*int64{},
		emit:  emit,
	}
	context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.dead = true
		w.mu.Unlock()
	})
	return w
}

// addSource registers a peer stream; until it sends, nothing can be known to
// be in order, so flows wait for the drain timeout.
func (w *window) addSource() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.nextSrc++
	wm := int64(math.MinInt64)
	w.srcs[w.nextSrc] = &wm
	w.minOK = false
	return w.nextSrc
}

// removeSource closes a peer stream and releases what it held back.
func (w *window) removeSource(id int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.srcs, id)
	w.minOK = false
	w.releaseLocked(time.Now().UnixNano())
}

func (w *window) minWatermark() int64 {
	if !w.minOK {
		w.minWM = math.MaxInt64
		for _, wm := range w.srcs {
			w.minWM = min(w.minWM, *wm)
		}
		w.minOK = true
	}
	return w.minWM
}

// push adds one response from source id. It returns false once the request is over.
func (w *window) push(id int, r *frame) bool {
	now := time.Now().UnixNano()
	t := frameTime(r, now)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead {
		return false
	}
	w.seq++
	w.h.push(item{r: r, t: t, arrival: now, seq: w.seq})
	w.advance(id, t)
	w.releaseLocked(now)
	return !w.dead
}

// mark records that source id will send nothing older than t (a watermark)
// and releases what every source has now passed.
func (w *window) mark(id int, t int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead || !w.advance(id, t) {
		return
	}
	w.releaseLocked(time.Now().UnixNano())
}

// advance moves source id's watermark forward to t; false if it was not behind.
func (w *window) advance(id int, t int64) bool {
	wm := w.srcs[id]
	if wm == nil || t <= *wm {
		return false
	}
	if *wm == w.minWM {
		w.minOK = false
	}
	*wm = t
	return true
}

// tick releases responses that have waited the drain timeout.
func (w *window) tick(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releaseLocked(now.UnixNano())
}

func (w *window) releaseLocked(now int64) {
	for w.h.len() > 0 && !w.dead {
		top := &w.h.a[0]
		if !(top.t <= w.minWatermark() || w.h.len() > w.size || now-top.arrival >= w.drain) {
			return
		}
		if !w.emit(w.h.pop().r) {
			w.dead = true
		}
	}
}

// kmerge merges finite streams that are each in time order (non-follow
// requests) into one stream in time order: an exact k-way merge. Each source
// has a bounded queue of batches; a fast peer blocks on its full queue (and
// gRPC flow control holds the agent back) while the merge waits for a slow
// one, so memory stays bounded and nothing is lost. Sources hand over batches,
// not single responses: a channel operation per flow cost more than the merge.
type kmerge struct {
	srcs    []chan []item
	pending [][]item // the batch each source is filling; only its goroutine touches it
	batch   int
}

// newKMerge holds about perSource responses per source: a batch being
// filled, the queued batches and the one being merged.
func newKMerge(n, perSource int) *kmerge {
	b := min(perSource, 64)
	m := &kmerge{srcs: make([]chan []item, n), pending: make([][]item, n), batch: b}
	for i := range m.srcs {
		m.srcs[i] = make(chan []item, max(perSource/b-2, 0))
	}
	return m
}

// push queues one response of source i; false when ctx ended.
func (m *kmerge) push(ctx context.Context, i int, r *frame) bool {
	if m.pending[i] == nil {
		m.pending[i] = make([]item, 0, m.batch)
	}
	m.pending[i] = append(m.pending[i], item{r: r, t: frameTime(r, time.Now().UnixNano())})
	if len(m.pending[i]) < m.batch {
		return ctx.Err() == nil
	}
	return m.flush(ctx, i)
}

func (m *kmerge) flush(ctx context.Context, i int) bool {
	b := m.pending[i]
	if len(b) == 0 {
		return true
	}
	m.pending[i] = nil
	select {
	case m.srcs[i] <- b:
		return true
	case <-ctx.Done():
		return false
	}
}

// done says that source i sent everything.
func (m *kmerge) done(ctx context.Context, i int) {
	m.flush(ctx, i)
	close(m.srcs[i])
}

// run emits every response in order until all sources are done, ctx ends or
// emit fails.
func (m *kmerge) run(ctx context.Context, emit func(*frame) bool) {
	// heads holds the next response of every open source; seq is the source.
	heads := itemHeap{a: make([]item, 0, len(m.srcs)), less: oldestFirst}
	cur := make([][]item, len(m.srcs))
	// take returns source i's next response; ok is false when the source
	// is done, live false when ctx ended.
	take := func(i int) (it item, ok, live bool) {
		if len(cur[i]) == 0 {
			select {
			case b, open := <-m.srcs[i]:
				if !open {
					return item{}, false, true
				}
				cur[i] = b
			case <-ctx.Done():
				return item{}, false, false
			}
		}
		it = cur[i][0]
		cur[i][0] = item{}
		cur[i] = cur[i][1:]
		it.seq = uint64(i)
		return it, true, true
	}
	for i := range m.srcs {
		it, ok, live := take(i)
		if !live {
			return
		}
		if ok {
			heads.push(it)
		}
	}
	for heads.len() > 0 {
		top := &heads.a[0]
		if !emit(top.r) {
			return
		}
		it, ok, live := take(int(top.seq))
		switch {
		case !live:
			return
		case ok:
			// The source's next response replaces its last: one sift, not two.
			heads.a[0] = it
			heads.down(0)
		default:
			heads.pop()
		}
	}
}

// topN keeps the n newest (or, with first, the n oldest) responses.
type topN struct {
	n     uint64
	first bool
	h     itemHeap
	seq   uint64
}

func newTopN(n uint64, first bool) *topN {
	t := &topN{n: n, first: first, h: itemHeap{a: make([]item, 0, min(n, 4096))}}
	// The root is the item to evict next: the oldest kept for "last",
	// the newest kept for "first".
	t.h.less = oldestFirst
	if first {
		t.h.less = newestFirst
	}
	return t
}

func (t *topN) push(r *frame) {
	t.seq++
	it := item{r: r, t: frameTime(r, time.Now().UnixNano()), seq: t.seq}
	if uint64(t.h.len()) < t.n {
		t.h.push(it)
		return
	}
	if t.h.less(&t.h.a[0], &it) {
		t.h.a[0] = it
		t.h.down(0)
	}
}

// sorted returns the kept responses in time order.
func (t *topN) sorted() []*frame {
	a := t.h.a
	sort.Slice(a, func(i, j int) bool { return a[i].before(&a[j]) })
	out := make([]*frame, len(a))
	for i := range a {
		out[i] = a[i].r
	}
	return out
}
