package flow

import (
	"encoding/binary"
	"math/bits"
)

// The 5-tuple index maps a key's hash to the slot of its flow. It is an
// array of one-cache-line buckets of fifteen entries (an 8-bit tag from
// the hash and a 24-bit slot number) with two candidate buckets per key,
// cuckoo style: a key lives in its primary bucket unless that was full
// when it came, then in its secondary one, and a key's primary bucket
// tells by its overflow count whether any of its keys live elsewhere. So
// a lookup reads one index line (a key found in its secondary moves home
// when there is room) and then the flow whose tag matched: no chains, and
// a known number of dependent misses, which is what lets Prefetch put a
// whole batch's misses in flight in two passes. There is a bucket per 13
// flow slots, under 5 bytes per flow (the hash heads and chain links it
// replaced took 8), so the index is at most 87% full and an insert rarely
// has to move other keys; when both buckets are full it moves keys to
// their other bucket (a random walk, as in cuckoo hashing) to make room.
//
// Tags let a lookup pass over the other keys of a bucket without reading
// their flows: a lookup meets another key with its tag about once in
// twenty, which costs it one more flow line, and the flow's key decides.
type ibucket struct {
	tags [16]byte // entry j's tag in byte j, 0 if empty; byte 15 unused
	// slots holds the fifteen entries' slot numbers, 24 bits each,
	// little-endian from byte 3j (0: empty), then the overflow count: the
	// keys whose primary bucket this is that live in their secondary.
	slots [48]byte
}

const (
	ibEntries = 15
	// ibFlowsPer is flow slots per bucket: 13 of 15 entries.
	ibFlowsPer = 13
	// maxKicks bounds an insert's walk. At the index's load a walk is
	// rarely needed and almost always ends in one or two moves; one that
	// does not end evicts the flow it was carrying (counted in
	// TableStats.Evicted).
	maxKicks = 500
	// maxSlot is the largest slot number an entry holds.
	maxSlot = 1<<24 - 1

	lanesLo = 0x7f7f_7f7f_7f7f_7f7f
	lanesHi = 0x8080_8080_8080_8080
	lanes1  = 0x0101_0101_0101_0101
)

// slot is entry j's slot number (0: empty).
func (b *ibucket) slot(j int) uint32 {
	return binary.LittleEndian.Uint32(b.slots[3*j:]) & maxSlot
}

// over is the number of keys whose primary bucket this is that live in
// their secondary bucket.
func (b *ibucket) over() uint32 {
	return uint32(b.slots[45]) | uint32(b.slots[46])<<8 | uint32(b.slots[47])<<16
}

func (b *ibucket) addOver(d int) {
	v := uint32(int(b.over()) + d)
	b.slots[45], b.slots[46], b.slots[47] = byte(v), byte(v>>8), byte(v>>16)
}

// tag is entry j's tag.
func (b *ibucket) tag(j int) uint8 { return b.tags[j] }

// put stores tag and slot i in entry j.
func (b *ibucket) put(j int, tag uint8, i uint32) {
	b.tags[j] = tag
	b.slots[3*j], b.slots[3*j+1], b.slots[3*j+2] = byte(i), byte(i>>8), byte(i>>16)
}

// clear empties entry j.
func (b *ibucket) clear(j int) { b.put(j, 0, 0) }

// matches returns the entries whose tag is tag, as bit 8j+7 of two words'
// masks (the top bit of each byte lane): exact, with no false positives,
// so a caller reads only the flows it must. Tags are never 0, so empty
// entries never match.
func (b *ibucket) matches(tag uint8) (m0, m1 uint64) {
	pat := uint64(tag) * lanes1
	return zeroLanes(binary.LittleEndian.Uint64(b.tags[:8]) ^ pat),
		zeroLanes(binary.LittleEndian.Uint64(b.tags[8:])^pat) & (lanesHi >> 8)
}

// zeroLanes sets the top bit of each byte of x that is zero.
func zeroLanes(x uint64) uint64 { return ^((x&lanesLo + lanesLo) | x) & lanesHi }

// free is the first empty entry, or -1.
func (b *ibucket) free() int {
	for j := range ibEntries {
		if b.tags[j] == 0 {
			return j
		}
	}
	return -1
}

// entryOf is the entry holding slot i, or -1.
func (b *ibucket) entryOf(i uint32) int {
	for j := range ibEntries {
		if b.slot(j) == i {
			return j
		}
	}
	return -1
}

// ibucketsFor is the number of index buckets for a table of n flows.
func ibucketsFor(n int) int { return max(2, (n+ibFlowsPer-1)/ibFlowsPer) }

// primary is the bucket a key with hash h lives in unless it was full.
// The top 32 bits pick it, the low 16 the tag and the low 32 the
// secondary, so the three are nearly independent.
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

// tagOf is the tag of a key with hash h: 1 to 255, never 0 (empty).
func tagOf(h uint64) uint8 { return uint8(uint16(h)%255 + 1) }

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
// and under churn at full load nearly a third of the keys (30% in
// TestIndexFullTableChurn) would cost every lookup a second index line.
func (t *Table) goHome(i uint32, h uint64) {
	p := t.primary(h)
	j := t.idx[p].free()
	if j < 0 {
		return
	}
	s := t.secondary(h, p)
	e := t.idx[s].entryOf(i)
	if e < 0 {
		return // home already: UpdateAhead's word that it was away is from Prefetch
	}
	t.idx[s].clear(e)
	t.idx[p].put(j, tagOf(h), i)
	t.idx[p].addOver(-1)
}

// findIn returns the slot of the flow with key k among b's entries with
// tag tag, or 0. A loop per half of the tags, although which half a key's
// entry is in is a coin toss: gathering both halves into one 15-bit mask
// first (two multiplies) measured no faster, batched with a million flows
// (medians of 5 side by side): hot set 69.6 → 75.6 ns a packet, Zipf
// 86.3 → 86.2, uniformly random 107.8 → 103.8, all within this machine's
// noise but the first.
func (t *Table) findIn(b *ibucket, k *key, tag uint8) uint32 {
	m0, m1 := b.matches(tag)
	for ; m0 != 0; m0 &= m0 - 1 {
		if i := b.slot(bits.TrailingZeros64(m0) / 8); t.flows[i].key.eq(k) {
			return i
		}
	}
	for ; m1 != 0; m1 &= m1 - 1 {
		if i := b.slot(8 + bits.TrailingZeros64(m1)/8); t.flows[i].key.eq(k) {
			return i
		}
	}
	return 0
}

// touchCandidates prefetches the flows of b's entries with tag tag (about
// one in twenty lookups has two) and returns the first one's slot, or 0.
// Prefetch uses it: the flows' keys are not in cache yet to compare.
func (t *Table) touchCandidates(b *ibucket, tag uint8) (first uint32) {
	m0, m1 := b.matches(tag)
	for ; m1 != 0; m1 &= m1 - 1 {
		first = b.slot(8 + bits.TrailingZeros64(m1)/8)
		t.touchFlow(first)
	}
	for ; m0 != 0; m0 &= m0 - 1 {
		first = b.slot(bits.TrailingZeros64(m0) / 8)
		t.touchFlow(first)
	}
	return first
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
		if b.slot(j) == i {
			j = (j + 1) % ibEntries // never displace the new flow
		}
		victim := b.slot(j)
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
