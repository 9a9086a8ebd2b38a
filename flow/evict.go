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
//
// Between evictions it keeps the best candidates it has drawn and not
// evicted (pool), as Redis's approximated LRU does: a victim is the best
// of the new sample and the pool. Evicting a quarter of 16,384 flows of
// distinct ages, a sample of 5 with the pool took 70.5% of its victims
// from the oldest quarter and 1 from the younger half; 8 without it took
// 71.1% and 129 (TestEvictionPoolSparesTheYoung). Reading 5 random flows
// a new flow instead of 8, UpdateNewFlows/batch32 went 601 → 527 ns a
// flow, one at a time 853 → 806 (taskset -c 1, medians of 5 side by
// side).
type evictor struct {
	ring  [evictAhead][maxEvictSample]uint32 // samples drawn ahead; ring[next] is the next eviction's
	next  int
	drawn bool // ring is full (false before the first sampled eviction)
	pool  evictPool
}

// evictPool holds up to poolSize candidates, earliest idle deadline first.
// An entry may be stale (its flow seen again, or gone): evict checks the
// one it takes.
type evictPool struct {
	c [poolSize]candidate
	n int
}

// poolSize is how many candidates an evictor keeps (Redis keeps 16).
const poolSize = 16

// candidate is a flow as it was when drawn.
type candidate struct {
	slot     uint32
	gen      uint32 // Flow.gen then: a slot since given to another flow is stale
	deadline int64  // LastSeen + timeout then: a flow seen since has a later one
}

// offer puts c in the pool if it is among the poolSize earliest.
func (p *evictPool) offer(c candidate) {
	j := p.n
	if j == poolSize {
		if c.deadline >= p.c[poolSize-1].deadline {
			return
		}
		j-- // the latest makes room
	} else {
		p.n++
	}
	for ; j > 0 && p.c[j-1].deadline > c.deadline; j-- {
		p.c[j] = p.c[j-1]
	}
	p.c[j] = c
}

// take removes and returns the earliest candidate; ok is false if the pool
// is empty.
func (p *evictPool) take() (c candidate, ok bool) {
	if p.n == 0 {
		return candidate{}, false
	}
	c = p.c[0]
	copy(p.c[:p.n-1], p.c[1:p.n])
	p.n--
	return c, true
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
// slots at random and takes, of them and the pool of earlier draws, the
// flow furthest past its idle deadline (or, if none is past it, closest
// to it). Because the deadline comes from each flow's own timeout, a
// closed or half-open flow goes before an established one of the same
// idleness, so a SYN flood evicts its own half-open flows rather than
// established sessions (TestFloodSparesEstablishedSessions). (Consecutive
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
		v = t.choose(&t.ev.pool, t.sample(0))
		t.drawSample(t.ev.next)
		t.ev.next = (t.ev.next + 1) % evictAhead
	}
	t.unlink(&t.flows[v])
	t.stats.Evicted++
	t.bucket.evicted++
	return v
}

// choose offers the flows of sample to pool and takes the victim from it:
// the candidate with the earliest idle deadline that is still as it was
// drawn. A stale one is dropped, or offered again as its flow is now.
func (t *Table) choose(pool *evictPool, sample []uint32) uint32 {
	best := t.offerSample(pool, sample)
	for {
		c, ok := pool.take()
		if !ok {
			return best // every candidate was stale, and best did not fit
		}
		f := &t.flows[c.slot]
		if f.bits&bitInUse == 0 || f.gen != c.gen {
			continue // evicted or expired since, maybe given to another flow
		}
		if d := t.deadline(f); d != c.deadline {
			pool.offer(candidate{slot: c.slot, gen: f.gen, deadline: d}) // seen since
			continue
		}
		return c.slot
	}
}

// offerSample offers sample's flows to pool and returns the one of them
// with the earliest deadline (the first of equals), as they are now.
func (t *Table) offerSample(pool *evictPool, sample []uint32) (best uint32) {
	var bestD int64
	for _, i := range sample {
		f := &t.flows[i]
		d := t.deadline(f)
		if best == 0 || d < bestD {
			best, bestD = i, d
		}
		if pool.n < poolSize || d < pool.c[poolSize-1].deadline {
			pool.offer(candidate{slot: i, gen: f.gen, deadline: d})
		}
	}
	return best
}

// predict is choose without the checks, on a copy of the pool: the victim
// choose will most likely take (Prefetch's guess, to fetch what evicting
// it reads).
func (t *Table) predict(pool *evictPool, sample []uint32) uint32 {
	best := t.offerSample(pool, sample)
	if c, ok := pool.take(); ok {
		return c.slot
	}
	return best
}

// deadline is when f's idle timeout runs out.
func (t *Table) deadline(f *Flow) int64 { return t.LastSeen(f) + t.timeout(f) }

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
