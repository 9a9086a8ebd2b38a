package flow

import (
	"canopy/internal/ipword"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"canopy/capture"
)

// A map-based model of the flow table: what each live flow must hold, in
// full-width fields, kept by the simplest code that can say it.

type modelKey struct {
	proto  uint8
	lo, hi netip.AddrPort
}

type modelDir struct {
	pkts, bytes   uint64
	first, last   int64
	ttl           uint8
	l2            L2
	seq, ack, nxt uint32
	flags         uint8
	win           uint16
	hasSeq        bool
	hasAck        bool
	noL2          bool // the table had no room for l2 when it came
}

type modelFlow struct {
	a     netip.AddrPort // initiator
	proto uint8
	state State
	d     [2]modelDir
}

type model struct {
	flows map[modelKey]*modelFlow
}

func modelKeyOf(p *capture.Packet) (modelKey, bool) {
	s, d := netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort)
	ab, _ := ipOf(p.Src)
	bb, _ := ipOf(p.Dst)
	srcIsLo := cmp16(&ab, &bb) < 0 || (ab == bb && p.SrcPort <= p.DstPort)
	if srcIsLo {
		return modelKey{p.Proto, s, d}, true
	}
	return modelKey{p.Proto, d, s}, false
}

// update applies p to the model flow m (nil: new) and returns it.
func (mf *modelFlow) update(p *capture.Packet) {
	src := netip.AddrPortFrom(p.Src, p.SrcPort)
	dir := BtoA
	if src == mf.a {
		dir = AtoB
	}
	d := &mf.d[dir]
	if d.pkts == 0 {
		d.first, d.last = p.Timestamp, p.Timestamp
	}
	d.last = max(d.last, p.Timestamp)
	d.pkts++
	d.bytes += pktBytes(p)
	d.ttl = p.TTL
	d.l2 = L2{SrcMAC: p.SrcMAC, DstMAC: p.DstMAC, NumVLANs: p.NumVLANs}
	copy(d.l2.VLANs[:p.NumVLANs], p.VLANs[:p.NumVLANs])
	if !p.IsTCP() {
		return
	}
	fl := p.Flags
	d.flags, d.win, d.seq = fl, p.Window, p.Seq
	if fl&capture.FlagRST == 0 {
		end := p.Seq + p.SeqSpace()
		if fl&capture.FlagSYN != 0 || !d.hasSeq || int32(end-d.nxt) > 0 {
			d.nxt = end
		}
		d.hasSeq = true
	}
	if fl&capture.FlagACK != 0 {
		if fl&capture.FlagSYN != 0 || !d.hasAck || int32(p.Ack-d.ack) > 0 {
			d.ack = p.Ack
		}
		d.hasAck = true
	} else if fl&(capture.FlagSYN|capture.FlagRST) == capture.FlagSYN {
		d.hasAck = false
	}
	s := mf.state
	switch {
	case fl&capture.FlagRST != 0:
		s |= StateRst | StateClosed
	case fl&(capture.FlagSYN|capture.FlagACK) == capture.FlagSYN:
		if dir == AtoB {
			s |= StateSynSeen
		}
	case fl&(capture.FlagSYN|capture.FlagACK) == capture.FlagSYN|capture.FlagACK:
		if dir == BtoA {
			s |= StateSynAckSeen
		}
	case fl&capture.FlagACK != 0:
		if mf.d[0].hasAck && mf.d[1].hasAck {
			s |= StateEstablished
		}
	}
	if fl&capture.FlagFIN != 0 {
		if dir == AtoB {
			s |= StateFinAtoB
		} else {
			s |= StateFinBtoA
		}
		if s&(StateFinAtoB|StateFinBtoA) == StateFinAtoB|StateFinBtoA {
			s |= StateClosed
		}
	}
	mf.state = s
}

func (mf *modelFlow) timeout(c Config) int64 {
	switch {
	case mf.proto != capture.ProtoTCP:
		return int64(c.IdleUDP)
	case mf.state&StateClosed != 0:
		return int64(c.IdleClosed)
	case mf.state&StateEstablished != 0:
		return int64(c.IdleEstablished)
	}
	return int64(c.IdleHalfOpen)
}

func (mf *modelFlow) lastSeen() int64 {
	l := mf.d[0].last
	if mf.d[0].pkts == 0 || (mf.d[1].pkts != 0 && mf.d[1].last > l) {
		l = mf.d[1].last
	}
	return l
}

// byKey maps the key of every live flow of tb to it, found by scanning the
// slots: independent of the index the table looks flows up with.
func (tb *Table) byKey() map[key]*Flow {
	m := map[key]*Flow{}
	for i := uint32(1); i <= tb.hwm; i++ {
		if f := &tb.flows[i]; f.bits&bitInUse != 0 {
			m[f.key] = f
		}
	}
	return m
}

