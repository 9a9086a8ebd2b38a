package ui

import (
	"net/netip"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// benchSnapshot is a busy sensor: n talkers of every kind, 500 single-IP
// bans plus 20 prefix bans and an allowlist, 200 recent blocks.
func benchSnapshot(n int) sensor.Snapshot {
	s := demoSnapshot()
	seed := uint64(1)
	rnd := func() float64 {
		seed = seed*6364136223846793005 + 1442695040888963407
		return float64(seed>>11) / (1 << 53)
	}
	addr := func(i int) netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	for k := flow.TalkerKind(0); k < flow.NumKinds; k++ {
		ts := make([]flow.Talker, n)
		for i := range ts {
			t := &ts[i]
			switch k {
			case flow.BySrc:
				t.Src = addr(i)
			case flow.ByDst:
				t.Dst = addr(i + n)
			case flow.ByPair:
				t.Src, t.Dst = addr(i), addr(i+n)
			case flow.ByPort:
				t.Port, t.Proto = uint16(i+1), 6
			}
			for w := range t.Bits {
				t.Bits[w] = rnd() * 1e9
				t.Pkts[w] = t.Bits[w] / 8000
			}
			t.Flows = int(rnd() * 5000)
			for j := range t.Spark {
				t.Spark[j] = float32(rnd() * 1e9)
			}
		}
		s.Traffic.Talkers[k] = ts
	}
	for i := 0; i < 500; i++ {
		a := addr(i * 2)
		s.Rules = append(s.Rules, rules.Entry{ID: uint64(1000 + i), Kind: rules.KindBan, Value: netip.PrefixFrom(a, 32),
			Action: rules.ActionBlock, Origin: rules.OriginFile, Reason: "blocklist", Created: t0.Add(-time.Duration(i) * time.Second),
			Expires: t0.Add(time.Hour)})
	}
	for i := 0; i < 20; i++ {
		s.Rules = append(s.Rules, rules.Entry{ID: uint64(2000 + i), Kind: rules.KindBan,
			Value: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(16 + i), 0, 0}), 16), Action: rules.ActionBlock, Origin: rules.OriginFeed})
	}
	for i := 0; i < 200; i++ {
		b := s.Blocks[i%len(s.Blocks)]
		b.ID = uint64(5000 + i)
		b.Src = addr(i)
		s.Blocks = append(s.Blocks, b)
	}
	return s
}

// BenchmarkViewFrame1000Talkers200x60 is the cost of drawing a whole frame
// from scratch (every pane cache invalidated) with 1,000 talkers on a
// 200×60 terminal. Target: ≤ 2 ms per frame.
func BenchmarkViewFrame1000Talkers200x60(b *testing.B) {
	m, _ := newTestModel(b, benchSnapshot(1000), 200, 60)
	b.ReportAllocs()
	for b.Loop() {
		m.dirty = true
		m.talkers.valid, m.blocks.valid, m.bans.valid = false, false, false
		_ = m.View()
	}
}

// BenchmarkViewCached is View when nothing changed since the last frame:
// what every tick and every idle message costs.
func BenchmarkViewCached(b *testing.B) {
	m, _ := newTestModel(b, benchSnapshot(1000), 200, 60)
	_ = m.View()
	b.ReportAllocs()
	for b.Loop() {
		_ = m.View()
	}
}

// BenchmarkSnapshotUpdateView is one second of dashboard work: a snapshot
// message with 1,000 talkers per kind (filter, sort, rule index, re-select)
// followed by the frame it causes, at 200×60.
func BenchmarkSnapshotUpdateView(b *testing.B) {
	m, _ := newTestModel(b, benchSnapshot(1000), 200, 60)
	snap := benchSnapshot(1000)
	b.ReportAllocs()
	for b.Loop() {
		m.seq++
		m.Update(snapshotMsg{seq: m.seq, snap: snap})
		_ = m.View()
	}
}

// BenchmarkKeyMoveView is a key press moving the selection, and its frame.
func BenchmarkKeyMoveView(b *testing.B) {
	m, _ := newTestModel(b, benchSnapshot(1000), 200, 60)
	down, up := keyMsg("down"), keyMsg("up")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := down
		if i%100 >= 50 {
			k = up
		}
		i++
		m.Update(k)
		_ = m.View()
	}
	_ = tea.Quit
}
