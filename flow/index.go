package flow

import "math/bits"

// The 5-tuple index maps a key's hash to the slot of its flow. It is an
// array of one-cache-line buckets of ten entries (a 16-bit tag from the
// hash and a slot number) with two candidate buckets per key, cuckoo
// style: a key lives in its primary bucket unless that was full when it
// came, then in its secondary one, and a key's bucket tells by its
// overflow count whether any of its keys live elsewhere. So a lookup reads
// one index line (about one key in twenty reads a second one) and then
// exactly the one flow whose tag matched: no chains, and a known number of
// dependent misses, which is what lets Prefetch put a whole batch's misses
// in flight in two rounds. The index has 1.25 entries per flow slot (8
// bytes per flow, as the hash heads and chain links it replaced), so it is
// at most 80% full and an insert almost never has to move other keys;
// when both buckets are full it moves keys to their other bucket (a
// random walk, as in cuckoo hashing) to make room.
//
// Tags let a lookup pass over the other keys of a bucket without reading
// their flows; two keys in one bucket share a tag about once in 6,500
// lookups, and the flow's key decides.
type ibucket struct {
	// tags holds the ten 16-bit tags, four to a word (lane j%4 of word
	// j/4), so that one compare per word finds every entry with a tag;
	// the last word's two upper lanes hold over.
	tags [3]uint64
	slot [ibEntries]uint32 // 0: empty
}

const (
	ibEntries = 10
	// ibFlowsPer is flow slots per bucket: 8 of 10 entries, so the index
	// is at most 80% full.
	ibFlowsPer = 8
	// maxKicks bounds an insert's walk. At 80% load a walk is rarely
	// needed and almost always ends in one or two moves; one that does not
	// end evicts the flow it was carrying (counted in TableStats.Evicted).
	maxKicks = 500

	lanesLo = 0x7fff_7fff_7fff_7fff
	lanesHi = 0x8000_8000_8000_8000
	lanes1  = 0x0001_0001_0001_0001
)

// over is the number of keys whose primary bucket this is that live in
// their secondary bucket.
func (b *ibucket) over() uint32 { return uint32(b.tags[2] >> 32) }

func (b *ibucket) addOver(d int) { b.tags[2] += uint64(int64(d) << 32) }

// tag returns entry j's tag.
func (b *ibucket) tag(j int) uint16 { return uint16(b.tags[j/4] >> (16 * (j % 4))) }

// put stores tag and slot i in entry j.
func (b *ibucket) put(j int, tag uint16, i uint32) {
	sh := 16 * (j % 4)
	b.tags[j/4] = b.tags[j/4]&^(0xffff<<sh) | uint64(tag)<<sh
	b.slot[j] = i
}

// clear empties entry j.
func (b *ibucket) clear(j int) { b.put(j, 0, 0) }

// matches returns the entries whose tag is tag, as bit 16*j+15 of three
// words' masks (lane 15 of each 16-bit lane): exact, with no false
// positives, so a caller reads only the flows it must. Empty entries have
// tag 0 and may match; their slot is 0.
func (b *ibucket) matches(tag uint16) (m0, m1, m2 uint64) {
	pat := uint64(tag) * lanes1
	return zeroLanes(b.tags[0] ^ pat), zeroLanes(b.tags[1] ^ pat), zeroLanes(b.tags[2]^pat) & 0x8000_8000
}

// zeroLanes sets bit 15 of each 16-bit lane of x that is zero.
func zeroLanes(x uint64) uint64 { return ^((x&lanesLo + lanesLo) | x) & lanesHi }

// free is the first empty entry, or -1.
func (b *ibucket) free() int {
	for j, s := range b.slot {
		if s == 0 {
			return j
		}
	}
	return -1
}

// entryOf is the entry holding slot i, or -1.
func (b *ibucket) entryOf(i uint32) int {
	for j, s := range b.slot {
		if s == i {
			return j
		}
	}
	return -1
}

// ibucketsFor is the number of index buckets for a table of n flows.
func ibucketsFor(n int) int { return max(2, (n+ibFlowsPer-1)/ibFlowsPer) }

// primary is the bucket a key with hash h lives in unless it was full.
// The top 32 bits pick it, the low 16 are the tag and the low 32 pick
// the secondary, so the three are nearly independent.
func (t *Table) primary(h uint64) uint32 {
	return uint32((h >> 32) * uint64(len(t.idx)) >> 32)
}

// secondary is the other bucket of a key with hash h and primary p:
// never p itself.
func (t *Table) secondary(h uint64, p uint32) uint32 {
	n := uint64(len(t.idx))
	s := p + 1 + uint32(uint64(uint32(h))*(n-1)>>32)
	if uint64(s) >= n {
		s -= uint32(n)
	}
	return s
}

func tagOf(h uint64) uint16 { return uint16(h) }

