package ui

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// fakeBackend stands in for the in-process sensor and the API client, which
// are built elsewhere: it serves synthetic snapshots and records every
// action the dashboard asks for.
type fakeBackend struct {
	mu      sync.Mutex
	snap    sensor.Snapshot
	banErr  error
	bans    []rules.Request
	unbans  []uint64
	modes   []sensor.Mode
	nextID  uint64
	flows   map[netip.Addr][]flow.Info // by the address they are listed under
	fetches int

	flowQueries []netip.Prefix // what Flows was asked for
}

func newFake(s sensor.Snapshot) *fakeBackend {
	return &fakeBackend{snap: s, nextID: 100}
}

func (f *fakeBackend) Snapshot(ctx context.Context) (sensor.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	return f.snap, nil
}

func (f *fakeBackend) set(s sensor.Snapshot) {
	f.mu.Lock()
	f.snap = s
	f.mu.Unlock()
}

// Ban records the request and, like the rules store, adds the entry to the
// snapshot's rules so the next fetch shows it.
func (f *fakeBackend) Ban(ctx context.Context, req rules.Request) (rules.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bans = append(f.bans, req)
	if f.banErr != nil {
		return rules.Entry{}, f.banErr
	}
	a, err := netip.ParseAddr(req.Value)
	if err != nil {
		return rules.Entry{}, err
	}
	f.nextID++
	e := rules.Entry{
		ID: f.nextID, Kind: rules.KindBan, Value: netip.PrefixFrom(a, a.BitLen()),
		Action: rules.ActionBlock, Origin: req.Origin, Reason: req.Reason,
		Created: f.snap.Traffic.At,
	}
	if req.TTL > 0 {
		e.Expires = f.snap.Traffic.At.Add(req.TTL)
	}
	f.snap.Rules = append(append([]rules.Entry(nil), f.snap.Rules...), e)
	f.snap.Status.Bans = activeBans(f.snap.Rules)
	return e, nil
}

func (f *fakeBackend) Unban(ctx context.Context, id uint64, reason string) (rules.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unbans = append(f.unbans, id)
	var kept []rules.Entry
	var gone rules.Entry
	for _, e := range f.snap.Rules {
		if e.ID == id {
			gone = e
			continue
		}
		kept = append(kept, e)
	}
	if gone.ID == 0 {
		return gone, errors.New("no entry #" + itoa(int64(id)))
	}
	f.snap.Rules = kept
	return gone, nil
}

func (f *fakeBackend) SetMode(ctx context.Context, m sensor.Mode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.modes = append(f.modes, m)
	f.snap.Status.Mode = m
	return nil
}

func (f *fakeBackend) Flows(ctx context.Context, p netip.Prefix) ([]flow.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flowQueries = append(f.flowQueries, p)
	var out []flow.Info
	for a, fs := range f.flows {
		if p.Contains(a) {
			out = append(out, fs...)
		}
	}
	return out, nil
}

func (f *fakeBackend) recorded() ([]rules.Request, []uint64, []sensor.Mode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]rules.Request(nil), f.bans...), append([]uint64(nil), f.unbans...), append([]sensor.Mode(nil), f.modes...)
}

// Fixed instant of the synthetic snapshots, so goldens never move.
var t0 = time.Date(2026, 11, 28, 3, 12, 45, 0, time.UTC)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// talker builds a by-source talker with a rate per window (bits/s) and a
// plausible sparkline.
func talker(ip string, b2, b10, b40 float64, flows int) flow.Talker {
	t := flow.Talker{Src: mustAddr(ip), Flows: flows}
	t.Bits = [flow.NumWindows]float64{b2, b10, b40}
	t.Pkts = [flow.NumWindows]float64{b2 / 8000, b10 / 8000, b40 / 8000}
	for i := range t.Spark {
		// A ramp that ends at the 2 s rate: recent seconds loudest.
		t.Spark[i] = float32(b40 + (b2-b40)*float64(i)/float64(len(t.Spark)-1))
	}
	return t
}

