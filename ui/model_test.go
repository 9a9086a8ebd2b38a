package ui

import (
	"context"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"canopy/flow"
	"canopy/rules"
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
	runCmd(t, m, m.fetch())
}

// runCmd executes a command (and the batches it returns) synchronously and
// feeds the resulting messages back, skipping ticks and quits.
func runCmd(t testing.TB, m *Model, cmd tea.Cmd) {
	t.Helper()
	for cmd != nil {
		msg := cmd()
		cmd = nil
		switch msg := msg.(type) {
		case nil, tickMsg, tea.QuitMsg:
		case tea.BatchMsg:
			for _, c := range msg {
				if c != nil {
					runCmd(t, m, c)
				}
			}
		default:
			_, cmd = m.Update(msg)
		}
	}
}

// press sends keys one by one and runs what each returns.
func press(t testing.TB, m *Model, keys ...string) {
	t.Helper()
	for _, k := range keys {
		_, cmd := m.Update(keyMsg(k))
		runCmd(t, m, cmd)
	}
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
	case "pgdown":
		return tea.KeyPressMsg{Code: tea.KeyPgDown}
	}
	r := []rune(k)[0]
	if r >= 'A' && r <= 'Z' {
		return tea.KeyPressMsg{Code: r + ('a' - 'A'), ShiftedCode: r, Text: k, Mod: tea.ModShift}
	}
	return tea.KeyPressMsg{Code: r, Text: k}
}

// typeText sends each rune of s as a key press.
func typeText(t testing.TB, m *Model, s string) {
	t.Helper()
	for _, r := range s {
		_, cmd := m.Update(tea.KeyPressMsg{Code: r, Text: string(r)})
		runCmd(t, m, cmd)
	}
}

// screen is the frame without escape sequences.
func screen(m *Model) string { return ansi.Strip(m.View().Content) }

// order lists the talker rows' addresses (or keys) in display order.
func order(m *Model) []string {
	var out []string
	for _, j := range m.talkers.order {
		t := &m.talkers.all[j]
		out = append(out, string(appendKey(nil, m.view.kind, t)))
	}
	return out
}

func selected(t *testing.T, m *Model) string {
	t.Helper()
	s, ok := m.talkers.Selected()
	if !ok {
		t.Fatal("no talker selected")
	}
	return string(appendKey(nil, m.view.kind, &s))
}

func wantOrder(t *testing.T, m *Model, want ...string) {
	t.Helper()
	got := order(m)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
}

func mustContain(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Fatalf("screen lacks %q:\n%s", sub, s)
		}
	}
}

func mustNotContain(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			t.Fatalf("screen has %q but should not:\n%s", sub, s)
		}
	}
}

// line returns the screen line containing sub.
func line(t *testing.T, s, sub string) string {
	t.Helper()
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	t.Fatalf("no line with %q:\n%s", sub, s)
	return ""
}

func TestRankingBy10sBits(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	wantOrder(t, m, "203.0.113.7", "198.51.100.23", "10.0.0.5", "192.0.2.99", "10.1.2.3", "172.16.4.4")
	s := screen(m)
	mustContain(t, s, "sorted by bits/s, 10s avg", "10s avg▼", "▸ 1 203.0.113.7", "850 Mb/s")
	// Ranks are printed in order.
	if strings.Index(s, " 2 198.51.100.23") > strings.Index(s, " 3 10.0.0.5") {
		t.Fatalf("rank 2 printed after rank 3:\n%s", s)
	}
}

func TestSortCycle(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "s")
	wantOrder(t, m, "10.1.2.3", "203.0.113.7", "198.51.100.23", "10.0.0.5", "192.0.2.99", "172.16.4.4")
	mustContain(t, screen(m), "sorted by pkts/s, 10s avg", "pkts/s 10s▼")
	press(t, m, "s")
	wantOrder(t, m, "203.0.113.7", "10.1.2.3", "10.0.0.5", "198.51.100.23", "192.0.2.99", "172.16.4.4")
	mustContain(t, screen(m), "sorted by flows", "flows▼")
	press(t, m, "s")
	mustContain(t, screen(m), "sorted by bits/s")
}