// find returns the slot of the flow with key k (hash h), or 0, and
// whether it was found in its secondary bucket.
func (t *Table) find(k *key, h uint64) (i uint32, away bool) {
	p := t.primary(h)
	b := &t.idx[p]
	if i := t.findIn(b, k, tagOf(h)); i != 0 {
		return i, false
	}
	if b.over() == 0 {
		return 0, false
	}
	return t.findIn(&t.idx[t.secondary(h, p)], k, tagOf(h)), true
}

// goHome moves slot i (key hash h), found in its secondary bucket, to its
// primary if that has room now. Update calls it for every packet of such
// a flow: both buckets are in cache then. Without it, keys that had to
// go to their secondary would stay there after room came free at home,
// and under churn at full load a quarter of the keys (26% measured) cost
// every lookup a second index line instead of one in twenty.
func (t *Table) goHome(i uint32, h uint64) {
	p := t.primary(h)
	j := t.idx[p].free()
	if j < 0 {
		return
	}
	s := t.secondary(h, p)
	t.idx[s].clear(t.idx[s].entryOf(i))
	t.idx[p].put(j, tagOf(h), i)
	t.idx[p].addOver(-1)
}

// findIn returns the slot of the flow with key k among b's entries with
// tag tag, or 0.
func (t *Table) findIn(b *ibucket, k *key, tag uint16) uint32 {
	m0, m1, m2 := b.matches(tag)
	for w, m := range [3]uint64{m0, m1, m2} {
		for ; m != 0; m &= m - 1 {
			i := b.slot[4*w+bits.TrailingZeros64(m)/16]
			if i != 0 && t.flows[i].key.eq(k) {
				return i
			}
		}
	}
	return 0
}

// candidate is the slot of the first entry of b with tag tag (0: none).
// Prefetch uses it: it fetches that flow without comparing its key,
// which is not in cache yet.
func candidate(b *ibucket, tag uint16) uint32 {
	m0, m1, m2 := b.matches(tag)
	for w, m := range [3]uint64{m0, m1, m2} {
		for ; m != 0; m &= m - 1 {
			if i := b.slot[4*w+bits.TrailingZeros64(m)/16]; i != 0 {
				return i
			}
		}
	}
	return 0
}

// link enters slot i, whose flow's key has hash h, into the index. If
// making room means dropping another flow (a walk that did not end; not
// seen at the index's load), that flow is evicted, never the new one.
func (t *Table) link(i uint32, h uint64) {
	p := t.primary(h)
	if j := t.idx[p].free(); j >= 0 {
		t.idx[p].put(j, tagOf(h), i)
		return
	}
	s := t.secondary(h, p)
	if j := t.idx[s].free(); j >= 0 {
		t.idx[s].put(j, tagOf(h), i)
		t.idx[p].addOver(1)
		return
	}
	// Both full: take an entry of the secondary for i, and carry its key
	// to its other bucket, displacing another one there if that is full
	// too, and so on.
	cur, carry, ch := s, i, h
	for range maxKicks {
		b := &t.idx[cur]
		t.rng += hk1
		j := int(mix(t.rng, hk2) % ibEntries)
		if b.slot[j] == i {
			j = (j + 1) % ibEntries // never displace the new flow
		}
		victim := b.slot[j]
		t.kicks++
		vh := t.flows[victim].key.hash(t.seed)
		t.unplace(cur, j, vh)
		t.place(cur, j, carry, ch)
		carry, ch = victim, vh
		vp := t.primary(vh)
		alt := vp
		if cur == vp {
			alt = t.secondary(vh, vp)
		}
		if k := t.idx[alt].free(); k >= 0 {
			t.place(alt, k, carry, ch)
			return
		}
		cur = alt
	}
	// The walk did not end: carry is in no bucket. Drop its flow.
	t.dropUnindexed(&t.flows[carry])
}

// place puts slot i (key hash h) in entry j of bucket c, counting it in
// its primary's overflow if c is not its primary.
func (t *Table) place(c uint32, j int, i uint32, h uint64) {
	t.idx[c].put(j, tagOf(h), i)
	if p := t.primary(h); p != c {
		t.idx[p].addOver(1)
	}
}

// unplace empties entry j of bucket c, which holds a key of hash h.
func (t *Table) unplace(c uint32, j int, h uint64) {
	t.idx[c].clear(j)
	if p := t.primary(h); p != c {
		t.idx[p].addOver(-1)
	}
}

// unindex takes slot i, whose flow's key has hash h, out of the index.
func (t *Table) unindex(i uint32, h uint64) {
	p := t.primary(h)
	if j := t.idx[p].entryOf(i); j >= 0 {
		t.idx[p].clear(j)
		return
	}
	s := t.secondary(h, p)
	if j := t.idx[s].entryOf(i); j >= 0 {
		t.idx[s].clear(j)
		t.idx[p].addOver(-1)
	}
}
