package sensor

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"canopy/capture"
	"canopy/inject"
	"canopy/rules"
)

// discard is a Sender that drops frames: the benchmark measures the engine,
// not the kernel.
type discard struct{ n int }

func (d *discard) Send([]byte) error { d.n++; return nil }

// benchWorker builds one worker of an engine with a rule store holding bans
// extra bans, and frames of flows distinct sessions (data both ways), which
// it has created in the worker's table.
func benchWorker(b *testing.B, flows, bans int, banClients bool) (*worker, [][]byte) {
	b.Helper()
	store, err := rules.Open(rules.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	for i := 0; i < bans; i++ {
		v := netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)})
		if _, _, err := store.Add(rules.Request{Kind: rules.KindBan, Value: v.String(), Origin: rules.OriginFeed}); err != nil {
			b.Fatal(err)
		}
	}
	if banClients {
		if _, _, err := store.Add(rules.Request{Kind: rules.KindBan, Value: "198.51.0.0/16", Origin: rules.OriginAPI}); err != nil {
			b.Fatal(err)
		}
	}
	e, err := New(Config{Injection: Injection{Sender: &discard{}, NextHop: fixedMAC{}, Ceiling: inject.NewCeiling(1 << 30)},
		MaxResetsPerFlow: 1 << 15, Logger: slog.New(slog.DiscardHandler)}, &scriptSource{}, store)
	if err != nil {
		b.Fatal(err)
	}
	server := netip.MustParseAddrPort("192.0.2.10:443")
	var frames [][]byte
	for i := 0; i < flows; i++ {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), uint16(1024+i%60000))
		frames = append(frames,
			tcpFrame(b, c, server, 1000, 5000, "AP", "GET / HTTP/1.1\r\n", 64),
			tcpFrame(b, server, c, 5000, 1016, "AP", "HTTP/1.1 200 OK\r\n", 64))
	}
	// Create the flows in this order, then hand the sessions back in a
	// scattered one, as sessions interleave on a link: in creation order
	// their slots are neighbours, and the CPU's own prefetcher would hide
	// what a large table costs.
	w := e.workers[0]
	m := capture.Meta{Timestamp: time.Now().UnixNano()}
	for _, f := range frames {
		w.Frame(f, &m)
	}
	// The frames themselves lie one after another, as in a ring block:
	// ring has room for all of them, so appending never moves it.
	size := 0
	for _, f := range frames {
		size += len(f)
	}
	ring := make([]byte, 0, size)
	scattered := make([][]byte, 0, len(frames))
	for n := range flows {
		i := int(uint64(n) * 0x9e3779b1 % uint64(flows)) // a bijection: the multiplier is prime
		for _, f := range frames[2*i : 2*i+2] {
			ring = append(ring, f...)
			scattered = append(scattered, ring[len(ring)-len(f):len(ring):len(ring)])
		}
	}
	return w, scattered
}

// BenchmarkWorkerFrame is the engine's per-packet cost on the common path:
// decode, lane dedup, flow update, cached verdict (no rule matches).
func BenchmarkWorkerFrame(b *testing.B) {
	for _, flows := range []int{1000, 10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("flows=%d", flows), func(b *testing.B) {
			w, frames := benchWorker(b, flows, 0, false)
			m := capture.Meta{}
			now := time.Now().UnixNano()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				f := frames[i%len(frames)]
				m.Timestamp = now + int64(i)
				m.WireLen = uint32(len(f))
				w.Frame(f, &m)
			}
		})
	}
}

// BenchmarkWorkerFrames is BenchmarkWorkerFrame through Frames, MaxBatch frames
// at a time as a live ring block hands them over (the table prefetches
// each batch's flows). ns/op is per frame.
func BenchmarkWorkerFrames(b *testing.B) {
	for _, flows := range []int{1000, 10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("flows=%d", flows), func(b *testing.B) {
			w, frames := benchWorker(b, flows, 0, false)
			now := time.Now().UnixNano()
			var ms [capture.MaxBatch]capture.Meta
			frames = frames[:len(frames)/capture.MaxBatch*capture.MaxBatch]
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for n := 0; n < b.N; n += capture.MaxBatch {
				batch := frames[i : i+capture.MaxBatch]
				for j := range batch {
					ms[j] = capture.Meta{Timestamp: now + int64(n+j), WireLen: uint32(len(batch[j]))}
				}
				w.Frames(batch, ms[:])
				if i += capture.MaxBatch; i == len(frames) {
					i = 0
				}
			}
		})
	}
}

// BenchmarkWorkerFrameBlocked is the cost of a packet of a blocked flow:
// everything above plus planning, crafting and handing two or three resets
// to the sender.
func BenchmarkWorkerFrameBlocked(b *testing.B) {
	w, frames := benchWorker(b, 1000, 0, true)
	m := capture.Meta{}
	now := time.Now().UnixNano()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f := frames[i%len(frames)]
		m.Timestamp = now + int64(i)
		w.Frame(f, &m)
	}
}

// BenchmarkProactiveKill bans a prefix holding every session of a worker's
// table and runs the kill to its end, as the worker's Idle calls would
// between blocks of frames (the ceiling never waits here). ns/op is the
// whole kill; ns/session its cost per session reset; p99-hold-µs and
// max-hold-µs the steps' durations, that is how long the kill kept the
// worker from its frames at once (killStep, plus the last session's sends,
// plus whatever the garbage collector or a page fault added).
func BenchmarkProactiveKill(b *testing.B) {
	for _, flows := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("sessions=%d", flows), func(b *testing.B) {
			w, _ := benchWorker(b, flows, 0, true) // bans 198.51.0.0/16, the clients
			p := netip.MustParsePrefix("198.51.0.0/16")
			holds := make([]time.Duration, 0, 1<<16)
			killed := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				// A second later each time: the last round's resets are
				// older than this ban, so every session is killed again.
				w.now += int64(time.Second)
				w.nextHouse = w.now + int64(time.Hour)
				before := w.attempted.Load()
				for first := true; first || len(w.kills) > 0; first = false {
					t0 := time.Now()
					if first {
						w.killPrefix(p)
					} else {
						w.Idle(w.now)
					}
					holds = append(holds, time.Since(t0))
				}
				killed += w.attempted.Load() - before
				w.pending = w.pending[:0]
			}
			if killed < uint64(b.N*flows) {
				b.Fatalf("%d sessions killed in %d rounds of %d", killed, b.N, flows)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(killed), "ns/session")
			slices.Sort(holds)
			b.ReportMetric(float64(holds[len(holds)*99/100].Microseconds()), "p99-hold-µs")
			b.ReportMetric(float64(holds[len(holds)-1].Microseconds()), "max-hold-µs")
			b.ReportMetric(float64(len(holds))/float64(b.N), "steps/op")
		})
	}
}
