package flow_test

import (
	"fmt"
	"net/netip"

	"canopy/capture"
	"canopy/flow"
)

// Example shows the wiring: a worker updates its own table per packet and
// swaps its bucket once a second; the snapshotter merges buckets and
// builds snapshots; a ban looks up the banned address's live flows.
func Example() {
	tb := flow.NewTable(flow.Config{MaxFlows: 1 << 20 / 2}) // one of 2 workers sharing ~1M flows
	agg := flow.NewAggregator(0)
	spare := flow.NewBucket(tb.Config().MaxTalkers)

	const sec = int64(1e9)
	start := int64(1795824000)
	cli, srv := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("192.0.2.1")
	pkt := func(ts int64, src, dst netip.Addr, sp, dp uint16, flags uint8, seq, ack uint32, n uint16) *capture.Packet {
		return &capture.Packet{Timestamp: ts, IPVersion: 4, Src: src, Dst: dst, Proto: capture.ProtoTCP,
			SrcPort: sp, DstPort: dp, Flags: flags, Seq: seq, Ack: ack, PayloadLen: n, IPLen: 40 + n}
	}

	// Worker goroutine, second 0: a handshake and 1000 bytes each way.
	ts := start * sec
	tb.Update(pkt(ts, cli, srv, 40000, 443, capture.FlagSYN, 100, 0, 0))
	tb.Update(pkt(ts, srv, cli, 443, 40000, capture.FlagSYN|capture.FlagACK, 900, 101, 0))
	tb.Update(pkt(ts, cli, srv, 40000, 443, capture.FlagACK, 101, 901, 1000))
	f, dir, _ := tb.Update(pkt(ts, srv, cli, 443, 40000, capture.FlagACK, 901, 1101, 1000))
	fmt.Println(f.A(), "->", f.B(), f.StateName(), "last packet", dir)
	fmt.Println("RST to A would carry seq", f.Dirs[flow.BtoA].NextSeq, "and to B seq", f.Dirs[flow.AtoB].NextSeq)

	// Once a second, on the worker: swap; on the snapshotter: merge.
	old := tb.SwapBucket(spare)
	agg.Add(0, old, start) // clears old, which goes back to the worker as the next spare
	spare = old
	tb.Expire(ts + sec)

	snap := agg.Snapshot(10, tb.Len())
	top := snap.Talkers[flow.BySrc][0]
	fmt.Printf("top source %v %.0f bit/s over %v, %d flow(s) active\n", top.Src, top.Bits[flow.Win10s], flow.Win10s, snap.Totals.ActiveFlows)

	// A new ban on the client: its live sessions, found through the address index.
	tb.ForEach(netip.PrefixFrom(cli, 32), func(f *flow.Flow) bool {
		fmt.Println("kill", f.A(), f.APort(), "->", f.B(), f.BPort())
		return true
	})
	// Output:
	// 198.51.100.7 -> 192.0.2.1 established last packet b>a
	// RST to A would carry seq 1901 and to B seq 1101
	// top source 192.0.2.1 8640 bit/s over 10s, 1 flow(s) active
	// kill 198.51.100.7 40000 -> 192.0.2.1 443
}
