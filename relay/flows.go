package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/contract"
)

var (
	errPeerTimeout  = errors.New("peer sent nothing within the idle timeout")
	errNotConnected = errors.New("peer not connected")
)

// resume remembers where a peer's stream stopped, so that a peer coming
// back mid-follow continues from there without gaps or repeats.
type resume struct {
	lastT   int64    // newest flow time received (0: none)
	lastIDs [][]byte // uuids of the flows received at lastT (copies: frames' bytes are reused once sent)
	// fallback is the since to use when no flow was received (0: none,
	// meaning live flows only).
	fallback int64
}

const maxResumeIDs = 64

func (r *resume) see(uuid []byte, t int64) {
	if t > r.lastT {
		r.lastT = t
		r.lastIDs = r.lastIDs[:0]
	}
	if t == r.lastT && len(uuid) > 0 && len(r.lastIDs) < maxResumeIDs {
		// Reuse the slots' storage: no allocation per flow once warm.
		n := len(r.lastIDs)
		if n < cap(r.lastIDs) {
			r.lastIDs = r.lastIDs[:n+1]
			r.lastIDs[n] = append(r.lastIDs[n][:0], uuid...)
		} else {
			r.lastIDs = append(r.lastIDs, slices.Clone(uuid))
		}
	}
}

// dup reports a flow already delivered before a resume (a since is inclusive).
func (r *resume) dup(uuid []byte, t int64) bool {
	return t == r.lastT && len(uuid) > 0 && slices.ContainsFunc(r.lastIDs, func(id []byte) bool { return bytes.Equal(id, uuid) })
}

func (r *resume) since() int64 {
	if r.lastT > 0 {
		return r.lastT
	}
	return r.fallback
}

func (r resume) clone() resume {
	ids := make([][]byte, len(r.lastIDs))
	for i, id := range r.lastIDs {
		ids[i] = slices.Clone(id)
	}
	r.lastIDs = ids
	return r
}

// streamResult is how one peer stream ended.
type streamResult struct {
	key  string
	err  error
	sent bool // the peer delivered at least one response
	res  resume
}

// peerRequest is the client's request as sent to one peer: unchanged
// except for follow/number when the relay splits a request in phases,
// and since when a stream resumes.
func peerRequest(req *observerpb.GetFlowsRequest, follow bool, number uint64, sinceNS int64) *observerpb.GetFlowsRequest {
	pr := proto.Clone(req).(*observerpb.GetFlowsRequest)
	pr.Follow = follow
	pr.Number = number
	if sinceNS > 0 {
		if s := req.GetSince(); s == nil || s.AsTime().UnixNano() < sinceNS {
			pr.Since = timestamppb.New(time.Unix(0, sinceNS))
		}
	}
	return pr
}

