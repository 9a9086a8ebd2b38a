package flow

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"canopy/capture"
)

const benchFlows = 1 << 20

// flowPacket fills p as a packet of synthetic flow i (i < 1<<24): client
// 10.x.y.z:(1024+i%50000) to one of 256 servers on port 443, in direction
// dir.
func flowPacket(p *capture.Packet, i uint32, dir Dir, ts int64) {
	c := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	s := netip.AddrFrom4([4]byte{192, 0, 2, byte(i * 7)})
	cp := uint16(1024 + i%50000)
	p.Timestamp = ts
	if dir == AtoB {
		p.Src, p.Dst, p.SrcPort, p.DstPort = c, s, cp, 443
	} else {
		p.Src, p.Dst, p.SrcPort, p.DstPort = s, c, 443, cp
	}
	p.Seq += 1448
	p.Ack += 1
}

func basePacket() capture.Packet {
	return capture.Packet{
		IPVersion: 4, Proto: capture.ProtoTCP, TTL: 64, Flags: capture.FlagACK | capture.FlagPSH,
		PayloadLen: 1448, IPLen: 1500, WireLen: 1514, Window: 500,
	}
}

var (
	bigOnce  sync.Once
	bigTable *Table
)

// big returns a table holding benchFlows established flows (one SYN,
// SYN-ACK, ACK each).
func big(b *testing.B) *Table {
	bigOnce.Do(func() {
		tb := NewTable(Config{MaxFlows: benchFlows})
		p := basePacket()
		ts := t0
		for i := uint32(0); i < benchFlows; i++ {
			p.Flags = capture.FlagSYN
			flowPacket(&p, i, AtoB, ts)
			tb.Update(&p)
			p.Flags = capture.FlagSYN | capture.FlagACK
			flowPacket(&p, i, BtoA, ts)
			tb.Update(&p)
			p.Flags = capture.FlagACK
			flowPacket(&p, i, AtoB, ts)
			tb.Update(&p)
		}
		tb.SwapBucket(nil)
		bigTable = tb
	})
	if bigTable.Len() != benchFlows {
		b.Fatalf("big table holds %d flows", bigTable.Len())
	}
	return bigTable
}

// BenchmarkUpdate measures Update with 1M live flows.
//   - random: every packet belongs to a uniformly random flow of the 1M, the
//     worst case: two dependent cache+TLB misses (hash head, then the flow)
//     per packet, so it measures this machine's DRAM latency more than code.
//   - train8: 8 packets in a row per random flow (a TCP burst), closer to
//     real traffic.
//   - hot16k: random flows among 16384 of the 1M (the active set of a busy
//     link fits in cache): what the code itself costs.
//   - zipf: flows drawn by popularity with a heavy tail (zipfFlows).
//
// Each also runs as NAME-batch32: the same packets PrefetchMax (32) at a
// time, Prefetch then UpdateAhead each, which is what the sensor does with the
// frames of a capture block. b.N counts packets either way.
func BenchmarkUpdate(b *testing.B) {
	tb := big(b)
	cases := []struct {
		name  string
		train int
		mask  uint32
		zipf  bool
	}{
		{"random", 1, 1<<20 - 1, false},
		{"train8", 8, 1<<20 - 1, false},
		{"hot16k", 1, 1<<14 - 1, false},
		{"zipf", 1, 1<<20 - 1, true},
	}
	for _, c := range cases {
		var zipf []uint32
		if c.zipf {
			zipf = zipfFlows()
		}
		b.Run(fmt.Sprintf("%s-batch%d", c.name, PrefetchMax), func(b *testing.B) {
			updateBatches(b, tb, c.train, c.mask, zipf)
		})
		b.Run(c.name, func(b *testing.B) {
			p := basePacket()
			rng := uint32(12345)
			ts := t0 + sec
			var i uint32
			spare := NewBucket(tb.Config().MaxTalkers)
			b.ReportAllocs()
			b.ResetTimer()
			defer reportCPU(b)()
			for n := 0; n < b.N; n++ {
				switch {
				case c.zipf:
					i = zipf[n&(len(zipf)-1)]
				case n%c.train == 0:
					rng = rng*1664525 + 1013904223
					i = (rng >> 12) & c.mask // top 20 bits: one of the 1M flows
				}
				ts += 100
				flowPacket(&p, i, Dir(n&1), ts)
				if f, _, created := tb.Update(&p); f == nil || created {
					b.Fatal("lost a flow")
				}
				if n&(1<<20-1) == 0 {
					// A second passes: keep the bucket realistic rather than
					// saturated with every key, as the sensor does.
					spare = tb.SwapBucket(spare)
					spare.Reset()
				}
			}
		})
	}
}