// lookupModel finds the live flow of m's tuple in flows (tb.byKey; nil if none).
func lookupModel(flows map[key]*Flow, mk modelKey) *Flow {
	ap := addrPorts{sport: mk.lo.Port(), dport: mk.hi.Port(), proto: mk.proto}
	ap.sh, ap.sl = ipword.Of(mk.lo.Addr())
	ap.dh, ap.dl = ipword.Of(mk.hi.Addr())
	if mk.lo.Addr().Is6() {
		ap.v6 = 1
	}
	var k key
	makeKey(&ap, &k)
	return flows[k]
}

// compare checks that tb holds exactly m's flows (dropping from m those
// the table dropped, and returning them) with m's numbers.
func (m *model) compare(t *testing.T, tb *Table) (dropped []*modelFlow) {
	t.Helper()
	flows := tb.byKey()
	for mk, mf := range m.flows {
		f := lookupModel(flows, mk)
		if f == nil {
			delete(m.flows, mk)
			dropped = append(dropped, mf)
			continue
		}
		if f.A() != mf.a.Addr() || f.APort() != mf.a.Port() {
			t.Fatalf("%v: A %v:%d, model %v", mk, f.A(), f.APort(), mf.a)
		}
		if f.state != mf.state {
			t.Fatalf("%v: state %08b, model %08b", mk, f.state, mf.state)
		}
		for d := range 2 {
			md, fd := &mf.d[d], &f.Dirs[d]
			if fd.Pkts() != md.pkts || fd.Bytes() != md.bytes {
				t.Fatalf("%v dir %d: %d pkts %d bytes, model %d %d", mk, d, fd.Pkts(), fd.Bytes(), md.pkts, md.bytes)
			}
			first, last := tb.Seen(f, Dir(d))
			if md.pkts == 0 {
				if first != 0 || last != 0 {
					t.Fatalf("%v dir %d: seen %d %d with no packets", mk, d, first, last)
				}
				if _, ok := tb.L2(f, Dir(d)); ok {
					t.Fatalf("%v dir %d: L2 with no packets", mk, d)
				}
				continue
			}
			if want := md.first - md.first%firstUnit; first != want {
				t.Fatalf("%v dir %d: first %d, model %d (%d)", mk, d, first, want, md.first)
			}
			if want := md.last - md.last%lastUnit; last != want {
				t.Fatalf("%v dir %d: last %d, model %d (%d)", mk, d, last, want, md.last)
			}
			if l, ok := tb.L2(f, Dir(d)); ok != !md.noL2 || (ok && l != md.l2) {
				t.Fatalf("%v dir %d: L2 %+v %v, model %+v", mk, d, l, ok, md)
			}
			if fd.TTL != md.ttl || f.HasSeq(Dir(d)) != md.hasSeq || f.HasAck(Dir(d)) != md.hasAck {
				t.Fatalf("%v dir %d: ttl/hasSeq/hasAck %d %v %v, model %+v", mk, d, fd.TTL, f.HasSeq(Dir(d)), f.HasAck(Dir(d)), md)
			}
			if mk.proto == capture.ProtoTCP && (fd.Seq != md.seq || fd.Flags != md.flags || fd.Window != md.win ||
				(md.hasSeq && fd.NextSeq != md.nxt) || (md.hasAck && fd.Ack != md.ack)) {
				t.Fatalf("%v dir %d: tcp %+v, model %+v", mk, d, *fd, md)
			}
		}
		if want := min(mf.d[0].first, mf.d[1].first); mf.d[0].pkts == 0 || mf.d[1].pkts == 0 {
			_ = want
		} else if got := tb.FirstSeen(f); got != want-want%firstUnit {
			t.Fatalf("%v: FirstSeen %d, model %d", mk, got, want)
		}
		if got, want := tb.LastSeen(f), mf.lastSeen(); got != want-want%lastUnit {
			t.Fatalf("%v: LastSeen %d, model %d", mk, got, want)
		}
	}
	if tb.Len() != len(m.flows) {
		t.Fatalf("table holds %d flows, model %d", tb.Len(), len(m.flows))
	}
	return dropped
}

