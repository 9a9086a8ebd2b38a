package ui

import (
	"context"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"canopy/sensor"
)

// newTestModel builds a dashboard on a fake backend at w×h, with a fixed
// clock and UTC times, and feeds it one snapshot.
func newTestModel(t testing.TB, snap sensor.Snapshot, w, h int) (*Model, *fakeBackend) {
	t.Helper()
	fb := newFake(snap)
	m := New(Config{Backend: fb, Ifaces: []string{"span0"}, DefaultBanTTL: time.Hour})
	m.now = func() time.Time { return t0 }
	m.loc = time.UTC
	m.blocks.loc = time.UTC
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	refresh(t, m)
	return m, fb
}

// refresh runs one snapshot fetch synchronously, as the tick would.
func refresh(t testing.TB, m *Model) {
	t.Helper()
	run(t, m, m.fetch())
}

// run executes a command (and the batches it returns) synchronously and
// feeds the resulting messages back, skipping ticks and quits.
func run(t testing.TB, m *Model, cmd tea.Cmd) {
	t.Helper()
	for cmd != nil {
		msg := cmd()
		cmd = nil
		switch msg := msg.(type) {
		case nil, tickMsg, tea.QuitMsg:
		case tea.BatchMsg:
			for _, c := range msg {
				if c != nil {
					run(t, m, c)
				}
			}
		default:
			_, cmd = m.Update(msg)
		}
	}
}

// press sends a key and runs what it returns.
func press(t testing.TB, m *Model, keys ...string) {
	t.Helper()
	for _, k := range keys {
		run(t, m, update(m, keyMsg(k)))
	}
}

func update(m *Model, msg tea.Msg) tea.Cmd {
	_, cmd := m.Update(msg)
	return cmd
}

func keyMsg(k string) tea.KeyPressMsg {
	switch k {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "tab":
		return tea.KeyPressMsg{Code: tea.KeyTab}
	case "shift+tab":
		return tea.KeyPressMsg{Code: tea.KeyTab, Mod: tea.ModShift}
	case "down":
		return tea.KeyPressMsg{Code: tea.KeyDown}
	case "up":
		return tea.KeyPressMsg{Code: tea.KeyUp}
	case "backspace":
		return tea.KeyPressMsg{Code: tea.KeyBackspace}
	case "ctrl+u":
		return tea.KeyPressMsg{Code: 'u', Mod: tea.ModCtrl}
	case "ctrl+c":
		return tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}
	}
	r := []rune(k)[0]
	if r >= 'A' && r <= 'Z' {
		return tea.KeyPressMsg{Code: r + ('a' - 'A'), ShiftedCode: r, Text: k, Mod: tea.ModShift}
	}
	return tea.KeyPressMsg{Code: r, Text: k}
}

// typeText sends each rune as a key press.
func typeText(t testing.TB, m *Model, s string) {
	t.Helper()
	for _, r := range s {
		run(t, m, update(m, tea.KeyPressMsg{Code: r, Text: string(r)}))
	}
}

func screen(m *Model) string { return ansi.Strip(m.View().Content) }

func TestPrintScreen(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	t.Log("\n" + screen(m))
	_ = context.Background
	_ = strings.Contains
}