// updateBatches is BenchmarkUpdate's NAME-batch32 loop: packets of flows
// chosen as train, mask and zipf say (see BenchmarkUpdate), PrefetchMax
// at a time as the sensor handles a capture block (sensor.worker.Frames):
// Prefetch them, then UpdateAhead each.
func updateBatches(b *testing.B, tb *Table, train int, mask uint32, zipf []uint32) {
	var buf [PrefetchMax]capture.Packet
	for j := range buf {
		buf[j] = basePacket()
	}
	rng := uint32(12345)
	ts := t0 + sec
	var i uint32
	m := 0
	z := 0
	spare := NewBucket(tb.Config().MaxTalkers)
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	for n := 0; n < b.N; n += len(buf) {
		for j := range buf {
			switch {
			case zipf != nil:
				i = zipf[z&(len(zipf)-1)]
				z++
			case m%train == 0:
				rng = rng*1664525 + 1013904223
				i = (rng >> 12) & mask
			}
			ts += 100
			flowPacket(&buf[j], i, Dir(m&1), ts)
			m++
		}
		tb.Prefetch(buf[:])
		for j := range buf {
			if f, _, created := tb.UpdateAhead(j); f == nil || created {
				b.Fatal("lost a flow")
			}
		}
		if n&(1<<20-1) == 0 {
			spare = tb.SwapBucket(spare)
			spare.Reset() // as the Aggregator does before the sensor reuses it
		}
	}
}

// BenchmarkUpdateNoTalkers is BenchmarkUpdate/random-batch32 with talker
// accounting switched off (talkersOn): what the flow table itself costs a
// packet with uniformly random flows, so that the rest of
// BenchmarkUpdate/random-batch32 is what counting the talkers costs. It
// is a measurement aid: the sensor always counts talkers.
func BenchmarkUpdateNoTalkers(b *testing.B) {
	tb := big(b)
	talkersOn = false
	defer func() { talkersOn = true }()
	b.Run(fmt.Sprintf("random-batch%d", PrefetchMax), func(b *testing.B) {
		updateBatches(b, tb, 1, 1<<20-1, nil)
		// updateBatches installs a fresh bucket after its first batch.
		if got := tb.SwapBucket(nil); b.N > PrefetchMax && got.Pkts() == 0 || got.Keys(BySrc)+got.Keys(ByPort) != 0 {
			b.Fatalf("with talkersOn false the bucket counted %d packets into %d source and %d port keys; want packets but no keys", got.Pkts(), got.Keys(BySrc), got.Keys(ByPort))
		}
	})
}

// zipfFlows is a sequence of flows of the 1M drawn from a Zipf
// distribution (s = 1.1: the k-th most popular flow is drawn in
// proportion to 1/k^1.1, the heavy tail flow popularity on real links
// follows), with popularity rank mapped to a scattered flow number, so
// that popular flows do not sit in neighbouring slots.
var zipfFlows = sync.OnceValue(func() []uint32 {
	z := rand.NewZipf(rand.New(rand.NewPCG(5, 6)), 1.1, 1, benchFlows-1)
	seq := make([]uint32, 1<<22)
	for j := range seq {
		seq[j] = uint32(z.Uint64()*0x9e3779b1) & (benchFlows - 1) // odd multiplier: a bijection of the 1M
	}
	return seq
})

// BenchmarkUpdateNoTHP is BenchmarkUpdate/random on a table built without
// the transparent-huge-page hint, to show what the hint buys.
func BenchmarkUpdateNoTHP(b *testing.B) {
	hugePages = false
	tb := NewTable(Config{MaxFlows: benchFlows})
	hugePages = true
	p := basePacket()
	for i := uint32(0); i < benchFlows; i++ {
		flowPacket(&p, i, AtoB, t0)
		tb.Update(&p)
	}
	spare := NewBucket(0)
	rng := uint32(12345)
	ts := t0 + sec
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	for n := 0; n < b.N; n++ {
		rng = rng*1664525 + 1013904223
		ts += 100
		flowPacket(&p, rng>>12, Dir(n&1), ts)
		if f, _, created := tb.Update(&p); f == nil || created {
			b.Fatal("lost a flow")
		}
		if n&(1<<20-1) == 0 {
			spare = tb.SwapBucket(spare)
			spare.Reset()
		}
	}
}

