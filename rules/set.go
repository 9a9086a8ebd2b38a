package rules

import (
	"math/bits"
	"net/netip"
	"slices"
	"sync/atomic"
)

// actCode is an Action as a small number, so compiled rules stay compact.
type actCode uint8

const (
	actNone actCode = iota
	actBlock
	actObserve
)

var actions = [...]Action{actNone: "", actBlock: ActionBlock, actObserve: ActionObserve}

func codeOf(a Action) actCode {
	if a == ActionObserve {
		return actObserve
	}
	return actBlock
}

// rule is one ban or allowlist entry as the compiler and the overlay see
// it. Overlay matches count into rec.ovHits.
type rule struct {
	first u128    // first address of the prefix (IPv4 in lo)
	id    uint64  // Entry.ID
	rec   *record // the store's record, for hit counting
	bits  uint8   // prefix length
	act   actCode
}

// base is the bulk of the ban set, compiled in the background; immutable
// (but for the hit counters in its blocks).
type base struct {
	v4         tab4
	v6         tab6
	few        bool             // both families have at most fewMax rules: find scans few4, few6
	few4, few6 []fewRule        // the rules, most specific first
	top4, top6 *[1 << 10]uint64 // first 16 address bits any rule covers (see topBits)
}

// ovBucket holds overlay rules of one prefix length, sorted by first address.
type ovBucket struct {
	bits  uint8
	rules []rule
	// seen has the bit ovHash(first) set for every rule: most addresses
	// a Match looks up are in no overlay rule, and a clear bit says so
	// in one load instead of a binary search (a dozen dependent loads at
	// foldAt rules, for src and dst, in every bucket).
	seen []uint64
}

// ovHash picks a rule's (or a masked address's) bit in ovBucket.seen.
func ovHash(a u128, mask int) int {
	hi, lo := bits.Mul64(a.hi^0x9e3779b97f4a7c15, a.lo^0xc2b2ae3d27d4eb4f)
	return int(hi^lo) & mask
}

// overlay holds bans added or removed since base was compiled: additions
// by prefix length (longest first), removals as a sorted list of entry IDs
// whose base rules no longer count. It is small and copied on each change.
type overlay struct {
	v4, v6 []ovBucket
	tomb   []uint64
	n      int // rules in v4 and v6
}

// aclRule is one compiled ACL.
type aclRule struct {
	id       uint64
	hits     *atomic.Uint64
	src, dst netip.Prefix // invalid: any
	sp, dp   PortRange    // normalised: any is 0..65535
	proto    uint8        // 0: any
	dir      Direction
	act      actCode
}

// Set is an immutable, compiled view of the rules, published atomically by
// the Store. Capture workers call Match on it without locks; a Set is never
// modified after publication, so a worker may hold on to one as long as it
// likes (it keeps counting hits into the live entries).
type Set struct {
	gen      uint64
	n        int // entries in force
	base     *base
	ov       *overlay // changes since the base was compiled, older part
	young    *overlay // the newest changes (small; rebuilt on every commit)
	allow    *base
	hasAllow bool
	plain    bool // ov and young are empty: Match reads the base alone
	acls     []aclRule
	home     []netip.Prefix
}

// Generation increases with every Set the store publishes; equal
// generations mean identical rules, so callers may cache verdicts by it.
func (s *Set) Generation() uint64 {
	if s == nil {
		return 0
	}
	return s.gen
}

// Len is the number of entries (bans, ACLs and allowlist entries) in force
// in this Set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// Match decides one packet: allowlist first (src or dst allowlisted →
// Verdict{Allowlisted: true, RuleID: the allowlist entry}), then bans (the
// most specific prefix covering src or dst; src wins a tie), then ACLs in
// creation order (first match). IPv4-mapped IPv6 addresses are matched as
// IPv4. It never allocates or locks; the deciding entry's hit counter is
// incremented atomically. A nil Set matches nothing.
func (s *Set) Match(src, dst netip.Addr, proto uint8, sport, dport uint16) Verdict {
	if s == nil {
		return Verdict{}
	}
	sk, s4 := addrKey(src)
	dk, d4 := addrKey(dst)
	sv, dv := src.IsValid(), dst.IsValid()
	if s.hasAllow {
		if v, ok := s.allowed(sk, s4, sv, dk, d4, dv); ok {
			return v
		}
	}
	// Each side's lookup gives registers (a base rule index or an overlay
	// rule, and a length); only the winner is read further, and never
	// through a hit struct: building one on the stack and copying it makes
	// the CPU wait for this Match's miss before the next can start.
	p, n, r, v6 := int32(-1), int32(-1), (*rule)(nil), false
	if s.plain {
		// The hot path: no overlay, no tombstones, the base alone.
		if sv {
			if s4 {
				p, n = s.base.v4.find(uint32(sk.lo))
			} else {
				p, n = s.base.v6.find(sk)
				v6 = true
			}
		}
		// A src match of full length cannot be beaten (src wins a tie),
		// so a banned host's packet costs one lookup, not two.
		if dv && n != 128 && !(n == 32 && d4) {
			var dp, dn int32
			if d4 {
				dp, dn = s.base.v4.find(uint32(dk.lo))
			} else {
				dp, dn = s.base.v6.find(dk)
			}
			if dn > n {
				p, n, v6 = dp, dn, !d4
			}
		}
	} else {
		if sv {
			p, n, r = s.lookupBan(sk, s4)
			v6 = !s4
		}
		if dv {
			if dp, dn, dr := s.lookupBan(dk, d4); dn > n {
				p, n, r, v6 = dp, dn, dr, !d4
			}
		}
	}
	if n >= 0 {
		var id uint64
		var act actCode
		switch {
		case r != nil:
			r.rec.ovHits.Add(1)
			id, act = r.id, r.act
		case v6:
			id, act = s.base.v6.count(p)
		default:
			id, act = s.base.v4.count(p)
		}
		return Verdict{Action: actions[act], RuleID: id}
	}
	if len(s.acls) > 0 && sv && dv {
		return s.matchACL(src.Unmap(), dst.Unmap(), proto, sport, dport)
	}
	return Verdict{}
}

