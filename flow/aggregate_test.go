package flow

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"canopy/capture"
	"canopy/internal/ipword"
)

// feed plays one second of traffic into tb: n UDP packets of size bytes
// (IP length) from src to dst, at second s (unix), then swaps the bucket
// into agg.
func feedSecond(tb *Table, agg *Aggregator, worker int, s int64, flows []flowSpec) {
	for _, fs := range flows {
		for i := range fs.pkts {
			p := udp(fs.src, fs.sport, fs.dst, fs.dport, 0, s*sec+int64(i))
			p.IPLen = fs.size
			tb.Update(p)
		}
	}
	b := tb.SwapBucket(NewBucket(tb.Config().MaxTalkers))
	agg.Add(worker, b, s)
}

type flowSpec struct {
	src, dst     string
	sport, dport uint16
	pkts         int
	size         uint16
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func findTalker(rows []Talker, k TalkerKind, addr string, port uint16) *Talker {
	for i := range rows {
		r := &rows[i]
		switch k {
		case BySrc:
			if r.Src.String() == addr {
				return r
			}
		case ByDst:
			if r.Dst.String() == addr {
				return r
			}
		case ByPort:
			if r.Port == port {
				return r
			}
		}
	}
	return nil
}

const s0 = int64(1795824000)

func TestWindowRatesSteadyAndBurst(t *testing.T) {
	tb := NewTable(Config{MaxFlows: 64})
	agg := NewAggregator(0)
	// 1 Mbit/s: 125 packets of 1000 bytes every second, for 40 seconds.
	steady := []flowSpec{{src: "10.0.0.5", dst: "10.0.0.9", sport: 999, dport: 80, pkts: 125, size: 1000}}
	for i := range int64(40) {
		feedSecond(tb, agg, 0, s0+i, steady)
		// A window not yet full averages over the seconds seen: 1e6 from the start.
		snap := agg.Snapshot(10, tb.Len())
		for w := Window(0); w < NumWindows; w++ {
			if !near(snap.Totals.Bits[w], 1e6) || !near(snap.Totals.Pkts[w], 125) {
				t.Fatalf("second %d: totals %v bits %v pkts over %v, want 1e6 / 125", i, snap.Totals.Bits[w], snap.Totals.Pkts[w], w)
			}
		}
	}
	snap := agg.Snapshot(10, tb.Len())
	for k := TalkerKind(0); k < NumKinds; k++ {
		if len(snap.Talkers[k]) != 1 {
			t.Fatalf("kind %v: %d rows", k, len(snap.Talkers[k]))
		}
		r := snap.Talkers[k][0]
		for w := Window(0); w < NumWindows; w++ {
			if !near(r.Bits[w], 1e6) || !near(r.Pkts[w], 125) {
				t.Fatalf("kind %v window %v: %v bit/s %v pkt/s, want 1e6, 125", k, w, r.Bits[w], r.Pkts[w])
			}
		}
		if r.Flows != 1 {
			t.Fatalf("kind %v: flows %d, want 1", k, r.Flows)
		}
		for i, v := range r.Spark {
			want := float32(1e6)
			if i < SparkLen-40 {
				want = 0 // before the sensor started
			}
			if v != want {
				t.Fatalf("kind %v spark[%d] = %v, want %v", k, i, v, want)
			}
		}
	}
	if r := snap.Talkers[BySrc][0]; r.Src != netip.MustParseAddr("10.0.0.5") || r.Dst.IsValid() {
		t.Fatalf("src row %v %v", r.Src, r.Dst)
	}
	if r := snap.Talkers[ByPair][0]; r.Src != netip.MustParseAddr("10.0.0.5") || r.Dst != netip.MustParseAddr("10.0.0.9") {
		t.Fatalf("pair row %v %v", r.Src, r.Dst)
	}
	if r := snap.Talkers[ByPort][0]; r.Port != 80 || r.Proto != capture.ProtoUDP {
		t.Fatalf("port row %d/%d", r.Port, r.Proto)
	}
	if snap.Totals.ActiveFlows != 1 || !snap.At.Equal(time.Unix(s0+40, 0)) {
		t.Fatalf("active %d at %v", snap.Totals.ActiveFlows, snap.At)
	}

	// One second at 11 Mbit/s: shows fully in 2 s, diluted in 10 s, barely in 40 s.
	burst := []flowSpec{{src: "10.0.0.5", dst: "10.0.0.9", sport: 999, dport: 80, pkts: 1375, size: 1000}}
	feedSecond(tb, agg, 0, s0+40, burst)
	snap = agg.Snapshot(10, tb.Len())
	r := snap.Talkers[BySrc][0]
	want := [NumWindows]float64{(1e6 + 11e6) / 2, (9e6 + 11e6) / 10, (39e6 + 11e6) / 40}
	for w := Window(0); w < NumWindows; w++ {
		if !near(r.Bits[w], want[w]) || !near(snap.Totals.Bits[w], want[w]) {
			t.Fatalf("burst, window %v: talker %v totals %v, want %v", w, r.Bits[w], snap.Totals.Bits[w], want[w])
		}
	}
	if !(r.Bits[Win2s] > r.Bits[Win10s] && r.Bits[Win10s] > r.Bits[Win40s]) {
		t.Fatalf("burst not visible first in the short window: %v", r.Bits)
	}
	if r.Spark[SparkLen-1] != 11e6 || r.Spark[SparkLen-2] != 1e6 {
		t.Fatalf("spark tail %v", r.Spark[SparkLen-3:])
	}
	// Then silence: the burst leaves the 2 s window after 2 seconds.
	feedSecond(tb, agg, 0, s0+41, nil)
	feedSecond(tb, agg, 0, s0+42, nil)
	snap = agg.Snapshot(10, 0)
	r = snap.Talkers[BySrc][0]
	if r.Bits[Win2s] != 0 || !near(r.Bits[Win10s], (7e6+11e6)/10) || r.Flows != 0 {
		t.Fatalf("after silence: %v flows %d", r.Bits, r.Flows)
	}
}

func TestTopNRanking(t *testing.T) {
	tb := NewTable(Config{MaxFlows: 64})
	agg := NewAggregator(0)
	traffic := []flowSpec{
		{src: "10.0.0.1", dst: "192.0.2.1", sport: 1, dport: 443, pkts: 10, size: 1500},
		{src: "10.0.0.2", dst: "192.0.2.1", sport: 2, dport: 22, pkts: 30, size: 1500}, // heaviest source
		{src: "10.0.0.3", dst: "192.0.2.2", sport: 3, dport: 53, pkts: 20, size: 100},
		{src: "10.0.0.4", dst: "192.0.2.3", sport: 4, dport: 443, pkts: 15, size: 1500},
	}
	for i := range int64(10) {
		feedSecond(tb, agg, int(i%2), s0+i, traffic)
	}
	snap := agg.Snapshot(2, tb.Len())
	src := snap.Talkers[BySrc]
	if len(src) != 2 || src[0].Src.String() != "10.0.0.2" || src[1].Src.String() != "10.0.0.4" {
		t.Fatalf("top 2 sources: %v", src)
	}
	if !near(src[0].Bits[Win10s], 30*1500*8) {
		t.Fatalf("heaviest source rate %v", src[0].Bits[Win10s])
	}
	dst := snap.Talkers[ByDst]
	if dst[0].Dst.String() != "192.0.2.1" || !near(dst[0].Bits[Win10s], 40*1500*8) || dst[0].Flows != 2 {
		t.Fatalf("top destination %v %v flows %d", dst[0].Dst, dst[0].Bits, dst[0].Flows)
	}
	port := snap.Talkers[ByPort]
	if port[0].Port != 22 || port[0].Flows != 1 || port[1].Port != 443 || port[1].Flows != 2 || !near(port[1].Bits[Win2s], 25*1500*8) {
		t.Fatalf("ports %+v", port)
	}
	all := agg.Snapshot(100, 0)
	if len(all.Talkers[BySrc]) != 4 || len(all.Talkers[ByPair]) != 4 || len(all.Talkers[ByPort]) != 3 {
		t.Fatalf("rows %d %d %d", len(all.Talkers[BySrc]), len(all.Talkers[ByPair]), len(all.Talkers[ByPort]))
	}
	for k := range all.Talkers {
		rows := all.Talkers[k]
		for i := 1; i < len(rows); i++ {
			if rows[i].Bits[Win10s] > rows[i-1].Bits[Win10s] {
				t.Fatalf("kind %d not sorted: %v > %v", k, rows[i].Bits[Win10s], rows[i-1].Bits[Win10s])
			}
		}
	}
}

func TestDistinctFlowsCountedOncePerSecond(t *testing.T) {
	tb := NewTable(Config{MaxFlows: 64})
	// One TCP flow, 5 packets each way in one second; a second flow from
	// the same client to another port.
	for i := range int64(5) {
		tb.Update(pk(cli, 7, srv, 80, psh, 1, 1, 10, t0+i))
		tb.Update(pk(srv, 80, cli, 7, psh, 1, 1, 10, t0+i))
	}
	tb.Update(pk(cli, 8, srv, 443, syn, 1, 0, 0, t0+9))
	b := tb.SwapBucket(nil)
	row := func(k TalkerKind, a string, port uint16) *talkerRow {
		for i := range b.maps[k].rows {
			r := &b.maps[k].rows[i]
			if k := b.maps[k].key(i); (port != 0 && k.port == port) || (port == 0 && k.a.addr(k.v6).String() == a) {
				return r
			}
		}
		t.Fatalf("no row %v %s %d", k, a, port)
		return nil
	}
	if r := row(BySrc, cli, 0); r.flows != 2 || r.pkts != 6 {
		t.Fatalf("src cli: flows %d pkts %d, want 2 6", r.flows, r.pkts)
	}
	if r := row(BySrc, srv, 0); r.flows != 1 || r.pkts != 5 {
		t.Fatalf("src srv: flows %d pkts %d, want 1 5", r.flows, r.pkts)
	}
	if r := row(ByPort, "", 80); r.flows != 1 || r.pkts != 10 {
		t.Fatalf("port 80: flows %d pkts %d, want 1 10 (both directions count for the service port)", r.flows, r.pkts)
	}
	if b.NewFlows() != 2 {
		t.Fatalf("new flows %d", b.NewFlows())
	}
	// The next second counts the same flow again, once.
	tb.Update(pk(cli, 7, srv, 80, psh, 1, 1, 10, t0+sec))
	tb.Update(pk(cli, 7, srv, 80, psh, 1, 1, 10, t0+sec+1))
	b = tb.SwapBucket(b)
	if r := row(BySrc, cli, 0); r.flows != 1 || r.pkts != 2 {
		t.Fatalf("second 2: flows %d pkts %d", r.flows, r.pkts)
	}
	if b.NewFlows() != 0 {
		t.Fatalf("new flows %d", b.NewFlows())
	}
}

func TestBucketOverflowGoesToOther(t *testing.T) {
	tb := NewTable(Config{MaxFlows: 64, MaxTalkers: 2})
	agg := NewAggregator(0)
	var traffic []flowSpec
	for i := range 5 {
		traffic = append(traffic, flowSpec{src: netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}).String(), dst: srv, sport: 1, dport: uint16(100 + i), pkts: 1 + i, size: 100})
	}
	feedSecond(tb, agg, 0, s0, traffic)
	snap := agg.Snapshot(10, 0)
	src := snap.Talkers[BySrc]
	if len(src) != 3 {
		t.Fatalf("rows %d, want 2 keys + other", len(src))
	}
	var other *Talker
	sum := 0.0
	for i := range src {
		sum += src[i].Pkts[Win2s]
		if src[i].Other {
			other = &src[i]
		}
	}
	if other == nil || other.Src.IsValid() || other.Pkts[Win2s] != 3+4+5 || sum != 15 {
		t.Fatalf("other row %+v, sum %v", other, sum)
	}
}

