package sensor

import (
	"net/netip"
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

// Outcome codes kept in flow.Enforcement.Outcome.
const (
	outNone uint8 = iota
	outPending
	outRetrying
	outConfirmed
	outFailed
	outObserved
)

var outcomeNames = [...]Outcome{outPending: OutcomePending, outRetrying: OutcomeRetrying,
	outConfirmed: OutcomeConfirmed, outFailed: OutcomeFailed, outObserved: OutcomeObserved}

// housekeepEvery is how often (in packet or idle time) a worker rotates its
// talkers bucket, settles block outcomes and expires flows.
const housekeepEvery = int64(10 * time.Millisecond)

// laneSlots sizes the table that pairs a lane frame with its later bulk
// copy. Lane frames are rare (handshakes, data) and their copies arrive
// within a block timeout, so a few hundred slots are plenty.
const laneSlots = 512

type laneKey struct {
	ts       int64
	seq, ack uint32
	ports    uint32
	flags    uint8
}

// blockRec is a worker's own record of a blocked flow, indexed by
// flow.Enforcement.BlockSlot. It is published as a Block on every change
// of outcome.
type blockRec struct {
	handle flow.Handle
	block  Block
}

// worker is one capture stream's engine. Everything in it is touched only
// on its goroutine, except the atomic counters the snapshotter reads.
type worker struct {
	e     *Engine
	id    int
	table *flow.Table
	ctl   chan func(*worker)

	pkt   capture.Packet
	shots [maxShots]shot
	buf   [inject.MaxFrameLen]byte

	lane [laneSlots]laneKey

	bucketSec int64 // unix second the table's current bucket started in
	nextHouse int64 // next housekeeping time (ns)
	now       int64 // latest time seen (packet or idle clock)

	blocks  []blockRec // ring, indexed by Enforcement.BlockSlot-1
	nextRec int
	pending []flow.Handle // blocked flows whose outcome is not settled

	// counters read by the snapshotter
	decode                         [capture.NumReasons]atomic.Uint64
	flows, evicted                 atomic.Int64
	attempted, confirmed, failed   atomic.Uint64
	observed, resets, icmp         atomic.Uint64
	suppressed, sendErrors, frames atomic.Uint64
	bytes, created                 atomic.Uint64
	reaction                       Histogram
}

func newWorker(e *Engine, id int, fc flow.Config) *worker {
	return &worker{
		e:      e,
		id:     id,
		table:  flow.NewTable(fc),
		ctl:    make(chan func(*worker), 256),
		blocks: make([]blockRec, 4096),
	}
}

// Frame handles one captured frame: decode, dedup the lane's copies, track
// the flow, decide, and reset if the flow is blocked.
func (w *worker) Frame(frame []byte, m *capture.Meta) {
	p := &w.pkt
	w.frames.Add(1)
	w.bytes.Add(uint64(len(frame)))
	if r := capture.Decode(frame, m, p); r != capture.OK {
		w.decode[r].Add(1)
		return
	}
	if p.Timestamp > w.now {
		w.now = p.Timestamp
	}
	if w.laneDuplicate(m.Lane) {
		return
	}
	f, dir, _ := w.table.Update(p)
	if w.now >= w.nextHouse {
		w.housekeep(w.now)
	}
	if f == nil {
		return
	}
	act := w.verdict(f)
	if act == actNone || act == actAllow || act == actUndecided {
		if f.Enf.Outcome == outPending || f.Enf.Outcome == outRetrying {
			w.trackOutcome(f, p)
		}
		return
	}
	w.enforce(f, dir, act, frame)
}

// Idle does housekeeping and runs control requests (proactive kills, flow
// listings) between frames.
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
			}
			return
		}
	}
}

