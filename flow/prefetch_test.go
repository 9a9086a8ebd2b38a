package flow

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"canopy/capture"
)

// TestPrefetchChangesNothing feeds the same packets to two tables, one
// with Prefetch ahead of most batches and UpdateAhead for their packets,
// the other with Update alone, and checks every call answers the same and
// both tables hold the same flows: Prefetch is only a hint, and the keys
// UpdateAhead takes from it are the ones Update makes. The batches go in
// a shuffled order with one packet twice (its key is used once) and one
// left out (its key must not outlive the batch), and in some rounds
// Prefetch finds the table too small to look ahead and makes no keys.
func TestPrefetchChangesNothing(t *testing.T) {
	a := NewTable(Config{MaxFlows: 512})
	b := NewTable(Config{MaxFlows: 512})
	b.seed, b.rng, b.l2.seed = a.seed, a.rng, a.l2.seed // same hashing and eviction draws: the same slots
	rng := rand.New(rand.NewPCG(1, 2))
	var ps [PrefetchMax + 3]capture.Packet // longer than PrefetchMax: the rest is not looked at
	ts := t0
	for round := range 400 {
		if round%40 == 39 {
			ts += 11 * sec // a quiet spell: half-open flows expire
		}
		for j := range ps {
			p := &ps[j]
			ts += int64(rng.IntN(int(sec / 100)))
			c := rng.IntN(1200) // more flows than slots: eviction too
			*p = capture.Packet{
				Timestamp: ts, IPVersion: 4, Proto: capture.ProtoTCP, TTL: 64,
				Src: netip.AddrFrom4([4]byte{10, 0, byte(c >> 8), byte(c)}), Dst: netip.MustParseAddr(srv),
				SrcPort: uint16(1000 + c), DstPort: 443, Flags: []uint8{syn, synack, ack, psh, fin, rst}[rng.IntN(6)],
				Seq: rng.Uint32(), Ack: rng.Uint32(), PayloadLen: uint16(rng.IntN(1400)), IPLen: 1500,
				SrcMAC: [6]byte{2, 0, 0, 0, 0, byte(rng.IntN(3))},
			}
			switch rng.IntN(10) {
			case 0:
				p.Src, p.Dst, p.SrcPort, p.DstPort = p.Dst, p.Src, p.DstPort, p.SrcPort
			case 1:
				p.Proto = capture.ProtoUDP
			case 2:
				p.IPVersion = 0 // no flow: Prefetch skips it
			}
		}
		a.prefetchMin = 0 // a small table: prefetch anyway
		if round%7 == 3 {
			a.prefetchMin = 1 << 30 // as a table below prefetchMinFlows: no keys
		}
		a.Prefetch(ps[:])
		order := rng.Perm(len(ps))
		order[1] = order[0] // twice, and the one it replaced not at all
		for n, j := range order {
			if n == 5 {
				a.Expire(ts) // the table may change between Prefetch and Update
				b.Expire(ts)
			}
			fa, da, ca := a.UpdateAhead(j)
			fb, db, cb := b.Update(&ps[j])
			if (fa == nil) != (fb == nil) || da != db || ca != cb || a.Info(fa) != b.Info(fb) || (fa != nil && (a.Handle(fa) != b.Handle(fb) || *fa != *fb)) {
				t.Fatalf("round %d packet %d: %+v %v %v, without Prefetch %+v %v %v", round, j, a.Info(fa), da, ca, b.Info(fb), db, cb)
			}
		}
		a.check(t)
		// The index too: UpdateAhead moves a flow home from its
		// secondary bucket exactly when Update does.
		if !slices.Equal(a.idx, b.idx) {
			t.Fatalf("round %d: the 5-tuple indexes differ", round)
		}
	}
	if st := a.Stats(); st.Evicted == 0 || st.Expired == 0 || st.Restarted == 0 || a.kicks == 0 {
		t.Fatalf("stats %+v, %d keys moved to make room: the test does not reach eviction, expiry, restarts and index walks", st, a.kicks)
	}
	if a.Stats() != b.Stats() {
		t.Fatalf("stats %+v, without Prefetch %+v", a.Stats(), b.Stats())
	}
}

// TestPredictFollowsEvict checks Prefetch's guess of a batch's victims: in
// a full table that a flood of new flows fills, predict on a copy of the
// pool must name the slots the evictions then take (a wrong guess costs
// only wasted fetches, so a rare miss, where a batch's new flow lands in a
// later eviction's sample, is allowed).
func TestPredictFollowsEvict(t *testing.T) {
	const n = 1 << 16
	tb := NewTable(Config{MaxFlows: n})
	for i := range n {
		tb.Update(udp(fmt.Sprintf("10.%d.%d.1", i>>8, i&255), uint16(i), srv, 53, 10, t0+int64(i*7919%n)*sec/1000))
	}
	ts := t0 + 100*sec
	next := 0
	newFlow := func() uint32 {
		next++
		f, _, created := tb.Update(udp("192.0.2.1", uint16(next), srv, 53, 10, ts))
		if !created {
			t.Fatal("no new flow")
		}
		return tb.slotOf(f)
	}
	newFlow() // the first eviction draws the samples ahead
	hits, total := 0, 0
	for range 20 {
		pool := tb.ev.pool
		var want [PrefetchMax]uint32
		for i := range want {
			want[i] = tb.predict(&pool, tb.sample(i))
		}
		for i := range want {
			total++
			if newFlow() == want[i] {
				hits++
			}
		}
	}
	if hits < total*95/100 {
		t.Fatalf("predict named %d of %d victims", hits, total)
	}
	t.Logf("predict named %d of %d victims", hits, total)
}
