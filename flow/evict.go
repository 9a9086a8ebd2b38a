package flow

// evictor is a full table's next eviction sample. Choosing a victim
// reads EvictSample random flows; read when needed, one after another,
// those misses were most of a new flow's cost in a full table (a SYN
// flood). So each eviction draws the next one's sample and starts fetching
// it (drawSample): UpdateNewFlows went from 968 to 750 ns a flow (medians
// of three runs side by side). Picking the next victim ahead too, and
// fetching what unlinking it reads (its index bucket and address-index
// neighbours), measured no faster (790 against 770 ns): the misses in
// flight were already as many as the core keeps.
type evictor struct {
	sample [maxEvictSample]uint32 // drawn by the previous eviction; slot 0 (none) before the first
}

// evict frees and returns one slot of a full table. It draws EvictSample
// slots at random and takes the one furthest past its idle deadline (or,
// if none is past it, closest to it): with 8 draws the victim is among the
// oldest 25% of flows with probability 1-0.75^8 ≈ 90%. Because the score is
// relative to each flow's own timeout, a closed or half-open flow goes
// before an established one of the same idleness, so a SYN flood evicts
// its own half-open flows rather than established sessions. (Consecutive
// slots would be cheaper to read but are not a random sample: a table
// filled from empty has its slots in creation order.) A table no larger
// than the sample is searched exhaustively, so the choice is exact.
func (t *Table) evict() uint32 {
	var v uint32
	if int(t.hwm) <= t.cfg.EvictSample { // small table: look at every slot
		var all [maxEvictSample]uint32
		for n := range t.hwm {
			all[n] = n + 1
		}
		v = t.oldest(all[:t.hwm])
	} else {
		if t.ev.sample[0] == 0 { // the first sampled eviction
			t.drawSample()
		}
		v = t.oldest(t.ev.sample[:t.cfg.EvictSample])
		t.drawSample()
	}
	t.unlink(&t.flows[v])
	t.stats.Evicted++
	t.bucket.evicted++
	return v
}

// oldest is the slot of slots whose flow is furthest past its idle
// deadline.
func (t *Table) oldest(slots []uint32) uint32 {
	var best uint32
	var bestScore int64
	for _, i := range slots {
		f := &t.flows[i]
		score := (t.now - t.LastSeen(f)) - t.timeout(f)
		if best == 0 || score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// drawSample draws EvictSample slots into the evictor's sample and starts
// fetching their flows.
func (t *Table) drawSample() {
	for n := range t.cfg.EvictSample {
		t.rng += hk1
		r := mix(t.rng, t.rng^hk2)
		i := 1 + uint32((r>>32)*uint64(t.hwm)>>32)
		t.ev.sample[n] = i
		t.touchFlowHead(i)
	}
}