// streamPeer runs one GetFlows stream against one peer and hands each flow
// to sink and each watermark's time to mark (nil: dropped); watermarks go
// no further. idle > 0 ends the stream when the peer stays silent that long.
func (s *Server) streamPeer(ctx context.Context, p PeerInfo, req *observerpb.GetFlowsRequest, res resume,
	idle time.Duration, sink func(*frame) bool, mark func(int64), q *outQueue) (out streamResult) {
	out = streamResult{key: p.Key, res: res}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var recvSince atomic.Int64
	if idle > 0 {
		go func() {
			t := time.NewTicker(max(idle/8, 10*time.Millisecond))
			defer t.Stop()
			for {
				select {
				case now := <-t.C:
					if rs := recvSince.Load(); rs != 0 && now.UnixNano()-rs > int64(idle) {
						cancel(errPeerTimeout)
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	recvSince.Store(time.Now().UnixNano())
	batched := s.batches(p)
	stream, err := openPeerStream(ctx, p, req, batched)
	if err != nil {
		out.err = err
		return out
	}
	var batch frameBatch
	for {
		if idle > 0 {
			recvSince.Store(time.Now().UnixNano())
		}
		r, err := s.nextFrame(stream, batched, &batch)
		if idle > 0 {
			recvSince.Store(0)
		}
		if err != nil && batched && !out.sent && status.Code(err) == codes.Unimplemented {
			// An agent without FlowBatches (Cilium's): GetFlows from now on.
			s.noBatches.Store(p.Key+"\x00"+p.Address, true)
			s.stats.GetFlowsFallbacks.Add(1)
			batched = false
			if stream, err = openPeerStream(ctx, p, req, false); err != nil {
				out.err = err
				return out
			}
			continue
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				out.err = err
				if errors.Is(context.Cause(ctx), errPeerTimeout) {
					out.err = errPeerTimeout
				}
			}
			return out
		}
		out.sent = true
		if r.mark {
			if mark != nil && r.t != 0 {
				mark(r.t)
			}
			continue
		}
		if f := r.msg.GetFlow(); r.msg == nil || f != nil {
			if f != nil {
				r.t, r.uuid = f.GetTime().AsTime().UnixNano(), []byte(f.GetUuid())
			}
			if out.res.dup(r.uuid, r.t) {
				continue
			}
			out.res.see(r.uuid, r.t)
			r.setNodeName(p.Name)
			if !sink(r) {
				return out
			}
			continue
		}
		switch r.msg.GetResponseTypes().(type) {
		case *observerpb.GetFlowsResponse_LostEvents:
			if r.msg.NodeName == "" {
				r.msg.NodeName = p.Name
			}
			q.lostEvents(r.msg)
		case *observerpb.GetFlowsResponse_NodeStatus:
			q.addControl(r.msg) // the peer is itself a relay
		}
	}
}

// batches tells whether to ask p for FlowBatches: unless it answered
// Unimplemented before, at the same address.
func (s *Server) batches(p PeerInfo) bool {
	_, no := s.noBatches.Load(p.Key + "\x00" + p.Address)
	return !no
}

// openPeerStream starts a FlowBatches or a GetFlows stream with req.
func openPeerStream(ctx context.Context, p PeerInfo, req *observerpb.GetFlowsRequest, batched bool) (grpc.ClientStream, error) {
	desc, method := &observerpb.Observer_ServiceDesc.Streams[0], observerpb.Observer_GetFlows_FullMethodName
	if batched {
		desc, method = &grpc.StreamDesc{StreamName: contract.FlowBatchesStream, ServerStreams: true}, contract.FlowBatchesMethod
		ctx = metadata.AppendToOutgoingContext(ctx, contract.FlowBlocksHeader, contract.FlowBlocksFormat)
	}
	stream, err := p.conn.NewStream(ctx, desc, method, grpc.ForceCodecV2(relayCodec))
	if err == nil {
		if err = stream.SendMsg(req); err == nil {
			err = stream.CloseSend()
		}
	}
	return stream, err
}

// nextFrame receives the next response: the next of the current batch, or
// a message of its own on a GetFlows stream.
func (s *Server) nextFrame(stream grpc.ClientStream, batched bool, batch *frameBatch) (*frame, error) {
	if !batched {
		r := &frame{}
		return r, stream.RecvMsg(r)
	}
	for len(batch.frames) == 0 {
		if err := stream.RecvMsg(batch); err != nil {
			return nil, err
		}
		s.stats.FlowBatchMessages.Add(1)
		s.stats.FlowBlocks.Add(uint64(batch.blocks))
	}
	r := batch.frames[0]
	batch.frames[0] = nil
	batch.frames = batch.frames[1:]
	return r, nil
}

// classify turns a stream error into the node state and message a client sees.
func classify(err error) (relaypb.NodeState, string, bool) {
	if err == nil {
		return relaypb.NodeState_NODE_UNAVAILABLE, "stream ended", true
	}
	if errors.Is(err, errPeerTimeout) {
		return relaypb.NodeState_NODE_ERROR, err.Error(), true
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Aborted:
		return relaypb.NodeState_NODE_UNAVAILABLE, st.Message(), true
	case codes.InvalidArgument, codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition:
		return relaypb.NodeState_NODE_ERROR, st.Message(), false
	}
	return relaypb.NodeState_NODE_ERROR, st.Message(), true
}

// reportDown queues one status per distinct (state, message) for peers that
// are not connected.
func reportDown(q *outQueue, peers []PeerInfo) {
	type k struct {
		st  relaypb.NodeState
		msg string
	}
	groups := map[k][]string{}
	var order []k
	for _, p := range peers {
		key := k{p.State, p.Err}
		if p.Connecting && p.Err == "" {
			key.msg = "no answer yet"
		}
		if p.State == relaypb.NodeState_NODE_CONNECTED {
			continue
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], p.Name)
	}
	for _, key := range order {
		q.status(key.st, key.msg, groups[key]...)
	}
}

// streamAll reports whether "the last (or first) number flows" is simply
// every flow the peers will send: number is 0, or at least the sum of their
// ring capacities.
func streamAll(number uint64, peers []PeerInfo) bool {
	if number == 0 || number >= 1<<40 {
		return true
	}
	var total uint64
	for _, p := range peers {
		if p.MaxFlows == 0 {
			return false
		}
		total += p.MaxFlows
	}
	return number >= total
}

// getFlowsOnce serves a non-follow request (or the history phase of a
// follow request with number) and returns where each peer stopped.
func (s *Server) getFlowsOnce(ctx context.Context, req *observerpb.GetFlowsRequest, q *outQueue) (map[string]*resume, error) {
	all, _ := s.pool.Peers()
	// Connected peers stream at once; peers still on their first connection
	// attempt get the dial timeout to join, in parallel.
	var peers, down []PeerInfo
	var names []string
	for _, p := range all {
		switch {
		case p.State == relaypb.NodeState_NODE_CONNECTED:
			peers = append(peers, p)
			names = append(names, p.Name)
		case p.Connecting:
			peers = append(peers, p)
		default:
			down = append(down, p)
		}
	}
	q.status(relaypb.NodeState_NODE_CONNECTED, "", names...)
	reportDown(q, down)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	preq := peerRequest(req, false, req.GetNumber(), 0)
	var sinks []func(*frame) bool
	finish := func(int) {}
	var merged sync.WaitGroup
	var top *topN
	var topMu sync.Mutex
	if streamAll(req.GetNumber(), peers) {
		// Every flow the peers send is wanted: stream them in order.
		m := newKMerge(len(peers), max(s.cfg.SortBufferLen/max(len(peers), 1), 16))
		for i := range peers {
			sinks = append(sinks, func(r *frame) bool { return m.push(ctx, i, r) })
		}
		finish = func(i int) { m.done(ctx, i) }
		merged.Go(func() { m.run(ctx, func(r *frame) bool { return q.flow(ctx, r) }) })
	} else {
		top = newTopN(req.GetNumber(), req.GetFirst())
		for range peers {
			sinks = append(sinks, func(r *frame) bool {
				topMu.Lock()
				top.push(r)
				topMu.Unlock()
				return ctx.Err() == nil
			})
		}
	}

	start := time.Now()
	results := make([]streamResult, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			defer finish(i) // stop holding the others back
			if p.State != relaypb.NodeState_NODE_CONNECTED {
				var ok bool
				if p, ok = s.pool.WaitPeer(ctx, p.Key, s.cfg.PeerDialTimeout); !ok {
					results[i] = streamResult{key: p.Key, err: errNotConnected}
					peers[i] = p
					return
				}
				q.status(relaypb.NodeState_NODE_CONNECTED, "", p.Name)
			}
			results[i] = s.streamPeer(ctx, p, preq, resume{}, s.cfg.PeerIdleTimeout, sinks[i], nil, q)
		})
	}
	wg.Wait()
	merged.Wait()

	resumes := map[string]*resume{}
	invalid := 0
	var invalidErr error
	for i, r := range results {
		if r.err == nil {
			res := r.res
			if res.lastT == 0 {
				// Nothing matched when the peer answered: any later match is new.
				res.fallback = start.Add(-time.Second).UnixNano()
			}
			resumes[r.key] = &res
			continue
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		if errors.Is(r.err, errNotConnected) {
			reportDown(q, []PeerInfo{peers[i]})
			continue
		}
		st, msg, _ := classify(r.err)
		if status.Code(r.err) == codes.InvalidArgument && !r.sent {
			invalid++
			invalidErr = r.err
		}
		s.log.Warn("peer stream failed", "peer", peers[i].Name, "error", r.err)
		q.status(st, msg, peers[i].Name)
	}
	if invalid > 0 && invalid == len(peers) {
		return nil, status.Error(codes.InvalidArgument, status.Convert(invalidErr).Message())
	}
	if top != nil {
		for _, r := range top.sorted() {
			if !q.flow(ctx, r) {
				break
			}
		}
	}
	return resumes, nil
}

// followPeer is one peer's place in a follow request.
type followPeer struct {
	name     string
	running  bool
	cancel   context.CancelFunc
	gen      uint64    // the pool connection the last stream ran on
	retryAt  time.Time // retry on the same connection (zero: wait for a new one)
	delay    time.Duration
	reported relaypb.NodeState
	removed  bool
	res      resume
}

// getFlowsFollow serves a follow request until ctx ends: it streams from
// every connected peer, reports peers going and coming, and lets a peer that
// comes back resume where it stopped.
func (s *Server) getFlowsFollow(ctx context.Context, req *observerpb.GetFlowsRequest, q *outQueue) error {
	reqStart := time.Now()
	peers := map[string]*followPeer{}
	if req.GetNumber() > 0 {
		// History first: the cluster's newest `number` flows, in order.
		hist, err := s.getFlowsOnce(ctx, req, q)
		if err != nil {
			return err
		}
		for key, res := range hist {
			peers[key] = &followPeer{res: *res, reported: relaypb.NodeState_NODE_CONNECTED}
		}
	}
	q.setLossy(true)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := newWindow(ctx, s.cfg.SortBufferLen, s.cfg.SortBufferDrainTimeout,
		func(r *frame) bool { return q.flow(ctx, r) })
	var wg sync.WaitGroup
	defer func() {
		cancel() // before waiting: the streams end on it
		wg.Wait()
	}()
	wg.Go(func() {
		t := time.NewTicker(max(s.cfg.SortBufferDrainTimeout/10, 5*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				w.tick(now)
			case <-ctx.Done():
				return
			}
		}
	})

	done := make(chan streamResult)
	first := true
	for {
		snapshot, changed := s.pool.Peers()
		now := time.Now()
		var connected []string
		var down []PeerInfo
		var retryAt time.Time
		seen := make(map[string]bool, len(snapshot))
		for _, p := range snapshot {
			seen[p.Key] = true
			fp := peers[p.Key]
			if fp == nil {
				fp = &followPeer{}
				if !first {
					// A node that joins mid-follow: its flows since the request began.
					fp.res.fallback = reqStart.UnixNano()
				}
				peers[p.Key] = fp
			}
			fp.name = p.Name
			if fp.running {
				continue
			}
			if p.State != relaypb.NodeState_NODE_CONNECTED {
				// A peer on its first attempt is reported once it settles.
				if !p.Connecting && fp.reported != p.State {
					fp.reported = p.State
					down = append(down, p)
				}
				continue
			}
			if p.Gen <= fp.gen && (fp.retryAt.IsZero() || now.Before(fp.retryAt)) {
				if !fp.retryAt.IsZero() && (retryAt.IsZero() || fp.retryAt.Before(retryAt)) {
					retryAt = fp.retryAt
				}
				continue
			}
			since := fp.res.since()
			preq := peerRequest(req, true, 0, since)
			if fp.res.fallback == 0 {
				fp.res.fallback = now.UnixNano()
			}
			sctx, scancel := context.WithCancel(ctx)
			fp.running, fp.cancel, fp.gen, fp.retryAt = true, scancel, p.Gen, time.Time{}
			if fp.reported != relaypb.NodeState_NODE_CONNECTED {
				fp.reported = relaypb.NodeState_NODE_CONNECTED
				connected = append(connected, p.Name)
			}
			res := fp.res.clone()
			src := w.addSource()
			wg.Go(func() {
				defer scancel()
				r := s.streamPeer(sctx, p, preq, res, 0, func(r *frame) bool { return w.push(src, r) },
					func(t int64) { w.mark(src, t) }, q)
				w.removeSource(src)
				select {
				case done <- r:
				case <-ctx.Done():
				}
			})
		}
		var gone []string
		for key, fp := range peers {
			if seen[key] || fp.removed {
				continue
			}
			gone = append(gone, fp.name)
			if fp.running {
				fp.removed = true
				fp.cancel()
			} else {
				delete(peers, key)
			}
		}
		sort.Strings(connected)
		sort.Strings(gone)
		q.status(relaypb.NodeState_NODE_CONNECTED, "", connected...)
		reportDown(q, down)
		q.status(relaypb.NodeState_NODE_GONE, "", gone...)
		first = false

		var retryC <-chan time.Time
		if !retryAt.IsZero() {
			retryC = time.After(time.Until(retryAt))
		}
		select {
		case <-changed:
		case <-retryC:
		case r := <-done:
			fp := peers[r.key]
			fp.running = false
			fp.res = r.res
			if fp.removed {
				delete(peers, r.key)
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			if status.Code(r.err) == codes.InvalidArgument && !r.sent {
				return status.Error(codes.InvalidArgument, status.Convert(r.err).Message())
			}
			st, msg, retry := classify(r.err)
			s.log.Warn("peer stream ended", "peer", fp.name, "state", st.String(), "error", msg)
			fp.reported = st
			q.status(st, msg, fp.name)
			if r.sent || fp.delay == 0 {
				fp.delay = s.cfg.ReconnectBaseDelay
			} else {
				fp.delay = min(2*fp.delay, s.cfg.ReconnectMaxDelay)
			}
			if retry {
				fp.retryAt = time.Now().Add(fp.delay)
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// getFlows routes a request to its mode and feeds q; it returns when the
// request is complete (non-follow) or ctx ends.
func (s *Server) getFlows(ctx context.Context, req *observerpb.GetFlowsRequest, q *outQueue) error {
	if req.GetFirst() && req.GetFollow() {
		return status.Error(codes.InvalidArgument, "first: incompatible with follow")
	}
	if req.GetFollow() {
		return s.getFlowsFollow(ctx, req, q)
	}
	_, err := s.getFlowsOnce(ctx, req, q)
	return err
}