func TestAggregatorTrackingLimitAndForgetting(t *testing.T) {
	agg := NewAggregator(2)
	b := NewBucket(16)
	for i := range 4 {
		a := &addrPorts{sl: uint64(i), dl: uint64(i)}
		b.add(&talkerPacket{ap: a, port: 1, proto: 6, size: 100, countDir: true, countFlow: true}, new([NumKinds]uint16))
	}
	agg.Add(0, b, s0)
	snap := agg.Snapshot(10, 0)
	if len(snap.Talkers[BySrc]) != 3 || !snap.Talkers[BySrc][2].Other && !snap.Talkers[BySrc][0].Other {
		t.Fatalf("rows %+v", snap.Talkers[BySrc])
	}
	if b.dirty() {
		t.Fatal("Add did not clear the bucket")
	}
	// 60 silent seconds later the tracked keys are forgotten and new ones fit.
	agg.Add(0, NewBucket(16), s0+SparkLen)
	if n := len(agg.kinds[BySrc].index); n != 0 {
		t.Fatalf("%d keys still tracked after %d silent seconds", n, SparkLen)
	}
	snap = agg.Snapshot(10, 0)
	if len(snap.Talkers[BySrc]) != 0 || snap.Totals.Bits[Win40s] != 0 {
		t.Fatalf("stale rows: %+v", snap.Talkers[BySrc])
	}
}