// BenchmarkUpdateNewFlows measures Update when every packet creates a flow
// in a full 1M table, i.e. each one evicts (a SYN flood): one at a time,
// and as batch32 PrefetchMax at a time with Prefetch, as the sensor does.
func BenchmarkUpdateNewFlows(b *testing.B) {
	i := uint32(1 << 21)
	ts := t0 + 2*sec
	b.Run("one", func(b *testing.B) {
		tb := big(b)
		p := basePacket()
		p.Flags = capture.FlagSYN
		b.ReportAllocs()
		b.ResetTimer()
		defer reportCPU(b)()
		for n := 0; n < b.N; n++ {
			i++
			ts += 100
			flowPacket(&p, i&(1<<24-1)|1<<21, AtoB, ts)
			tb.Update(&p)
		}
	})
	b.Run(fmt.Sprintf("batch%d", PrefetchMax), func(b *testing.B) {
		tb := big(b)
		var buf [PrefetchMax]capture.Packet
		for j := range buf {
			buf[j] = basePacket()
			buf[j].Flags = capture.FlagSYN
		}
		b.ReportAllocs()
		b.ResetTimer()
		defer reportCPU(b)()
		for n := 0; n < b.N; n += len(buf) {
			for j := range buf {
				i++
				ts += 100
				flowPacket(&buf[j], i&(1<<24-1)|1<<21, AtoB, ts)
			}
			tb.Prefetch(buf[:])
			for j := range buf {
				tb.UpdateAhead(j)
			}
		}
	})
	bigOnce = sync.Once{} // the shared table is no longer the pristine 1M established flows
}

// BenchmarkMemoryPerFlow reports heap bytes per flow for a full table of
// 1M flows (everything NewTable reserves, divided by the flows in it) and
// the resident set growth. The heap freed by earlier runs is returned to
// the OS first: otherwise the new table reuses resident pages and the RSS
// growth reads zero.
func BenchmarkMemoryPerFlow(b *testing.B) {
	b.ReportAllocs()
	for n := 0; n < b.N; n++ {
		bigTable, bigOnce = nil, sync.Once{} // another benchmark's 1M table would stay resident
		debug.FreeOSMemory()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rss0 := rssBytes()
		tb := NewTable(Config{MaxFlows: benchFlows})
		p := basePacket()
		for i := uint32(0); i < benchFlows; i++ {
			flowPacket(&p, i, AtoB, t0)
			tb.Update(&p)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		rss1 := rssBytes()
		if tb.Len() != benchFlows {
			b.Fatalf("len %d", tb.Len())
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/benchFlows, "heap-B/flow")
		b.ReportMetric(float64(rss1-rss0)/benchFlows, "rss-B/flow")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
		runtime.KeepAlive(tb)
	}
}

// reportCPU reports process CPU time per op besides wall time: on a
// machine shared with other jobs the wall time includes time spent
// descheduled, the CPU time does not. Call as defer reportCPU(b)().
func reportCPU(b *testing.B) func() {
	start := cpuNanos()
	return func() {
		b.ReportMetric(float64(cpuNanos()-start)/float64(b.N), "cpu-ns/op")
	}
}

// rssBytes is this process's resident set size.
func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkForEachSingleIP finds the 100 sessions of one address among 1M.
func BenchmarkForEachSingleIP(b *testing.B) {
	tb := big(b)
	// Flow i's server is 192.0.2.(i*7 mod 256); pick a client address: one flow each.
	// Add 100 flows of one banned address.
	p := basePacket()
	banned := netip.MustParseAddr("203.0.113.7")
	tb.Expire(t0) // nothing to expire; keeps the clock sane
	for i := range 100 {
		// Both directions, so they are established: a half-open flow would
		// be the eviction's first choice when the next one is inserted.
		flowPacket(&p, uint32(i), AtoB, t0+3*sec)
		p.Src, p.SrcPort = banned, uint16(2000+i)
		tb.Update(&p)
		p.Src, p.Dst, p.SrcPort, p.DstPort = p.Dst, p.Src, p.DstPort, p.SrcPort
		tb.Update(&p)
	}
	pref := netip.PrefixFrom(banned, 32)
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	for n := 0; n < b.N; n++ {
		k := 0
		tb.ForEach(pref, func(*Flow) bool { k++; return true })
		if k != 100 {
			b.Fatalf("found %d", k)
		}
	}
	b.StopTimer()
	bigOnce = sync.Once{}
}

// BenchmarkForEachPrefix looks up a /24 (walked address by address: 256
// index lists) and a /8 (scanned: every slot) in the 1M table.
func BenchmarkForEachPrefix(b *testing.B) {
	tb := big(b)
	for _, c := range []struct {
		prefix string
		want   int
	}{
		{"10.0.7.0/24", 256},    // flows 0x0700..0x07ff: one client each
		{"10.0.0.0/8", 1 << 20}, // every client
	} {
		b.Run(c.prefix, func(b *testing.B) {
			p := netip.MustParsePrefix(c.prefix)
			b.ReportAllocs()
			b.ResetTimer()
			defer reportCPU(b)()
			for n := 0; n < b.N; n++ {
				k := 0
				tb.ForEach(p, func(*Flow) bool { k++; return true })
				if k != c.want {
					b.Fatalf("found %d, want %d", k, c.want)
				}
			}
		})
	}
}

// BenchmarkExpireBatch measures one full Expire batch (DefaultExpireBatch
// slots examined, none due) on a 1M table: the longest a worker is held by
// expiry.
func BenchmarkExpireBatch(b *testing.B) {
	tb := big(b)
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	for n := 0; n < b.N; n++ {
		tb.lastExpire = 1 // as if the previous call were long ago: a full ExpireBatch
		if tb.Expire(t0+sec) != 0 {
			b.Fatal("expired")
		}
	}
}

// BenchmarkSnapshot measures the snapshotter's work per second with 2
// workers whose buckets are full (4096 keys per kind each) and a full
// 60-second history: both SwapBuckets, both Adds, and one Snapshot(50).
// It does not depend on the number of flows.
func BenchmarkSnapshot(b *testing.B) {
	const workers = 2
	tbs := make([]*Table, workers)
	spare := make([]*Bucket, workers)
	for w := range tbs {
		tbs[w] = NewTable(Config{MaxFlows: 1 << 14})
		spare[w] = NewBucket(DefaultMaxTalkers)
	}
	agg := NewAggregator(0)
	p := basePacket()
	fill := func(s int64) {
		for w, tb := range tbs {
			for i := uint32(0); i < DefaultMaxTalkers; i++ {
				flowPacket(&p, i+uint32(w)<<12+uint32(s%60)<<8, AtoB, s*sec)
				tb.Update(&p)
			}
		}
	}
	sec0 := s0
	for s := range int64(60) {
		fill(sec0 + s)
		for w, tb := range tbs {
			old := tb.SwapBucket(spare[w])
			agg.Add(w, old, sec0+s)
			spare[w] = old
		}
	}
	s := sec0 + 60
	var cpu int64
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		fill(s)
		c0 := cpuNanos()
		b.StartTimer()
		for w, tb := range tbs {
			old := tb.SwapBucket(spare[w])
			agg.Add(w, old, s)
			spare[w] = old
		}
		snap := agg.Snapshot(50, 0)
		b.StopTimer()
		cpu += cpuNanos() - c0
		if len(snap.Talkers[BySrc]) != 50 {
			b.Fatalf("rows %d", len(snap.Talkers[BySrc]))
		}
		s++
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(len(agg.kinds[BySrc].index)), "tracked-keys/kind")
}

