package flow

// evictor is a full table's next eviction sample. Choosing a victim
// reads EvictSample random flows; read when needed, one after another,
// those misses were most of a new flow's cost in a full table (a SYN
// flood). So each eviction draws the next one's sample and starts fetching
// it (drawSample): UpdateNewFlows went from 968 to 750 ns a flow (medians
// of three runs side by side). Picking the next victim ahead too, and
// fetching what unlinking it reads (its index bucket and address-index
// neighbours), measured no faster one flow at a time (790 against 770 ns):
// the misses in flight were already as many as the core keeps.
//
// For a batch it does pay: samples are drawn evictAhead evictions ahead,
// so that Prefetch can tell which flows a batch's new flows will evict and
// fetch what unlinking them reads (UpdateNewFlows/batch32 651 → 476 ns a
// flow, one at a time 810 → 798, medians of 7 side by side).
type evictor struct {
	ring  [evictAhead][maxEvictSample]uint32 // samples drawn ahead; ring[next] is the next eviction's
	next  int
	drawn bool // ring is full (false before the first sampled eviction)
}

// evictAhead is how many evictions ahead samples are drawn: a batch's
// worth, as many as one Prefetch call can create flows.
const evictAhead = PrefetchMax

// sample is the sample the i-th eviction from now compares (i <
// evictAhead), valid once ev.drawn.
func (t *Table) sample(i int) []uint32 {
	return t.ev.ring[(t.ev.next+i)%evictAhead][:t.cfg.EvictSample]
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
		if !t.ev.drawn { // the first sampled eviction
			for i := range evictAhead {
				t.drawSample(i)
			}
			t.ev.drawn = true
		}
		v = t.oldest(t.sample(0))
		t.drawSample(t.ev.next)
		t.ev.next = (t.ev.next + 1) % evictAhead
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

// drawSample draws EvictSample slots into the evictor's sample ring[s]
// and starts fetching their flows.
func (t *Table) drawSample(s int) {
	for n := range t.cfg.EvictSample {
		t.rng += hk1
		r := mix(t.rng, t.rng^hk2)
		i := 1 + uint32((r>>32)*uint64(t.hwm)>>32)
		t.ev.ring[s][n] = i
		t.touchFlowHead(i)
	}
}
