package ui

import (
	"context"
	"math"
	"os"
	"testing"
	"time"

	"canopy/flow"
	"canopy/sensor"
)

// liveFake is fakeBackend with a moving picture: rates swing with time and
// every timestamp is shifted to now, for watching the dashboard in a real
// terminal.
type liveFake struct {
	*fakeBackend
	start time.Time
}

func (l *liveFake) Snapshot(ctx context.Context) (sensor.Snapshot, error) {
	s, err := l.fakeBackend.Snapshot(ctx)
	now := time.Now()
	d := now.Sub(t0)
	phase := now.Sub(l.start).Seconds()
	s.Traffic.At = now
	ts := make([]flow.Talker, len(s.Traffic.Talkers[flow.BySrc]))
	copy(ts, s.Traffic.Talkers[flow.BySrc])
	for i := range ts {
		f := 1 + 0.6*math.Sin(phase/3+float64(i))
		for w := range ts[i].Bits {
			ts[i].Bits[w] *= f
			ts[i].Pkts[w] *= f
		}
		for j := range ts[i].Spark {
			ts[i].Spark[j] *= float32(1 + 0.5*math.Sin((phase+float64(j))/4+float64(i)))
		}
	}
	s.Traffic.Talkers[flow.BySrc] = ts
	s.Rules = append(s.Rules[:0:0], s.Rules...)
	for i := range s.Rules {
		s.Rules[i].Created = s.Rules[i].Created.Add(d)
		if !s.Rules[i].Expires.IsZero() && s.Rules[i].Expires.Before(t0.Add(48*time.Hour)) {
			s.Rules[i].Expires = s.Rules[i].Expires.Add(d)
		}
	}
	s.Blocks = append(s.Blocks[:0:0], s.Blocks...)
	for i := range s.Blocks {
		s.Blocks[i].At = s.Blocks[i].At.Add(d)
	}
	return s, err
}

// TestDemoTerminal runs the dashboard on the real terminal against the
// fake backend, for checking it by eye or under tmux:
//
//	go test -c -o /tmp/uidemo ./ui/ && CANOPY_UI_DEMO=1 /tmp/uidemo -test.run TestDemoTerminal
//
// It is skipped unless CANOPY_UI_DEMO is set.
func TestDemoTerminal(t *testing.T) {
	if os.Getenv("CANOPY_UI_DEMO") == "" {
		t.Skip("set CANOPY_UI_DEMO=1 and run the test binary in a terminal")
	}
	fb := &liveFake{fakeBackend: newFake(demoSnapshot()), start: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := Run(ctx, Config{Backend: fb, Ifaces: []string{"span0"}, DefaultBanTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
}