// BenchmarkSwapBucket is what the worker itself pays once a second.
func BenchmarkSwapBucket(b *testing.B) {
	tb := NewTable(Config{MaxFlows: 1 << 10})
	x, y := NewBucket(DefaultMaxTalkers), NewBucket(DefaultMaxTalkers)
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	for n := 0; n < b.N; n++ {
		x = tb.SwapBucket(x)
		x, y = y, x
	}
}

// BenchmarkUpdateSmall is Update on a 1024-flow table that fits in cache:
// the code's own cost, without DRAM latency.
func BenchmarkUpdateSmall(b *testing.B) {
	tb := NewTable(Config{MaxFlows: 4096})
	p := basePacket()
	for i := uint32(0); i < 1024; i++ {
		flowPacket(&p, i, AtoB, t0)
		tb.Update(&p)
	}
	spare := NewBucket(0)
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b)()
	rng := uint32(1)
	ts := t0
	for n := 0; n < b.N; n++ {
		rng = rng*1664525 + 1013904223
		ts += 100
		flowPacket(&p, rng>>22, Dir(n&1), ts)
		tb.Update(&p)
		if n&(1<<20-1) == 0 {
			spare = tb.SwapBucket(spare)
			spare.Reset()
		}
	}
}

// BenchmarkDRAMLine is this machine's floor for the random case: reading
// 64-byte lines at random places in an array the size of a 1M-flow table
// (on huge pages, like the table). loads: independent plain loads, as
// many in flight as the core allows. prefetch16: batches of 16 lines
// fetched with touch3 (PREFETCHT0) and then read, the pattern Prefetch
// and Update follow. An Update of a random flow reads three lines (its
// index line, then the flow's first two), so three times the prefetch16
// figure is what memory alone costs it, before any code runs.
//
// chase-SIZE: one line at a time, each load's address taken from the line
// before (a random cycle through SIZE of lines), so nothing overlaps: the
// latency of a line in a working set that size, which says which cache a
// set of flows fits on the machine the figures came from. 16,384 flows
// (hot16k) take 3 MiB with their index lines; a million take 192 MiB.
// The same commit's Update figures differ by a third between the machines
// this project has run on (an Intel Xeon, then an AMD EPYC), so compare
// figures side by side on one machine, and read these to see why.
func BenchmarkDRAMLine(b *testing.B) {
	for _, mib := range []int{1, 2, 4, 32, 192} {
		b.Run("chase-"+strconv.Itoa(mib)+"MiB", func(b *testing.B) { benchChase(b, mib<<20) })
	}
	lines := make([][8]uint64, benchFlows*3)
	adviseHuge(lines)
	for i := range lines {
		lines[i][0] = uint64(i)
	}
	idx := make([]uint32, 1<<20)
	rng := uint32(7)
	for i := range idx {
		rng = rng*1664525 + 1013904223
		idx[i] = uint32(uint64(rng) * uint64(len(lines)) >> 32)
	}
	var sum uint64
	b.Run("loads", func(b *testing.B) {
		b.ReportAllocs()
		for n := 0; n < b.N; n++ {
			sum += lines[idx[n&(len(idx)-1)]][0]
		}
	})
	b.Run("prefetch16", func(b *testing.B) {
		b.ReportAllocs()
		for n := 0; n < b.N; n += 16 {
			batch := idx[n&(len(idx)-1):][:16]
			for _, i := range batch {
				p := unsafe.Pointer(&lines[i])
				touch3(p, p, p)
			}
			for _, i := range batch {
				sum += lines[i][0]
			}
		}
	})
	if sum == 1 {
		b.Log(sum) // keeps the loads
	}
}

