package flow

import (
	"math"
	"net/netip"
	"testing"

	"canopy/capture"
)

const sec = int64(1e9)

// t0 is an arbitrary fake-clock origin (2026-11-28 00:00:00 UTC).
const t0 = int64(1795824000) * sec

// pk builds a TCP packet. payload is the L4 payload length.
func pk(src string, sport uint16, dst string, dport uint16, flags uint8, seq, ack uint32, payload uint16, ts int64) *capture.Packet {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	p := &capture.Packet{
		Timestamp:  ts,
		IPVersion:  4,
		Src:        s,
		Dst:        d,
		Proto:      capture.ProtoTCP,
		TTL:        64,
		SrcPort:    sport,
		DstPort:    dport,
		Seq:        seq,
		Ack:        ack,
		Flags:      flags,
		Window:     1000,
		PayloadLen: payload,
		SrcMAC:     [6]byte{2, 0, 0, 0, 0, 1},
		DstMAC:     [6]byte{2, 0, 0, 0, 0, 2},
	}
	hdr := uint16(40)
	if s.Is6() {
		p.IPVersion = 6
		p.TTL = 63
	}
	p.IPLen = hdr + payload
	p.WireLen = uint32(p.IPLen) + 14
	return p
}

// udp builds a UDP packet.
func udp(src string, sport uint16, dst string, dport uint16, payload uint16, ts int64) *capture.Packet {
	p := pk(src, sport, dst, dport, 0, 0, 0, payload, ts)
	p.Proto = capture.ProtoUDP
	p.IPLen = 28 + payload
	p.WireLen = uint32(p.IPLen) + 14
	return p
}

const (
	syn    = capture.FlagSYN
	ack    = capture.FlagACK
	synack = capture.FlagSYN | capture.FlagACK
	fin    = capture.FlagFIN | capture.FlagACK
	rst    = capture.FlagRST
	rstack = capture.FlagRST | capture.FlagACK
	psh    = capture.FlagPSH | capture.FlagACK
)

// check verifies the table's internal invariants: every live flow is found
// by its key and by both of its addresses, the lists are consistent, the
// counters add up, and free slots are really free.
func (tb *Table) check(t testing.TB) {
	t.Helper()
	live := 0
	refs := map[uint16]uint32{}
	for i := uint32(1); i <= uint32(tb.cfg.MaxFlows); i++ {
		f := &tb.flows[i]
		if f.bits&bitInUse == 0 {
			if i <= tb.used && f.bits&bitFree == 0 {
				t.Fatalf("free slot %d below the bump cursor %d is not on the free list", i, tb.used)
			}
			continue
		}
		if i > tb.hwm {
			t.Fatalf("slot %d in use above the high-water mark %d", i, tb.hwm)
		}
		if f.bits&bitFree != 0 {
			t.Fatalf("slot %d both in use and free", i)
		}
		live++
		if tb.slotOf(f) != i {
			t.Fatalf("slot %d: slotOf %d", i, tb.slotOf(f))
		}
		for d := range f.Dirs {
			if l := f.Dirs[d].l2; l != 0 {
				refs[l]++
				if f.Dirs[d].Pkts() == 0 {
					t.Fatalf("slot %d: direction %d has an L2 entry but no packets", i, d)
				}
			}
		}
		if g := tb.Get(tb.Handle(f)); g != f {
			t.Fatalf("slot %d: Get(Handle) = %p, want %p", i, g, f)
		}
		if j, _ := tb.find(&f.key, f.key.hash(tb.seed)); j != i {
			t.Fatalf("slot %d: its key finds slot %d", i, j)
		}
		if f.key.proto != capture.ProtoTCP && f.key.proto != capture.ProtoUDP {
			t.Fatalf("slot %d: flow of proto %d", i, f.key.proto)
		}
	}
	// Address index: walk every bucket list once (a busy address's list is
	// long, so walking it per flow would be quadratic), check the links are
	// symmetric and every ref sits in the bucket of its address, then that
	// each live flow's two ends were each seen exactly once.
	seen := make(map[uint32]int, 2*live)
	for b := range tb.epHeads {
		var prev uint32
		for r := tb.epHeads[b]; r != 0; r = tb.flows[r>>1].ep[r&1].next {
			f := &tb.flows[r>>1]
			if f.bits&bitInUse == 0 {
				t.Fatalf("address list %d holds free slot %d", b, r>>1)
			}
			if f.ep[r&1].prev != prev {
				t.Fatalf("address list: ref %d has prev %d, want %d", r, f.ep[r&1].prev, prev)
			}
			if tb.epBucket(f.epAddr(int(r&1)), f.key.v6) != uint64(b) {
				t.Fatalf("ref %d in the wrong address bucket", r)
			}
			seen[r]++
			if seen[r] > 1 {
				t.Fatalf("ref %d twice in the address lists", r)
			}
			prev = r
		}
	}
	if len(seen) != 2*live {
		t.Fatalf("address lists hold %d refs for %d live flows", len(seen), live)
	}
	if live != tb.live {
		t.Fatalf("live = %d, counted %d", tb.live, live)
	}
	tb.checkIndex(t)
	if tb.live > tb.cfg.MaxFlows {
		t.Fatalf("live %d > MaxFlows %d", tb.live, tb.cfg.MaxFlows)
	}
	nfree, marked := 0, 0
	for j := tb.free; j != 0; j = tb.flows[j].ep[0].next {
		g := &tb.flows[j]
		if g.bits != bitFree {
			t.Fatalf("free list holds slot %d with bits %b", j, g.bits)
		}
		if g.ep[0].prev != 0 || g.ep[1] != (epLink{}) {
			t.Fatalf("free slot %d has links %+v besides the list's next", j, g.ep)
		}
		nfree++
		if nfree > tb.cfg.MaxFlows {
			t.Fatal("free list loops")
		}
	}
	for i := 1; i <= tb.cfg.MaxFlows; i++ {
		if tb.flows[i].bits&bitFree != 0 {
			marked++
		}
	}
	if nfree != marked {
		t.Fatalf("free list holds %d slots, %d are marked free", nfree, marked)
	}
	// L2 dictionary: every entry's count is the directions that refer to
	// it, free entries are on the free list, and each entry in use is
	// found under its own hash.
	d := &tb.l2
	for i := uint32(1); i <= d.used; i++ {
		e := &d.ents[i]
		if e.refs != refs[uint16(i)] {
			t.Fatalf("L2 entry %d has %d refs, %d directions use it", i, e.refs, refs[uint16(i)])
		}
		if e.refs == 0 {
			continue
		}
		found := false
		for j := d.heads[d.hash(&e.l2)&d.mask]; j != 0; j = d.ents[j].next {
			found = found || j == i
		}
		if !found {
			t.Fatalf("L2 entry %d not in its hash chain", i)
		}
	}
	nf := 0
	for j := d.free; j != 0; j = d.ents[j].next {
		if d.ents[j].refs != 0 {
			t.Fatalf("L2 free list holds entry %d in use", j)
		}
		if nf++; nf > len(d.ents) {
			t.Fatal("L2 free list loops")
		}
	}
	if inUse := len(refs); nf+inUse != int(d.used) {
		t.Fatalf("L2 dictionary: %d free + %d in use != %d handed out", nf, inUse, d.used)
	}
	st := tb.Stats()
	if st.Created-st.Restarted-st.Evicted-st.Expired != uint64(live) {
		t.Fatalf("stats %+v do not add up to %d live", st, live)
	}
}

