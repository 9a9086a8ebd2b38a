package sensor

import (
	"sync/atomic"
	"time"

	"canopy/capture"
	"canopy/flow"
	"canopy/inject"
	"canopy/rules"
)

// Verdict codes cached in flow.Enforcement.Action.
const (
	actUndecided uint8 = iota
	actNone            // no rule matched
	actAllow           // allowlisted: never touched
	actObserve         // an observe-action rule matched: log only
	actBlock           // a block rule matched
)

// pendingFlow is a blocked flow whose outcome is open, and its record.
type pendingFlow struct {
	h    flow.Handle
	slot uint32 // Enforcement.BlockSlot: finds the record once the flow is gone
}

// sentKey identifies a reset canopy sent: its ports, sequence and
// acknowledgement numbers are exactly those of its copy on the mirror.
type sentKey struct {
	ports    uint32
	seq, ack uint32
}

// sentSlots sizes the ring of recently sent resets. A copy comes back
// within a round trip of the send, while a few thousand others are sent
// at most; a slot overwritten earlier only makes canopy take its own
// reset for the host's, as it did before this ring existed.
const sentSlots = 4096

type laneKey struct {
	ts       int64
	seq, ack uint32
	ports    uint32
	flags    uint8
}

// worker is one capture stream's engine. Everything in it is touched only
// on its goroutine, except the atomic counters the snapshotter reads. It
// is a capture.BatchHandler: live frames, bulk and lane, come through
// Frames, capture files through Frame.
type worker struct {
	e     *Engine
	id    int
	table *flow.Table
	ctl   chan func(*worker)

	pkt   capture.Packet
	cur   *capture.Packet // the packet being handled: &pkt, or one of batch
	shots [maxShots]shot
	buf   [inject.MaxFrameLen]byte

	// A batch of live frames, decoded ahead so the flow table can
	// prefetch their flows (Frames).
	batch   [capture.MaxBatch]capture.Packet
	reasons [capture.MaxBatch]capture.Reason

	lane [laneSlots]laneKey
	sent [sentSlots]sentKey // resets sent lately, to recognise them when the mirror shows them back

	firstSendAt int64 // wall clock when the latest flow's first reset was handed to the kernel
	bucketSec   int64 // unix second the table's current bucket started in
	nextHouse   int64 // next housekeeping time (ns)
	now         int64 // latest time seen (packet or idle clock)

	blocks  []blockRec // ring, indexed by Enforcement.BlockSlot-1
	nextRec int
	pending []pendingFlow // blocked flows whose outcome is not settled

	kills     []killJob     // proactive kills in progress, oldest first (proactive.go)
	killTimer *time.Timer   // wakes the worker when the ceiling has room for a waiting kill
	killRound int           // stepKills calls so far
	killStep  time.Duration // how long a step of kills may take (killStep; engine tests raise it)

	// counters read by the snapshotter
	decode                          [capture.NumReasons]atomic.Uint64
	flows, evicted, l2full          atomic.Int64
	attempted, confirmed, failed    atomic.Uint64
	observed, resets, icmp          atomic.Uint64
	suppressed, sendErrors, created atomic.Uint64
	killing                         atomic.Int64 // len(kills)
	reaction                        Histogram
	pickup                          Histogram // trigger timestamp → enforce starts (the first part of reaction)
}

func newWorker(e *Engine, id int, fc flow.Config) *worker {
	w := &worker{
		e:      e,
		id:     id,
		table:  flow.NewTable(fc),
		ctl:    make(chan func(*worker), 256),
		blocks: make([]blockRec, 4096),

		killStep: killStep,
	}
	w.cur = &w.pkt
	return w
}

var _ capture.BatchHandler = (*worker)(nil)

// Frame handles one captured frame: decode, dedup the lane's copies, track
// the flow, decide, and reset if the flow is blocked.
func (w *worker) Frame(frame []byte, m *capture.Meta) {
	w.handle(frame, m, &w.pkt, -1, capture.Decode(frame, m, &w.pkt))
}

// Frames handles live frames (a bulk capture block's, or the lane's that
// were waiting), up to capture.MaxBatch at a time: it decodes them all
// first and has the flow table prefetch their flows, so that with a large
// table their cache misses overlap instead of costing a memory latency
// each; then it handles each, in order, exactly as Frame would (the
// prefetch is only a hint: housekeeping, evictions or the lane between two
// frames change nothing).
func (w *worker) Frames(frames [][]byte, ms []capture.Meta) {
	n := min(len(frames), len(w.batch))
	for j := range n {
		w.reasons[j] = capture.Decode(frames[j], &ms[j], &w.batch[j])
	}
	w.table.Prefetch(w.batch[:n])
	for j := range n {
		w.handle(frames[j], &ms[j], &w.batch[j], j, w.reasons[j])
	}
	for j := n; j < len(frames); j++ {
		w.Frame(frames[j], &ms[j])
	}
}