// benchChase times dependent loads around a random cycle through size
// bytes of 64-byte lines (on huge pages, like the table).
func benchChase(b *testing.B, size int) {
	lines := make([][8]uint64, size/64)
	adviseHuge(lines)
	order := rand.New(rand.NewPCG(1, uint64(size))).Perm(len(lines))
	for j, i := range order {
		lines[i][0] = uint64(order[(j+1)%len(order)])
	}
	at := uint64(order[0])
	for range lines { // the whole cycle once, so the set is resident
		at = lines[at][0]
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		at = lines[at][0]
	}
	if at == uint64(len(lines)) {
		b.Log(at) // keeps the loads
	}
}

// BenchmarkBucketAdd is talker accounting alone, with the maps in cache:
// each packet the first of a uniformly random flow of a million in its
// bucket, in alternate directions, as in BenchmarkUpdate/random, so every
// packet looks up its four keys. The client's address and the pair fill
// their maps and are turned away; the server's address and port 443 hit.
func BenchmarkBucketAdd(b *testing.B) {
	bk := NewBucket(DefaultMaxTalkers)
	var client, server addrPorts
	p := basePacket()
	flowPacket(&p, 1, AtoB, t0)
	client.fill(&p)
	server = client
	server.sh, server.sl = client.dh, client.dl
	var rows [NumKinds]uint16
	rng := uint32(12345)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		rng = rng*1664525 + 1013904223
		c := uint64(rng>>12) | 10<<24 // 10.x.y.z, as flowPacket makes them
		s := uint64(192<<24|2<<8) | uint64(byte(rng>>12*7))
		ap := &client
		if n&1 == 0 {
			ap.sl, ap.dl = client.sl&^0xffffffff|c, client.dl&^0xffffffff|s
		} else {
			ap = &server
			ap.sl, ap.dl = server.sl&^0xffffffff|s, server.dl&^0xffffffff|c
		}
		bk.add(&talkerPacket{ap: ap, size: 1500, port: 443, proto: capture.ProtoTCP, countDir: true, countFlow: true}, &rows)
		if n&(1<<20-1) == 0 {
			bk.Reset()
		}
	}
	if n := b.N & (1<<20 - 1); n > 4*DefaultMaxTalkers && (bk.Keys(BySrc) != DefaultMaxTalkers || bk.Keys(ByPort) != 1) {
		b.Fatalf("after %d packets: %d sources, %d ports; want a full map and one port", n, bk.Keys(BySrc), bk.Keys(ByPort))
	}
}
