package flow

import (
	"unsafe"

	"canopy/capture"
)

// PrefetchMax is the most packets one Prefetch call looks ahead at.
const PrefetchMax = 16

// prefetchMinFlows is the number of live flows below which Prefetch does
// nothing: that few flows stay in cache (32768 are 6 MiB), and looking
// ahead would only cost time (about 50 ns a frame measured in the sensor
// with 1000 flows).
const prefetchMinFlows = 1 << 15

// Prefetch starts loading, for each of ps (up to PrefetchMax), the memory
// Update will read for it, so that the cache misses of a batch overlap
// instead of following each other: with a million flows a packet's flow is
// almost never in cache, and one miss at a time costs a DRAM latency per
// packet. It changes nothing in the table; calling Update for the same
// packets afterwards (in any order, with other calls in between) gives
// exactly the results it gives without Prefetch, only sooner. Capture hands
// frames over a block at a time, which is where the batch comes from.
//
// Prefetches are hints the CPU works on while the code goes on, but only
// about a dozen misses can be outstanding at once, so it asks for the lines
// that will be read and no more, in passes over the batch: (1) hash each
// key and fetch the hash head and the key line of both home slots; (2) for
// a packet whose flow is at a home (its key is in by now) fetch the flow's
// other two lines, else fetch the key line of the chain's first flow;
// (3, 4) if that is the flow, fetch its other two lines, else the next
// link's key line; (5) the same for the third link. Flows further down a
// chain (rare: a chain averages under two flows) are left to Update.
// Fetching the talker tables' slots and rows here too was tried and made
// every case slower (random 200 → 240 ns, trains 89 → 107 ns a packet):
// the misses that can be in flight at once are the limit, and these ask
// for more of them.
func (t *Table) Prefetch(ps []capture.Packet) {
	if t.live < t.prefetchMin {
		return
	}
	var ks [PrefetchMax]key
	var hs [PrefetchMax]uint64
	var has, found uint32 // bit j: ps[j] has a flow; its slot is fetched
	n := min(len(ps), PrefetchMax)
	for j := range n {
		k := &ks[j]
		if !flowKey(&ps[j], k) {
			continue
		}
		if j > 0 && has&(1<<(j-1)) != 0 && ks[j-1].eq(k) {
			continue // a train: the previous packet's flow, fetched already
		}
		h := k.hash(t.seed)
		hs[j] = h
		has |= 1 << j
		h1, h2 := t.homes2(h)
		touch3(unsafe.Pointer(&t.heads[h&t.mask]), unsafe.Pointer(&t.flows[h1]), unsafe.Pointer(&t.flows[h2]))
	}
	for j := range n {
		if has&(1<<j) == 0 {
			continue
		}
		h1, h2 := t.homes2(hs[j])
		switch {
		case t.flows[h1].key.eq(&ks[j]):
			t.touchRest(h1)
			found |= 1 << j
		case t.flows[h2].key.eq(&ks[j]):
			t.touchRest(h2)
			found |= 1 << j
		default:
			if i := t.heads[hs[j]&t.mask]; i != 0 {
				touch3(unsafe.Pointer(&t.flows[i]), unsafe.Pointer(&t.flows[i]), unsafe.Pointer(&t.flows[i]))
			}
		}
	}
	// Down the chain, one link per pass: by the time a pass reads a link,
	// the previous pass's prefetch of it has had the rest of the batch to
	// land.
	var cur [PrefetchMax]uint32 // the chain slot whose key line was fetched last
	for j := range n {
		if has&^found&(1<<j) != 0 {
			cur[j] = t.heads[hs[j]&t.mask]
		}
	}
	for range 2 {
		for j := range n {
			i := cur[j]
			if i == 0 {
				continue
			}
			if t.flows[i].key.eq(&ks[j]) {
				t.touchRest(i)
				cur[j] = 0
				continue
			}
			cur[j] = t.flows[i].next
			if c := cur[j]; c != 0 {
				touch3(unsafe.Pointer(&t.flows[c]), unsafe.Pointer(&t.flows[c]), unsafe.Pointer(&t.flows[c]))
			}
		}
	}
	for j := range n {
		if i := cur[j]; i != 0 && t.flows[i].key.eq(&ks[j]) {
			t.touchRest(i)
		}
	}
}

// touchRest prefetches the lines of slot i past its key line that a
// packet's Update and the sensor's verdict read: the directions (second
// line) and the enforcement record (third).
func (t *Table) touchRest(i uint32) {
	f := unsafe.Pointer(&t.flows[i])
	touch3(unsafe.Add(f, 64), unsafe.Add(f, 128), unsafe.Add(f, 128))
}

// flowKey sets k to the key Update files p under, and reports false (k
// untouched) for packets that have no flow.
func flowKey(p *capture.Packet, k *key) bool {
	if (p.IPVersion != 4 && p.IPVersion != 6) || !p.Src.IsValid() || p.Src.Is4() != p.Dst.Is4() || !(p.IsTCP() || p.IsUDP()) {
		return false
	}
	var ap addrPorts
	ap.fill(p)
	ap.sport, ap.dport = p.SrcPort, p.DstPort
	makeKey(&ap, k)
	return true
}
