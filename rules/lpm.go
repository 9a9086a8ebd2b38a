package rules

import (
	"math/bits"
	"net/netip"
	"sync/atomic"

	"canopy/internal/hugepage"
	"canopy/internal/ipword"
)

// Longest-prefix match without a trie. A base table keeps its rules
// sorted by (first address, prefix length) — CIDRs are nested or disjoint —
// packed into 128-byte blocks (tab4: 5 IPv4 rules, tab6: 3 IPv6 rules per
// block). A block holds everything a hit reads and writes: first address,
// prefix length, action, entry ID and the hit counter. The last rule that
// starts at or before an address is the most specific rule covering it,
// or lies inside that rule; in the second case (a nested ban, or a gap
// after one) the walk goes out through parent indexes, which only rules
// with an enclosing rule have (a flag in the block says so).
//
// Finding the block: fence[j] is the first address of block j (IPv6: the
// 32 address bits after the prefix every rule shares; blocks whose keys tie
// are told apart on full addresses, see tab6.settle), and a bucket index
// on the top bits narrows the fences to a few, counted without a branch.
// Index and fences are about 1/30 of the blocks' size, so they mostly stay in L2
// and a lookup costs one miss: the block, whose two lines the L2 spatial
// prefetcher fetches together. Before any of that, a presence bitmap (see
// presence) turns most lookups of unbanned addresses, the common case,
// away with one load.
//
// Why this layout: the earlier one flattened the prefixes into disjoint
// intervals (bucket index → interval → rule: three dependent misses), and
// counted hits in a separate rule array. With a million bans the data is
// far bigger than the caches, and a random lookup then costs as many
// dependent misses as it has levels. Here the counter shares the line the
// hit already read, so counting adds no access; what a Match costs beyond
// the miss is mostly instructions: the fewer there are, the sooner the
// next Match's miss starts while this one's is outstanding. So the hot path
// (tab4.find, tab6.find) has no calls, no tombstone checks and no
// data-dependent branches before the block is read, returns two registers,
// and Match skips the dst lookup after a full-length src match. A bucket's
// (at most 8) fences are counted by a branchless binary search; over 16
// fences that measured slower, as did bucket shifts of 1 and 2 (a bigger
// index that falls out of L2). The blocks are moved onto transparent huge
// pages once written (package hugepage), so the misses do not also miss
// the TLB, and addresses become keys without a trip through As16 (package
// ipword), which used to make every Match wait for the previous one's
// miss. The measured lookup and build costs are in the root BENCHMARKS.md
// (go run ./bench).

// u128 is an IPv6 address (or an IPv4 address in lo) as a number.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (a u128) and(b u128) u128 { return u128{a.hi & b.hi, a.lo & b.lo} }

func (a u128) or(b u128) u128 { return u128{a.hi | b.hi, a.lo | b.lo} }

func (a u128) not() u128 { return u128{^a.hi, ^a.lo} }

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

// addrKey converts an address to its table key and reports whether it is
// IPv4 (IPv4-mapped IPv6 addresses are). The zero Addr gives an IPv6 zero
// key; callers check validity themselves.
func addrKey(a netip.Addr) (u128, bool) {
	hi, lo := ipword.Of(a) // not As16: see package ipword
	if hi == 0 && lo>>32 == 0xffff && a.IsValid() {
		return u128{0, lo & 0xffffffff}, true
	}
	return u128{hi, lo}, false
}

// Block geometry. A block is two cache lines, aligned to 128 bytes: the
// L2 spatial prefetcher fetches the pair together, so a block costs one
// miss.
const (
	blk4N = 5 // IPv4 rules per block
	blk6N = 3 // IPv6 rules per block
	// fenceScan fences are counted without a branch; a bucket holding more
	// is binary searched.
	fenceScan = 8
)

// Rule flags, one byte per rule in a block.
const (
	flagAct    = 0x03 // the actCode
	flagParent = 0x80 // an enclosing rule exists (parent holds its index)
)

// blk4 holds blk4N consecutive IPv4 rules, sorted by (first, bits): all a
// hit reads and writes.
type blk4 struct {
	first [blk4N]uint32
	bits  [blk4N]uint8
	flags [blk4N]uint8
	_     [2]byte
	id    [blk4N]uint64
	n     [blk4N]atomic.Uint64 // packets matched through this base
	_     [16]byte
}

