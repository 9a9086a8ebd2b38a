package sensor

// This file holds how a blocked flow's outcome is read from what the hosts
// do next (their own RST or FIN, silence, or payload that keeps flowing),
// and how block records reach the live-blocks feed and the events.

import (
	"time"

	"canopy/capture"
	"canopy/flow"
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

// blockRec is a worker's own record of a blocked flow, indexed by
// flow.Enforcement.BlockSlot. It is published as a Block on every change
// of outcome.
type blockRec struct {
	handle flow.Handle
	block  Block
}

// trackOutcome reads what the hosts do after canopy's resets: their own RST
// or FIN confirms the kill; more payload means our reset lost a race, so we
// keep chasing (retrying) until the budget is spent (failed).
func (w *worker) trackOutcome(f *flow.Flow, p *capture.Packet) {
	if f.Decision.Outcome != outPending && f.Decision.Outcome != outRetrying {
		return
	}
	switch {
	case p.Flags&capture.FlagRST != 0 && w.ownReset(p):
		// canopy's own reset, shown back by the mirror: it says nothing
		// about whether the hosts took it.
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
		} else if f.Decision.Outcome != outRetrying {
			f.Decision.Outcome = outRetrying
			if r := w.recOf(f); r != nil {
				r.block.Outcome = OutcomeRetrying
			}
		}
	}
}

// noteSent remembers a reset canopy sends, for ownReset.
func (w *worker) noteSent(srcPort, dstPort uint16, seq, ack uint32) {
	k := sentKey{ports: uint32(srcPort)<<16 | uint32(dstPort), seq: seq, ack: ack}
	w.sent[sentSlot(k)] = k
}

// ownReset reports whether the RST p is a copy of one canopy sent.
func (w *worker) ownReset(p *capture.Packet) bool {
	k := sentKey{ports: uint32(p.SrcPort)<<16 | uint32(p.DstPort), seq: p.Seq, ack: p.Ack}
	return w.sent[sentSlot(k)] == k
}

func sentSlot(k sentKey) uint64 {
	return (uint64(k.ports)*0x9e3779b97f4a7c15 ^ uint64(k.seq)*0xc2b2ae3d27d4eb4f ^ uint64(k.ack)) % sentSlots
}

// settle fixes a blocked flow's outcome and publishes it.
func (w *worker) settle(f *flow.Flow, out uint8) {
	if f.Decision.Outcome == out {
		return
	}
	f.Decision.Outcome = out
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
		if r := &w.blocks[s-1]; r.handle == w.table.Handle(f) {
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

// settleQuiet confirms blocked flows that stayed silent for ConfirmAfter
// after the last reset, or that the table no longer holds: expired or
// evicted while silent, or replaced by a new session on the same 5-tuple
// (the client opened a new socket, so the one we reset is gone).
func (w *worker) settleQuiet(now int64) {
	after := int64(w.e.cfg.ConfirmAfter)
	keep := w.pending[:0]
	for _, pf := range w.pending {
		f := w.table.Get(pf.h)
		if f == nil {
			if r := &w.blocks[pf.slot-1]; r.handle == pf.h {
				w.settleGone(r)
			}
			continue
		}
		if f.Decision.Outcome != outPending && f.Decision.Outcome != outRetrying {
			continue
		}
		// LastSeen is the latest packet's millisecond, rounded down: the
		// packet may have come up to a millisecond later.
		last := max(w.table.LastSeen(f)+int64(time.Millisecond)-1, f.Enf.LastReset)
		if f.Enf.Resets > 0 && now-last >= after {
			w.settle(f, outConfirmed)
			continue
		}
		keep = append(keep, pf)
	}
	w.pending = keep
}

// settleGone confirms the record of a blocked flow the table dropped while
// its outcome was open, if a reset was sent into it.
func (w *worker) settleGone(r *blockRec) {
	if r.block.Outcome != OutcomePending && r.block.Outcome != OutcomeRetrying {
		return
	}
	if r.block.ToSrc+r.block.ToDst == 0 {
		return // nothing was sent (all suppressed): nothing to confirm
	}
	r.block.Outcome = OutcomeConfirmed
	w.confirmed.Add(1)
	w.publishBlock(r)
}