// laneDuplicate reports whether this bulk frame was already handled when
// its copy came through the low-latency lane, and remembers lane frames.
// Both copies of one skb carry the same kernel timestamp.
func (w *worker) laneDuplicate(lane bool) bool {
	p := &w.pkt
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
	if f.Enf.RuleGen == gen && f.Enf.Action != actUndecided {
		return f.Enf.Action
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
	f.Enf.RuleGen, f.Enf.RuleID, f.Enf.Action = gen, v.RuleID, act
	return act
}

// enforce reacts to a packet of a blocked (or observed) flow.
func (w *worker) enforce(f *flow.Flow, dir flow.Dir, act uint8, frame []byte) {
	p := &w.pkt
	observe := act == actObserve || w.e.observe.Load()
	rec := w.record(f, observe)
	if observe && rec.block.Outcome == OutcomeObserved {
		return // reported once per flow; describing every packet would flood the log
	}
	if f.Enf.Resets > 0 || f.Enf.Suppressed > 0 {
		w.trackOutcome(f, p)
	}
	if p.Flags&capture.FlagRST != 0 {
		return // never answer an RST; trackOutcome counted it
	}
	if int(f.Enf.Resets) >= w.e.cfg.MaxResetsPerFlow {
		w.suppress(f, rec, 1)
		return
	}
	if iv := int64(w.e.cfg.MinResetInterval); iv > 0 && f.Enf.LastReset != 0 && p.Timestamp-f.Enf.LastReset < iv {
		w.suppress(f, rec, 1)
		return
	}
	sender := int(dir) // side index of the packet's sender: AtoB ⇒ A (0)
	var sent []string
	first := f.Enf.Resets == 0
	switch {
	case p.IsTCP():
		rev := &f.Dirs[dir.Reverse()]
		peer := peerView{seen: rev.HasSeq(), nextSeq: rev.NextSeq}
		n := planResets(p, peer, &w.shots)
		for i := 0; i < n; i++ {
			s := w.shots[i]
			target := sender
			if !s.toSender {
				target = 1 - sender
			}
			if d := w.sendReset(f, rec, target, s, observe); d != "" {
				sent = append(sent, d)
			}
		}
	case p.IsUDP():
		if d := w.sendUnreachable(f, rec, sender, frame, observe); d != "" {
			sent = append(sent, d)
		}
	default:
		return
	}
	if first && f.Enf.Resets > 0 && !observe {
		d := time.Duration(time.Now().UnixNano() - p.Timestamp)
		w.reaction.Observe(d)
		rec.block.Reaction = d
	}
	if observe && len(sent) > 0 && rec.block.Outcome != OutcomeObserved {
		rec.block.Outcome = OutcomeObserved
		f.Enf.Outcome = outObserved
		w.observed.Add(1)
		b := rec.block
		w.e.bus.publish(Event{Type: EventWouldBlock, Time: b.At, Block: &b, Sent: sent})
		w.publishBlock(rec)
	} else if first && f.Enf.Resets > 0 {
		w.publishBlock(rec)
	}
}

// record returns the flow's block record, creating it on the first packet
// that gets a verdict to act on.
func (w *worker) record(f *flow.Flow, observe bool) *blockRec {
	if s := f.Enf.BlockSlot; s != 0 {
		r := &w.blocks[s-1]
		if r.handle == f.Handle() && (observe || r.block.Outcome != OutcomeObserved) {
			return r
		}
	}
	w.nextRec = (w.nextRec + 1) % len(w.blocks)
	r := &w.blocks[w.nextRec]
	f.Enf.BlockSlot = uint32(w.nextRec + 1)
	f.Enf.Resets, f.Enf.Suppressed, f.Enf.FirstReset, f.Enf.LastReset = 0, 0, 0, 0
	f.Enf.Outcome, f.Enf.Survivor = outNone, false
	*r = blockRec{handle: f.Handle(), block: w.newBlock(f)}
	if !observe {
		f.Enf.Outcome = outPending
		w.pending = append(w.pending, f.Handle())
	}
	return r
}

func (w *worker) newBlock(f *flow.Flow) Block {
	b := Block{
		ID:      w.e.blockID.Add(1),
		At:      time.Unix(0, w.now),
		Proto:   protoName(f.Proto()),
		Src:     f.A(),
		SrcPort: f.APort(),
		Dst:     f.B(),
		DstPort: f.BPort(),
		RuleID:  f.Enf.RuleID,
		Outcome: OutcomePending,
	}
	if en, ok := w.ruleEntry(f.Enf.RuleID); ok {
		b.RuleKind, b.Origin, b.Reason = en.Kind, en.Origin, en.Reason
	}
	return b
}

// ruleEntry looks up the rule that decided, for the block record. It runs
// once per blocked flow, never per packet.
func (w *worker) ruleEntry(id uint64) (rules.Entry, bool) {
	if g, ok := w.e.rules.(interface {
		Get(uint64) (rules.Entry, bool)
	}); ok && id != 0 {
		return g.Get(id)
	}
	return rules.Entry{}, false
}

func protoName(p uint8) string {
	switch p {
	case capture.ProtoTCP:
		return "tcp"
	case capture.ProtoUDP:
		return "udp"
	}
	return "ip"
}

// sendReset builds and sends one reset toward side target (0 = A, 1 = B)
// of the flow, impersonating the other side. It returns a description of
// the frame in observe mode.
func (w *worker) sendReset(f *flow.Flow, rec *blockRec, target int, s shot, observe bool) string {
	imp := 1 - target
	var r inject.Reset
	w.address(f, target, &r.DstMAC, &r.SrcMAC, &r.VLANs, &r.NumVLANs, &r.TTL)
	r.Src, r.Dst = sideAddr(f, imp), sideAddr(f, target)
	r.SrcPort, r.DstPort = sidePort(f, imp), sidePort(f, target)
	r.Seq, r.Ack, r.Flags = s.seq, s.ack, s.flags
	n, err := inject.BuildReset(w.buf[:], &r)
	if err != nil {
		w.sendErrors.Add(1)
		return ""
	}
	return w.transmit(f, rec, target, n, observe, false)
}

// sendUnreachable sends an ICMP destination-unreachable toward side target
// quoting the trigger datagram (still in frame).
func (w *worker) sendUnreachable(f *flow.Flow, rec *blockRec, target int, frame []byte, observe bool) string {
	p := &w.pkt
	if p.Dst.IsMulticast() || p.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return "" // never answer for a group or broadcast address (RFC 1122 §3.2.2)
	}
	imp := 1 - target
	u := inject.Unreachable{Code: w.e.cfg.Injection.Unreach}
	w.address(f, target, &u.DstMAC, &u.SrcMAC, &u.VLANs, &u.NumVLANs, &u.TTL)
	u.Src, u.Dst = sideAddr(f, imp), sideAddr(f, target)
	start := int(p.L3Offset)
	end := min(start+int(p.IPLen), len(frame))
	if start >= end {
		return ""
	}
	n, err := inject.BuildUnreachable(w.buf[:], &u, frame[start:end])
	if err != nil {
		w.sendErrors.Add(1)
		return ""
	}
	return w.transmit(f, rec, target, n, observe, true)
}

