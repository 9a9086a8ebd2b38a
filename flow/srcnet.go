package flow

import (
	"net/netip"
	"slices"
)

// This file derives the BySrcNet talkers: the tracked sources summed by
// network when a Snapshot is taken. Sources beyond the tracking limit are
// in BySrc's "other" row, and so in BySrcNet's: their networks are not
// known.

// netTable is the Aggregator's scratch for BySrcNet, reused by every
// Snapshot.
type netTable struct {
	index map[netID]int32
	sums  []netSum // one per network of a source with traffic in the last 40 s
	of    []int32  // per BySrc series slot: its network's index in sums, or -1
	pos   []int32  // per network: its place in top, or -1
	top   []series // the top networks, sparklines and all
}

// netID is a network's address words and family: quicker to hash than a
// talkerKey, which summing does once per tracked source.
type netID struct {
	hi, lo uint64
	v6     uint8
}

// netSum is one network's window sums; its sparkline is added up only if
// it makes the top.
type netSum struct {
	key      talkerKey
	sumBytes [NumWindows]uint64
	sumPkts  [NumWindows]uint64
	flows    uint32
	flowsSec int64
	last     int64
}

// srcNets returns the top n (n > 0) networks of the tracked sources,
// ranked as Snapshot ranks every kind, as series with their sources' sums
// and sparklines. It goes over the sources twice, in slot order: the sums
// of every network, then the sparklines of the top ones' sources (summing
// every source's sixty seconds nearly doubled a Snapshot's cost).
func (a *Aggregator) srcNets(n int) []*series {
	nt := &a.nets
	if nt.index == nil {
		nt.index = make(map[netID]int32)
	}
	clear(nt.index)
	nt.sums = nt.sums[:0]
	kt := &a.kinds[BySrc]
	nt.of = slices.Grow(nt.of[:0], len(kt.series))[:len(kt.series)]
	for i := range kt.series {
		s := &kt.series[i]
		nt.of[i] = -1
		if s.sumPkts[Win40s] == 0 {
			continue // silent for 40 s, or a free slot (silent for 60)
		}
		k := netKey(&s.key)
		hi, lo := k.a.words()
		j, ok := nt.index[netID{hi, lo, k.v6}]
		if !ok {
			nt.sums = append(nt.sums, netSum{key: k, flowsSec: -1})
			j = int32(len(nt.sums) - 1)
			nt.index[netID{hi, lo, k.v6}] = j
		}
		nt.of[i] = j
		m := &nt.sums[j]
		for w := range m.sumBytes {
			m.sumBytes[w] += s.sumBytes[w]
			m.sumPkts[w] += s.sumPkts[w]
		}
		// Flows of the latest second any of its sources has them for.
		if s.flowsSec > m.flowsSec {
			m.flows, m.flowsSec = 0, s.flowsSec
		}
		if s.flowsSec == m.flowsSec {
			m.flows += s.flows
		}
		m.last = max(m.last, s.last)
	}
	// The top n by the same order as rank, as indexes into sums.
	best := make([]int32, 0, n)
	for j := range nt.sums {
		best = offerTopSum(best, n, nt.sums, int32(j))
	}
	nt.pos = slices.Grow(nt.pos[:0], len(nt.sums))[:len(nt.sums)]
	for j := range nt.pos {
		nt.pos[j] = -1
	}
	nt.top = slices.Grow(nt.top[:0], len(best))[:len(best)]
	for p, j := range best {
		m := &nt.sums[j]
		nt.top[p] = series{key: m.key, sumBytes: m.sumBytes, sumPkts: m.sumPkts, flows: m.flows, flowsSec: m.flowsSec, last: m.last}
		nt.pos[j] = int32(p)
	}
	for i, j := range nt.of {
		if j < 0 || nt.pos[j] < 0 {
			continue
		}
		dst, src := &nt.top[nt.pos[j]], &kt.series[i]
		for x := range dst.bytes {
			dst.bytes[x] += src.bytes[x]
		}
	}
	top := make([]*series, len(nt.top))
	for p := range nt.top {
		top[p] = &nt.top[p]
	}
	return top
}

// offerTopSum is offerTop for network sums, by index.
func offerTopSum(top []int32, n int, sums []netSum, j int32) []int32 {
	less := func(x, y int32) int { return rankSum(&sums[x], &sums[y]) }
	if len(top) == n && less(j, top[n-1]) >= 0 {
		return top
	}
	i, _ := slices.BinarySearchFunc(top, j, less)
	if len(top) < n {
		top = append(top, 0)
	}
	copy(top[i+1:], top[i:len(top)-1])
	top[i] = j
	return top
}

// rankSum orders network sums as rank orders series.
func rankSum(x, y *netSum) int { return rankBy(&x.sumBytes, &y.sumBytes, &x.key, &y.key) }

// netKey is the key of the network of source key k: its address masked
// to SrcNetBits4 or SrcNetBits6 bits (stored IPv4 addresses are the last
// four of sixteen bytes).
func netKey(k *talkerKey) talkerKey {
	n := talkerKey{a: k.a, v6: k.v6}
	if k.v6 == 0 {
		clear(n.a[12+SrcNetBits4/8:])
	} else {
		clear(n.a[SrcNetBits6/8:])
	}
	return n
}

// netOf is the network a BySrcNet key stands for.
func netOf(k *talkerKey) netip.Prefix {
	bits := SrcNetBits6
	if k.v6 == 0 {
		bits = SrcNetBits4
	}
	return netip.PrefixFrom(k.a.addr(k.v6), bits)
}
