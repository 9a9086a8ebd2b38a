package flow

import (
	"math/bits"
	"unsafe"

	"canopy/capture"
)

// PrefetchMax is the most packets one Prefetch call looks ahead at: a
// capture batch (see capture.MaxBatch for why that many), and at most 32,
// the bits of Prefetch's masks.
const PrefetchMax = capture.MaxBatch

const _ = uint32(1<<PrefetchMax - 1) // does not compile if PrefetchMax > 32

// prefetchMinFlows is the number of live flows below which Prefetch does
// nothing: that few flows stay in the core's own caches (4096 take 768
// KiB, of an L2 of 1-2 MiB), where looking ahead only costs time. Measured
// in the sensor (BenchmarkWorkerFrames, sessions in a scattered order,
// medians of 3 side by side), a frame costs with Prefetch off → on: 1000
// flows 50.7 → 59.5 ns, 3000 54.8 → 59.9, 4000 64.5 → 61.2, 5000 73.6 →
// 60.3, 8000 84.4 → 62.6, 30,000 104.8 → 78.9. The threshold was 32,768
// until those were measured: a worker with a few thousand to 32k flows
// paid a cache miss a frame.
const prefetchMinFlows = 1 << 12

// Prefetch starts loading, for each of ps (up to PrefetchMax), the memory
// Update will read for it, so that the cache misses of a batch overlap
// instead of following each other: with a million flows a packet's flow is
// almost never in cache, and one miss at a time costs a DRAM latency per
// packet. It changes nothing in the table; calling Update for the same
// packets afterwards (in any order, with other calls in between) gives
// exactly the results it gives without Prefetch, only sooner, and
// UpdateAhead also uses the keys it made. Capture hands frames over a
// block at a time, which is where the batch comes from.
//
// Prefetches are hints the CPU works on while the code goes on, but only
// about a dozen misses can be outstanding at once, so it asks for the lines
// that will be read and no more, in passes over the batch: (1) hash each
// key and fetch its primary index bucket; (2) find the entries whose tag
// matches (the bucket is in by now) and fetch their flows' lines, or, if
// there is none and the bucket says some of its keys live in their
// secondary bucket, fetch that; (3) the same in the secondary buckets;
// (4) for the packets whose tag no entry had (they start flows), the
// address-index list heads their endpoints go under, then the flows that
// head those lists now. It keeps each packet's key, hash and first
// candidate for UpdateAhead.
// The flows' keys are not compared here: they are not in cache yet, and
// a tag matches another key too about once in twenty lookups, which
// costs one more fetch. Two things tried did not pay: fetching the talker
// tables' slots and rows too (with the hash-chain index before this one,
// random 200 → 240 ns, trains 89 → 107 ns a packet: the misses that can
// be in flight at once are the limit, and these ask for more), and
// pipelining the passes with the Updates, each Update fetching for the
// packets 6 and 12 ahead in batches of 64 (the same times as now). Nor,
// measured again with this index (taskset -c 1, medians of 7 or 9 side
// by side, random-batch32 first): pipelining across batches, the next
// batch's index lines asked for before this batch's Updates and its
// flows' lines one packet per Update (92.5 → 103.1 ns a packet, Zipf
// 84.3 → 84.1, hot set 60.2 → 63.4: the Updates' own misses to the talker
// maps in L2 then wait behind the DRAM fetches); within the batch, pass 2
// done 8 packets ahead of each Update (89.6 → 102.1); PREFETCHNTA for the
// flows' lines (88.0 → 88.1); 64 packets a batch (89.5 → 90.8, trains and
// Zipf 5% faster). A batch's fetches all at once, then its Updates, is
// what this machine does best.
func (t *Table) Prefetch(ps []capture.Packet) {
	la := &t.ahead
	la.ps, la.has, la.lo, la.kicks = ps, 0, 0, t.kicks
	if t.live < t.prefetchMin {
		return
	}
	hs := &la.hs
	var bs [PrefetchMax]uint32 // the bucket pass 2 or 3 looks in
	var fetched, again uint32  // bit j: ps[j]'s index bucket is fetched (it has a flow, and is not a train's later packet); its secondary bucket is
	prev := false              // ps[j-1] has a flow
	// Pass 1's index lines go three to a touch3 call: the call into
	// assembly costs more than its prefetches, and a line asked for a
	// few nanoseconds later still comes long before pass 2 reads it
	// (medians of 5 runs side by side with a million flows: uniformly
	// random 133 → 127 ns a packet, Zipf 96 → 92, hot set 78 → 77, trains
	// 75 → 78, where a batch has two lines to ask for and the first waits
	// for the second's hash. Gathering pass 2's flow lines the same way
	// measured no faster: what touch3 waits for there is free fill
	// buffers, not the call).
	var q [3]unsafe.Pointer
	nq := 0
	n := min(len(ps), PrefetchMax)
	for j := range n {
		k := &la.keys[j]
		lo, ok := flowKey(&ps[j], k, &la.aps[j])
		if !ok {
			prev = false
			continue
		}
		la.has |= 1 << j
		la.lo |= b2u32(lo) << j
		if prev && k.eq(&la.keys[j-1]) {
			hs[j] = hs[j-1] // a train: the previous packet's flow, fetched already
			continue
		}
		prev = true
		h := k.hash(t.seed)
		hs[j] = h
		fetched |= 1 << j
		bs[j] = t.primary(h)
		q[nq] = unsafe.Pointer(&t.idx[bs[j]])
		if nq++; nq == 3 {
			touch3(q[0], q[1], q[2])
			nq = 0
		}
	}
	switch nq {
	case 1:
		touch(q[0])
	case 2:
		touch3(q[0], q[1], q[1])
	}
	for j := range n {
		if fetched&(1<<j) == 0 {
			continue
		}
		b := &t.idx[bs[j]]
		la.cand[j] = t.touchCandidates(b, tagOf(hs[j]))
		if la.cand[j] == 0 && b.over() != 0 {
			bs[j] = t.secondary(hs[j], bs[j])
			touch(unsafe.Pointer(&t.idx[bs[j]]))
			again |= 1 << j
		}
	}
	for j := range n {
		if again&(1<<j) == 0 {
			continue
		}
		la.cand[j] = t.touchCandidates(&t.idx[bs[j]], tagOf(hs[j]))
	}
	la.away = again
	for j := 1; j < n; j++ {
		if la.has&^fetched&(1<<j) != 0 { // a train's later packet: its flow's
			la.cand[j] = la.cand[j-1]
			la.away |= la.away >> 1 & (1 << j)
		}
	}
	var fresh uint32 // bit j: ps[j]'s index bucket is fetched and no entry has its tag: it starts a flow
	for j := range n {
		if fetched&(1<<j) != 0 && la.cand[j] == 0 {
			fresh |= 1 << j
		}
	}
	if fresh != 0 {
		t.prefetchNewFlows(fresh)
	}
}

