package rules

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"
)

// randPrefix4 returns a random IPv4 prefix of length lo..32, clustered in a
// few /8s so nesting happens often.
func randPrefix4(rng *rand.Rand, lo int) netip.Prefix {
	var b [4]byte
	b[0] = byte(rng.IntN(4) + 1)
	b[1] = byte(rng.IntN(4))
	b[2] = byte(rng.IntN(256))
	b[3] = byte(rng.IntN(256))
	bits := lo + rng.IntN(33-lo)
	return netip.PrefixFrom(netip.AddrFrom4(b), bits).Masked()
}

func randAddr4(rng *rand.Rand) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(rng.IntN(5)), byte(rng.IntN(5)), byte(rng.IntN(256)), byte(rng.IntN(256))})
}

func randPrefix6(rng *rand.Rand, lo int) netip.Prefix {
	var b [16]byte
	b[0], b[1] = 0x20, 0x01
	b[2] = byte(rng.IntN(3))
	for i := 3; i < 16; i++ {
		b[i] = byte(rng.IntN(3))
	}
	bits := lo + rng.IntN(129-lo)
	return netip.PrefixFrom(netip.AddrFrom16(b), bits).Masked()
}

func randAddr6(rng *rand.Rand) netip.Addr {
	var b [16]byte
	b[0], b[1] = 0x20, 0x01
	for i := 2; i < 16; i++ {
		b[i] = byte(rng.IntN(3))
	}
	return netip.AddrFrom16(b)
}

// bruteLPM is the reference: the longest prefix in ps containing a.
func bruteLPM(ps []netip.Prefix, a netip.Addr) int {
	best, bits := -1, -1
	for i, p := range ps {
		if p.Contains(a) && p.Bits() > bits {
			best, bits = i, p.Bits()
		}
	}
	return best
}

func TestLPMAgainstBruteForce(t *testing.T) {
	// Bucket shifts 0 and 10 force the scanned and the binary-searched
	// fence paths; the default is in between.
	defer func(old int) { lpmBucketShift = old }(lpmBucketShift)
	for _, shift := range []int{lpmBucketShift, 0, 10} {
		lpmBucketShift = shift
		testLPMAgainstBruteForce(t)
	}
}

