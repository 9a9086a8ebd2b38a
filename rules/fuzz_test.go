package rules

import (
	"net/netip"
	"testing"
)

// fuzzAnchors are the addresses fuzzed prefixes and probes start from:
// both ends of each space and a few in between, so that prefixes nest,
// share starts and (IPv6) share fence keys.
var fuzzAnchors = [2][4]netip.Addr{
	{netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("128.0.0.0")},
	{netip.MustParseAddr("::"), netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("::fffe:ffff:ffff")},
}

// fuzzAddr reads an address from data: a flags byte (bit 0: IPv6, bits
// 1-2: anchor, bits 3-4: how many of the following bytes are XORed into
// the anchor's tail, bit 5: XOR into the middle instead) and those bytes.
func fuzzAddr(data []byte) (netip.Addr, []byte, byte) {
	fl := data[0]
	data = data[1:]
	v6 := int(fl & 1)
	a := fuzzAnchors[v6][fl>>1&3]
	n := min(int(fl>>3&3), len(data))
	x := data[:n]
	data = data[n:]
	if v6 == 0 {
		b := a.As4()
		for i, c := range x {
			b[3-i] ^= c
		}
		return netip.AddrFrom4(b), data, fl
	}
	b := a.As16()
	at := 15
	if fl&0x20 != 0 {
		at = 9 // the top of the bits a 32-bit fence key below a /64 sees
	}
	for i, c := range x {
		b[at-i] ^= c
	}
	return netip.AddrFrom16(b), data, fl
}

// fuzzLPM is the reference: the longest prefix of ps (nil entries
// skipped) containing a.
func fuzzLPM(ps []netip.Prefix, a netip.Addr) int {
	best := -1
	for i, p := range ps {
		if p.IsValid() && p.Contains(a) && (best < 0 || p.Bits() > ps[best].Bits()) {
			best = i
		}
	}
	return best
}