// blk6 holds blk6N consecutive IPv6 rules.
type blk6 struct {
	hi, lo [blk6N]uint64 // first address
	id     [blk6N]uint64
	n      [blk6N]atomic.Uint64
	bits   [blk6N]uint8
	flags  [blk6N]uint8
	_      [26]byte
}

// cold is what a table keeps for rebuilds, the counters' owners and the
// rare walk to an enclosing rule; a hit does not read it.
type cold struct {
	recs   []*record // the store's record of each rule, for hit counting
	parent []int32   // next enclosing rule, -1 for none
}

// hit is a ban lookup result: n is nil when nothing matched (and bits is
// then -1).
type hit struct {
	n    *atomic.Uint64
	id   uint64
	p    int32 // the rule's index in its base table (base hits only)
	bits int32
	act  actCode
}

// live reports whether id is in neither tombstone list.
func live(id uint64, tomb, tomb2 []uint64) bool {
	return (len(tomb) == 0 || !hasID(tomb, id)) && (len(tomb2) == 0 || !hasID(tomb2, id))
}

// tab4 is a compiled IPv4 rule table.
type tab4 struct {
	blks  []blk4
	n     int      // rules
	fence []uint32 // fence[j] = blks[j].first[0], then fenceScan pads
	idx   []uint32 // idx[b] = first j with bucket(fence[j]) >= b
	cold
	cpMask uint32
	cpVal  uint32
	cp     uint8
	k      uint8
	last   uint32 // number of buckets - 1
	presence
}

func (t *tab4) bucket(a uint32) uint32 {
	if m := a & t.cpMask; m != t.cpVal {
		if m < t.cpVal {
			return 0
		}
		return t.last
	}
	// In 64 bits, so neither shift can reach the width (cp+k <= 32).
	return uint32((uint64(a) << (t.cp & 63) & 0xffffffff) >> ((32 - t.k) & 63))
}

// find is the most specific rule covering a, for a Set with no tombstones:
// its index p and prefix length n, or n = -1 for none. It is the hot path,
// kept in one function and returning two registers rather than a hit,
// which the caller would copy through the stack: a Match's loads should
// be done before the next Match starts, so that consecutive Matches
// overlap their cache misses. The last rule starting at or before a is
// the answer or lies inside it; when it does not cover a, walk goes out
// through the enclosing rules.
func (t *tab4) find(a uint32) (p, n int32) {
	x, ok := t.may(a)
	if !ok {
		return -1, -1
	}
	b := x >> ((32 - t.k) & 63)
	lo, hi := t.idx[b], t.idx[b+1]
	var j int
	if hi-lo <= fenceScan {
		f := (*[fenceScan]uint32)(t.fence[lo : lo+fenceScan])
		// How many of the bucket's sorted fences are <= a: a binary
		// search without branches (a random key costs no misprediction),
		// four loads from 32 bytes. Written out: as a function it is over
		// the inliner's budget.
		c := le32(f[3], a) << 2
		c += le32(f[(c+1)&7], a) << 1
		c += le32(f[c&7], a)
		c += le32(f[c&7], a)
		j = int(lo+min(c, hi-lo)) - 1
	} else {
		j = t.search(a, lo, hi)
	}
	if j < 0 {
		return -1, -1
	}
	bl := &t.blks[j]
	// first[0] <= a: that is how block j was chosen.
	c := le32(bl.first[1], a) + le32(bl.first[2], a) + le32(bl.first[3], a) + le32(bl.first[4], a)
	q := min(j*blk4N+int(c), t.n-1) // the last block's pads never count
	s := q - j*blk4N
	if bits := bl.bits[s]; (a^bl.first[s])&mask4[bits&63] == 0 {
		return int32(q), int32(bits)
	}
	if bl.flags[s]&flagParent == 0 {
		return -1, -1
	}
	return t.walk(a, int(t.parent[q]), nil, nil)
}

