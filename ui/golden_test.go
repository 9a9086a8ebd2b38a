package ui

import (
	"strings"
	"testing"

	"github.com/charmbracelet/x/exp/golden"
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
	// Trailing spaces are padding, not layout: drop them so the golden
	// reads cleanly in a diff and in the README.
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	golden.RequireEqual(t, strings.Join(lines, "\n")+"\n")
}