// FuzzMatch compares Set.Match with a brute-force longest-prefix match on
// fuzzed prefix sets: bans compiled into a base, added in the overlay
// layers, removed (tombstoned) in them, and allowlist entries; probed at
// every prefix's edges and at fuzzed addresses, plain and IPv4-mapped, as
// source and destination. It also checks that the hit goes to the entry
// that decided.
func FuzzMatch(f *testing.F) {
	f.Add([]byte{0, 32, 0, 0, 8, 2, 1, 0, 24, 6, 1, 7, 16, 0, 0}, uint8(3))
	f.Add([]byte{1, 128, 0, 1, 0, 0, 1, 64, 0, 0x0d, 128, 0, 0x2d, 120, 0, 0x25, 96, 0, 0xaa, 0xbb, 3, 128, 0x40, 4}, uint8(0))
	f.Add([]byte{0x19, 30, 0x20, 9, 0x19, 31, 0x40, 9, 0x11, 29, 0x80, 1, 2, 0x1b, 128, 0x11, 1, 2, 3}, uint8(10))
	f.Fuzz(func(t *testing.T, data []byte, shift uint8) {
		if len(data) > 1500 {
			return // the reference is quadratic; more bytes find nothing new
		}
		defer func(old int) { lpmBucketShift = old }(lpmBucketShift)
		lpmBucketShift = int(shift % 11)
		// Records: address, prefix length, placement (bits 0-1: base,
		// older overlay, young overlay, allowlist; bit 6: removed in the
		// young layer; bit 7: its action is observe).
		var bans, allows []netip.Prefix
		var probes []netip.Addr
		type placed struct {
			layer   int
			removed bool
			act     actCode
		}
		var where []placed
		seenBan, seenAllow := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
		for len(data) >= 3 && len(bans)+len(allows) < 200 {
			var a netip.Addr
			a, data, _ = fuzzAddr(data)
			if len(data) < 2 {
				probes = append(probes, a)
				break
			}
			bits, pl := int(data[0])%(a.BitLen()+1), data[1]
			data = data[2:]
			p := netip.PrefixFrom(a, bits).Masked()
			probes = append(probes, a)
			if pl&3 == 3 {
				if !seenAllow[p] {
					seenAllow[p] = true
					allows = append(allows, p)
				}
				continue
			}
			if seenBan[p] {
				continue
			}
			seenBan[p] = true
			act := actBlock
			if pl&0x80 != 0 {
				act = actObserve
			}
			bans = append(bans, p)
			where = append(where, placed{layer: int(pl & 3), removed: pl&0x40 != 0, act: act})
		}
		for len(data) > 0 {
			var a netip.Addr
			a, data, _ = fuzzAddr(data)
			probes = append(probes, a)
		}
		recs := make([]record, len(bans)+len(allows))
		mk := func(i int, p netip.Prefix, act actCode) rule {
			k, _ := addrKey(p.Addr())
			return rule{first: k, id: uint64(i + 1), rec: &recs[i], bits: uint8(p.Bits()), act: act}
		}
		var b4, b6, a4, a6 []rule
		var ovOps, youngOps []foldOp
		live := make([]netip.Prefix, len(bans)) // bans in force; zero: removed
		for i, p := range bans {
			r, is4 := mk(i, p, where[i].act), p.Addr().Is4()
			switch where[i].layer {
			case 0:
				if is4 {
					b4 = append(b4, r)
				} else {
					b6 = append(b6, r)
				}
			case 1:
				ovOps = append(ovOps, foldOp{add: true, r: r, is4: is4})
			case 2:
				youngOps = append(youngOps, foldOp{add: true, r: r, is4: is4})
			}
			if where[i].removed {
				youngOps = append(youngOps, foldOp{id: r.id, bits: r.bits, is4: is4})
			} else {
				live[i] = p
			}
		}
		for j, p := range allows {
			r := mk(len(bans)+j, p, actBlock)
			if p.Addr().Is4() {
				a4 = append(a4, r)
			} else {
				a6 = append(a6, r)
			}
		}
		set := &Set{base: buildBase(b4, b6), ov: (&overlay{}).apply(ovOps), young: (&overlay{}).apply(youngOps), allow: buildBase(a4, a6), hasAllow: len(allows) > 0}
		set.plain = set.ov.size() == 0 && set.young.size() == 0
		set.base.adopt()
		set.allow.adopt()
		for _, p := range append(bans, allows...) {
			probes = append(probes, p.Addr(), lastAddr(p))
			if x := p.Addr().Prev(); x.IsValid() {
				probes = append(probes, x)
			}
			if x := lastAddr(p).Next(); x.IsValid() {
				probes = append(probes, x)
			}
		}
		other := [2]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("3fff::1")}
		for i, a := range probes {
			if i%4 == 3 && a.Is4() {
				a = netip.AddrFrom16(a.As16()) // IPv4-mapped: matched as IPv4
			}
			for _, o := range other {
				src, dst := a, o
				if i%2 == 1 {
					src, dst = o, a
				}
				var want Verdict
				var wantRec *record
				if w := fuzzLPM(allows, src.Unmap()); w >= 0 {
					want, wantRec = Verdict{Allowlisted: true, RuleID: uint64(len(bans) + w + 1)}, &recs[len(bans)+w]
				} else if w := fuzzLPM(allows, dst.Unmap()); w >= 0 {
					want, wantRec = Verdict{Allowlisted: true, RuleID: uint64(len(bans) + w + 1)}, &recs[len(bans)+w]
				} else {
					ws, wd := fuzzLPM(live, src.Unmap()), fuzzLPM(live, dst.Unmap())
					if wd >= 0 && (ws < 0 || live[wd].Bits() > live[ws].Bits()) {
						ws = wd
					}
					if ws >= 0 {
						want, wantRec = Verdict{Action: actions[where[ws].act], RuleID: uint64(ws + 1)}, &recs[ws]
					}
				}
				var before uint64
				if wantRec != nil {
					before = wantRec.hits()
				}
				total := 0
				for i := range recs {
					total += int(recs[i].hits())
				}
				if got := set.Match(src, dst, 6, 1, 2); got != want {
					t.Fatalf("Match(%s, %s) = %+v, want %+v\nbans %v (%+v)\nallows %v", src, dst, got, want, bans, where, allows)
				}
				if wantRec != nil && wantRec.hits() != before+1 {
					t.Fatalf("Match(%s, %s): hits of %d went %d -> %d", src, dst, want.RuleID, before, wantRec.hits())
				}
				for i := range recs {
					total -= int(recs[i].hits())
				}
				if wantRec != nil {
					total++
				}
				if total != 0 {
					t.Fatalf("Match(%s, %s) counted %d hits on other entries", src, dst, -total)
				}
			}
		}
	})
}