// transmit sends the frame in w.buf[:n] within the global ceiling, or
// describes it in observe mode, and accounts for it.
func (w *worker) transmit(f *flow.Flow, rec *blockRec, target, n int, observe, icmp bool) string {
	now := time.Now().UnixNano()
	if observe {
		return inject.Describe(w.buf[:n])
	}
	inj := &w.e.cfg.Injection
	if !inj.Ceiling.Allow(now) {
		w.suppress(f, rec, 1)
		return ""
	}
	if err := inj.Sender.Send(w.buf[:n]); err != nil {
		// A full driver queue (EAGAIN, ENOBUFS) costs this frame; the next
		// packet of the flow is chased again. A wrong next-hop MAC never
		// shows up here: the NextHop refresher keeps it current.
		w.sendErrors.Add(1)
		return ""
	}
	// FirstReset and LastReset are on the worker's clock (packet time), the
	// one the outcome rules compare them with; for live capture it is the
	// kernel's wall clock, for a replay the capture's.
	if f.Enf.Resets == 0 {
		f.Enf.FirstReset = w.now
		w.attempted.Add(1)
		f.MarkResetByUs()
	}
	f.Enf.Resets++
	f.Enf.LastReset = w.now
	if icmp {
		w.icmp.Add(1)
	} else {
		w.resets.Add(1)
	}
	if target == 0 {
		rec.block.ToSrc++
	} else {
		rec.block.ToDst++
	}
	return ""
}

func (w *worker) suppress(f *flow.Flow, rec *blockRec, n int) {
	f.Enf.Suppressed++
	rec.block.Suppressed += n
	w.suppressed.Add(uint64(n))
}

// address fills layer-2 addressing, VLAN stack and TTL for a frame toward
// side target, impersonating the other side: as that side's own frames
// toward target looked on the wire, or, if it never sent one, mirrored
// from target's frames.
func (w *worker) address(f *flow.Flow, target int, dst, src *[6]byte, vlans *[capture.MaxVLANs]capture.VLAN, nv *uint8, ttl *uint8) {
	imp := 1 - target
	d := &f.Dirs[imp] // frames from imp toward target (Dir index = sender side)
	if d.Pkts > 0 {
		*vlans, *nv, *ttl = d.VLANs, d.NumVLANs, d.TTL
		*dst, *src = d.DstMAC, d.SrcMAC
	} else {
		r := &f.Dirs[target]
		*vlans, *nv, *ttl = r.VLANs, r.NumVLANs, inject.DefaultTTL
		*dst, *src = r.SrcMAC, r.DstMAC
	}
	inj := &w.e.cfg.Injection
	if !inj.Reflect {
		*src = inj.SrcMAC
		if inj.NextHop != nil {
			*dst = inj.NextHop.MAC()
		}
	}
}

func sideAddr(f *flow.Flow, side int) netip.Addr {
	if side == 0 {
		return f.A()
	}
	return f.B()
}

func sidePort(f *flow.Flow, side int) uint16 {
	if side == 0 {
		return f.APort()
	}
	return f.BPort()
}