func TestAggregatorLateAndOutOfOrderBuckets(t *testing.T) {
	agg := NewAggregator(0)
	mk := func(pkts int) *Bucket {
		b := NewBucket(16)
		a := &addrPorts{sl: 1, dl: 1}
		for range pkts {
			b.add(&talkerPacket{ap: a, port: 1, proto: 6, size: 125, countDir: false, countFlow: false}, new([NumKinds]uint16))
			b.pkts++
			b.bytes += 125
		}
		return b
	}
	// Worker 0 delivers seconds 0..9; worker 1 delivers second 5 late, after 9.
	for i := range int64(10) {
		agg.Add(0, mk(1000), s0+i)
	}
	agg.Add(1, mk(1000), s0+5)
	snap := agg.Snapshot(1, 0)
	if !near(snap.Totals.Bits[Win10s], 11e6/10) || !near(snap.Talkers[BySrc][0].Bits[Win10s], 11e6/10) {
		t.Fatalf("10 s with a late bucket: %v", snap.Totals.Bits[Win10s])
	}
	if !near(snap.Totals.Bits[Win2s], 1e6) {
		t.Fatalf("2 s must not include the late second 5: %v", snap.Totals.Bits[Win2s])
	}
	// The late second leaves the 10 s window on time.
	agg.Add(0, mk(1000), s0+10)
	agg.Add(0, mk(1000), s0+11)
	agg.Add(0, mk(1000), s0+12)
	agg.Add(0, mk(1000), s0+13)
	agg.Add(0, mk(1000), s0+14)
	agg.Add(0, mk(1000), s0+15)
	snap = agg.Snapshot(1, 0)
	if !near(snap.Totals.Bits[Win10s], 1e6) {
		t.Fatalf("late second did not leave the window: %v", snap.Totals.Bits[Win10s])
	}
	// Too old for the history: dropped and counted.
	agg.Add(1, mk(1000), s0+15-SparkLen)
	if agg.Late() != 1 {
		t.Fatalf("late %d", agg.Late())
	}
	// A gap longer than the history clears everything.
	agg.Add(0, mk(0), s0+200)
	snap = agg.Snapshot(1, 0)
	if snap.Totals.Bits[Win40s] != 0 || snap.Totals.Pkts[Win40s] != 0 {
		t.Fatalf("after a long gap: %v", snap.Totals)
	}
}

