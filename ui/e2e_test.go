package ui

import (
	"bytes"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/teatest/v2"

	"canopy/rules"
)

// TestEndToEndBanWithTeatest runs the real program loop (ticks, commands,
// renderer) on a fake backend: wait for a known talker, press b, confirm,
// and see the ban land in the bans pane.
func TestEndToEndBanWithTeatest(t *testing.T) {
	fb := newFake(demoSnapshot())
	m := New(Config{Backend: fb, Ifaces: []string{"span0"}, DefaultBanTTL: 2 * time.Hour})
	m.now = func() time.Time { return t0 } // the fake's clock
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(120, 40))

	// All output since the last key press: one frame can carry several
	// of the things waited for, so nothing read is thrown away.
	var seen []byte
	waitFor := func(what string) {
		t.Helper()
		prev := seen
		teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
			// b is everything this call has read so far.
			seen = append(prev[:len(prev):len(prev)], b...)
			return bytes.Contains(seen, []byte(what))
		}, teatest.WithDuration(5*time.Second), teatest.WithCheckInterval(10*time.Millisecond))
	}
	send := func(k string) {
		seen = seen[:0]
		tm.Send(keyMsg(k))
	}
	waitFor("203.0.113.7")
	send("b")
	waitFor("duration")
	send("y")
	waitFor("banned")
	waitFor("tui") // the origin column of the new row in the bans pane

	send("q") // bans are active: asks first
	waitFor("Quit")
	send("y")
	final := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*Model)

	bans, _, _ := fb.recorded()
	if len(bans) != 1 || bans[0].Value != "203.0.113.7" || bans[0].TTL != 2*time.Hour || bans[0].Origin != rules.OriginTUI {
		t.Fatalf("ban requests %+v", bans)
	}
	s := screen(final)
	mustContain(t, line(t, s, "203.0.113.7      ban"), "tui", "2h00m")
}
