package ui

import (
	"strings"
	"testing"

	"github.com/charmbracelet/x/exp/golden"

	"canopy/sensor"
)

// TestGolden120x40 pins the layout at 120×40 as plain text (ANSI stripped),
// right after the operator banned the top talker. Regenerate with
//
//	go test ./ui/ -run TestGolden -update
func TestGolden120x40(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "b", "tab", "tab")
	typeText(t, m, "scanner, INC-2231")
	press(t, m, "enter")
	s := screen(m)
	checkFits(t, s, 120, 40)
	golden.RequireEqual(t, trimLines(s))
}

// TestGolden80x24 pins the compact layout of the smallest terminal the
// dashboard accepts, in observe mode with the blocks pane focused.
func TestGolden80x24(t *testing.T) {
	s := demoSnapshot()
	s.Status.Mode = sensor.ModeObserve
	s.Status.Blocks.Observed = 12
	s.Status.Capture.Drops = 1532
	m, _ := newTestModel(t, s, 80, 24)
	press(t, m, "2")
	out := screen(m)
	checkFits(t, out, 80, 24)
	golden.RequireEqual(t, trimLines(out))
}

// trimLines drops trailing spaces: they are padding, not layout, and the
// golden reads cleanly in a diff and in a README without them.
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n") + "\n"
}