func TestWindowCycle(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "w")
	// Over 40 s, 192.0.2.99 (70 Mb/s) outranks 10.0.0.5 (60 Mb/s).
	wantOrder(t, m, "203.0.113.7", "198.51.100.23", "192.0.2.99", "10.0.0.5", "10.1.2.3", "172.16.4.4")
	s := screen(m)
	mustContain(t, s, "sorted by bits/s, 40s avg", "40s avg▼", "pkts/s (40s avg)")
	press(t, m, "w")
	mustContain(t, screen(m), "sorted by bits/s, 2s avg", "2s avg▼")
	press(t, m, "w")
	mustContain(t, screen(m), "10s avg▼")
}

func TestFilterByIPPrefixAndPort(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "/")
	typeText(t, m, "10.0.0.5")
	wantOrder(t, m, "10.0.0.5")
	press(t, m, "enter")
	mustContain(t, screen(m), "filter: IP 10.0.0.5", "1 shown")

	press(t, m, "/", "ctrl+u")
	typeText(t, m, "10.0.0.0/8")
	press(t, m, "enter")
	wantOrder(t, m, "10.0.0.5", "10.1.2.3")
	mustContain(t, screen(m), "filter: prefix 10.0.0.0/8")

	// A bare number on the way to an address matches address text.
	press(t, m, "/", "ctrl+u")
	typeText(t, m, "198")
	wantOrder(t, m, "198.51.100.23")
	typeText(t, m, ".5")
	wantOrder(t, m, "198.51.100.23")

	// An explicit port filter hides address rows and says how to see ports.
	press(t, m, "ctrl+u")
	typeText(t, m, ":443")
	press(t, m, "enter")
	wantOrder(t, m)
	mustContain(t, screen(m), "press t to reach it")
	press(t, m, "t", "t", "t") // src → dst → pair → port
	wantOrder(t, m, "tcp/443")
	mustContain(t, screen(m), "Top talkers by port", "filter: port 443")
	// A bare number is a port in the port view too.
	press(t, m, "/", "ctrl+u")
	typeText(t, m, "53")
	press(t, m, "enter")
	wantOrder(t, m, "udp/53")
	// Blocks are filtered by port too: neither demo block involves 53.
	if got := len(m.blocks.shown); got != 0 {
		t.Fatalf("blocks shown with port 53 filter: %d, want 0", got)
	}

	press(t, m, "esc")
	wantOrder(t, m, "tcp/443", "udp/53")
	mustNotContain(t, screen(m), "filter:")
}

func TestKindCycle(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "t")
	wantOrder(t, m, "10.0.0.80", "10.0.0.53")
	mustContain(t, screen(m), "Top talkers by dst", "destination")
	press(t, m, "t")
	wantOrder(t, m, "203.0.113.7 → 10.0.0.80")
}

func TestPauseFreezesNumbers(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "p")
	s2 := demoSnapshot()
	s2.Traffic.Talkers[flow.BySrc][0].Bits[flow.Win10s] = 123e6
	s2.Traffic.Totals.Bits[flow.Win10s] = 5e9
	fb.set(s2)
	refresh(t, m)
	s := screen(m)
	mustContain(t, s, "PAUSED", "850 Mb/s", "1.22 Gb/s")
	mustNotContain(t, s, "123 Mb/s", "5.00 Gb/s")

	press(t, m, "p")
	s = screen(m)
	mustContain(t, s, "123 Mb/s", "5.00 Gb/s")
	mustNotContain(t, s, "PAUSED")
}

func TestSelectionFollowsIPAcrossResort(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "down", "down") // 10.0.0.5, rank 3
	if got := selected(t, m); got != "10.0.0.5" {
		t.Fatalf("selected %s", got)
	}
	// 10.0.0.5 becomes the top talker and 203.0.113.7 drops out.
	s2 := demoSnapshot()
	ts := s2.Traffic.Talkers[flow.BySrc]
	ts[2].Bits[flow.Win10s] = 5e9
	s2.Traffic.Talkers[flow.BySrc] = ts[1:]
	fb.set(s2)
	refresh(t, m)
	if got := selected(t, m); got != "10.0.0.5" {
		t.Fatalf("after re-sort the selection moved to %s", got)
	}
	mustContain(t, screen(m), "▸ 1 10.0.0.5")

	// It also follows through a sort change.
	press(t, m, "s")
	if got := selected(t, m); got != "10.0.0.5" {
		t.Fatalf("after sort change the selection moved to %s", got)
	}
}