func TestSnapshotEmptyAndEvictions(t *testing.T) {
	agg := NewAggregator(0)
	if s := agg.Snapshot(10, 7); !s.At.IsZero() || s.Totals.ActiveFlows != 7 {
		t.Fatalf("empty snapshot %+v", s.Totals)
	}
	tb := NewTable(Config{MaxFlows: 2})
	for i := range 5 {
		tb.Update(udp(cli, uint16(i), srv, 1, 1, t0))
	}
	agg.Add(0, tb.SwapBucket(nil), s0)
	s := agg.Snapshot(10, tb.Len())
	if s.Totals.Evictions != 3 || !near(s.Totals.NewFlows, 5) {
		t.Fatalf("evictions %d new flows/s %v", s.Totals.Evictions, s.Totals.NewFlows)
	}
}

func TestAggregatorRecoversFromClockSteps(t *testing.T) {
	agg := NewAggregator(0)
	mk := func() *Bucket {
		b := NewBucket(16)
		a := &addrPorts{sl: 1, dl: 1}
		for range 1000 {
			b.add(&talkerPacket{ap: a, port: 1, proto: 6, size: 125, countDir: false, countFlow: false}, new([NumKinds]uint16))
			b.pkts++
			b.bytes += 125
		}
		return b
	}
	for i := range int64(10) {
		agg.Add(0, mk(), s0+i)
	}
	// A garbage timestamp drags the head 3 years ahead...
	agg.Add(1, mk(), s0+100_000_000)
	// ...and the next normal seconds must not be dropped as "late" until then.
	for i := range int64(3) {
		agg.Add(0, mk(), s0+10+i)
	}
	snap := agg.Snapshot(5, 0)
	if agg.Restarts() != 1 || agg.Late() != 0 {
		t.Fatalf("restarts %d late %d", agg.Restarts(), agg.Late())
	}
	if !near(snap.Totals.Bits[Win2s], 1e6) || !near(snap.Totals.Bits[Win40s], 1e6) || len(snap.Talkers[BySrc]) != 1 {
		t.Fatalf("after the step: %v, %d rows", snap.Totals.Bits, len(snap.Talkers[BySrc]))
	}
	if got := snap.At; !got.Equal(time.Unix(s0+13, 0)) {
		t.Fatalf("At %v", got)
	}
	// A worker lagging by less than the step limit is just late.
	agg.Add(1, mk(), s0+12-SparkLen-5)
	if agg.Restarts() != 1 || agg.Late() != 1 {
		t.Fatalf("lagging worker: restarts %d late %d", agg.Restarts(), agg.Late())
	}
}