// TestTableAgainstModel drives a small table (eviction, expiry, port
// reuse, a full L2 dictionary, reordered timestamps) with random traffic
// and after every step compares it with the model: the same flows, the
// same per-direction numbers, a flow dropped only by an eviction (one per
// new flow of a full table) or by Expire after its idle timeout, and
// ForEach on addresses and prefixes giving exactly the model's flows.
//
// Every path must be reached by the eight runs together, not by each: the
// traffic is seeded, but the table's hash seed and eviction sampling are
// not, and in one CI run a 300-flow run saw no SYN on a closed 5-tuple
// before the tuple was evicted (Restarted 0; 40 local runs of the test
// never did), which says nothing about the table.
func TestTableAgainstModel(t *testing.T) {
	var sum TableStats
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 99))
		for _, r := range []struct{ maxFlows, naddr, nport, steps int }{{64, 8, 3, 4000}, {300, 40, 6, 3000}} {
			st := runModel(t, rng, r.maxFlows, r.naddr, r.nport, r.steps)
			sum.Evicted += st.Evicted
			sum.Expired += st.Expired
			sum.Restarted += st.Restarted
			sum.L2Full += st.L2Full
		}
	}
	if sum.Evicted == 0 || sum.Expired == 0 || sum.Restarted == 0 || sum.L2Full == 0 {
		t.Fatalf("all runs together: stats %+v: the test does not reach every path", sum)
	}
	t.Logf("all runs together: %d evicted, %d expired, %d restarted, %d L2 full", sum.Evicted, sum.Expired, sum.Restarted, sum.L2Full)
}

// FuzzTableAgainstModel is TestTableAgainstModel with the fuzzer choosing
// the table size, the traffic mix and every random draw.
func FuzzTableAgainstModel(f *testing.F) {
	f.Add(uint64(1), uint64(2), uint8(0), uint8(8), uint8(3))
	f.Add(uint64(7), uint64(9), uint8(3), uint8(40), uint8(6))
	f.Fuzz(func(t *testing.T, s1, s2 uint64, size, naddr, nport uint8) {
		rng := rand.New(rand.NewPCG(s1, s2))
		runModel(t, rng, []int{1, 2, 16, 64, 300}[size%5], 2+int(naddr%64), 1+int(nport%8), 800)
	})
}

var modelAddrs = func() (a []netip.Addr) {
	for _, s := range []string{"10.0.0.1", "10.0.0.2", "10.0.1.7", "192.168.5.5", "2001:db8::1", "2001:db8::2", "2001:db8:1::9", "::ffff:10.0.0.1"} {
		a = append(a, netip.MustParseAddr(s))
	}
	for i := range 56 {
		a = append(a, netip.AddrFrom4([4]byte{10, byte(i % 3), byte(i % 2), byte(i)}))
	}
	return a
}()

