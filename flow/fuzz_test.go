package flow

import (
	"encoding/binary"
	"math"
	"net/netip"
	"testing"

	"canopy/capture"
)

var fuzzAddrs = []netip.Addr{
	netip.MustParseAddr("10.0.0.1"),
	netip.MustParseAddr("10.0.0.2"),
	netip.MustParseAddr("10.0.0.3"),
	netip.MustParseAddr("2001:db8::1"),
	netip.MustParseAddr("2001:db8::2"),
	netip.MustParseAddr("::ffff:10.0.0.1"),
	netip.MustParseAddr("0.0.0.0"),
	{}, // invalid: a decoder bug must not crash the table
}

// FuzzUpdate drives a small table (so it evicts) with packets, expiry,
// bucket swaps, lookups and marks decoded from the input, and checks the
// table's invariants after every step.
func FuzzUpdate(f *testing.F) {
	f.Add([]byte("\x00\x01\x02\x00\x50\x02\x00\x00\x00\x10\x00\x05\x01\x00\x12\x00\x50\x00\x10\x00\x00\x00\x00\x10"))
	f.Add(make([]byte, 16*20))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		tb := NewTable(Config{MaxFlows: 6, MaxTalkers: 3, ExpireBatch: 4, EvictSample: 3})
		agg := NewAggregator(4)
		var handles []Handle
		ts := t0
		var ipPkts uint64
		sec := ts / 1e9
		for len(data) >= 16 {
			c := data[:16]
			data = data[16:]
			op := c[0] % 16
			ts += int64(binary.LittleEndian.Uint16(c[14:])) * 1e6 // up to ~65 s per step
			switch op {
			case 12:
				tb.Expire(ts)
				tb.check(t)
				continue
			case 13:
				b := tb.SwapBucket(nil)
				checkBucket(t, b, ipPkts)
				ipPkts = 0
				sec++
				agg.Add(int(c[1]%3), b, sec-int64(c[2]%70))
				checkSnapshot(t, agg.Snapshot(int(c[3]%8), tb.Len()))
				continue
			case 14:
				for _, h := range handles {
					if g := tb.Get(h); g != nil && tb.Handle(g) != h {
						t.Fatal("Get returned another flow")
					}
				}
				a := fuzzAddrs[c[1]%uint8(len(fuzzAddrs))]
				bits := int(c[2] % 129)
				if a.Is4() {
					bits %= 33
				}
				if p, err := a.Prefix(bits); err == nil {
					seen := map[Handle]bool{}
					tb.ForEach(p, func(fl *Flow) bool {
						if !p.Contains(fl.A()) && !p.Contains(fl.B()) {
							t.Fatalf("ForEach(%v) visited %v-%v", p, fl.A(), fl.B())
						}
						if seen[tb.Handle(fl)] {
							t.Fatalf("ForEach(%v) visited a flow twice", p)
						}
						seen[tb.Handle(fl)] = true
						return c[3]&1 == 0
					})
					if c[3]&1 == 0 && p.IsValid() {
						// Every route to the answer agrees.
						n := 0
						tb.forEachScan(p.Masked(), func(*Flow) bool { n++; return true })
						if host := p.Addr().BitLen() - p.Bits(); host <= 8 {
							m := 0
							tb.forEachByAddr(p.Masked(), host, func(*Flow) bool { m++; return true })
							if m != n {
								t.Fatalf("%v: by address %d, scan %d", p, m, n)
							}
						}
						if len(seen) != n {
							t.Fatalf("%v: ForEach %d, scan %d", p, len(seen), n)
						}
						// A walk in steps of a few slots, refusing a flow
						// now and then, finds the same flows.
						w, got, calls, refused := tb.NewWalk(p), map[Handle]bool{}, 0, 0
						for !tb.Step(&w, 1+int(c[4]%4), func(fl *Flow) bool {
							h := tb.Handle(fl)
							calls++
							if !got[h] && refused < 8 && c[5]>>(calls%8)&1 == 1 {
								refused++
								return false
							}
							got[h] = true
							return true
						}) {
						}
						if len(got) != n {
							t.Fatalf("%v: a walk in steps found %d flows, a scan %d", p, len(got), n)
						}
						for h := range got {
							if !seen[h] {
								t.Fatalf("%v: a walk in steps found a flow ForEach did not", p)
							}
						}
					}
				}
				continue
			}
			p := &capture.Packet{
				Timestamp:  ts,
				IPVersion:  []uint8{4, 6, 0, 4}[c[1]>>6],
				Src:        fuzzAddrs[c[1]&7],
				Dst:        fuzzAddrs[(c[1]>>3)&7],
				Proto:      []uint8{capture.ProtoTCP, capture.ProtoUDP, capture.ProtoICMP, capture.ProtoTCP}[c[2]&3],
				Frag:       capture.Frag((c[2] >> 2) % 3),
				SrcPort:    uint16(c[2]>>4) % 3,
				DstPort:    uint16(c[3]) % 3,
				Flags:      c[4],
				Seq:        binary.LittleEndian.Uint32(c[5:]) * 0x01000193,
				Ack:        binary.LittleEndian.Uint32(c[8:]),
				PayloadLen: binary.LittleEndian.Uint16(c[12:]),
				IPLen:      binary.LittleEndian.Uint16(c[10:]),
				WireLen:    uint32(c[13]),
				TTL:        c[9],
				NumVLANs:   c[3] % 3,
				SrcMAC:     [6]byte{2, 0, 0, 0, 0, c[5] & 3},
				DstMAC:     [6]byte{2, 0, 0, 0, 1, c[6] & 3},
			}
			for v := range p.NumVLANs {
				p.VLANs[v] = capture.VLAN{TPID: 0x8100, TCI: uint16(c[7]&3) + uint16(v)}
			}
			isIP := (p.IPVersion == 4 || p.IPVersion == 6) && p.Src.IsValid() && p.Src.Is4() == p.Dst.Is4()
			f, dir, created := tb.Update(p)
			if isIP {
				ipPkts++
			}
			if f == nil {
				if created || (isIP && (p.IsTCP() || p.IsUDP())) {
					t.Fatalf("nil flow for a TCP/UDP packet (created %v)", created)
				}
				continue
			}
			if !(p.IsTCP() || p.IsUDP()) {
				t.Fatal("flow for a packet without ports")
			}
			// The flow's view of direction dir must be the packet's.
			sa, da := p.Src.As16(), p.Dst.As16()
			fs, fd := f.Src(dir).As16(), f.Dst(dir).As16()
			if fs != sa || fd != da || f.SrcPort(dir) != p.SrcPort || f.DstPort(dir) != p.DstPort || f.Proto() != p.Proto {
				t.Fatalf("flow %v:%d>%v:%d in %v, packet %v:%d>%v:%d", f.Src(dir), f.SrcPort(dir), f.Dst(dir), f.DstPort(dir), dir, p.Src, p.SrcPort, p.Dst, p.DstPort)
			}
			d := &f.Dirs[dir]
			if created && (d.Pkts() != 1 || f.Dirs[dir^1].Pkts() != 0) {
				t.Fatalf("new flow has %d/%d packets", d.Pkts(), f.Dirs[dir^1].Pkts())
			}
			if p.IsTCP() {
				if p.Flags&capture.FlagRST == 0 {
					end := p.Seq + p.SeqSpace()
					if seqGT(end, d.NextSeq) || (p.Flags&capture.FlagSYN != 0 && d.NextSeq != end) {
						t.Fatalf("NextSeq %d behind segment end %d (flags %#x)", d.NextSeq, end, p.Flags)
					}
				}
				if p.Flags&capture.FlagACK != 0 && (!f.HasAck(dir) || seqGT(p.Ack, d.Ack)) {
					t.Fatalf("Ack %d behind packet's %d", d.Ack, p.Ack)
				}
				if d.Seq != p.Seq || d.Flags != p.Flags {
					t.Fatal("last seq/flags not recorded")
				}
			}
			if _, last := tb.Seen(f, dir); last != ts-ts%lastUnit {
				t.Fatalf("last %d, want packet time %d to the tick", last, ts)
			}
			if l, ok := tb.L2(f, dir); !ok || l.SrcMAC != p.SrcMAC || l.DstMAC != p.DstMAC || l.NumVLANs != p.NumVLANs || l.VLANs != p.VLANs {
				t.Fatalf("L2 %+v (%v), want the packet's", l, ok)
			}
			_ = tb.Info(f)
			if c[15]&7 == 0 {
				f.MarkResetByUs()
			}
			if len(handles) < 32 {
				handles = append(handles, tb.Handle(f))
			}
			tb.check(t)
		}
	})
}