// may is false if no rule can cover a: it lies outside the span all the
// rules lie in, or its presence bit is clear. x is a's bits after the
// shared prefix, at the top.
func (t *tab4) may(a uint32) (x uint32, ok bool) {
	x = uint32(uint64(a) << (t.cp & 63))
	return x, a&t.cpMask == t.cpVal && t.present(x)
}

// mask4[n] is the netmask of an IPv4 /n (0 <= n <= 32).
var mask4 = func() (m [64]uint32) {
	for n := 1; n <= 32; n++ {
		m[n] = ^uint32(0) << (32 - n)
	}
	return m
}()

// mask6[n] is the netmask of an IPv6 /n (0 <= n <= 128).
var mask6 = func() (m [256]u128) {
	for n := range 129 {
		m[n] = mask128(n, 128)
	}
	return m
}()

// le32 is 1 if x <= a, else 0, without a branch.
func le32(x, a uint32) uint32 { return uint32((uint64(a)-uint64(x))>>63) ^ 1 }

// search is the last block in bucket [lo, hi) (or the one before) whose
// fence is at or before a, for buckets too full to scan.
func (t *tab4) search(a, lo, hi uint32) int {
	for lo < hi {
		m := (lo + hi) >> 1
		if t.fence[m] <= a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return int(lo) - 1
}

// lookup is find for a Set with tombstones: the most specific rule
// covering a whose ID neither list holds.
func (t *tab4) lookup(a uint32, tomb, tomb2 []uint64) (p, n int32) {
	p, n = t.find(a)
	if n >= 0 && !live(t.blks[p/blk4N].id[p%blk4N], tomb, tomb2) {
		p, n = t.walk(a, int(t.parent[p]), tomb, tomb2)
	}
	return p, n
}

// count adds a hit to rule p and returns its ID and action.
func (t *tab4) count(p int32) (uint64, actCode) {
	bl, s := &t.blks[p/blk4N], p%blk4N
	bl.n[s].Add(1)
	return bl.id[s], actCode(bl.flags[s] & flagAct)
}

// walk goes out from rule p through its enclosing rules to the first that
// covers a and is live.
func (t *tab4) walk(a uint32, p int, tomb, tomb2 []uint64) (int32, int32) {
	for p >= 0 {
		bl, s := &t.blks[p/blk4N], p%blk4N
		if n := bl.bits[s]; (a^bl.first[s])&mask4[n&63] == 0 && live(bl.id[s], tomb, tomb2) {
			return int32(p), int32(n)
		}
		p = int(t.parent[p])
	}
	return -1, -1
}

func (t *tab4) rule(i int) rule {
	bl := &t.blks[i/blk4N]
	s := i % blk4N
	return rule{first: u128{0, uint64(bl.first[s])}, id: bl.id[s], rec: t.recs[i], bits: bl.bits[s], act: actCode(bl.flags[s] & flagAct)}
}

func (t *tab4) counter(i int) *atomic.Uint64 { return &t.blks[i/blk4N].n[i%blk4N] }

// buildTab4 compiles rules sorted by cmpRule.
func buildTab4(rs []rule) tab4 {
	t := tab4{n: len(rs), cold: cold{recs: make([]*record, len(rs)), parent: parents(rs, 32)}}
	nb := (len(rs) + blk4N - 1) / blk4N
	t.blks = make([]blk4, nb)
	hugepage.Advise(t.blks)
	for i := range rs {
		r := &rs[i]
		bl := &t.blks[i/blk4N]
		s := i % blk4N
		bl.first[s], bl.bits[s], bl.id[s] = uint32(r.first.lo), r.bits, r.id
		bl.flags[s] = uint8(r.act) & flagAct
		if t.parent[i] >= 0 {
			bl.flags[s] |= flagParent
		}
		t.recs[i] = r.rec
	}
	for i := len(rs); i < nb*blk4N; i++ {
		t.blks[i/blk4N].first[i%blk4N] = ^uint32(0)
	}
	hugepage.Collapse(t.blks)
	t.fence = make([]uint32, nb+fenceScan)
	for j := range t.blks {
		t.fence[j] = t.blks[j].first[0]
	}
	for j := nb; j < len(t.fence); j++ {
		t.fence[j] = ^uint32(0)
	}
	var lo, hi u128
	if len(rs) > 0 {
		lo, hi = rs[0].first, spanLast(rs, 32)
	}
	cp, k, cm, cv := bucketParams(lo, hi, nb, 32)
	t.cpMask, t.cpVal, t.cp, t.k, t.last = uint32(cm.lo), uint32(cv.lo), uint8(cp), uint8(k), uint32(1)<<k-1
	t.idx = make([]uint32, int(t.last)+2)
	j := 0
	for b := 0; b <= int(t.last); b++ {
		for j < nb && int(t.bucket(t.fence[j])) < b {
			j++
		}
		t.idx[b] = uint32(j)
	}
	t.idx[t.last+1] = uint32(nb)
	t.presence = newPresence(len(rs), 32-cp)
	for i := range rs {
		f := uint32(rs[i].first.lo)
		l := f | uint32(hostMask(int(rs[i].bits), 32).lo)
		t.mark(uint32(uint64(f)<<(cp&63)), uint32(uint64(l)<<(cp&63)))
	}
	return t
}

// tab6 is a compiled IPv6 rule table. Its fences are 32-bit keys: the 32
// address bits after the cp bits every rule shares. Distinct first
// addresses can share a key; lookup then settles the block on full
// addresses.
type tab6 struct {
	blks  []blk6
	n     int
	fence []uint32 // fence[j] = key of blks[j]'s first address, then pads
	idx   []uint32
	cold
	cpMask u128
	cpVal  u128
	cp     uint8
	k      uint8
	last   uint32
	presence
}

// key is the 32 bits of a after the cp bits. The masked shifts never
// reach 64, so they need no range checks.
func (t *tab6) key(a u128) uint32 {
	var k uint64
	if t.cp < 64 {
		k = a.hi<<(t.cp&63) | a.lo>>1>>((63-t.cp)&63)
	} else {
		k = a.lo << (t.cp - 64)
	}
	return uint32(k >> 32)
}

func (bl *blk6) first(s int) u128 { return u128{bl.hi[s], bl.lo[s]} }

// find is tab4.find for IPv6.
func (t *tab6) find(a u128) (p, n int32) {
	key, ok := t.may(a)
	if !ok {
		return -1, -1
	}
	j := t.block(a, key)
	if j < 0 {
		return -1, -1
	}
	bl := &t.blks[j]
	c := le128(bl.hi[1], bl.lo[1], a) + le128(bl.hi[2], bl.lo[2], a)
	q := min(j*blk6N+c, t.n-1)
	s := q - j*blk6N
	if bits := bl.bits[s]; covers6(bl.hi[s], bl.lo[s], bits, a) {
		return int32(q), int32(bits)
	}
	if bl.flags[s]&flagParent == 0 {
		return -1, -1
	}
	return t.walk(a, int(t.parent[q]), nil, nil)
}

// may is tab4.may for IPv6; key is a's fence key.
func (t *tab6) may(a u128) (key uint32, ok bool) {
	if a.and(t.cpMask) != t.cpVal {
		return 0, false
	}
	key = t.key(a)
	return key, t.present(key)
}

// le128 is 1 if (hi, lo) <= a, else 0, without a branch.
func le128(hi, lo uint64, a u128) int {
	_, br := bits.Sub64(a.lo, lo, 0)
	_, br = bits.Sub64(a.hi, hi, br)
	return int(br ^ 1)
}

// covers6 reports whether the /n prefix at (hi, lo) holds a.
func covers6(hi, lo uint64, n uint8, a u128) bool {
	m := &mask6[n]
	return (a.hi^hi)&m.hi|(a.lo^lo)&m.lo == 0
}

// block is the last block whose first rule starts at or before a (whose
// key is key, and which lies in the rules' span), -1 for none.
func (t *tab6) block(a u128, key uint32) int {
	b := uint64(key) >> ((32 - t.k) & 63)
	lo, hi := t.idx[b], t.idx[b+1]
	var j int
	if hi-lo <= fenceScan {
		f := (*[fenceScan]uint32)(t.fence[lo : lo+fenceScan])
		// Counted as in tab4.find.
		c := le32(f[3], key) << 2
		c += le32(f[(c+1)&7], key) << 1
		c += le32(f[c&7], key)
		c += le32(f[c&7], key)
		j = int(lo+min(c, hi-lo)) - 1
	} else {
		j = t.search(key, lo, hi)
	}
	if j >= 0 && t.fence[j] == key && a.less(t.blks[j].first(0)) {
		j = t.settle(a, key, j)
	}
	return j
}

func (t *tab6) search(key, lo, hi uint32) int {
	for lo < hi {
		m := (lo + hi) >> 1
		if t.fence[m] <= key {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return int(lo) - 1
}

// settle finds the block for a when blocks up to j start with a's key but
// block j starts after a: a binary search on full addresses over the
// blocks sharing the key.
func (t *tab6) settle(a u128, key uint32, j int) int {
	g := j
	for lo := 0; lo < g; { // g = first block with fence key
		m := int(uint(lo+g) >> 1)
		if t.fence[m] < key {
			lo = m + 1
		} else {
			g = m
		}
	}
	lo, hi := g, j // answer: last block in [g, j) starting at or before a, else g-1
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if a.less(t.blks[m].first(0)) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo - 1
}

func (t *tab6) lookup(a u128, tomb, tomb2 []uint64) (p, n int32) {
	p, n = t.find(a)
	if n >= 0 && !live(t.blks[p/blk6N].id[p%blk6N], tomb, tomb2) {
		p, n = t.walk(a, int(t.parent[p]), tomb, tomb2)
	}
	return p, n
}

func (t *tab6) count(p int32) (uint64, actCode) {
	bl, s := &t.blks[p/blk6N], p%blk6N
	bl.n[s].Add(1)
	return bl.id[s], actCode(bl.flags[s] & flagAct)
}

func (t *tab6) walk(a u128, p int, tomb, tomb2 []uint64) (int32, int32) {
	for p >= 0 {
		bl, s := &t.blks[p/blk6N], p%blk6N
		if n := bl.bits[s]; covers6(bl.hi[s], bl.lo[s], n, a) && live(bl.id[s], tomb, tomb2) {
			return int32(p), int32(n)
		}
		p = int(t.parent[p])
	}
	return -1, -1
}

func (t *tab6) rule(i int) rule {
	bl := &t.blks[i/blk6N]
	s := i % blk6N
	return rule{first: bl.first(s), id: bl.id[s], rec: t.recs[i], bits: bl.bits[s], act: actCode(bl.flags[s] & flagAct)}
}

func (t *tab6) counter(i int) *atomic.Uint64 { return &t.blks[i/blk6N].n[i%blk6N] }

func buildTab6(rs []rule) tab6 {
	t := tab6{n: len(rs), cold: cold{recs: make([]*record, len(rs)), parent: parents(rs, 128)}}
	nb := (len(rs) + blk6N - 1) / blk6N
	t.blks = make([]blk6, nb)
	hugepage.Advise(t.blks)
	for i := range rs {
		r := &rs[i]
		bl := &t.blks[i/blk6N]
		s := i % blk6N
		bl.hi[s], bl.lo[s], bl.bits[s], bl.id[s] = r.first.hi, r.first.lo, r.bits, r.id
		bl.flags[s] = uint8(r.act) & flagAct
		if t.parent[i] >= 0 {
			bl.flags[s] |= flagParent
		}
		t.recs[i] = r.rec
	}
	for i := len(rs); i < nb*blk6N; i++ {
		bl := &t.blks[i/blk6N]
		bl.hi[i%blk6N], bl.lo[i%blk6N] = ^uint64(0), ^uint64(0)
	}
	hugepage.Collapse(t.blks)
	var lo, hi u128
	if len(rs) > 0 {
		lo, hi = rs[0].first, spanLast(rs, 128)
	}
	cp, k, cm, cv := bucketParams(lo, hi, nb, 128)
	t.cpMask, t.cpVal, t.cp, t.k, t.last = cm, cv, uint8(cp), uint8(k), uint32(1)<<k-1
	t.fence = make([]uint32, nb+fenceScan)
	for j := range t.blks {
		t.fence[j] = t.key(t.blks[j].first(0))
	}
	for j := nb; j < len(t.fence); j++ {
		t.fence[j] = ^uint32(0)
	}
	t.idx = make([]uint32, int(t.last)+2)
	j := 0
	for b := 0; b <= int(t.last); b++ {
		for j < nb && int(uint64(t.fence[j])>>((32-t.k)&63)) < b {
			j++
		}
		t.idx[b] = uint32(j)
	}
	t.idx[t.last+1] = uint32(nb)
	t.presence = newPresence(len(rs), 128-cp)
	for i := range rs {
		l := rs[i].first.or(hostMask(int(rs[i].bits), 128))
		t.mark(t.key(rs[i].first), t.key(l))
	}
	return t
}

// presence is a bitmap over the first bits (after the shared prefix) of
// every address a table's rules cover: a lookup for an address whose bit
// is clear is a miss without touching the index, the fences or a block.
// With a million bans the bitmap is 2 MiB (24 bits: about one bit in
// fifteen set) and mostly stays in cache, while the blocks do not: most
// lookups are for unbanned addresses, and this answers them with one
// load. A set bit says nothing; the lookup then goes on as usual. Tried
// and measured worse (same-process A/B, 1M bans): 2^22 and 2^23 bits (a
// miss 39 and 34 ns instead of 31), and reading the fences before the
// bitmap so a hit's loads overlap it (a hit 4% faster, a miss 40% slower).
type presence struct {
	pre   []uint64
	preSh uint8 // a 32-bit key (the address bits after cp) >> preSh is its bit
}

// newPresence sizes the bitmap for n rules whose addresses have free bits
// after the shared prefix: 16 bits per rule, between 2^16 bits (8 KiB: a
// short table such as the allowlist, which every Match checks first,
// turns nearly every address away) and 2^24.
func newPresence(n, free int) presence {
	w := min(max(bits.Len(uint(n))+4, 16), 24, max(free, 6))
	return presence{pre: make([]uint64, 1<<(w-6)), preSh: uint8(32 - w)}
}

// present reports whether some rule may cover an address with key x.
func (p *presence) present(x uint32) bool {
	c := x >> (p.preSh & 31)
	return p.pre[(c>>6)&uint32(len(p.pre)-1)]&(1<<(c&63)) != 0
}

// mark sets the bits of keys first..last.
func (p *presence) mark(first, last uint32) {
	for c := first >> p.preSh; c <= last>>p.preSh; c++ {
		p.pre[c>>6] |= 1 << (c & 63)
		if c == ^uint32(0) {
			break
		}
	}
}

// parents returns, for rules sorted by cmpRule (CIDRs are nested or
// disjoint), the index of each rule's innermost enclosing rule, -1 for
// none.
func parents(rs []rule, width int) []int32 {
	parent := make([]int32, len(rs))
	stack := make([]int32, 0, 32)
	var last []u128 // last address of each rule on the stack
	for i := range rs {
		r := &rs[i]
		for len(stack) > 0 && last[len(last)-1].less(r.first) {
			stack, last = stack[:len(stack)-1], last[:len(last)-1]
		}
		parent[i] = -1
		if len(stack) > 0 {
			parent[i] = stack[len(stack)-1]
		}
		stack = append(stack, int32(i))
		last = append(last, r.first.or(hostMask(int(r.bits), width)))
	}
	return parent
}

// spanLast is the highest address covered by rules sorted by cmpRule.
func spanLast(rs []rule, width int) u128 {
	var hi u128
	for i := range rs {
		if l := rs[i].first.or(hostMask(int(rs[i].bits), width)); hi.less(l) {
			hi = l
		}
	}
	return hi
}

// bucketParams picks the bucket index geometry for a table of n blocks
// covering lo..hi: cp leading bits shared by every rule in the table (so
// clustered sets still spread over all buckets) and k index bits after
// them.
func bucketParams(lo, hi u128, n, width int) (cp, k int, cpMask, cpVal u128) {
	k = bits.Len(uint(n)) - lpmBucketShift
	k = min(max(k, 4), 20)
	if n == 0 {
		return 0, min(k, width), u128{}, u128{}
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

// lpmBucketShift sets the bucket count to about blocks/2^lpmBucketShift:
// small enough that the index stays in cache, large enough that most
// buckets hold at most fenceScan fences.
var lpmBucketShift = 3
