package sensor

import (
	"context"
	"slices"
	"time"

	"canopy/capture"
	"canopy/flow"
	"canopy/rules"
)

// snapshotter owns the talkers aggregator and the live-blocks list. Once a
// second (or when kicked) it builds an immutable Snapshot from them and
// from counters the workers publish with atomics; it never waits for a
// worker. When done closes (the workers have stopped) it drains what they
// handed over and publishes a final snapshot.
func (e *Engine) snapshotter(ctx context.Context, done <-chan struct{}) {
	agg := flow.NewAggregator(0)
	recent := newRecentBlocks(e.cfg.RecentBlocks)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	take := func(m bucketMsg) {
		agg.Add(m.worker, m.b, m.sec) // clears the bucket
		select {
		case e.free <- m.b:
		default: // enough spares queued; let this one go
		}
	}
	build := func() {
		e.publish(e.buildSnapshot(agg.Snapshot(e.cfg.TopTalkers, e.activeFlows()), recent))
	}
	for {
		select {
		case m := <-e.buckets:
			take(m)
		case b := <-e.blocks:
			recent.put(b)
		case <-tick.C:
			build()
		case reply := <-e.kick:
			e.drain(take, recent)
			build()
			close(reply)
		case <-done:
			e.drain(take, recent)
			build()
			return
		case <-ctx.Done():
			// Run closes done after the workers stop; wait for it so the
			// final snapshot includes their last buckets.
			<-done
			e.drain(take, recent)
			build()
			return
		}
	}
}

func (e *Engine) drain(take func(bucketMsg), recent *recentBlocks) {
	for {
		select {
		case m := <-e.buckets:
			take(m)
		case b := <-e.blocks:
			recent.put(b)
		default:
			return
		}
	}
}

func (e *Engine) activeFlows() int {
	n := 0
	for _, w := range e.workers {
		n += int(w.flows.Load())
	}
	return n
}

// buildSnapshot assembles a Snapshot from the traffic picture, the live
// blocks and the workers' counters.
func (e *Engine) buildSnapshot(traffic flow.Snapshot, recent *recentBlocks) Snapshot {
	var (
		bs       BlockStats
		reaction Reaction
		pickup   Reaction
		decode   uint64
		evicted  uint64
		l2full   uint64
	)
	for _, w := range e.workers {
		bs.Attempted += w.attempted.Load()
		bs.Confirmed += w.confirmed.Load()
		bs.Failed += w.failed.Load()
		bs.Observed += w.observed.Load()
		bs.ResetsSent += w.resets.Load()
		bs.ICMPSent += w.icmp.Load()
		bs.Suppressed += w.suppressed.Load()
		bs.SendErrors += w.sendErrors.Load()
		bs.Killing = max(bs.Killing, int(w.killing.Load()))
		for r := capture.Reason(0); r < capture.NumReasons; r++ {
			if r.Malformed() {
				decode += w.decode[r].Load()
			}
		}
		evicted += uint64(w.evicted.Load())
		l2full += uint64(w.l2full.Load())
		reaction.Merge(&w.reaction)
		pickup.Merge(&w.pickup)
	}
	if d := bs.Confirmed + bs.Failed; d > 0 {
		bs.SuccessRate = float64(bs.Confirmed) / float64(d)
	} else {
		bs.SuccessRate = 1
	}
	bs.ReactionP50 = reaction.Quantile(0.50)
	bs.ReactionP99 = reaction.Quantile(0.99)
	bs.ReactionBuckets, bs.ReactionCount, bs.ReactionSum = reaction.Buckets, reaction.Count, reaction.Sum
	bs.PickupP50, bs.PickupP99 = pickup.Quantile(0.50), pickup.Quantile(0.99)
	bs.PickupBuckets, bs.PickupCount, bs.PickupSum = pickup.Buckets, pickup.Count, pickup.Sum
	traffic.Totals.Evictions = evicted
	traffic.Totals.L2Full = l2full

	// The newest entries (bans an operator just made, not the oldest of a
	// million feed entries), and the counts from the store's O(1) stats.
	stats := e.rules.Stats()
	total := 0
	for _, n := range stats.Entries {
		total += n
	}
	entries, _ := e.rules.List(rules.Filter{Offset: max(0, total-e.cfg.RulesInSnapshot), Limit: e.cfg.RulesInSnapshot})
	slices.Reverse(entries)
	bans := stats.Entries[rules.KindBan]
	st := Status{
		Version:      e.cfg.Version,
		Started:      e.started,
		Mode:         e.Mode(),
		Source:       e.cfg.Source,
		Ifaces:       slices.Clone(e.cfg.Ifaces),
		InjectIface:  e.cfg.Injection.Iface,
		Capture:      e.src.Stats(),
		DecodeErrors: decode,
		Flows:        traffic.Totals.ActiveFlows,
		Bans:         bans,
		Blocks:       bs,
	}
	s := Snapshot{Status: st, Traffic: traffic, Rules: entries}
	if recent != nil {
		s.Blocks = recent.list()
	}
	return s
}

// recentBlocks keeps the latest record of the most recent blocks, newest
// first, bounded.
type recentBlocks struct {
	max   int
	order []uint64 // block IDs, oldest first
	byID  map[uint64]Block
}

func newRecentBlocks(n int) *recentBlocks {
	return &recentBlocks{max: n, byID: make(map[uint64]Block, n)}
}

func (r *recentBlocks) put(b Block) {
	if _, ok := r.byID[b.ID]; !ok {
		r.order = append(r.order, b.ID)
		if len(r.order) > r.max {
			delete(r.byID, r.order[0])
			r.order = r.order[1:]
		}
	}
	r.byID[b.ID] = b
}

func (r *recentBlocks) list() []Block {
	out := make([]Block, 0, len(r.order))
	for i := len(r.order) - 1; i >= 0; i-- {
		out = append(out, r.byID[r.order[i]])
	}
	return out
}