// demoSnapshot is the synthetic picture of an attack used by the tests and
// the golden: a scanner hammering a web server, a few normal hosts, one
// ban in force, an allowlisted router.
func demoSnapshot() sensor.Snapshot {
	src := []flow.Talker{
		talker("203.0.113.7", 912e6, 850e6, 400e6, 1840),
		talker("198.51.100.23", 120e6, 230e6, 210e6, 12),
		talker("10.0.0.5", 80e6, 95e6, 60e6, 44),
		talker("192.0.2.99", 40e6, 41e6, 70e6, 3),
		talker("10.1.2.3", 5e6, 6e6, 7e6, 310),
		talker("172.16.4.4", 1e6, 0.5e6, 0.2e6, 2),
	}
	// 10.1.2.3 floods small packets: last by bits, first by packets.
	src[4].Pkts = [flow.NumWindows]float64{310e3, 300e3, 280e3}
	dst := []flow.Talker{
		{Dst: mustAddr("10.0.0.80"), Bits: [3]float64{900e6, 880e6, 500e6}, Pkts: [3]float64{110e3, 105e3, 60e3}, Flows: 1900},
		{Dst: mustAddr("10.0.0.53"), Bits: [3]float64{3e6, 2e6, 2e6}, Pkts: [3]float64{900, 800, 700}, Flows: 60},
	}
	pair := []flow.Talker{
		{Src: mustAddr("203.0.113.7"), Dst: mustAddr("10.0.0.80"), Bits: [3]float64{900e6, 840e6, 390e6}, Pkts: [3]float64{110e3, 100e3, 50e3}, Flows: 1830},
	}
	port := []flow.Talker{
		{Port: 443, Proto: 6, Bits: [3]float64{950e6, 900e6, 520e6}, Pkts: [3]float64{120e3, 110e3, 65e3}, Flows: 1950},
		{Port: 53, Proto: 17, Bits: [3]float64{3e6, 2e6, 2e6}, Pkts: [3]float64{900, 800, 700}, Flows: 60},
	}
	net := func(p string, bits float64, flows int) flow.Talker {
		return flow.Talker{Net: netip.MustParsePrefix(p), Bits: [3]float64{bits, bits, bits}, Pkts: [3]float64{bits / 8000, bits / 8000, bits / 8000}, Flows: flows}
	}
	nets := []flow.Talker{
		net("203.0.113.0/24", 915e6, 1850),
		net("198.51.100.0/24", 130e6, 14), // banned by #7
		net("10.0.0.0/24", 80e6, 44),      // inside the allowlisted 10.0.0.0/8
	}
	ruleset := []rules.Entry{
		{ID: 7, Kind: rules.KindBan, Value: netip.MustParsePrefix("198.51.100.0/24"), Action: rules.ActionBlock,
			Origin: rules.OriginAPI, Reason: "credential stuffing (ticket 4411)", Created: t0.Add(-20 * time.Minute),
			Expires: t0.Add(40*time.Minute + 12*time.Second), Hits: 48211},
		{ID: 3, Kind: rules.KindAllow, Value: netip.MustParsePrefix("10.0.0.0/8"), Origin: rules.OriginConfig,
			Reason: "core routers", Created: t0.Add(-48 * time.Hour)},
	}
	blocks := []sensor.Block{
		{ID: 31, At: t0.Add(-2 * time.Second), Proto: "tcp", Src: mustAddr("198.51.100.23"), SrcPort: 51234,
			Dst: mustAddr("10.0.0.80"), DstPort: 443, RuleID: 7, RuleKind: rules.KindBan, Origin: rules.OriginAPI,
			ToSrc: 2, ToDst: 2, Outcome: sensor.OutcomeConfirmed, Reaction: 312 * time.Microsecond},
		{ID: 30, At: t0.Add(-9 * time.Second), Proto: "tcp", Src: mustAddr("198.51.100.23"), SrcPort: 51200,
			Dst: mustAddr("10.0.0.80"), DstPort: 443, RuleID: 7, RuleKind: rules.KindBan, Origin: rules.OriginAPI,
			ToSrc: 5, ToDst: 4, Outcome: sensor.OutcomeFailed, Reaction: 1800 * time.Microsecond},
	}
	var s sensor.Snapshot
	s.Status = sensor.Status{
		Mode: sensor.ModeEnforce, Source: "live", Ifaces: []string{"span0"}, Flows: 2311, Bans: 1,
		Blocks: sensor.BlockStats{Attempted: 40, Confirmed: 38, Failed: 1, SuccessRate: 38.0 / 39, ReactionP50: 90 * time.Microsecond, ReactionP99: 412 * time.Microsecond},
	}
	s.Status.Capture.Drops = 0
	s.Traffic.At = t0
	s.Traffic.Totals.Bits = [3]float64{1.16e9, 1.22e9, 0.92e9}
	s.Traffic.Totals.Pkts = [3]float64{145e3, 152e3, 115e3}
	s.Traffic.Talkers[flow.BySrc] = src
	s.Traffic.Talkers[flow.ByDst] = dst
	s.Traffic.Talkers[flow.ByPair] = pair
	s.Traffic.Talkers[flow.ByPort] = port
	s.Traffic.Talkers[flow.BySrcNet] = nets
	s.Rules = ruleset
	s.Blocks = blocks
	return s
}
