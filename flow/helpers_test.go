package flow

import (
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
	for i := uint32(1); i <= tb.used; i++ {
		f := &tb.flows[i]
		if f.bits&bitInUse == 0 {
			continue
		}
		live++
		if f.idx != i {
			t.Fatalf("slot %d: idx %d", i, f.idx)
		}
		if g := tb.Get(f.Handle()); g != f {
			t.Fatalf("slot %d: Get(Handle) = %p, want %p", i, g, f)
		}
		found := false
		for j := tb.heads[f.key.hash(tb.seed)&tb.mask]; j != 0; j = tb.chain[j] {
			if j == i {
				found = true
			}
			if tb.flows[j].bits&bitInUse == 0 {
				t.Fatalf("hash chain holds free slot %d", j)
			}
		}
		if !found {
			t.Fatalf("slot %d not in its hash chain", i)
		}
		for s := 0; s < 2; s++ {
			ref := i<<1 | uint32(s)
			n := 0
			var prev uint32
			for r := tb.epHeads[tb.epBucket(f.epAddr(s), f.key.v6)]; r != 0; r = tb.flows[r>>1].ep[r&1].next {
				if tb.flows[r>>1].ep[r&1].prev != prev {
					t.Fatalf("address list: ref %d has prev %d, want %d", r, tb.flows[r>>1].ep[r&1].prev, prev)
				}
				if r == ref {
					n++
				}
				prev = r
				if n > 1 {
					break
				}
			}
			if n != 1 {
				t.Fatalf("slot %d side %d appears %d times in its address list", i, s, n)
			}
		}
		if f.key.proto != capture.ProtoTCP && f.key.proto != capture.ProtoUDP {
			t.Fatalf("slot %d: flow of proto %d", i, f.key.proto)
		}
	}
	if live != tb.live {
		t.Fatalf("live = %d, counted %d", tb.live, live)
	}
	if tb.live > tb.cfg.MaxFlows {
		t.Fatalf("live %d > MaxFlows %d", tb.live, tb.cfg.MaxFlows)
	}
	nfree := 0
	for j := tb.free; j != 0; j = tb.chain[j] {
		if tb.flows[j].bits&bitInUse != 0 {
			t.Fatalf("free list holds live slot %d", j)
		}
		nfree++
		if nfree > int(tb.used) {
			t.Fatal("free list loops")
		}
	}
	if nfree+live != int(tb.used) {
		t.Fatalf("free %d + live %d != used %d", nfree, live, tb.used)
	}
	st := tb.Stats()
	if st.Created-st.Restarted-st.Evicted-st.Expired != uint64(live) {
		t.Fatalf("stats %+v do not add up to %d live", st, live)
	}
}