func TestBanFormConfirmWithReason(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "b")
	s := screen(m)
	mustContain(t, s, "Ban 203.0.113.7", "duration: 1h", "Resets every session of 203.0.113.7")
	press(t, m, "tab", "tab") // duration, then reason
	typeText(t, m, "scanner from ticket 12")
	press(t, m, "enter")

	bans, _, _ := fb.recorded()
	if len(bans) != 1 {
		t.Fatalf("Ban called %d times", len(bans))
	}
	want := rules.Request{Kind: rules.KindBan, Value: "203.0.113.7", TTL: time.Hour, Action: rules.ActionBlock,
		Reason: "scanner from ticket 12", Origin: rules.OriginTUI, RequestedBy: m.user}
	if bans[0] != want {
		t.Fatalf("ban request\n got %+v\nwant %+v", bans[0], want)
	}
	s = screen(m)
	mustContain(t, s, "banned 203.0.113.7 for 1h")
	// The refresh after the result shows it in the bans pane and the table.
	mustContain(t, line(t, s, "203.0.113.7      ban"), "tui", "1h00m", "scanner from ticket 12")
	mustContain(t, line(t, s, "1 203.0.113.7"), "BAN")
}

func TestBanFormYesAndEditedDuration(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "b", "y")
	press(t, m, "down", "b", "tab", "ctrl+u")
	typeText(t, m, "30m")
	press(t, m, "enter")
	bans, _, _ := fb.recorded()
	if len(bans) != 2 || bans[0].TTL != time.Hour || bans[1].TTL != 30*time.Minute || bans[1].Value != "198.51.100.23" {
		t.Fatalf("bans %+v", bans)
	}
	for _, b := range bans {
		if b.Origin != rules.OriginTUI {
			t.Fatalf("origin %q, want tui", b.Origin)
		}
	}
}

func TestBanFormCancelBansNothing(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "b", "esc")
	press(t, m, "b", "n")
	// In review mode a stray letter starts the reason, it never bans.
	press(t, m, "b", "x", "z", "esc")
	// Esc cancels even while a field is being edited.
	press(t, m, "b", "tab", "esc")
	if bans, _, _ := fb.recorded(); len(bans) != 0 {
		t.Fatalf("Ban called: %+v", bans)
	}
	mustNotContain(t, screen(m), "Ban 203.0.113.7", "banning")
}

func TestBanBadDurationKeepsForm(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "b", "tab", "ctrl+u")
	typeText(t, m, "soon")
	press(t, m, "enter")
	if bans, _, _ := fb.recorded(); len(bans) != 0 {
		t.Fatalf("Ban called with a bad duration: %+v", bans)
	}
	mustContain(t, screen(m), "duration not understood", "Ban 203.0.113.7")
}

func TestBanErrorShownInPlace(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	fb.banErr = errors.New("refused: 10.0.0.5 is allowlisted by 10.0.0.0/8 (core routers)")
	press(t, m, "down", "down") // 10.0.0.5
	press(t, m, "b")
	mustContain(t, screen(m), "10.0.0.5 is ALLOWLISTED")
	press(t, m, "y")
	s := screen(m)
	mustContain(t, s, "ban 10.0.0.5: refused: 10.0.0.5 is allowlisted by 10.0.0.0/8 (core routers)")
	press(t, m, "esc")
	mustNotContain(t, screen(m), "refused")
}

func TestUnbanConfirm(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "3", "u")
	mustContain(t, screen(m), "Remove ban 198.51.100.0/24?", "will flow again")
	press(t, m, "esc")
	if _, unbans, _ := fb.recorded(); len(unbans) != 0 {
		t.Fatalf("Unban called after esc: %v", unbans)
	}
	press(t, m, "u", "y")
	if _, unbans, _ := fb.recorded(); len(unbans) != 1 || unbans[0] != 7 {
		t.Fatalf("Unban calls %v, want [7]", unbans)
	}
	s := screen(m)
	mustContain(t, s, "removed ban 198.51.100.0/24")
	mustNotContain(t, s, "198.51.100.0/24  ban")

	// The allowlist is not removable from here.
	press(t, m, "u")
	mustContain(t, screen(m), "allow and system entries are managed")
	if _, unbans, _ := fb.recorded(); len(unbans) != 1 {
		t.Fatalf("allowlist entry removed: %v", unbans)
	}
}