func testLPMAgainstBruteForce(t *testing.T) {
	for _, fam := range []string{"v4", "v6"} {
		for seed := uint64(1); seed <= 20; seed++ {
			rng := rand.New(rand.NewPCG(seed, 7))
			n := 1 + rng.IntN(400)
			seen := map[netip.Prefix]bool{}
			var ps []netip.Prefix
			for len(ps) < n {
				var p netip.Prefix
				if fam == "v4" {
					p = randPrefix4(rng, 8)
				} else {
					p = randPrefix6(rng, 16)
				}
				if !seen[p] {
					seen[p] = true
					ps = append(ps, p)
				}
			}
			rs := make([]rule, len(ps))
			for i, p := range ps {
				k, _ := addrKey(p.Addr())
				rs[i] = rule{first: k, id: uint64(i + 1), rec: new(record), bits: uint8(p.Bits())}
			}
			b := buildBase(rs, nil)
			if fam == "v6" {
				b = buildBase(nil, rs)
			}
			check := func(a netip.Addr) {
				t.Helper()
				k, is4 := addrKey(a)
				h := b.lookup(k, is4, nil, nil)
				want := bruteLPM(ps, a)
				got := -1
				if h.n != nil {
					got = int(h.id) - 1
				}
				if got != want {
					t.Fatalf("%s seed %d: lookup(%s) = %d, want %d (%v)", fam, seed, a, got, want, ps[max(want, 0)])
				}
			}
			for range 3000 {
				if fam == "v4" {
					check(randAddr4(rng))
				} else {
					check(randAddr6(rng))
				}
			}
			checkEdges(ps, check)
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		for i := p.Bits(); i < 32; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(b)
}

// checkLPM compares base lookups with the brute-force reference at random
// addresses from gen and at the edges of every prefix.
func checkLPM(t *testing.T, name string, ps []netip.Prefix, gen func() netip.Addr) {
	t.Helper()
	var v4, v6 []rule
	for i, p := range ps {
		k, is4 := addrKey(p.Addr())
		r := rule{first: k, id: uint64(i + 1), rec: new(record), bits: uint8(p.Bits())}
		if is4 {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	b := buildBase(v4, v6)
	check := func(a netip.Addr) {
		t.Helper()
		k, is4 := addrKey(a)
		h := b.lookup(k, is4, nil, nil)
		got := -1
		if h.n != nil {
			got = int(h.id) - 1
		}
		if want := bruteLPM(ps, a); got != want {
			t.Fatalf("%s: lookup(%s) = %d, want %d", name, a, got, want)
		}
	}
	for range 5000 {
		check(gen())
	}
	checkEdges(ps, check)
}

// checkEdges checks the first and last address of every prefix and their
// neighbours outside it.
func checkEdges(ps []netip.Prefix, check func(netip.Addr)) {
	for _, p := range ps {
		check(p.Addr())
		if prev := p.Addr().Prev(); prev.IsValid() {
			check(prev)
		}
		last := lastAddr(p)
		check(last)
		if nx := last.Next(); nx.IsValid() {
			check(nx)
		}
	}
}

// IPv6 fences are 32-bit keys; blocks whose first addresses share a key
// are told apart on full addresses (tab6.settle). Dense clusters inside a
// /64, and prefixes of different lengths starting at the same address,
// share keys.
func TestLPMv6SharedFenceKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	seen := map[netip.Prefix]bool{}
	var ps []netip.Prefix
	add := func(p netip.Prefix) {
		if p = p.Masked(); !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	base := netip.MustParseAddr("2001:db8:1:2::").As16()
	for range 3000 { // a dense cluster of /128s and /120s inside one /64
		b := base
		b[14], b[15] = byte(rng.IntN(8)), byte(rng.IntN(256))
		bits := 128
		if rng.IntN(8) == 0 {
			bits = 120
		}
		add(netip.PrefixFrom(netip.AddrFrom16(b), bits))
	}
	add(netip.MustParsePrefix("2001:db8:1:2::/64"))
	add(netip.MustParsePrefix("2001:db8:1::/48"))
	for range 500 { // and spread out elsewhere, some nested at equal starts
		var b [16]byte
		b[0], b[1] = 0x20, 0x01
		for i := 2; i < 8; i++ {
			b[i] = byte(rng.IntN(4))
		}
		for _, bits := range []int{128, 64, 48} {
			if rng.IntN(2) == 0 {
				add(netip.PrefixFrom(netip.AddrFrom16(b), bits))
			}
		}
	}
	gen := func() netip.Addr {
		var b [16]byte
		if rng.IntN(2) == 0 {
			b = base
			b[14], b[15] = byte(rng.IntN(9)), byte(rng.IntN(256))
			return netip.AddrFrom16(b)
		}
		b[0], b[1] = 0x20, 0x01
		for i := 2; i < 16; i++ {
			b[i] = byte(rng.IntN(4))
		}
		return netip.AddrFrom16(b)
	}
	defer func(old int) { lpmBucketShift = old }(lpmBucketShift)
	for _, shift := range []int{lpmBucketShift, 0, 10} {
		lpmBucketShift = shift
		checkLPM(t, fmt.Sprintf("shift %d", shift), ps, gen)
	}
}

// Forced wide prefixes, down to /0, and addresses at both ends of the
// space.
func TestLPMWidePrefixes(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	for _, fam := range []string{"v4", "v6"} {
		ps := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("255.255.255.255/32"), netip.MustParsePrefix("0.0.0.0/32"), netip.MustParsePrefix("128.0.0.0/1")}
		gen := func() netip.Addr {
			return netip.AddrFrom4([4]byte{byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
		}
		if fam == "v6" {
			ps = []netip.Prefix{netip.MustParsePrefix("::/0"), netip.MustParsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), netip.MustParsePrefix("::/128"), netip.MustParsePrefix("8000::/1"), netip.MustParsePrefix("2001:db8::/64")}
			gen = func() netip.Addr {
				var b [16]byte
				for i := range b {
					b[i] = byte(rng.IntN(256))
				}
				return netip.AddrFrom16(b)
			}
		}
		for n := 1; n <= len(ps); n++ {
			checkLPM(t, fmt.Sprintf("%s first %d", fam, n), ps[:n], gen)
			checkLPM(t, fmt.Sprintf("%s last %d", fam, n), ps[len(ps)-n:], gen)
		}
	}
}

// Tombstoned rules fall back to the enclosing prefix, overlay rules win when
// more specific: the same reference, with removals and additions layered.
func TestOverlayAndTombstones(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	seen := map[netip.Prefix]bool{}
	var ps []netip.Prefix
	for len(ps) < 300 {
		p := randPrefix4(rng, 12)
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	mk := func(i int) rule {
		k, _ := addrKey(ps[i].Addr())
		return rule{first: k, id: uint64(i + 1), rec: new(record), bits: uint8(ps[i].Bits())}
	}
	var rs []rule
	for i := range 200 {
		rs = append(rs, mk(i))
	}
	set := &Set{base: buildBase(rs, nil), ov: &overlay{}, young: &overlay{}, allow: buildBase(nil, nil)}
	live := map[int]bool{}
	for i := range 200 {
		live[i] = true
	}
	// add 100 via overlay, remove 60 random (base and overlay)
	// Applied in several batches, as commits do.
	var ops []foldOp
	for i := 200; i < 300; i++ {
		ops = append(ops, foldOp{add: true, r: mk(i), is4: true})
		live[i] = true
		if i%7 == 0 {
			set.ov = set.ov.apply(ops)
			ops = nil
		}
	}
	for range 60 {
		i := rng.IntN(300)
		ops = append(ops, foldOp{id: uint64(i + 1), bits: uint8(ps[i].Bits()), is4: true})
		delete(live, i)
		if rng.IntN(5) == 0 {
			set.ov = set.ov.apply(ops)
			ops = nil
		}
	}
	set.ov = set.ov.apply(ops)
	// The young layer: removals of base and older-layer rules, re-adds
	// (remove + add of the same id, as an action change does), new rules.
	var young []foldOp
	for range 80 {
		i := rng.IntN(300)
		young = append(young, foldOp{id: uint64(i + 1), bits: uint8(ps[i].Bits()), is4: true})
		delete(live, i)
		if rng.IntN(2) == 0 {
			young = append(young, foldOp{add: true, r: mk(i), is4: true})
			live[i] = true
		}
	}
	set.young = (&overlay{}).apply(young)
	var liveP []netip.Prefix
	var liveIdx []int
	for i := range ps {
		if live[i] {
			liveP = append(liveP, ps[i])
			liveIdx = append(liveIdx, i)
		}
	}
	check := func(s *Set, a netip.Addr) {
		t.Helper()
		k, is4 := addrKey(a)
		p, n, r := s.lookupBan(k, is4)
		h := s.banHit(p, n, r, !is4)
		want := -1
		if w := bruteLPM(liveP, a); w >= 0 {
			want = liveIdx[w]
		}
		got := -1
		if h.n != nil {
			got = int(h.id) - 1
		}
		if got != want {
			t.Fatalf("lookup(%s) = %d, want %d", a, got, want)
		}
	}
	for range 20000 {
		check(set, randAddr4(rng))
	}
	folded := &Set{base: mergeBase(set.base, set.ov.apply(young)), ov: &overlay{}, young: &overlay{}}
	for range 20000 {
		check(folded, randAddr4(rng))
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

// A block is the two cache lines the L2 prefetcher fetches together (see
// lpm.go).
func TestBlockSize(t *testing.T) {
	if n := unsafe.Sizeof(blk4{}); n != 128 {
		t.Fatalf("blk4 is %d bytes, want 128", n)
	}
	if n := unsafe.Sizeof(blk6{}); n != 128 {
		t.Fatalf("blk6 is %d bytes, want 128", n)
	}
}

// TestMatchSrcWinsTies pins how Match chooses between a src and a dst
// ban, including the shortcut that skips the dst lookup after a
// full-length src match: the longer prefix wins, src wins a tie, and a
// v4 /32 src does not hide a longer IPv6 dst.
func TestMatchSrcWinsTies(t *testing.T) {
	ps := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.1/32"),       // 1
		netip.MustParsePrefix("10.0.0.2/32"),       // 2
		netip.MustParsePrefix("10.1.0.0/24"),       // 3
		netip.MustParsePrefix("2001:db8::1/128"),   // 4
		netip.MustParsePrefix("2001:db8::2/128"),   // 5
		netip.MustParsePrefix("2001:db8:1::/64"),   // 6
		netip.MustParsePrefix("2001:db8:5::/48"),   // 7
		netip.MustParsePrefix("2001:db8:6::/127"),  // 8
		netip.MustParsePrefix("2001:db8:6::1/128"), // 9
	}
	set := benchSet(ps)
	for _, c := range []struct {
		src, dst string
		want     uint64
	}{
		{"10.0.0.1", "10.0.0.2", 1},           // /32 tie: src
		{"10.0.0.2", "10.0.0.1", 2},           // /32 tie: src
		{"10.1.0.9", "10.0.0.2", 2},           // /24 src, /32 dst: dst
		{"10.0.0.2", "10.1.0.9", 2},           // /32 src, /24 dst: src
		{"10.9.9.9", "10.0.0.1", 1},           // no src ban: dst
		{"2001:db8::1", "2001:db8::2", 4},     // /128 tie: src
		{"2001:db8:1::7", "2001:db8::2", 5},   // /64 src, /128 dst: dst
		{"10.0.0.1", "2001:db8:5::1", 7},      // v4 /32 src, v6 /48 dst: the longer
		{"2001:db8:6::", "2001:db8:6::1", 9},  // /127 src, /128 dst: dst
		{"2001:db8:6::1", "2001:db8:6::", 9},  // /128 src: src, without looking at dst
		{"2001:db8:9::1", "2001:db8:9::2", 0}, // nothing
		{"::ffff:10.0.0.2", "10.0.0.1", 2},    // IPv4-mapped src is IPv4
	} {
		v := set.Match(netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst), 6, 1, 2)
		if v.RuleID != c.want {
			t.Errorf("Match(%s, %s) = rule %d, want %d", c.src, c.dst, v.RuleID, c.want)
		}
	}
}

// TestFewRulesAgainstBruteForce checks the linear scan short tables (the
// allowlist) use, with its 16-bit prefilter, against the reference and
// against the full lookup on the same rules.
func TestFewRulesAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for round := range 300 {
		var ps []netip.Prefix
		seen := map[netip.Prefix]bool{}
		for len(ps) < 1+round%fewMax {
			var p netip.Prefix
			switch rng.IntN(3) {
			case 0:
				p = randPrefix4(rng, 0)
			case 1:
				p = randPrefix6(rng, 0)
			default: // wide prefixes: the prefilter sets many bits
				p = netip.PrefixFrom(randAddr4(rng), rng.IntN(17)).Masked()
			}
			if !seen[p] {
				seen[p] = true
				ps = append(ps, p)
			}
		}
		b := baseOf(ps, 1)
		if !b.few {
			t.Fatalf("%d rules did not make a short table", len(ps))
		}
		for range 200 {
			a := randAddr4(rng)
			if rng.IntN(2) == 0 {
				a = randAddr6(rng)
			}
			k, is4 := addrKey(a)
			p, n := b.find(k, is4)
			var id uint64
			if n >= 0 {
				id = b.hit(is4, p, n).id
			}
			want := uint64(0)
			if w := bruteLPM(ps, a); w >= 0 {
				want = uint64(w + 1)
			}
			if id != want {
				t.Fatalf("round %d: find(%v) = rule %d (/%d), want %d; rules %v", round, a, id, n, want, ps)
			}
			if full := b.lookup(k, is4, nil, nil); full.id != want {
				t.Fatalf("round %d: lookup(%v) = rule %d, want %d", round, a, full.id, want)
			}
		}
	}
}

// banHit (for tests) is the full result of lookupBan's (p, n, r) for an address of
// the given family.
func (s *Set) banHit(p, n int32, r *rule, v6 bool) hit {
	switch {
	case n < 0:
		return hit{bits: -1}
	case r != nil:
		return hit{n: &r.rec.ovHits, id: r.id, p: -1, bits: n, act: r.act}
	}
	return s.base.hit(!v6, p, n)
}
