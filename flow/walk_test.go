package flow

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// walkTable holds 3,000 TCP flows: 200 client addresses in 10.1.0.0/24
// with 15 flows each toward 7 servers in 10.2.0.0/24, and 20 IPv6 ones.
func walkTable(t *testing.T, cfg Config) *Table {
	t.Helper()
	tb := NewTable(cfg)
	for i := range 3000 {
		c := netip.AddrFrom4([4]byte{10, 1, 0, byte(i % 200)})
		s := netip.AddrFrom4([4]byte{10, 2, 0, byte(i % 7)})
		tb.Update(pk(c.String(), uint16(1000+i), s.String(), 443, syn, 1, 0, 0, t0))
	}
	for i := range 20 {
		tb.Update(pk("2001:db8::7", uint16(2000+i), "2001:db8:1::1", 80, syn, 1, 0, 0, t0))
	}
	tb.check(t)
	return tb
}

// walkRoutes are the walks of p a test should try: the one NewWalk
// chooses, a scan, and one by address where that is not too long.
func walkRoutes(tb *Table, p netip.Prefix) map[string]Walk {
	p = p.Masked()
	r := map[string]Walk{"chosen": tb.NewWalk(p), "scan": scanWalk(p)}
	if host := p.Addr().BitLen() - p.Bits(); host <= 12 {
		r["by address"] = addrWalk(p, host)
	}
	return r
}

var walkPrefixes = []string{"10.1.0.5/32", "10.2.0.3/32", "10.1.0.0/26", "10.1.0.0/24", "10.0.0.0/8", "0.0.0.0/0", "2001:db8::7/128", "2001:db8::/32", "192.0.2.0/24"}

// TestWalkInStepsFindsWhatForEachFinds walks each prefix by every route in
// steps as small as one slot, with fn refusing flows it has not accepted
// yet at random (as a worker does when the injection ceiling has no
// room), and accepting again those it has: the flows accepted
// are exactly ForEach's, a scan never shows one twice, and every step
// makes progress; without refusals, no walk shows a flow twice.
func TestWalkInStepsFindsWhatForEachFinds(t *testing.T) {
	tb := walkTable(t, Config{MaxFlows: 4096})
	rng := rand.New(rand.NewPCG(1, 2))
	for _, ps := range walkPrefixes {
		p := netip.MustParsePrefix(ps)
		want := map[*Flow]bool{}
		tb.ForEach(p, func(f *Flow) bool { want[f] = true; return true })
		for route, w0 := range walkRoutes(tb, p) {
			for _, budget := range []int{1, 7, 1000} {
				for _, refuse := range []float64{0, 0.3} {
					w := w0
					got, accepted, steps := map[*Flow]bool{}, 0, 0
					for !tb.Step(&w, budget, func(f *Flow) bool {
						if !p.Contains(f.A()) && !p.Contains(f.B()) {
							t.Fatalf("%v %s: visited %v-%v", p, route, f.A(), f.B())
						}
						if got[f] {
							return true // Step's contract: accepted once, accepted again
						}
						if rng.Float64() < refuse {
							return false
						}
						got[f] = true
						accepted++
						return true
					}) {
						if steps++; steps > 3*(int(tb.hwm)+4096+len(want)) {
							t.Fatalf("%v %s budget %d: %d steps and not done", p, route, budget, steps)
						}
					}
					if len(got) != len(want) {
						t.Fatalf("%v %s budget %d refuse %v: %d flows, ForEach %d", p, route, budget, refuse, len(got), len(want))
					}
					for f := range got {
						if !want[f] {
							t.Fatalf("%v %s: a flow ForEach does not visit", p, route)
						}
					}
					if !w0.byAddr && accepted != len(got) || refuse == 0 && accepted != len(got) {
						t.Fatalf("%v %s: a scan accepted %d visits of %d flows", p, route, accepted, len(got))
					}
					if !w.Done() || !tb.Step(&w, budget, func(*Flow) bool { t.Fatal("a done walk visited a flow"); return true }) {
						t.Fatalf("%v %s: walk not done after its last step", p, route)
					}
				}
			}
		}
	}
	if w := tb.NewWalk(netip.Prefix{}); !w.Done() {
		t.Error("a walk of an invalid prefix is not done")
	}
}

// TestWalkThroughChurn changes the table between the steps of a walk:
// flows come, are evicted (the table is full) and expire. Every flow that
// lived through the walk is visited, and none outside the prefix.
func TestWalkThroughChurn(t *testing.T) {
	for _, ps := range walkPrefixes {
		p := netip.MustParsePrefix(ps)
		cfg := Config{MaxFlows: 3100, IdleClosed: time.Second}
		for route := range walkRoutes(walkTable(t, cfg), p) {
			tb := walkTable(t, cfg)
			w := walkRoutes(tb, p)[route]
			rng := rand.New(rand.NewPCG(3, 4))
			var before []Handle
			tb.ForEach(p, func(f *Flow) bool { before = append(before, tb.Handle(f)); return true })
			seen := map[Handle]bool{}
			now, port := t0, uint16(0)
			for !tb.Step(&w, 5, func(f *Flow) bool {
				if !p.Contains(f.A()) && !p.Contains(f.B()) {
					t.Fatalf("%v %s: visited %v-%v", p, route, f.A(), f.B())
				}
				seen[tb.Handle(f)] = true
				return rng.IntN(5) != 0
			}) {
				// A new flow, perhaps inside p, evicts the oldest once
				// the table is full; an old one is refreshed, another
				// reset (it expires a second later).
				port++
				c := netip.AddrFrom4([4]byte{10, 1, 0, byte(rng.IntN(256))})
				tb.Update(pk(c.String(), 50000+port, "10.2.0.9", 80, syn, 1, 0, 0, now))
				for _, flags := range []uint8{ack, rst} {
					if len(before) == 0 {
						break
					}
					if f := tb.Get(before[rng.IntN(len(before))]); f != nil {
						tb.Update(pk(f.A().String(), f.APort(), f.B().String(), f.BPort(), flags, 2, 0, 0, now))
					}
				}
				now += sec / 100
				tb.Expire(now)
			}
			tb.check(t)
			lived := 0
			for _, h := range before {
				if tb.Get(h) == nil {
					continue
				}
				lived++
				if !seen[h] {
					f := tb.Get(h)
					t.Fatalf("%v %s: %v:%d-%v:%d lived through the walk and was not visited", p, route, f.A(), f.APort(), f.B(), f.BPort())
				}
			}
			if len(before) > 0 && lived == 0 {
				t.Fatalf("%v %s: none of %d flows lived through the walk: the test checks nothing", p, route, len(before))
			}
		}
	}
}