func TestUnbanFromBannedTalker(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "down", "u") // 198.51.100.23, covered by the /24 ban
	mustContain(t, screen(m), "Remove ban 198.51.100.0/24?")
	press(t, m, "enter")
	if _, unbans, _ := fb.recorded(); len(unbans) != 1 || unbans[0] != 7 {
		t.Fatalf("Unban calls %v, want [7]", unbans)
	}
}

func TestUnitToggle(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "U")
	s := screen(m)
	mustContain(t, line(t, s, "203.0.113.7"), "106 MB/s")
	mustContain(t, s, "bytes/s", "152 MB/s")
	mustNotContain(t, s, "Mb/s")
	press(t, m, "U")
	mustContain(t, line(t, screen(m), "203.0.113.7"), "850 Mb/s")
}

func TestModeToggleConfirm(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "o")
	mustContain(t, screen(m), "Switch to OBSERVE", "STOP sending resets")
	press(t, m, "esc")
	if _, _, modes := fb.recorded(); len(modes) != 0 {
		t.Fatalf("SetMode called after esc: %v", modes)
	}
	press(t, m, "o", "y")
	if _, _, modes := fb.recorded(); len(modes) != 1 || modes[0] != sensor.ModeObserve {
		t.Fatalf("SetMode calls %v", modes)
	}
	s := screen(m)
	mustContain(t, s, "[ OBSERVE · not blocking ]", "now OBSERVE")
	mustNotContain(t, s, "[ ENFORCE ]")
	press(t, m, "o")
	mustContain(t, screen(m), "Switch to ENFORCE", "START sending resets")
}

func TestQuitConfirmsWhileBansActive(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	_, cmd := m.Update(keyMsg("q"))
	if cmd != nil {
		t.Fatalf("q quit at once with a ban active")
	}
	mustContain(t, screen(m), "blocking stops with this process")
	_, cmd = m.Update(keyMsg("y"))
	if cmd == nil || cmd() != tea.Quit() {
		t.Fatalf("y did not quit")
	}

	// Attached: quitting leaves the daemon blocking, and says so.
	m, _ = newTestModel(t, demoSnapshot(), 120, 40)
	m.cfg.Attached = true
	m.Update(keyMsg("q"))
	mustContain(t, screen(m), "The daemon keeps running")

	// No bans: q quits straight away.
	s := demoSnapshot()
	s.Rules = nil
	m, _ = newTestModel(t, s, 120, 40)
	_, cmd = m.Update(keyMsg("q"))
	if cmd == nil || cmd() != tea.Quit() {
		t.Fatalf("q did not quit without bans")
	}
}

func TestDrillDownFlows(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	fb.flows = map[netip.Addr][]flow.Info{
		mustAddr("203.0.113.7"): {{Proto: 6, A: mustAddr("203.0.113.7"), APort: 40000, B: mustAddr("10.0.0.80"), BPort: 443,
			State: "established", PktsAB: 1200, BytesAB: 1_500_000, PktsBA: 900, BytesBA: 80_000,
			FirstSeen: t0.Add(-75 * time.Second), LastSeen: t0.Add(-time.Second), Blocked: true}},
	}
	press(t, m, "enter")
	s := screen(m)
	mustContain(t, s, "Flows of 203.0.113.7 · 1 live", "203.0.113.7:40000 → 10.0.0.80:443", "established", "1.50 MB", "BLOCKED", "1m15s")
	mustNotContain(t, s, "Top talkers")
	press(t, m, "b") // bans the address being drilled into
	mustContain(t, screen(m), "Ban 203.0.113.7")
	press(t, m, "esc", "esc")
	mustContain(t, screen(m), "Top talkers")
}

func TestPortRowsCannotBeBanned(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "t", "t", "t", "b")
	mustContain(t, screen(m), "nothing to ban")
	if m.dlg != nil {
		t.Fatal("a ban form opened for a port row")
	}
	if bans, _, _ := fb.recorded(); len(bans) != 0 {
		t.Fatalf("bans %+v", bans)
	}
}