func TestDistinctFlowsSurviveAGarbageTimestamp(t *testing.T) {
	tb := NewTable(Config{MaxFlows: 64})
	tb.Update(udp(cli, 1, srv, 2, 10, t0))
	tb.Update(udp("192.0.2.77", 1, srv, 2, 10, t0+100*365*24*3600*sec)) // a corrupt pcap record
	b := tb.SwapBucket(nil)
	for i := range int64(5) {
		tb.Update(udp(cli, 1, srv, 2, 10, t0+sec+i))
	}
	b = tb.SwapBucket(b)
	for i := range b.maps[BySrc].rows {
		if r := b.maps[BySrc].rows[i]; r.flows != 1 || r.pkts != 5 {
			t.Fatalf("one flow, 5 packets: counted %d flows", r.flows)
		}
	}
}

func TestSnapshotHugeN(t *testing.T) {
	agg := NewAggregator(4)
	b := NewBucket(16)
	a := &addrPorts{sl: 1, dl: 1}
	b.add(&talkerPacket{ap: a, port: 1, proto: 6, size: 100, countDir: true, countFlow: true}, new([NumKinds]uint16))
	agg.Add(0, b, s0)
	if s := agg.Snapshot(1<<40, 0); len(s.Talkers[BySrc]) != 1 {
		t.Fatalf("rows %d", len(s.Talkers[BySrc]))
	}
	if (&Table{}).Info(nil) != (Info{}) {
		t.Fatal("Info(nil)")
	}
}

func TestTiesRankByKeyStably(t *testing.T) {
	agg := NewAggregator(0)
	b := NewBucket(64)
	for _, last := range []byte{9, 3, 7, 1, 5} {
		a := &addrPorts{sl: uint64(last), dl: uint64(last)}
		for range 10 {
			b.add(&talkerPacket{ap: a, port: uint16(last), proto: 6, size: 100, countDir: false, countFlow: false}, new([NumKinds]uint16))
		}
	}
	agg.Add(0, b, s0)
	s := agg.Snapshot(10, 0)
	var got []string
	for _, r := range s.Talkers[BySrc] {
		got = append(got, r.Src.String())
	}
	want := []string{"0.0.0.1", "0.0.0.3", "0.0.0.5", "0.0.0.7", "0.0.0.9"}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("equal rates not ordered by address: %v", got)
		}
	}
	if p := s.Talkers[ByPort]; p[0].Port != 1 || p[4].Port != 9 {
		t.Fatalf("ports %v %v", p[0].Port, p[4].Port)
	}
	if h, ok := agg.Head(); !ok || h != s0 {
		t.Fatalf("Head %d %v", h, ok)
	}
	if Win10s.String() != "10s" || Window(9).String() != "?" || Window(9).Seconds() != 0 ||
		ByPair.String() != "pair" || TalkerKind(9).String() != "?" || AtoB.Reverse() != BtoA || BtoA.String() != "b>a" {
		t.Fatal("names")
	}
}

// TestFlowRowsCountLikeFullLookups plays the same traffic through a table
// with flow rows (Bucket.addFlow) and one without, and requires every
// talker row (packets, bytes, distinct flows) to agree, bucket by bucket.
// The traffic reuses slots the ways that could make an entry stale: a
// 5-tuple restarted by RST then SYN (same slot, new generation), flows
// that expire and give their slot to another, buckets swapped and reset,
// and more keys than MaxTalkers (rows go to "other"). With 256 entries
// for about 600 flows, and then 16, flows also take each other's entries.
func TestFlowRowsCountLikeFullLookups(t *testing.T) {
	for _, entries := range []int{0, 16} {
		t.Run(fmt.Sprint(entries), func(t *testing.T) { testFlowRowsCountLikeFullLookups(t, entries) })
	}
}

