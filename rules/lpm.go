package rules

import (
	"math/bits"
	"net/netip"
	"slices"
)

// Longest-prefix match without a trie: a set of CIDRs is flattened into
// disjoint address intervals, each labelled with the most specific prefix
// covering it (or none). Lookup is then "last interval start <= address",
// a binary search over a sorted array. A bucket index on 2^k address bits
// narrows the search to a handful of elements, so a lookup in a million
// prefixes touches three or four cache lines. IPv4 and IPv6 keep separate,
// specialised tables; both are built through the same 128-bit code.
//
// With a million bans the tables are far bigger than the caches, so a
// random lookup costs about three DRAM accesses (bucket index, interval,
// rule); the large arrays are advised onto transparent huge pages so those
// accesses do not also miss the TLB. A one-cache-line-per-bucket layout
// (no index) was tried and was slower here: it needs twice the memory.
// The measured lookup costs are in the root BENCHMARKS.md (go run ./bench).

// u128 is an IPv6 address (or an IPv4 address in lo) as a number.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (a u128) and(b u128) u128 { return u128{a.hi & b.hi, a.lo & b.lo} }

func (a u128) or(b u128) u128 { return u128{a.hi | b.hi, a.lo | b.lo} }

func (a u128) not() u128 { return u128{^a.hi, ^a.lo} }

// inc returns a+1 and whether it wrapped around.
func (a u128) inc() (u128, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
		return u128{hi, lo}, hi == 0
	}
	return u128{hi, lo}, false
}

// shl shifts left by n bits, 0 <= n <= 128.
func (a u128) shl(n uint) u128 {
	switch {
	case n == 0:
		return a
	case n >= 64:
		return u128{a.lo << (n - 64), 0}
	}
	return u128{a.hi<<n | a.lo>>(64-n), a.lo << n}
}

// mask128 is the netmask of a /n prefix in a width-bit address space.
func mask128(n, width int) u128 {
	var all u128
	if width == 32 {
		all = u128{0, 0xffffffff}
	} else {
		all = u128{^uint64(0), ^uint64(0)}
	}
	host := hostMask(n, width)
	return all.and(host.not())
}

// hostMask has the low width-n bits set.
func hostMask(n, width int) u128 {
	h := width - n
	switch {
	case h <= 0:
		return u128{}
	case h >= 128:
		return u128{^uint64(0), ^uint64(0)}
	case h >= 64:
		return u128{^uint64(0) >> (128 - h), ^uint64(0)}
	}
	return u128{0, ^uint64(0) >> (64 - h)}
}

// addrKey converts an unmapped address to its table key and reports whether
// it is IPv4.
func addrKey(a netip.Addr) (u128, bool) {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}, true
	}
	b := a.As16()
	return u128{be64(b[0:8]), be64(b[8:16])}, false
}

func be64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// span is one prefix to flatten: its first and last address and the index
// of its rule.
type span struct {
	first, last u128
	idx         int32
}

// flatten turns spans sorted by (first asc, width desc) — CIDRs are either
// nested or disjoint — into interval starts and labels covering the whole
// space from 0, and fills parent[idx] with the index of the next enclosing
// span (-1 for none). The label of an interval is the innermost span.
func flatten(spans []span, parent []int32) (starts []u128, vals []int32) {
	starts = make([]u128, 0, 2*len(spans)+1)
	vals = make([]int32, 0, 2*len(spans)+1)
	emit := func(at u128, v int32) {
		n := len(starts)
		if n > 0 && starts[n-1] == at {
			vals[n-1] = v
			if n > 1 && vals[n-2] == v {
				starts, vals = starts[:n-1], vals[:n-1]
			}
			return
		}
		if n > 0 && vals[n-1] == v {
			return
		}
		starts = append(starts, at)
		vals = append(vals, v)
	}
	emit(u128{}, -1)
	stack := make([]span, 0, 32)
	top := func() int32 {
		if len(stack) == 0 {
			return -1
		}
		return stack[len(stack)-1].idx
	}
	closeUntil := func(before u128, all bool) {
		for len(stack) > 0 {
			t := stack[len(stack)-1]
			if !all && !t.last.less(before) {
				return
			}
			stack = stack[:len(stack)-1]
			if next, wrapped := t.last.inc(); !wrapped {
				emit(next, top())
			}
		}
	}
	for _, s := range spans {
		closeUntil(s.first, false)
		parent[s.idx] = top()
		emit(s.first, s.idx)
		stack = append(stack, s)
	}
	closeUntil(u128{}, true)
	return starts, vals
}

// bucketParams picks the bucket index geometry for a table: cp leading bits
// shared by every prefix in the table (so clustered sets still spread over
// all buckets) and k index bits after them.
func bucketParams(spans []span, n, width int) (cp, k int, cpMask, cpVal u128) {
	k = bits.Len(uint(n)) - lpmBucketShift
	k = min(max(k, 4), 20)
	if len(spans) == 0 {
		return 0, min(k, width), u128{}, u128{}
	}
	lo := spans[0].first
	hi := spans[0].last
	for _, s := range spans[1:] {
		if hi.less(s.last) {
			hi = s.last
		}
	}
	// Common leading bits of the lowest and highest covered address,
	// counted from the top of the width-bit space.
	x := u128{lo.hi ^ hi.hi, lo.lo ^ hi.lo}
	var lead int
	if x.hi != 0 {
		lead = bits.LeadingZeros64(x.hi)
	} else {
		lead = 64 + bits.LeadingZeros64(x.lo)
	}
	if width == 32 {
		lead -= 96
	}
	cp = min(lead, width-k)
	if cp < 0 {
		cp = 0
	}
	k = min(k, width-cp)
	cpMask = mask128(cp, width)
	cpVal = lo.and(cpMask)
	return cp, k, cpMask, cpVal
}