func TestSmallTerminal(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 79, 24)
	if got := screen(m); !strings.HasPrefix(got, "need 80×24, have 79×24") {
		t.Fatalf("got %q", got)
	}
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 23})
	mustContain(t, screen(m), "need 80×24, have 100×23")
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	s := screen(m)
	mustContain(t, s, "[ ENFORCE ]", "203.0.113.7")
	checkFits(t, s, 80, 24)
}

// checkFits fails if the frame is taller or wider than the terminal.
func checkFits(t *testing.T, s string, w, h int) {
	t.Helper()
	lines := strings.Split(s, "\n")
	if len(lines) > h {
		t.Fatalf("frame has %d lines for a %d-line terminal", len(lines), h)
	}
	for i, l := range lines {
		if n := ansi.StringWidth(l); n > w {
			t.Fatalf("line %d is %d cells wide (terminal %d): %q", i, n, w, l)
		}
	}
}

// ipv6Snapshot is the demo with IPv6 talkers, blocks and bans: the widest
// addresses the columns must hold.
func ipv6Snapshot() sensor.Snapshot {
	s := demoSnapshot()
	ts := append([]flow.Talker(nil), s.Traffic.Talkers[flow.BySrc]...)
	ts = append(ts, talker("2001:db8:ffff:ffff:ffff:ffff:ffff:fff1", 2e9, 2e9, 2e9, 99999))
	s.Traffic.Talkers[flow.BySrc] = ts
	s.Traffic.Talkers[flow.ByPair] = append(s.Traffic.Talkers[flow.ByPair], flow.Talker{
		Src: mustAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:fff1"), Dst: mustAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:fff2"), Bits: [3]float64{1, 1, 1}})
	b := s.Blocks[0]
	b.Src, b.Dst = mustAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:fff1"), mustAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:fff2")
	b.Reason = strings.Repeat("a very long reason ", 20)
	s.Blocks = append(s.Blocks, b)
	s.Rules = append(s.Rules, rules.Entry{ID: 99, Kind: rules.KindBan, Value: netip.MustParsePrefix("2001:db8:ffff:ffff:ffff:ffff:ffff:fff1/128"),
		Origin: rules.OriginTUI, Reason: strings.Repeat("long ", 50)})
	return s
}

func TestFramesFitEverySize(t *testing.T) {
	for _, snap := range []sensor.Snapshot{demoSnapshot(), ipv6Snapshot()} {
		framesFit(t, snap)
	}
}

func framesFit(t *testing.T, snap sensor.Snapshot) {
	m, _ := newTestModel(t, snap, 80, 24)
	for _, sz := range [][2]int{{80, 24}, {81, 25}, {100, 30}, {115, 33}, {120, 40}, {200, 60}, {300, 90}} {
		m.Update(tea.WindowSizeMsg{Width: sz[0], Height: sz[1]})
		checkFits(t, screen(m), sz[0], sz[1])
		press(t, m, "?")
		checkFits(t, screen(m), sz[0], sz[1])
		mustContain(t, screen(m), "pause numbers (capture, blocking go on)", "bottom")
		press(t, m, "?", "b")
		checkFits(t, screen(m), sz[0], sz[1])
		press(t, m, "esc", "/")
		typeText(t, m, "a long filter that matches nothing at all, 10.0.0.0/8")
		checkFits(t, screen(m), sz[0], sz[1])
		press(t, m, "esc", "t", "t")
		checkFits(t, screen(m), sz[0], sz[1])
		press(t, m, "t", "t")
		m.setStatus(statusErr, strings.Repeat("a long refusal from the backend ", 12))
		checkFits(t, screen(m), sz[0], sz[1])
		press(t, m, "esc")
	}
}

func TestLongErrorUsesTheHelpLine(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 80, 24)
	fb.banErr = errors.New("refused: 203.0.113.7 is allowlisted by 203.0.113.0/24 (upstream transit, ticket NET-4410, do not block)")
	press(t, m, "b", "y")
	s := screen(m)
	mustContain(t, s, "ban 203.0.113.7: refused: 203.0.113.7 is allowlisted by", "(upstream transit, ticket NET-4410, do not block)")
	mustNotContain(t, s, "? more")
	press(t, m, "esc")
	mustContain(t, screen(m), "? more")
}