// allowed is the allowlist verdict for src or dst, if either is covered.
// Every Match in production comes here first (the sensor's own addresses
// are always allowlisted), so it looks up like the hot path does.
func (s *Set) allowed(sk u128, s4, sv bool, dk u128, d4, dv bool) (Verdict, bool) {
	if sv {
		if p, n := s.allow.find(sk, s4); n >= 0 {
			return s.allow.credit(p, s4), true
		}
	}
	if dv {
		if p, n := s.allow.find(dk, d4); n >= 0 {
			return s.allow.credit(p, d4), true
		}
	}
	return Verdict{}, false
}

// find is the most specific rule of b covering k (b without tombstones).
// A short table (the allowlist, usually: the sensor's own addresses and a
// partner or two, checked before every Match) is scanned rule by rule: a
// few masked compares are far fewer instructions than the bucket, fence
// and block walk, and every instruction a Match saves lets the next
// Match's cache miss start sooner.
func (b *base) find(k u128, is4 bool) (p, n int32) {
	if b.few {
		rs := b.few6
		if is4 {
			rs = b.few4
			if _, ok := b.v4.may(uint32(k.lo)); !ok {
				return -1, -1
			}
		} else if _, ok := b.v6.may(k); !ok {
			return -1, -1
		}
		for i := range rs {
			if r := &rs[i]; k.and(r.mask) == r.first {
				return r.p, r.bits
			}
		}
		return -1, -1
	}
	if is4 {
		return b.v4.find(uint32(k.lo))
	}
	return b.v6.find(k)
}

// credit counts a hit on allowlist rule p and returns its verdict.
func (b *base) credit(p int32, is4 bool) Verdict {
	var id uint64
	if is4 {
		id, _ = b.v4.count(p)
	} else {
		id, _ = b.v6.count(p)
	}
	return Verdict{Allowlisted: true, RuleID: id}
}

// lookupBan is the most specific live ban covering one address, from the
// base or either overlay layer: base rule p (r nil) or overlay rule r, of
// prefix length n (-1: none). A rule is live unless a newer layer
// tombstoned its ID (removed it, or replaced it with a new version).
// Registers rather than a hit, for the reason tab4.find gives.
func (s *Set) lookupBan(k u128, is4 bool) (p, n int32, r *rule) {
	if is4 {
		p, n = s.base.v4.lookup(uint32(k.lo), s.ov.tomb, s.young.tomb)
	} else {
		p, n = s.base.v6.lookup(k, s.ov.tomb, s.young.tomb)
	}
	if or, on := s.ov.lookup(k, is4, n, s.young.tomb); or != nil {
		r, n = or, on
	}
	if yr, yn := s.young.lookup(k, is4, n, nil); yr != nil {
		r, n = yr, yn
	}
	return p, n, r
}

// lookup returns the longest live rule of ov covering k and its length if
// it is longer than n, else nil. newer is the tombstone list of the layers
// above.
func (ov *overlay) lookup(k u128, is4 bool, n int32, newer []uint64) (*rule, int32) {
	bk := ov.v6
	if is4 {
		bk = ov.v4
	}
	for i := range bk {
		b := &bk[i]
		if int32(b.bits) <= n {
			break // buckets are sorted longest first
		}
		if r := b.find(k, is4); r != nil && (len(newer) == 0 || !hasID(newer, r.id)) {
			return r, int32(b.bits)
		}
	}
	return nil, n
}