// checkBucket verifies that every kind's rows (plus "other") add up to the
// IP packets counted since the last swap.
func checkBucket(t *testing.T, b *Bucket, ipPkts uint64) {
	t.Helper()
	for k := range b.maps {
		m := &b.maps[k]
		sum := uint64(m.other.pkts)
		for i := range m.rows {
			sum += uint64(m.rows[i].pkts)
		}
		if sum != ipPkts {
			t.Fatalf("kind %d: rows sum to %d packets, want %d", k, sum, ipPkts)
		}
		if len(m.rows) > cap(m.rows) {
			t.Fatal("bucket grew")
		}
	}
}

func checkSnapshot(t *testing.T, s Snapshot) {
	t.Helper()
	ok := func(v float64) bool { return v >= 0 && !math.IsNaN(v) && !math.IsInf(v, 0) }
	for w := range s.Totals.Bits {
		if !ok(s.Totals.Bits[w]) || !ok(s.Totals.Pkts[w]) {
			t.Fatalf("totals %+v", s.Totals)
		}
	}
	for k := range s.Talkers {
		for i, r := range s.Talkers[k] {
			for w := range r.Bits {
				if !ok(r.Bits[w]) || !ok(r.Pkts[w]) {
					t.Fatalf("talker %+v", r)
				}
			}
			if i > 0 && r.Bits[Win10s] > s.Talkers[k][i-1].Bits[Win10s] {
				t.Fatal("talkers not sorted")
			}
		}
	}
}