// testFlowRowsCountLikeFullLookups is TestFlowRowsCountLikeFullLookups
// with buckets of that many entries (0: as NewBucket makes them).
func testFlowRowsCountLikeFullLookups(t *testing.T, entries int) {
	defer func() { flowRowsOn = true }()
	sized := func(b *Bucket) *Bucket {
		if entries != 0 {
			b.frows = newFlowRows(entries)
		}
		return b
	}
	run := func(cached bool) []map[string][3]uint64 {
		flowRowsOn = cached
		tb := NewTable(Config{MaxFlows: 4096, MaxTalkers: 64, IdleEstablished: 2 * time.Second, IdleUDP: time.Second})
		sized(tb.bucket)
		tb.seed, tb.rng = 1, 2 // both runs place and expire flows alike
		rng := rand.New(rand.NewPCG(3, 4))
		var out []map[string][3]uint64
		spare := sized(NewBucket(64))
		ts := t0
		for n := range 40000 {
			ts += int64(time.Millisecond) / 4
			c := rng.IntN(300)
			cli := fmt.Sprintf("10.0.%d.%d", c/200, c%200)
			srv := fmt.Sprintf("192.0.2.%d", c%7)
			var p *capture.Packet
			switch r := rng.IntN(20); {
			case r == 0:
				p = pk(cli, uint16(1000+c), srv, 80, rst, 1, 0, 0, ts)
			case r == 1:
				p = pk(cli, uint16(1000+c), srv, 80, syn, uint32(n), 0, 0, ts)
			case r < 11:
				p = pk(cli, uint16(1000+c), srv, 80, psh, 1, 1, uint16(rng.IntN(1400)), ts)
			default:
				p = pk(srv, 80, cli, uint16(1000+c), psh, 1, 1, uint16(rng.IntN(1400)), ts)
			}
			if rng.IntN(10) == 0 {
				p.Proto = capture.ProtoUDP
			}
			tb.Update(p)
			if n%997 == 0 {
				tb.Expire(ts)
			}
			if n%3001 == 3000 {
				b := tb.SwapBucket(spare)
				out = append(out, talkerRows(b))
				b.Reset()
				spare = b
			}
		}
		return append(out, talkerRows(tb.SwapBucket(nil)))
	}
	with, without := run(true), run(false)
	if len(with) != len(without) {
		t.Fatalf("%d buckets with flow rows, %d without", len(with), len(without))
	}
	for i := range with {
		if len(with[i]) < 10 {
			t.Fatalf("bucket %d has only %d rows: the traffic does not exercise the maps", i, len(with[i]))
		}
		for k, v := range without[i] {
			if with[i][k] != v {
				t.Errorf("bucket %d row %s: with flow rows %v, without %v", i, k, with[i][k], v)
			}
		}
		for k := range with[i] {
			if _, ok := without[i][k]; !ok {
				t.Errorf("bucket %d row %s only with flow rows", i, k)
			}
		}
	}
}

// talkerRows is every row of b, "other" included, as kind/key → (pkts,
// bytes, flows).
func talkerRows(b *Bucket) map[string][3]uint64 {
	out := map[string][3]uint64{}
	for k := range b.maps {
		m := &b.maps[k]
		for i, r := range m.rows {
			key := m.key(i)
			out[fmt.Sprintf("%d/%v>%v:%d/%d", k, key.a.addr(key.v6), key.b.addr(key.v6), key.port, key.proto)] = [3]uint64{uint64(r.pkts), r.bytes, uint64(r.flows)}
		}
		out[fmt.Sprintf("%d/other", k)] = [3]uint64{uint64(m.other.pkts), m.other.bytes, uint64(m.other.flows)}
	}
	return out
}