// lookup is the most specific rule of b covering k that neither tombstone
// list removed.
func (b *base) lookup(k u128, is4 bool, tomb, tomb2 []uint64) hit {
	var p, n int32
	if is4 {
		p, n = b.v4.lookup(uint32(k.lo), tomb, tomb2)
	} else {
		p, n = b.v6.lookup(k, tomb, tomb2)
	}
	return b.hit(is4, p, n)
}

// hit is the full result for rule p (of prefix length n; n < 0: none) of
// the family's table. Off the hot path: it reads the rule's cold record.
func (b *base) hit(is4 bool, p, n int32) hit {
	if n < 0 {
		return hit{bits: -1}
	}
	var r rule
	var c *atomic.Uint64
	if is4 {
		r, c = b.v4.rule(int(p)), b.v4.counter(int(p))
	} else {
		r, c = b.v6.rule(int(p)), b.v6.counter(int(p))
	}
	return hit{n: c, id: r.id, p: p, bits: n, act: r.act}
}

// hasID reports whether sorted ids holds id. Between folds every Match
// asks this of up to foldAt tombstones; a binary search without branches
// keeps a random id from costing a misprediction per step.
func hasID(ids []uint64, id uint64) bool {
	if len(ids) == 0 {
		return false
	}
	base, n := 0, len(ids)
	for n > 1 {
		half := n >> 1
		if ids[base+half-1] < id {
			base += half
		}
		n -= half
	}
	return ids[base] == id
}

// find is the rule of this bucket whose prefix covers k.
func (b *ovBucket) find(k u128, is4 bool) *rule {
	width := 128
	if is4 {
		width = 32
	}
	key := k.and(mask128(int(b.bits), width))
	rs := b.rules
	if len(rs) == 0 {
		return nil
	}
	if h := ovHash(key, len(b.seen)*64-1); b.seen[h>>6]&(1<<(h&63)) == 0 {
		return nil
	}
	// The first rule not below key, found without branches (see hasID).
	base, n := 0, len(rs)
	for n > 1 {
		half := n >> 1
		f := &rs[base+half-1].first
		_, br := bits.Sub64(f.lo, key.lo, 0)
		_, br = bits.Sub64(f.hi, key.hi, br) // br: f < key
		base += half & -int(br)
		n -= half
	}
	if rs[base].first == key {
		return &rs[base]
	}
	return nil
}