// runModel drives one table with steps random operations, comparing it
// with the model after each, and returns the table's counters.
func runModel(t *testing.T, rng *rand.Rand, maxFlows, naddr, nport, steps int) TableStats {
	seed := rng.Uint64()
	cfg := Config{MaxFlows: maxFlows, EvictSample: 4, ExpireBatch: 16,
		IdleHalfOpen: 2 * time.Second, IdleClosed: time.Second, IdleUDP: 3 * time.Second, IdleEstablished: 5 * time.Second}
	tb := NewTable(cfg)
	cfg = tb.Config()
	m := &model{flows: map[modelKey]*modelFlow{}}
	addrs := modelAddrs[:min(naddr, len(modelAddrs))]
	ts := t0 + int64(rng.IntN(1e9))
	for step := range steps {
		switch op := rng.IntN(100); {
		case op < 4:
			ts += int64(rng.IntN(3e9))
			now := ts
			if rng.IntN(4) == 0 {
				now -= int64(rng.IntN(2e9)) // a clock behind the packets'
			}
			before := tb.Stats().Expired
			n := tb.Expire(now)
			dropped := m.compare(t, tb)
			if len(dropped) != n || tb.Stats().Expired != before+uint64(n) {
				t.Fatalf("seed %d step %d: Expire removed %d, model lost %d", seed, step, n, len(dropped))
			}
			for _, mf := range dropped {
				if idle := now - mf.lastSeen(); idle <= mf.timeout(cfg) {
					t.Fatalf("seed %d step %d: flow of %v expired after %v idle", seed, step, mf.a, time.Duration(idle))
				}
			}
		case op < 8:
			a := addrs[rng.IntN(len(addrs))]
			bits := rng.IntN(a.BitLen() + 1)
			pfx, _ := a.Prefix(bits)
			want := map[*Flow]bool{}
			flows := tb.byKey()
			for mk := range m.flows {
				if pfx.Contains(mk.lo.Addr()) || pfx.Contains(mk.hi.Addr()) {
					want[lookupModel(flows, mk)] = true
				}
			}
			got := map[*Flow]bool{}
			tb.ForEach(pfx, func(f *Flow) bool {
				if got[f] {
					t.Fatalf("seed %d step %d: ForEach(%v) visited a flow twice", seed, step, pfx)
				}
				got[f] = true
				return true
			})
			if len(got) != len(want) {
				t.Fatalf("seed %d step %d: ForEach(%v) %d flows, model %d", seed, step, pfx, len(got), len(want))
			}
			for f := range got {
				if !want[f] {
					t.Fatalf("seed %d step %d: ForEach(%v) visited %v-%v", seed, step, pfx, f.A(), f.B())
				}
			}
		default:
			ts += int64(rng.IntN(50e6))
			pts := ts
			if rng.IntN(5) == 0 {
				pts -= int64(rng.IntN(3e9)) // reordered, or another worker's clock behind
			}
			s, d := addrs[rng.IntN(len(addrs))], addrs[rng.IntN(len(addrs))]
			if s.Is4() != d.Is4() {
				d = s
			}
			p := &capture.Packet{
				Timestamp: pts, IPVersion: 4, Src: s, Dst: d,
				Proto: capture.ProtoTCP, SrcPort: uint16(1 + rng.IntN(nport)), DstPort: uint16(1 + rng.IntN(nport)),
				Flags: []uint8{syn, synack, ack, psh, fin, rst, rstack, syn}[rng.IntN(8)],
				Seq:   rng.Uint32() >> rng.IntN(32), Ack: rng.Uint32() >> rng.IntN(32), Window: uint16(rng.Uint32()),
				TTL: uint8(rng.Uint32()), PayloadLen: uint16(rng.IntN(100)), IPLen: uint16(rng.IntN(3000)),
				WireLen: uint32(rng.IntN(3000)), NumVLANs: uint8(rng.IntN(3)),
				SrcMAC: [6]byte{2, 0, 0, 0, 0, byte(rng.IntN(12))}, DstMAC: [6]byte{2, 0, 0, 0, 1, byte(rng.IntN(12))},
			}
			if s.Is6() {
				p.IPVersion = 6
			}
			if s == d && p.SrcPort == p.DstPort {
				p.DstPort++ // one endpoint talking to itself has no directions to tell apart
			}
			if rng.IntN(4) == 0 {
				p.Proto = capture.ProtoUDP
				p.Flags = 0
			}
			for v := range p.NumVLANs {
				p.VLANs[v] = capture.VLAN{TPID: 0x8100, TCI: uint16(rng.IntN(3))}
			}
			mk, srcIsLo := modelKeyOf(p)
			_ = srcIsLo
			full := tb.Len() == tb.Cap()
			evicted := tb.Stats().Evicted
			mf := m.flows[mk]
			f, dir, created := tb.Update(p)
			if f == nil {
				t.Fatalf("seed %d step %d: no flow", seed, step)
			}
			restart := mf != nil && p.IsTCP() && p.Flags&(capture.FlagSYN|capture.FlagACK|capture.FlagRST) == capture.FlagSYN &&
				mf.state&(StateClosed|StateResetByUs) == StateClosed
			if created != (mf == nil || restart) {
				t.Fatalf("seed %d step %d: created %v, model has flow %v (restart %v)", seed, step, created, mf != nil, restart)
			}
			if mf == nil || restart {
				mf = &modelFlow{a: netip.AddrPortFrom(p.Src, p.SrcPort), proto: p.Proto}
				if p.IsTCP() && p.Flags&(capture.FlagSYN|capture.FlagACK|capture.FlagRST) == capture.FlagSYN|capture.FlagACK {
					mf.a = netip.AddrPortFrom(p.Dst, p.DstPort)
				}
				m.flows[mk] = mf
			}
			mf.update(p)
			if _, ok := tb.L2(f, dir); !ok {
				if tb.l2.free != 0 || int(tb.l2.used) != len(tb.l2.ents)-1 {
					t.Fatalf("seed %d step %d: no L2 stored, but the dictionary has room (free %d, used %d)", seed, step, tb.l2.free, tb.l2.used)
				}
				mf.d[dir].noL2 = true
			} else {
				mf.d[dir].noL2 = false
			}
			if f.Src(dir) != p.Src || f.SrcPort(dir) != p.SrcPort {
				t.Fatalf("seed %d step %d: direction %v wrong", seed, step, dir)
			}
			if rng.IntN(30) == 0 {
				f.MarkResetByUs()
				mf.state |= StateResetByUs
			}
			dropped := m.compare(t, tb)
			wantDrop := 0
			if created && !restart && full {
				wantDrop = 1
			}
			if len(dropped) != wantDrop || tb.Stats().Evicted != evicted+uint64(wantDrop) {
				t.Fatalf("seed %d step %d: %d flows dropped, %d evictions, want %d", seed, step, len(dropped), tb.Stats().Evicted-evicted, wantDrop)
			}
		}
		if maxFlows <= 64 || step%16 == 0 {
			tb.check(t) // a full scan: every step on small tables
		}
	}
	tb.check(t)
	return tb.Stats()
}