// colourSGR matches SGR sequences that set a foreground or background
// colour (30–37, 38, 40–47, 48, 90–97, 100–107).
var colourSGR = regexp.MustCompile(`\x1b\[(?:[0-9;:]*;)?(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:[;:][0-9;:]*)?m`)

func TestNoColor(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	raw := m.View().Content
	if loc := colourSGR.FindStringIndex(raw); loc != nil {
		t.Fatalf("NO_COLOR frame has a colour escape %q", raw[loc[0]:loc[1]])
	}
	// States stay readable as text, and emphasis survives.
	s := ansi.Strip(raw)
	mustContain(t, s, "[ ENFORCE ]", "BAN", "ALLOW", "FAILED", "▸ 1 203.0.113.7")
	if !strings.Contains(raw, "\x1b[7m") && !strings.Contains(raw, ";7m") {
		t.Fatalf("no reverse video in the NO_COLOR frame")
	}
	press(t, m, "p")
	mustContain(t, screen(m), "PAUSED")
	press(t, m, "o", "y")
	raw = m.View().Content
	mustContain(t, ansi.Strip(raw), "[ OBSERVE · not blocking ]")
	if colourSGR.MatchString(raw) {
		t.Fatalf("NO_COLOR frame has colour after the mode switch")
	}
}

func TestColourWithoutNoColor(t *testing.T) {
	// Guards TestNoColor against passing because nothing is ever coloured.
	t.Setenv("NO_COLOR", "")
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	if !colourSGR.MatchString(m.View().Content) {
		t.Fatalf("colour frame has no colour escapes")
	}
}

func TestLateOlderSnapshotIgnored(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	older, newer := m.seq+1, m.seq+2
	m.seq = newer
	s2 := demoSnapshot()
	s2.Traffic.Totals.Bits[flow.Win10s] = 7e9
	m.Update(snapshotMsg{seq: newer, snap: s2})
	m.Update(snapshotMsg{seq: older, snap: demoSnapshot()}) // answered late
	mustContain(t, screen(m), "7.00 Gb/s")
}

func TestSnapshotErrorShowsStale(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	m.Update(snapshotMsg{seq: m.seq + 1, err: errors.New("dial tcp 127.0.0.1:9000: connection refused")})
	mustContain(t, screen(m), "STALE", "connection refused", "850 Mb/s")
}

func TestCtrlCCancelsFormsAndAsksBeforeQuitting(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "b", "ctrl+c")
	if m.dlg != nil {
		t.Fatal("ctrl+c left the ban form open")
	}
	if bans, _, _ := fb.recorded(); len(bans) != 0 {
		t.Fatalf("ctrl+c banned: %+v", bans)
	}
	press(t, m, "/")
	typeText(t, m, "10.0")
	_, cmd := m.Update(keyMsg("ctrl+c"))
	if cmd != nil || m.dlg == nil || m.dlg.kind != dlgQuit {
		t.Fatal("ctrl+c in the filter did not ask to quit while bans are active")
	}
	_, cmd = m.Update(keyMsg("ctrl+c"))
	if cmd == nil || cmd() != tea.Quit() {
		t.Fatal("a second ctrl+c did not quit")
	}
}

// countingBackend counts calls without answering until released, to show
// that Update itself never calls the backend.
type countingBackend struct {
	*fakeBackend
	calls   chan string
	release chan struct{}
}

func (c *countingBackend) Snapshot(ctx context.Context) (sensor.Snapshot, error) {
	c.calls <- "snapshot"
	<-c.release
	return c.fakeBackend.Snapshot(ctx)
}

func (c *countingBackend) Ban(ctx context.Context, r rules.Request) (rules.Entry, error) {
	c.calls <- "ban"
	<-c.release
	return c.fakeBackend.Ban(ctx, r)
}