func (s *Set) matchACL(src, dst netip.Addr, proto uint8, sport, dport uint16) Verdict {
	home := -1 // lazily: bit 0 src inside, bit 1 dst inside
	for i := range s.acls {
		a := &s.acls[i]
		if a.proto != 0 && a.proto != proto {
			continue
		}
		if sport < a.sp.From || sport > a.sp.To || dport < a.dp.From || dport > a.dp.To {
			continue
		}
		if a.src.IsValid() && !a.src.Contains(src) {
			continue
		}
		if a.dst.IsValid() && !a.dst.Contains(dst) {
			continue
		}
		if a.dir != DirBoth {
			if home < 0 {
				home = 0
				if inAny(s.home, src) {
					home |= 1
				}
				if inAny(s.home, dst) {
					home |= 2
				}
			}
			if a.dir == DirIn && home != 2 || a.dir == DirOut && home != 1 {
				continue
			}
		}
		a.hits.Add(1)
		return Verdict{Action: actions[a.act], RuleID: a.id}
	}
	return Verdict{}
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// buildBase compiles rules (in any order) into a base. The slices are
// sorted in place.
func buildBase(v4, v6 []rule) *base {
	slices.SortFunc(v4, cmpRule)
	slices.SortFunc(v6, cmpRule)
	b := &base{v4: buildTab4(v4), v6: buildTab6(v6)}
	if len(v4) <= fewMax && len(v6) <= fewMax {
		b.few = true
		b.few4, b.few6 = fewRules(v4, 32), fewRules(v6, 128)
	}
	return b
}

// fewMax is the most rules per family a table may have for find to scan
// them one by one.
const fewMax = 16

// fewRule is one rule of a short table, for a linear scan.
type fewRule struct {
	first, mask u128
	p, bits     int32
}

// fewRules lists rs (sorted by cmpRule, so rs[i] is rule i of its table)
// most specific first.
func fewRules(rs []rule, width int) []fewRule {
	out := make([]fewRule, len(rs))
	for i, r := range rs {
		out[i] = fewRule{first: r.first, mask: mask128(int(r.bits), width), p: int32(i), bits: int32(r.bits)}
	}
	slices.SortStableFunc(out, func(a, b fewRule) int { return int(b.bits - a.bits) })
	return out
}

// adopt points every record of b at its counter in b, retiring the count
// of the counter it replaces, so Entry.Hits keeps adding up across folds.
// Matches made through an older Set after this point are not counted.
func (b *base) adopt() {
	adoptAll(b.v4.recs, b.v4.counter)
	adoptAll(b.v6.recs, b.v6.counter)
}

func adoptAll(recs []*record, counter func(int) *atomic.Uint64) {
	for i, rec := range recs {
		if rec == nil {
			continue
		}
		n := counter(i)
		if old := rec.baseHits.Swap(n); old != nil && old != n {
			rec.retired.Add(old.Load())
		}
	}
}

func cmpRule(a, b rule) int {
	switch {
	case a.first.less(b.first):
		return -1
	case b.first.less(a.first):
		return 1
	}
	return int(a.bits) - int(b.bits)
}

// mergeBase folds an overlay into a base: the base's rules minus the
// tombstoned IDs, plus the overlay's rules, compiled afresh. The inputs are
// not modified.
func mergeBase(b *base, ov *overlay) *base {
	collect := func(n int, at func(int) rule, bk []ovBucket) []rule {
		total := n
		for _, x := range bk {
			total += len(x.rules)
		}
		out := make([]rule, 0, total)
		for i := range n {
			if r := at(i); len(ov.tomb) == 0 || !hasID(ov.tomb, r.id) {
				out = append(out, r)
			}
		}
		for _, x := range bk {
			out = append(out, x.rules...)
		}
		return out
	}
	return buildBase(collect(b.v4.n, b.v4.rule, ov.v4), collect(b.v6.n, b.v6.rule, ov.v6))
}

// size is how much the overlay holds: the fold trigger.
func (ov *overlay) size() int { return ov.n + len(ov.tomb) }

// apply returns a copy of ov with ops applied in order, rebuilding the
// overlay once: O((overlay+ops) log) per commit batch, however many
// changes joined it. ov itself is not modified (published Sets share it).
func (ov *overlay) apply(ops []foldOp) *overlay {
	if len(ops) == 0 {
		return ov
	}
	// The final state of each touched ID: its last op, found by a stable
	// sort on ID (no map: this runs on every commit).
	type final struct {
		id      uint64
		r       rule
		is4     bool
		present bool
	}
	fin := make([]final, len(ops))
	tomb := slices.Grow(slices.Clone(ov.tomb), len(ops))
	for i, op := range ops {
		if op.add {
			fin[i] = final{id: op.r.id, r: op.r, is4: op.is4, present: true}
		} else {
			fin[i] = final{id: op.id}
			tomb = append(tomb, op.id)
		}
	}
	slices.SortStableFunc(fin, func(a, b final) int { return cmpU64(a.id, b.id) })
	w := 0
	for i := range fin {
		if i+1 < len(fin) && fin[i+1].id == fin[i].id {
			continue // a later op on the same ID decides
		}
		fin[w] = fin[i]
		w++
	}
	fin = fin[:w]
	touched := func(id uint64) bool {
		_, ok := slices.BinarySearchFunc(fin, id, func(f final, id uint64) int { return cmpU64(f.id, id) })
		return ok
	}
	slices.Sort(tomb)
	tomb = slices.Compact(tomb)
	keep := func(bk []ovBucket, extra int) []rule {
		n := extra
		for _, b := range bk {
			n += len(b.rules)
		}
		out := make([]rule, 0, n)
		for _, b := range bk {
			for _, r := range b.rules {
				if !touched(r.id) {
					out = append(out, r)
				}
			}
		}
		return out
	}
	v4, v6 := keep(ov.v4, len(fin)), keep(ov.v6, 0)
	for _, f := range fin {
		if !f.present {
			continue
		}
		if f.is4 {
			v4 = append(v4, f.r)
		} else {
			v6 = append(v6, f.r)
		}
	}
	return &overlay{v4: bucketize(v4), v6: bucketize(v6), tomb: tomb, n: len(v4) + len(v6)}
}

// bucketize groups rules by prefix length, longest first, each bucket
// sorted by address.
func bucketize(rs []rule) []ovBucket {
	slices.SortStableFunc(rs, func(a, b rule) int {
		if a.bits != b.bits {
			return int(b.bits) - int(a.bits)
		}
		switch {
		case a.first.less(b.first):
			return -1
		case b.first.less(a.first):
			return 1
		}
		return 0
	})
	var out []ovBucket
	for i := 0; i < len(rs); {
		j := i
		for j < len(rs) && rs[j].bits == rs[i].bits {
			j++
		}
		seen := make([]uint64, max(1, 1<<bits.Len(uint(j-i))/8)) // >= 8 bits per rule
		for _, r := range rs[i:j] {
			h := ovHash(r.first, len(seen)*64-1)
			seen[h>>6] |= 1 << (h & 63)
		}
		out = append(out, ovBucket{bits: rs[i].bits, rules: rs[i:j:j], seen: seen})
		i = j
	}
	return out
}