// TestTalkerMapAgainstReference counts random keys into a talkerMap and
// into a Go map: the first cap distinct keys get rows with exactly their
// packets and bytes, the rest land in other (once the map is full, past
// its Bloom filter, which must never turn a key that has a row away). It
// runs with real hashes and with hashes that put the keys on 8 home slots
// with 8 tags (long probes across groups, tags that match other keys),
// which the rest of each key's hash tells apart; Reset must leave the
// index and the filter empty.
func TestTalkerMapAgainstReference(t *testing.T) {
	for _, fewHashes := range []bool{false, true} {
		const capacity = 100
		m := newTalkerMap(BySrc, capacity)
		type counts struct{ pkts, bytes uint64 }
		ref := map[talkerKey]*counts{}
		var other counts
		rng := rand.New(rand.NewPCG(1, 2))
		for range 20000 {
			var k talkerKey
			k.a.set(0, uint64(rng.IntN(300)))
			_, lo := k.a.words()
			h := hashWords(7, 0, lo, 0)
			if fewHashes {
				// One of 8 home slots (low bits) and 8 tags (top bits),
				// the rest of the hash the key's own.
				g := lo % 8
				h = g*0x0101 | lo<<32 | g<<56
			}
			size := uint64(rng.IntN(1500))
			row := m.add(h, &talkerPacket{ap: &addrPorts{sl: lo}, size: size}, false)
			c, known := ref[k]
			switch {
			case known || len(ref) < capacity:
				if !known {
					c = &counts{}
					ref[k] = c
				}
				c.pkts++
				c.bytes += size
				if row < 0 || m.key(int(row)) != k {
					t.Fatalf("few hashes %v: key %v counted in row %d", fewHashes, k.a, row)
				}
			default:
				other.pkts++
				other.bytes += size
				if row != -1 {
					t.Fatalf("few hashes %v: key %v got row %d in a full map", fewHashes, k.a, row)
				}
			}
		}
		if len(m.rows) != capacity {
			t.Fatalf("few hashes %v: %d rows", fewHashes, len(m.rows))
		}
		for i, r := range m.rows {
			if c := ref[m.key(i)]; c == nil || c.pkts != uint64(r.pkts) || c.bytes != r.bytes {
				t.Fatalf("few hashes %v: row %v: %d pkts %d bytes, want %+v", fewHashes, m.key(i).a, r.pkts, r.bytes, c)
			}
		}
		if uint64(m.other.pkts) != other.pkts || m.other.bytes != other.bytes {
			t.Fatalf("few hashes %v: other %d/%d, want %+v", fewHashes, m.other.pkts, m.other.bytes, other)
		}
		m.reset()
		for s, e := range m.index {
			if e != 0 {
				t.Fatalf("slot %d not cleared by reset", s)
			}
		}
		for w, v := range m.seen {
			if v != 0 {
				t.Fatalf("Bloom word %d not cleared by reset", w)
			}
		}
	}
}

// TestFlowRowHoldsMoreThan4GBInASecond sends one direction of a flow
// 2^32 bytes and more within one bucket, past what a flowRow's 32-bit
// byte count holds: the entry counts its packets into the rows early, and
// the rows show every byte.
func TestFlowRowHoldsMoreThan4GBInASecond(t *testing.T) {
	tb := NewTable(Config{})
	const n = 70000 // 70000 × 65535 bytes > 2^32
	for i := range n {
		p := pk("10.0.0.1", 1000, "10.0.0.2", 80, psh, uint32(i), 1, 0, t0+int64(i))
		p.IPLen = 65535
		tb.Update(p)
	}
	b := tb.SwapBucket(nil)
	want := [3]uint64{n, n * 65535, 1}
	if got := talkerRows(b)["0/10.0.0.1>0.0.0.0:0/0"]; got != want {
		t.Fatalf("source row %v, want %v (packets, bytes, flows)", got, want)
	}
}

// TestFlowRowIndexesFitTalk: however large MaxTalkers, a bucket never
// hands out an entry index that Flow.talk (16 bits) cannot hold, and row
// numbers stay below flowRow's markers.
func TestFlowRowIndexesFitTalk(t *testing.T) {
	for _, n := range []int{1, DefaultMaxTalkers, maxMaxTalkers, 1 << 20} {
		b := NewBucket(n)
		if c := cap(b.frows); c > 1<<16 || c < spareRows+1 {
			t.Errorf("MaxTalkers %d: %d entries", n, c)
		}
		if c := cap(b.maps[BySrc].rows); c > rowUnknown {
			t.Errorf("MaxTalkers %d: %d rows, past the row markers", n, c)
		}
	}
}

// TestTalkerHashesSpreadAScan counts a scan into talker maps under
// thousands of bucket seeds: 4,096 consecutive destination ports, and
// 4,096 consecutive source addresses (sources and destinations hash
// alike). A map's index is twice its rows, so with a hash that spreads
// them a key sits on average under one slot from where its probe starts;
// no seed may pile them up. With the port hash one multiply deep, 437 of
// 20,000 seeds averaged over 2 slots, the worst over 1,500.
func TestTalkerHashesSpreadAScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const n = 4096
	hashes := make([]uint64, n)
	for _, kind := range []TalkerKind{ByPort, BySrc} {
		worst := 0.0
		for range 2000 {
			seed := rng.Uint64()
			for i := range hashes {
				if kind == ByPort {
					hashes[i] = portHash(seed, uint16(1+i), 6)
				} else {
					hi, lo := ipword.Of(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
					hashes[i] = hashWords(seed, hi, lo, 0)
				}
			}
			m := newTalkerMap(kind, n)
			for _, h := range hashes {
				m.add(h, &talkerPacket{ap: &addrPorts{}, size: 60}, false)
			}
			if len(m.rows) != n {
				t.Fatalf("%v: %d rows for %d keys", kind, len(m.rows), n)
			}
			dist := 0
			for i := range m.rows {
				home := m.rows[i].h & m.mask
				for s := home; m.index[s]&indexRowMask != uint32(i+1); s = (s + 1) & m.mask {
					dist++
				}
			}
			worst = max(worst, float64(dist)/n)
		}
		if worst > 2 {
			t.Errorf("%v: with the worst of 2,000 seeds a key sits %.1f slots from its probe's start on average", kind, worst)
		}
	}
}