// handle is Frame after decoding frame into p with result r. p is
// w.batch[ahead], which the table has prefetched, or ahead is -1.
func (w *worker) handle(frame []byte, m *capture.Meta, p *capture.Packet, ahead int, r capture.Reason) {
	if r != capture.OK {
		w.decode[r].Add(1)
		return
	}
	w.cur = p
	if p.Timestamp > w.now {
		w.now = p.Timestamp
	}
	if w.laneDuplicate(m.Lane) {
		return
	}
	var f *flow.Flow
	var dir flow.Dir
	if ahead >= 0 {
		f, dir, _ = w.table.UpdateAhead(ahead)
	} else {
		f, dir, _ = w.table.Update(p)
	}
	if w.now >= w.nextHouse {
		w.housekeep(w.now)
	}
	if f == nil {
		return
	}
	act := w.verdict(f)
	if act == actNone || act == actAllow || act == actUndecided {
		if f.Decision.Outcome == outPending || f.Decision.Outcome == outRetrying {
			w.trackOutcome(f, p)
		}
		return
	}
	w.enforce(f, dir, act, frame)
}

// Idle does housekeeping, runs control requests (new proactive kills, flow
// listings) and goes on with the proactive kills in progress, between
// frames.
func (w *worker) Idle(now int64) {
	if now > w.now {
		w.now = now
	}
	for {
		select {
		case fn := <-w.ctl:
			fn(w)
		default:
			if w.now >= w.nextHouse {
				w.housekeep(w.now)
			} else if len(w.kills) > 0 {
				w.stepKills()
			}
			return
		}
	}
}

// laneDuplicate reports whether this bulk frame was already handled when
// its copy came through the low-latency lane, and remembers lane frames.
// Both copies of one skb carry the same kernel timestamp.
func (w *worker) laneDuplicate(lane bool) bool {
	p := w.cur
	if p.Proto != capture.ProtoTCP && p.Proto != capture.ProtoUDP {
		return false
	}
	k := laneKey{ts: p.Timestamp, seq: p.Seq, ack: p.Ack, ports: uint32(p.SrcPort)<<16 | uint32(p.DstPort), flags: p.Flags}
	slot := &w.lane[uint64(k.ts^int64(k.seq)*0x9e3779b1)%laneSlots]
	if lane {
		*slot = k
		return false
	}
	if *slot == k {
		*slot = laneKey{}
		return true
	}
	return false
}

// verdict returns the flow's cached verdict, deciding again whenever the
// rule set changed since it was cached.
func (w *worker) verdict(f *flow.Flow) uint8 {
	set := w.e.rules.Set()
	if set == nil {
		return actNone
	}
	gen := set.Generation()
	if f.RuleGen == gen && f.Decision.Action != actUndecided {
		return f.Decision.Action
	}
	v := set.Match(f.A(), f.B(), f.Proto(), f.APort(), f.BPort())
	act := actNone
	switch {
	case v.Allowlisted:
		act = actAllow
	case v.Action == rules.ActionBlock:
		act = actBlock
	case v.Action == rules.ActionObserve:
		act = actObserve
	}
	f.RuleGen, f.Enf.RuleID, f.Decision.Action = gen, v.RuleID, act
	return act
}

// housekeep rotates the talkers bucket on second boundaries, settles
// outcomes of blocked flows that went quiet, expires idle flows, and goes
// on with the proactive kills in progress.
func (w *worker) housekeep(now int64) {
	w.nextHouse = now + housekeepEvery
	sec := now / int64(time.Second)
	if w.bucketSec == 0 {
		w.bucketSec = sec
	} else if sec > w.bucketSec {
		w.rotate(sec)
	}
	w.settleQuiet(now)
	w.table.Expire(now)
	st := w.table.Stats()
	w.flows.Store(int64(w.table.Len()))
	w.evicted.Store(int64(st.Evicted))
	w.l2full.Store(int64(st.L2Full))
	w.created.Store(st.Created)
	if len(w.kills) > 0 {
		w.stepKills()
	}
}

// rotate hands the finished bucket to the snapshotter; if it has no room
// the worker keeps counting into the same bucket (merged into the next
// second) rather than block.
func (w *worker) rotate(sec int64) {
	var fresh *flow.Bucket
	select {
	case fresh = <-w.e.free:
	default:
	}
	old := w.table.SwapBucket(fresh) // nil fresh: the table allocates one (rare)
	select {
	case w.e.buckets <- bucketMsg{worker: w.id, sec: w.bucketSec, b: old}:
		w.bucketSec = sec
	default:
		w.table.SwapBucket(old) // put it back; try again next tick
		if fresh != nil {
			select {
			case w.e.free <- fresh:
			default:
			}
		}
	}
}

// finish runs on the worker's goroutine after its capture stopped: it
// hands over the last bucket and settles what can be settled.
func (w *worker) finish() {
	w.housekeep(w.now + 1)
	old := w.table.SwapBucket(nil)
	select {
	case w.e.buckets <- bucketMsg{worker: w.id, sec: w.bucketSec, b: old}:
	default:
	}
	w.flows.Store(int64(w.table.Len()))
	w.created.Store(w.table.Stats().Created)
}