// lpmBucketShift sets the bucket count to about n/2^lpmBucketShift: small
// enough that the index stays in cache, large enough that a bucket spans
// one or two cache lines.
var lpmBucketShift = 2

// lpm4 is a flattened IPv4 prefix table.
type lpm4 struct {
	ents   []ent4   // interval starts with their labels: one cache line per probe
	idx    []uint32 // idx[b] = first i with bucket(starts[i]) >= b
	cpMask uint32
	cpVal  uint32
	cp     uint8
	k      uint8
	last   uint32 // number of buckets - 1
}

func (t *lpm4) bucket(a uint32) uint32 {
	if m := a & t.cpMask; m != t.cpVal {
		if m < t.cpVal {
			return 0
		}
		return t.last
	}
	return (a << t.cp) >> (32 - t.k)
}

// ent4 is one interval start and its label (rule index, -1 for none).
type ent4 struct {
	start uint32
	val   int32
}

// lookup returns the label of the interval holding a (-1 for none).
func (t *lpm4) lookup(a uint32) int32 {
	b := t.bucket(a)
	lo, hi := t.idx[b], t.idx[b+1]
	ents := t.ents
	for lo < hi {
		m := (lo + hi) >> 1
		if ents[m].start <= a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return ents[lo-1].val
}

func buildLPM4(spans []span, parent []int32) lpm4 {
	s128, vals := flatten(spans, parent)
	cp, k, cm, cv := bucketParams(spans, len(s128), 32)
	ents := make([]ent4, len(s128))
	adviseHuge(ents)
	t := lpm4{
		ents:   ents,
		cpMask: uint32(cm.lo),
		cpVal:  uint32(cv.lo),
		cp:     uint8(cp),
		k:      uint8(k),
		last:   uint32(1)<<k - 1,
	}
	for i, s := range s128 {
		t.ents[i] = ent4{uint32(s.lo), vals[i]}
	}
	t.idx = make([]uint32, int(t.last)+2)
	adviseHuge(t.idx)
	i := 0
	for b := 0; b <= int(t.last); b++ {
		for i < len(t.ents) && int(t.bucket(t.ents[i].start)) < b {
			i++
		}
		t.idx[b] = uint32(i)
	}
	// ents[0] starts at 0 and lies in bucket 0, so every bucket but the
	// first begins at index >= 1 and lookup's lo-1 never goes below zero.
	t.idx[t.last+1] = uint32(len(t.ents))
	return t
}

// lpm6 is a flattened IPv6 prefix table.
type lpm6 struct {
	ents   []ent6
	idx    []uint32
	cpMask u128
	cpVal  u128
	cp     uint8
	k      uint8
	last   uint32
}

func (t *lpm6) bucket(a u128) uint32 {
	if m := a.and(t.cpMask); m != t.cpVal {
		if m.less(t.cpVal) {
			return 0
		}
		return t.last
	}
	return uint32(a.shl(uint(t.cp)).hi >> (64 - t.k))
}

// ent6 is one IPv6 interval start and its label.
type ent6 struct {
	start u128
	val   int32
}

func (t *lpm6) lookup(a u128) int32 {
	b := t.bucket(a)
	lo, hi := t.idx[b], t.idx[b+1]
	ents := t.ents
	for lo < hi {
		m := (lo + hi) >> 1
		s := ents[m].start
		if s.hi < a.hi || (s.hi == a.hi && s.lo <= a.lo) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return ents[lo-1].val
}

func buildLPM6(spans []span, parent []int32) lpm6 {
	starts, vals := flatten(spans, parent)
	cp, k, cm, cv := bucketParams(spans, len(starts), 128)
	ents := make([]ent6, len(starts))
	adviseHuge(ents)
	t := lpm6{
		ents:   ents,
		cpMask: cm,
		cpVal:  cv,
		cp:     uint8(cp),
		k:      uint8(k),
		last:   uint32(1)<<k - 1,
	}
	for i, s := range starts {
		t.ents[i] = ent6{s, vals[i]}
	}
	t.idx = make([]uint32, int(t.last)+2)
	adviseHuge(t.idx)
	i := 0
	for b := 0; b <= int(t.last); b++ {
		for i < len(t.ents) && int(t.bucket(t.ents[i].start)) < b {
			i++
		}
		t.idx[b] = uint32(i)
	}
	t.idx[t.last+1] = uint32(len(t.ents))
	return t
}

// spanOf is the span of prefix p (already masked and unmapped).
func spanOf(p netip.Prefix, idx int32) span {
	first, is4 := addrKey(p.Addr())
	width := 128
	if is4 {
		width = 32
	}
	return span{first: first, last: first.or(hostMask(p.Bits(), width)), idx: idx}
}

// sortSpans orders spans for flatten: by first address, wider first.
func sortSpans(s []span) {
	slices.SortFunc(s, cmpSpan)
}

func cmpSpan(a, b span) int {
	switch {
	case a.first.less(b.first):
		return -1
	case b.first.less(a.first):
		return 1
	case b.last.less(a.last): // a is wider
		return -1
	case a.last.less(b.last):
		return 1
	}
	return 0
}