// trackOutcome reads what the hosts do after canopy's resets: their own RST
// or FIN confirms the kill; more payload means our reset lost a race, so we
// keep chasing (retrying) until the budget is spent (failed).
func (w *worker) trackOutcome(f *flow.Flow, p *capture.Packet) {
	if f.Enf.Outcome != outPending && f.Enf.Outcome != outRetrying {
		return
	}
	switch {
	case p.Flags&(capture.FlagRST|capture.FlagFIN) != 0:
		w.settle(f, outConfirmed)
	case p.PayloadLen > 0 || p.Proto == capture.ProtoUDP:
		f.Enf.Survivor = true
		// Payload already in flight when the resets landed keeps arriving
		// for up to a round trip; only payload past FailAfter, with the
		// budget spent, means the hosts ignored us.
		spent := int(f.Enf.Resets) >= w.e.cfg.MaxResetsPerFlow
		if spent && f.Enf.FirstReset != 0 && p.Timestamp-f.Enf.FirstReset >= int64(w.e.cfg.FailAfter) {
			w.settle(f, outFailed)
		} else if f.Enf.Outcome != outRetrying {
			f.Enf.Outcome = outRetrying
			if r := w.recOf(f); r != nil {
				r.block.Outcome = OutcomeRetrying
			}
		}
	}
}

// settle fixes a blocked flow's outcome and publishes it.
func (w *worker) settle(f *flow.Flow, out uint8) {
	if f.Enf.Outcome == out {
		return
	}
	f.Enf.Outcome = out
	switch out {
	case outConfirmed:
		w.confirmed.Add(1)
	case outFailed:
		w.failed.Add(1)
	}
	if r := w.recOf(f); r != nil {
		r.block.Outcome = outcomeNames[out]
		w.publishBlock(r)
	}
}

func (w *worker) recOf(f *flow.Flow) *blockRec {
	if s := f.Enf.BlockSlot; s != 0 {
		if r := &w.blocks[s-1]; r.handle == f.Handle() {
			return r
		}
	}
	return nil
}

// publishBlock hands the record to the live-blocks feed and, for a block
// event, to subscribers.
func (w *worker) publishBlock(r *blockRec) {
	b := r.block
	select {
	case w.e.blocks <- b:
	default:
	}
	if b.Outcome != OutcomeObserved {
		w.e.bus.publish(Event{Type: EventBlock, Time: time.Unix(0, w.now), Block: &b})
	}
}

// housekeep rotates the talkers bucket on second boundaries, settles
// outcomes of blocked flows that went quiet, and expires idle flows.
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
	w.created.Store(st.Created)
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

// settleQuiet confirms blocked flows that stayed silent for ConfirmAfter
// after the last reset, or that the table no longer holds.
func (w *worker) settleQuiet(now int64) {
	after := int64(w.e.cfg.ConfirmAfter)
	keep := w.pending[:0]
	for _, h := range w.pending {
		f := w.table.Get(h)
		if f == nil {
			continue // gone from the table: expired in silence, settled below
		}
		if f.Enf.Outcome != outPending && f.Enf.Outcome != outRetrying {
			continue
		}
		last := max(f.LastSeen(), f.Enf.LastReset)
		if f.Enf.Resets > 0 && now-last >= after {
			w.settle(f, outConfirmed)
			continue
		}
		keep = append(keep, h)
	}
	w.pending = keep
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

// killPrefix resets every live TCP flow with an endpoint in p from the flow
// table's last known numbers (a ban was just added).
func (w *worker) killPrefix(p netip.Prefix) {
	observe := w.e.observe.Load()
	w.table.ForEach(p, func(f *flow.Flow) bool {
		if f.Proto() != capture.ProtoTCP || f.State().Closed() {
			return true
		}
		act := w.verdict(f)
		if act != actBlock && act != actObserve {
			return true
		}
		obs := observe || act == actObserve
		rec := w.record(f, obs)
		rec.block.Proactive = true
		a, b := &f.Dirs[flow.AtoB], &f.Dirs[flow.BtoA]
		n := proactiveShots(
			[2]uint32{a.Ack, b.Ack}, [2]uint32{a.NextSeq, b.NextSeq},
			[2]bool{a.HasAck(), b.HasAck()}, [2]bool{a.HasSeq(), b.HasSeq()}, &w.shots)
		var sent []string
		for i := 0; i < n; i++ {
			s := w.shots[i]
			target := 1
			if s.toSender {
				target = 0
			}
			if d := w.sendReset(f, rec, target, s, obs); d != "" {
				sent = append(sent, d)
			}
		}
		if obs && len(sent) > 0 {
			f.Enf.Outcome = outObserved
			rec.block.Outcome = OutcomeObserved
			w.observed.Add(1)
			b := rec.block
			w.e.bus.publish(Event{Type: EventWouldBlock, Time: time.Now(), Block: &b, Sent: sent})
			w.publishBlock(rec)
		} else if f.Enf.Resets > 0 {
			w.publishBlock(rec)
		}
		return true
	})
}