// checkIndex verifies the 5-tuple index entry by entry: each holds a live
// flow, once, with its tag, in its primary or secondary bucket; every
// bucket's overflow count is the keys living in their secondary; and
// there is one entry per live flow.
func (tb *Table) checkIndex(t testing.TB) {
	t.Helper()
	over := make([]uint32, len(tb.idx))
	seen := map[uint32]bool{}
	for c := range tb.idx {
		b := &tb.idx[c]
		for j := range ibEntries {
			i := b.slot(j)
			if i == 0 {
				if b.tag(j) != 0 {
					t.Fatalf("bucket %d entry %d: empty with tag %#x", c, j, b.tag(j))
				}
				continue
			}
			f := &tb.flows[i]
			if f.bits&bitInUse == 0 {
				t.Fatalf("bucket %d entry %d: slot %d is not in use", c, j, i)
			}
			if seen[i] {
				t.Fatalf("slot %d in the index twice", i)
			}
			seen[i] = true
			h := f.key.hash(tb.seed)
			if b.tag(j) != tagOf(h) {
				t.Fatalf("bucket %d entry %d: tag %#x, want %#x", c, j, b.tag(j), tagOf(h))
			}
			p := tb.primary(h)
			switch uint32(c) {
			case p:
			case tb.secondary(h, p):
				over[p]++
			default:
				t.Fatalf("slot %d in bucket %d, neither its primary %d nor its secondary %d", i, c, p, tb.secondary(h, p))
			}
		}
	}
	for c := range tb.idx {
		if b := &tb.idx[c]; b.tags[15] != 0 {
			t.Fatalf("bucket %d: unused tag byte is %#x", c, b.tags[15])
		}
		if got := tb.idx[c].over(); got != over[c] {
			t.Fatalf("bucket %d: overflow count %d, %d of its keys live in their secondary", c, got, over[c])
		}
	}
	if len(seen) != tb.live {
		t.Fatalf("index holds %d flows, %d live", len(seen), tb.live)
	}
}

// forEachScan and forEachByAddr are ForEach by one route, whichever
// NewWalk would take, so tests can check that the two agree.
func (t *Table) forEachScan(p netip.Prefix, fn func(*Flow) bool) {
	w := scanWalk(p)
	t.Step(&w, math.MaxInt, fn)
}

func (t *Table) forEachByAddr(p netip.Prefix, host int, fn func(*Flow) bool) {
	w := addrWalk(p, host)
	t.Step(&w, math.MaxInt, fn)
}