func TestUpdateDoesNoIO(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	cb := &countingBackend{fakeBackend: fb, calls: make(chan string, 10), release: make(chan struct{})}
	m.cfg.Backend = cb

	_, tickCmd := m.Update(tickMsg(t0))
	press(t, m, "b")
	_, banCmd := m.Update(keyMsg("y"))
	if len(cb.calls) != 0 {
		t.Fatalf("Update called the backend: %d calls", len(cb.calls))
	}
	mustContain(t, screen(m), "banning 203.0.113.7 for 1h…")
	if banCmd == nil || tickCmd == nil {
		t.Fatal("no commands returned")
	}
	// The work happens when the commands run, off the event loop.
	done := make(chan tea.Msg)
	go func() { done <- banCmd() }()
	if got := <-cb.calls; got != "ban" {
		t.Fatalf("ban command called %s", got)
	}
	close(cb.release)
	if r, ok := (<-done).(banResultMsg); !ok || r.err != nil {
		t.Fatalf("ban result %#v", r)
	}
}

func TestNilBackendReportsInsteadOfPanicking(t *testing.T) {
	m := New(Config{})
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	runCmd(t, m, m.Init())
	mustContain(t, screen(m), "STALE", "no backend configured")
}

func TestNoFreshSnapshotShowsStale(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 120, 40)
	mustNotContain(t, screen(m), "STALE")
	m.now = func() time.Time { return t0.Add(12 * time.Second) }
	m.inflight = 1 // the last fetch is still hanging
	_, cmd := m.Update(tickMsg(t0.Add(12 * time.Second)))
	_ = cmd // no second fetch while one is in flight; not run here
	mustContain(t, screen(m), "STALE: no snapshot for 12s")
}

func TestScrollShowsOnlyVisibleRows(t *testing.T) {
	m, _ := newTestModel(t, benchSnapshot(1000), 120, 40)
	body := m.talkers.bodyHeight()
	press(t, m, "G")
	s := screen(m)
	last := order(m)[999]
	mustContain(t, s, "▸1000 "+last)
	rows := 0
	for _, l := range strings.Split(m.talkers.View(), "\n")[2:] {
		if strings.Contains(ansi.Strip(l), "Mb/s") || strings.Contains(ansi.Strip(l), "kb/s") {
			rows++
		}
	}
	if rows != body {
		t.Fatalf("rendered %d talker rows, pane holds %d", rows, body)
	}
	press(t, m, "g")
	mustContain(t, screen(m), "▸   1 "+order(m)[0])
	press(t, m, "pgdown")
	if m.talkers.cur.idx != m.pageSize() {
		t.Fatalf("page down moved to %d, want %d", m.talkers.cur.idx, m.pageSize())
	}
}

func TestHeldKeyNeverConfirms(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "b")
	for _, k := range []string{"enter", "y"} {
		msg := keyMsg(k)
		msg.IsRepeat = true
		_, cmd := m.Update(msg)
		runCmd(t, m, cmd)
	}
	if bans, _, _ := fb.recorded(); len(bans) != 0 || m.dlg == nil {
		t.Fatalf("a repeated key answered the ban form: %+v", bans)
	}
}

func TestHelpIsAModalAnyKeyCloses(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "?")
	mustContain(t, screen(m), "Keys", "ban selected IP (asks)", "any key closes this")
	press(t, m, "b") // closes the help, bans nothing, opens nothing
	if m.dlg != nil || m.help.ShowAll {
		t.Fatal("the key that closed the help also acted")
	}
	mustNotContain(t, screen(m), "any key closes this")
	if bans, _, _ := fb.recorded(); len(bans) != 0 {
		t.Fatalf("bans %+v", bans)
	}
}

// TestHeaderShowsKillsInProgress: while a new ban's sessions are still
// being reset at the ceiling's pace, the header says so, and not after.
func TestHeaderShowsKillsInProgress(t *testing.T) {
	m, _ := newTestModel(t, demoSnapshot(), 160, 40)
	if s := screen(m); strings.Contains(s, "killing") {
		t.Fatalf("header mentions a kill with none in progress:\n%s", s)
	}
	for n, want := range map[int]string{1: "│ killing sessions of 1 ban │ reaction", 2: "│ killing sessions of 2 bans │ reaction"} {
		snap := demoSnapshot()
		snap.Status.Blocks.Killing = n
		for _, w := range []int{160, 100} { // header of two lines, and of three
			m, _ := newTestModel(t, snap, w, 40)
			mustContain(t, screen(m), want)
		}
	}
}