// TestSourceNetworksSumTheirSources: the BySrcNet rows are the tracked
// sources summed by /24 and /64, ranked like any kind, with their flows
// and sparklines; sources beyond the tracking limit stay in "other".
func TestSourceNetworksSumTheirSources(t *testing.T) {
	tb := NewTable(Config{MaxFlows: 1024})
	agg := NewAggregator(0)
	var traffic []flowSpec
	for i := range 100 { // a flood from one /24: each source small
		traffic = append(traffic, flowSpec{src: fmt.Sprintf("203.0.113.%d", i+1), dst: "192.0.2.1", sport: 1000, dport: 80, pkts: 2, size: 100})
	}
	traffic = append(traffic,
		flowSpec{src: "198.51.100.7", dst: "192.0.2.1", sport: 1, dport: 443, pkts: 10, size: 1500}, // the heaviest single source
		flowSpec{src: "2001:db8:1:2::1", dst: "2001:db8::80", sport: 1, dport: 443, pkts: 3, size: 1000},
		flowSpec{src: "2001:db8:1:2::ffff", dst: "2001:db8::80", sport: 2, dport: 443, pkts: 3, size: 1000},
		flowSpec{src: "2001:db8:1:3::1", dst: "2001:db8::80", sport: 1, dport: 443, pkts: 1, size: 1000},
	)
	for i := range int64(5) {
		feedSecond(tb, agg, 0, s0+i, traffic)
	}
	snap := agg.Snapshot(10, tb.Len())
	if src := snap.Talkers[BySrc]; src[0].Src.String() != "198.51.100.7" {
		t.Fatalf("top source %v", src[0].Src)
	}
	nets := snap.Talkers[BySrcNet]
	want := []struct {
		net        string
		bits, pkts float64 // per second
		flows      int
	}{
		{"203.0.113.0/24", 100 * 2 * 100 * 8, 200, 100},
		{"198.51.100.0/24", 10 * 1500 * 8, 10, 1},
		{"2001:db8:1:2::/64", 6 * 1000 * 8, 6, 2},
		{"2001:db8:1:3::/64", 1000 * 8, 1, 1},
	}
	if len(nets) != len(want) {
		t.Fatalf("%d networks, want %d: %+v", len(nets), len(want), nets)
	}
	for i, w := range want {
		r := nets[i]
		if r.Net.String() != w.net || r.Src.IsValid() || r.Other || !near(r.Bits[Win10s], w.bits) || !near(r.Pkts[Win2s], w.pkts) || r.Flows != w.flows {
			t.Errorf("network %d: %v bits %v pkts %v flows %d, want %s %v %v %d", i, r.Net, r.Bits[Win10s], r.Pkts[Win2s], r.Flows, w.net, w.bits, w.pkts, w.flows)
		}
		if got := r.Spark[SparkLen-1]; !near(float64(got), w.bits) {
			t.Errorf("%s: last second's sparkline %v, want %v", w.net, got, w.bits)
		}
	}
	// Sources past the tracking limit are in BySrc's "other", and so in
	// BySrcNet's: their networks are not known.
	few := NewAggregator(10)
	tb2 := NewTable(Config{MaxFlows: 1024})
	feedSecond(tb2, few, 0, s0, traffic)
	snap = few.Snapshot(20, tb2.Len())
	srcOther, netOther := findOther(snap.Talkers[BySrc]), findOther(snap.Talkers[BySrcNet])
	if srcOther == nil || netOther == nil || srcOther.Bits != netOther.Bits || srcOther.Pkts != netOther.Pkts {
		t.Fatalf("other rows: sources %+v, networks %+v", srcOther, netOther)
	}
	var srcBits, netBits float64
	for _, r := range snap.Talkers[BySrc] {
		srcBits += r.Bits[Win10s]
	}
	for _, r := range snap.Talkers[BySrcNet] {
		netBits += r.Bits[Win10s]
	}
	if !near(netBits, srcBits) {
		t.Errorf("networks sum to %v bits/s, sources to %v", netBits, srcBits)
	}
}

func findOther(rows []Talker) *Talker {
	for i := range rows {
		if rows[i].Other {
			return &rows[i]
		}
	}
	return nil
}
