package sensor

// This file holds what a worker does to a blocked flow: plan the resets,
// address and craft them, and send them within the budgets.

import (
	"net/netip"
	"time"

	"canopy/capture"
	"canopy/flow"
	"canopy/inject"
	"canopy/rules"
)

// enforce reacts to a packet of a blocked (or observed) flow.
func (w *worker) enforce(f *flow.Flow, dir flow.Dir, act uint8, frame []byte) {
	p := w.cur
	syn := p.IsTCP() && p.Flags&(capture.FlagSYN|capture.FlagACK|capture.FlagRST) == capture.FlagSYN
	if syn && f.Enf.BlockSlot != 0 && !(f.Enf.SynKnown && p.Seq == f.Enf.SynSeq) {
		w.newSession(f)
	}
	var pickedUp int64
	if f.Enf.Resets == 0 {
		pickedUp = time.Now().UnixNano() // may start a reaction: note when its trigger reached us
	}
	observe := act == actObserve || w.e.observe.Load()
	rec := w.record(f, observe)
	if syn {
		f.Enf.SynSeq, f.Enf.SynKnown = p.Seq, true
	}
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
		peer := peerView{seen: f.HasSeq(dir.Reverse()), nextSeq: rev.NextSeq}
		n := planResets(p, peer, &w.shots)
		// Resets toward the responder (side B, the service) go first: they
		// stop the request from being read, and a sendto can stall for
		// milliseconds running the kernel's pending softirq work, which
		// must not delay the reset that matters most.
		for _, toB := range [2]bool{true, false} {
			for i := 0; i < n; i++ {
				s := w.shots[i]
				target := sender
				if !s.toSender {
					target = 1 - sender
				}
				if (target == 1) != toB {
					continue
				}
				if d := w.sendReset(f, rec, target, s, observe); d != "" {
					sent = append(sent, d)
				}
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
		// Reaction ends when the first reset is handed to the kernel: the
		// sendto call, not its return, which can include softirq work the
		// kernel does for other packets on the way out.
		d := time.Duration(w.firstSendAt - p.Timestamp)
		w.reaction.Observe(d)
		w.pickup.Observe(time.Duration(pickedUp - p.Timestamp))
		rec.block.Reaction = d
	}
	if observe && len(sent) > 0 && rec.block.Outcome != OutcomeObserved {
		rec.block.Outcome = OutcomeObserved
		f.Decision.Outcome = outObserved
		w.observed.Add(1)
		b := rec.block
		w.e.bus.publish(Event{Type: EventWouldBlock, Time: b.At, Block: &b, Sent: sent})
		w.publishBlock(rec)
	} else if first && f.Enf.Resets > 0 {
		w.publishBlock(rec)
	}
}

// newSession handles a bare SYN with a new ISN on a flow canopy already
// acted on: the client reused its port for a new socket (a repeat of the
// old SYN keeps its ISN and stays with the old session). The flow table
// keeps such a SYN in the flow, as a survivor; the new session gets a block
// record and a reset budget of its own, and the old one, whose socket is
// gone, is confirmed. Sharing one budget would let a client that reconnects
// from one port spend it, and its next session go through unchallenged.
func (w *worker) newSession(f *flow.Flow) {
	if f.Decision.Outcome == outPending || f.Decision.Outcome == outRetrying {
		w.settle(f, outConfirmed)
	}
	f.Enf.BlockSlot = 0 // record starts a new one
}

// record returns the flow's block record, creating it on the first packet
// that gets a verdict to act on.
func (w *worker) record(f *flow.Flow, observe bool) *blockRec {
	if s := f.Enf.BlockSlot; s != 0 {
		r := &w.blocks[s-1]
		if r.handle == w.table.Handle(f) && (observe || r.block.Outcome != OutcomeObserved) {
			return r
		}
	}
	w.nextRec = (w.nextRec + 1) % len(w.blocks)
	r := &w.blocks[w.nextRec]
	f.Enf.BlockSlot = uint32(w.nextRec + 1)
	f.Enf.Resets, f.Enf.Suppressed, f.Enf.FirstReset, f.Enf.LastReset = 0, 0, 0, 0
	f.Decision.Outcome, f.Enf.Survivor = outNone, false
	*r = blockRec{handle: w.table.Handle(f), block: w.newBlock(f)}
	if !observe {
		f.Decision.Outcome = outPending
		w.pending = append(w.pending, pendingFlow{h: w.table.Handle(f), slot: f.Enf.BlockSlot})
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
	if id == 0 {
		return rules.Entry{}, false
	}
	return w.e.rules.Get(id)
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
	if !w.address(f, target, &r.DstMAC, &r.SrcMAC, &r.VLANs, &r.NumVLANs, &r.TTL) {
		w.sendErrors.Add(1)
		return ""
	}
	r.Src, r.Dst = sideAddr(f, imp), sideAddr(f, target)
	r.SrcPort, r.DstPort = sidePort(f, imp), sidePort(f, target)
	r.Seq, r.Ack, r.Flags = s.seq, s.ack, s.flags
	n, err := inject.BuildReset(w.buf[:], &r)
	if err != nil {
		w.sendErrors.Add(1)
		return ""
	}
	if !observe {
		ack := r.Ack
		if r.Flags&capture.FlagACK == 0 {
			ack = 0 // not written into the frame
		}
		w.noteSent(r.SrcPort, r.DstPort, r.Seq, ack)
	}
	return w.transmit(f, rec, target, n, observe, false)
}

// sendUnreachable sends an ICMP destination-unreachable toward side target
// quoting the trigger datagram (still in frame).
func (w *worker) sendUnreachable(f *flow.Flow, rec *blockRec, target int, frame []byte, observe bool) string {
	p := w.cur
	if p.Dst.IsMulticast() || p.Dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return "" // never answer for a group or broadcast address (RFC 1122 §3.2.2)
	}
	imp := 1 - target
	u := inject.Unreachable{Code: w.e.cfg.Injection.Unreach}
	if !w.address(f, target, &u.DstMAC, &u.SrcMAC, &u.VLANs, &u.NumVLANs, &u.TTL) {
		w.sendErrors.Add(1)
		return ""
	}
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
		w.firstSendAt = now
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
// from target's frames. The TTL is the impersonated side's own whenever it
// sent anything. It reports false when reflect mode has no MACs to use:
// neither direction's layer 2 is known (the table's L2 dictionary had no
// room), and a frame to 00:00:00:00:00:00 would go nowhere useful.
func (w *worker) address(f *flow.Flow, target int, dst, src *[6]byte, vlans *[capture.MaxVLANs]capture.VLAN, nv *uint8, ttl *uint8) bool {
	imp := 1 - target
	// frames from imp toward target (Dir index = sender side); L2 is not
	// ok if imp sent none, or (rarely) if the table's L2 dictionary had no
	// room for its tuple.
	*ttl = inject.DefaultTTL
	if f.Dirs[imp].Pkts() > 0 {
		*ttl = f.Dirs[imp].TTL
	}
	known := true
	if l, ok := w.table.L2(f, flow.Dir(imp)); ok {
		*vlans, *nv = l.VLANs, l.NumVLANs
		*dst, *src = l.DstMAC, l.SrcMAC
	} else {
		var r flow.L2
		r, known = w.table.L2(f, flow.Dir(target))
		*vlans, *nv = r.VLANs, r.NumVLANs
		*dst, *src = r.SrcMAC, r.DstMAC
	}
	inj := &w.e.cfg.Injection
	if !inj.Reflect {
		*src = inj.SrcMAC
		if inj.NextHop != nil {
			*dst = inj.NextHop.MAC()
		}
		return true
	}
	return known
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