// TestSourceNetworkView: the fifth view lists source networks, marks the
// ones a ban or the allowlist covers whole, and bans, unbans and drills
// into a network as into an address.
func TestSourceNetworkView(t *testing.T) {
	m, fb := newTestModel(t, demoSnapshot(), 120, 40)
	press(t, m, "t", "t", "t", "t")
	s := screen(m)
	mustContain(t, s, "Top talkers by srcnet", "source network")
	wantOrder(t, m, "203.0.113.0/24", "198.51.100.0/24", "10.0.0.0/24")
	mustContain(t, line(t, s, "2 198.51.100.0/24"), "BAN")
	mustContain(t, line(t, s, "3 10.0.0.0/24"), "ALLOW")
	mustNotContain(t, line(t, s, "1 203.0.113.0/24"), "BAN", "ALLOW")

	press(t, m, "b")
	for p, want := range map[string]string{
		"0.0.0.0/0":       "covers 6 top sources: 203.0.113.7 (850 Mb/s), 198.51.100.23 (230 Mb/s), 10.0.0.5 (95.0 Mb/s), …",
		"192.0.2.128/25":  "covers none of the top sources",
		"198.51.100.0/24": "covers 1 top source: 198.51.100.23 (230 Mb/s)",
	} {
		if got := m.coveredSources(netip.MustParsePrefix(p)); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	// The form says which of the top sources the network holds.
	mustContain(t, screen(m), "Ban 203.0.113.0/24", "Resets every session of 203.0.113.0/24", "covers 1 top source: 203.0.113.7 (850 Mb/s)")
	press(t, m, "enter")
	if bans, _, _ := fb.recorded(); len(bans) != 1 || bans[0].Value != "203.0.113.0/24" {
		t.Fatalf("bans %+v", bans)
	}

	press(t, m, "down", "u") // the network banned by #7
	mustContain(t, screen(m), "Remove ban 198.51.100.0/24?", "entry #7")
	press(t, m, "esc")

	press(t, m, "up", "enter")
	mustContain(t, screen(m), "Flows of 203.0.113.0/24")
	if q := fb.flowQueries; len(q) == 0 || q[len(q)-1].String() != "203.0.113.0/24" {
		t.Fatalf("flows asked for %v", q)
	}
	press(t, m, "esc")
	// A filter by address or prefix keeps the networks it falls in.
	press(t, m, "/")
	typeText(t, m, "203.0.113.7")
	press(t, m, "enter")
	wantOrder(t, m, "203.0.113.0/24")
	press(t, m, "/", "ctrl+u")
	typeText(t, m, "10.0.0.0/8")
	press(t, m, "enter")
	wantOrder(t, m, "10.0.0.0/24")
	press(t, m, "/", "ctrl+u", "enter")

	press(t, m, "t") // round to the sources again
	if got := order(m); got[0] != "203.0.113.7" {
		t.Fatalf("after a full round of views: %v", got)
	}
}

// The row summing the sources beyond the tracking limit is named, and b
// and Enter on it say why there is nothing to ban or open.
func TestOthersRow(t *testing.T) {
	snap := demoSnapshot()
	snap.Traffic.Talkers[flow.BySrc] = append(snap.Traffic.Talkers[flow.BySrc],
		flow.Talker{Other: true, Bits: [3]float64{2e9, 2e9, 2e9}, Pkts: [3]float64{1e6, 1e6, 1e6}, Flows: 90000})
	m, fb := newTestModel(t, snap, 120, 40)
	if got := selected(t, m); got != "(others)" {
		t.Fatalf("selected %q, want the heaviest row, (others)", got)
	}
	l := line(t, screen(m), "(others)")
	mustContain(t, l, "2.00 Gb/s", "90,000")
	mustNotContain(t, l, "BAN", "ALLOW")

	press(t, m, "b")
	mustContain(t, screen(m), "nothing to ban: (others) sums the keys beyond the tracking limit")
	press(t, m, "enter")
	mustContain(t, screen(m), "no flows to open: (others) sums the keys")
	if m.dlg != nil || m.drill {
		t.Fatal("a form or the drill-down opened for the (others) row")
	}
	if bans, _, _ := fb.recorded(); len(bans) != 0 {
		t.Fatalf("bans %+v", bans)
	}
}