// prefetchNewFlows is Prefetch's fourth pass, for the packets with a bit
// in fresh, whose index buckets were fetched and had no entry with their
// tag: they start flows (a SYN flood is nothing else). Linking one into the address index
// reads each endpoint's list head and writes the flow that heads it now,
// so it fetches the heads, then those flows' links. In a full table each
// new flow also evicts one, chosen from a sample drawn (and fetched)
// evictions ago: it works out the victims as evict will, and fetches what
// unlinking them reads, their index bucket and address-index links, then
// their list neighbours' links.
func (t *Table) prefetchNewFlows(fresh uint32) {
	la := &t.ahead
	var heads [2 * PrefetchMax]uint64
	nh := 0
	for ; fresh != 0; fresh &= fresh - 1 {
		k := &la.keys[bits.TrailingZeros32(fresh)]
		for _, a := range [2]*ip16{&k.lo, &k.hi} {
			b := t.epBucket(a, k.v6)
			touch(unsafe.Pointer(&t.epHeads[b]))
			heads[nh] = b
			nh++
		}
	}
	for _, b := range heads[:nh] {
		if r := t.epHeads[b]; r != 0 {
			touch(unsafe.Pointer(&t.flows[r>>1].ep))
		}
	}
	nv := min(nh/2, evictAhead)
	if nv == 0 || t.free != 0 || t.used != uint32(t.cfg.MaxFlows) || !t.ev.drawn || int(t.hwm) <= t.cfg.EvictSample {
		return // no new flow, or room for them, or evict looks at every slot
	}
	var vs [evictAhead]uint32
	pool := t.ev.pool // evict's pool as it will be: a copy to play forward
	for i := range nv {
		v := t.predict(&pool, t.sample(i))
		vs[i] = v
		f := unsafe.Pointer(&t.flows[v])
		// The sample's flows are in cache; a victim from the pool may
		// not be: its key decides its index bucket, fetched below.
		touch3(f, unsafe.Add(f, 64), unsafe.Pointer(&t.flows[v].ep))
	}
	for _, v := range vs[:nv] {
		touch(unsafe.Pointer(&t.idx[t.primary(t.flows[v].key.hash(t.seed))]))
		for _, l := range t.flows[v].ep {
			if l.prev != 0 {
				touch(unsafe.Pointer(&t.flows[l.prev>>1].ep))
			}
			if l.next != 0 {
				touch(unsafe.Pointer(&t.flows[l.next>>1].ep))
			}
		}
	}
}

// touch prefetches one line.
func touch(p unsafe.Pointer) { touch3(p, p, p) }

// touchFlow prefetches the two lines of slot i that a packet's Update and
// the sensor's verdict read: the key, the sensor's Decision and the
// directions. The third (Enf) is read only for flows being blocked.
func (t *Table) touchFlow(i uint32) {
	f := unsafe.Pointer(&t.flows[i])
	touch3(f, unsafe.Add(f, 64), unsafe.Add(f, 64))
}

// touchFlowHead prefetches the first line of slot i: all that Expire and
// choosing an eviction victim read (key, bits, state, Flow.last).
func (t *Table) touchFlowHead(i uint32) { touch(unsafe.Pointer(&t.flows[i])) }

// flowKey sets k to the key Update files p under and *ap to p's
// addresses and ports, and reports whether p's source is its lo endpoint,
// or reports ok false (k and ap untouched) for packets that have no flow.
func flowKey(p *capture.Packet, k *key, ap *addrPorts) (srcIsLo, ok bool) {
	if !isIP(p) || !(p.IsTCP() || p.IsUDP()) {
		return false, false
	}
	ap.fill(p)
	ap.sport, ap.dport = p.SrcPort, p.DstPort
	return makeKey(ap, k), true
}

// isIP reports whether p is IPv4 or IPv6 with addresses of its family,
// the packets the talkers count by address.
func isIP(p *capture.Packet) bool {
	return (p.IPVersion == 4 || p.IPVersion == 6) && p.Src.IsValid() && p.Src.Is4() == p.Dst.Is4()
}

// lookahead holds the keys and hashes Prefetch made for the packets of its
// batch, so that UpdateAhead need not make them again (see UpdateAhead
// for what making each key twice cost). Each is used once; the next
// Prefetch starts over.
type lookahead struct {
	ps   []capture.Packet // the batch the keys are for
	has  uint32           // bit j: keys[j], hs[j] and bit j of lo are ps[j]'s, not yet used
	lo   uint32           // bit j: ps[j]'s source is its key's lo endpoint
	hs   [PrefetchMax]uint64
	keys [PrefetchMax]key
	aps  [PrefetchMax]addrPorts // the addresses and ports keys[j] was made of, for the talkers
	// cand[j] is the slot of the first entry Prefetch found with ps[j]'s
	// tag (0: none), in the key's secondary bucket if bit j of away is
	// set. That was so when Prefetch looked; by UpdateAhead's time the
	// slot may hold another flow or none, so the flow's key and bits
	// decide. A live flow keeps its slot, and goHome moves only the flow
	// it is called for (once it checked the flow is away), but making room
	// for a new key (link's walk) moves others to their other bucket: if
	// a walk moved any since Prefetch (kicks), away may be wrong, Update
	// would then move a flow home where UpdateAhead would not, and so
	// UpdateAhead ignores the candidates.
	cand  [PrefetchMax]uint32
	away  uint32
	kicks uint64 // Table.kicks when Prefetch looked
}

// take returns the key, hash, srcIsLo and candidate (see cand) Prefetch
// made for ps[j], or a nil key if it made none (ps[j] has no flow, or was
// taken already).
func (la *lookahead) take(j int) (k *key, h uint64, srcIsLo bool, cand uint32, away bool) {
	if j >= PrefetchMax || la.has&(1<<j) == 0 {
		return nil, 0, false, 0, false
	}
	la.has &^= 1 << j
	return &la.keys[j], la.hs[j], la.lo&(1<<j) != 0, la.cand[j], la.away&(1<<j) != 0
}

// b2u32 is 1 for true, 0 for false.
func b2u32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
