package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

func (e *env) cli(token string, args ...string) (code int, stdout, stderr string) {
	var o, er bytes.Buffer
	code = RunCLI(context.Background(), args, &o, &er, e.ts.URL, token)
	return code, o.String(), er.String()
}

func TestCLI(t *testing.T) {
	e := newEnv(t, false)

	code, out, errs := e.cli(rwSecret, "ban", "203.0.113.7", "--for", "1h", "--reason", "ssh brute force")
	if code != ExitOK || !strings.Contains(out, "banned 203.0.113.7/32 (id 1), expires in 59m") {
		t.Fatalf("ban: %d %q %q", code, out, errs)
	}
	code, out, _ = e.cli(rwSecret, "ban", "--for", "2h", "203.0.113.7")
	if code != ExitOK || !strings.Contains(out, "extended ban of 203.0.113.7/32 (id 1), expires in 1h59m") {
		t.Fatalf("ban again: %d %q", code, out)
	}
	if e.rules.entries[1].Origin != "cli" {
		t.Errorf("CLI bans have origin %q, want cli", e.rules.entries[1].Origin)
	}
	code, out, _ = e.cli(rwSecret, "ban", "198.51.100.0/24", "--observe", "--json")
	var ent struct {
		ID     uint64
		Action string
		Value  string
	}
	if code != ExitOK || json.Unmarshal([]byte(out), &ent) != nil || ent.Action != "observe" || ent.Value != "198.51.100.0/24" {
		t.Fatalf("ban --json: %d %q", code, out)
	}

	code, out, _ = e.cli(roSecret, "bans")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != ExitOK || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID  VALUE") {
		t.Fatalf("bans: %d\n%s", code, out)
	}
	for _, col := range []string{"ID", "VALUE", "ACTION", "ORIGIN", "EXPIRES", "REASON", "HITS"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header lacks %s: %q", col, lines[0])
		}
	}
	if f := strings.Fields(lines[1]); len(f) < 7 || f[1] != "203.0.113.7" || f[3] != "cli" || f[4] != "in" || f[5] != "1h59m" {
		t.Errorf("row 1: %q", lines[1])
	}
	if !strings.Contains(lines[2], "never") || !strings.Contains(lines[2], "observe") {
		t.Errorf("row 2: %q", lines[2])
	}
	// Columns are aligned: VALUE starts at the same offset in every line.
	col := strings.Index(lines[0], "VALUE")
	for _, l := range lines[1:] {
		if l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("misaligned row %q", l)
		}
	}
	code, out, _ = e.cli(roSecret, "bans", "--contains", "198.51.100.9", "--json")
	var l EntryList
	if code != ExitOK || json.Unmarshal([]byte(out), &l) != nil || l.Total != 1 {
		t.Fatalf("bans --contains --json: %d %q", code, out)
	}
	code, out, _ = e.cli(roSecret, "bans", "--kind", "allow")
	if code != ExitOK || !strings.Contains(out, "no allow entries") {
		t.Errorf("empty allowlist: %d %q", code, out)
	}

	code, out, errs = e.cli(rwSecret, "unban", "203.0.113.7", "--reason", "false positive")
	if code != ExitOK || !strings.Contains(out, "lifted ban of 203.0.113.7/32 (id 1)") {
		t.Fatalf("unban by value: %d %q %q", code, out, errs)
	}
	code, _, errs = e.cli(rwSecret, "unban", "203.0.113.7")
	if code != ExitError || !strings.Contains(errs, "no such entry") || !strings.Contains(errs, "HTTP 404") {
		t.Errorf("unban again: %d %q", code, errs)
	}
	if code, out, _ = e.cli(rwSecret, "unban", "2", "--json"); code != ExitOK || !strings.Contains(out, `"id": 2`) {
		t.Errorf("unban by id: %d %q", code, out)
	}

	// API errors: exit 1 with the API's message on stderr.
	code, out, errs = e.cli(rwSecret, "ban", "10.0.0.0/4")
	if code != ExitError || out != "" || !strings.Contains(errs, "prefix wider than the safety guard") ||
		!strings.Contains(errs, "to override: canopy ban 10.0.0.0/4 --force (audited)") {
		t.Errorf("too wide: %d %q %q", code, out, errs)
	}
	code, _, errs = e.cli(roSecret, "ban", "203.0.113.8")
	if code != ExitError || !strings.Contains(errs, "read-only token") {
		t.Errorf("read-only ban: %d %q", code, errs)
	}
	code, _, errs = e.cli("", "status")
	if code != ExitError || !strings.Contains(errs, "missing token") {
		t.Errorf("no token: %d %q", code, errs)
	}

	code, out, _ = e.cli(roSecret, "status")
	if code != ExitOK || !strings.Contains(out, "mode      enforce") || !strings.Contains(out, "ready, up 1h") {
		t.Errorf("status: %d\n%s", code, out)
	}
	code, out, _ = e.cli(roSecret, "status", "--json")
	var st StatusView
	if code != ExitOK || json.Unmarshal([]byte(out), &st) != nil || st.Mode != "enforce" {
		t.Errorf("status --json: %d %q", code, out)
	}

	// Usage errors: exit 2.
	for _, args := range [][]string{
		{}, {"frobnicate"}, {"ban"}, {"ban", "1.2.3.4", "5.6.7.8"}, {"ban", "1.2.3.4", "--for", "soon"},
		{"ban", "1.2.3.4", "--bogus"}, {"unban"}, {"bans", "extra"}, {"bans", "--kind", "rule"},
		{"bans", "--contains", "x"}, {"status", "now"},
	} {
		if code, _, errs := e.cli(rwSecret, args...); code != ExitUsage || errs == "" {
			t.Errorf("%q: exit %d, stderr %q; want %d with usage", args, code, errs, ExitUsage)
		}
	}
	if code, out, _ := e.cli("", "help"); code != ExitOK || !strings.Contains(out, "usage:") {
		t.Errorf("help: %d", code)
	}
}

func TestCLINoDaemon(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var o, er bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code := RunCLI(ctx, []string{"status"}, &o, &er, addr, "")
	if code != ExitError || !strings.Contains(er.String(), "no canopy daemon answers at "+addr) || !strings.Contains(er.String(), "canopy --daemon") {
		t.Errorf("no daemon: %d %q", code, er.String())
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		59*time.Minute + 59*time.Second: "59m",
		2*time.Hour + 5*time.Minute:     "2h5m",
		2 * time.Hour:                   "2h",
		3*24*time.Hour + 4*time.Hour:    "3d4h",
		7 * 24 * time.Hour:              "7d",
		42 * time.Second:                "42s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestStatusReaction checks the reaction line of `canopy status`: the
// dashboard's rounding of the histogram's bucket bounds, and words rather
// than "0s" before anything was measured.
func TestStatusReaction(t *testing.T) {
	var v StatusView
	var b strings.Builder
	writeStatus(&b, v)
	if !strings.Contains(b.String(), "reaction  none measured yet\n") {
		t.Errorf("no reactions yet:\n%s", b.String())
	}
	v.Blocks.ReactionCount = 3
	v.Blocks.ReactionP50, v.Blocks.ReactionP99 = 327679*time.Nanosecond, 5242879*time.Nanosecond
	v.Blocks.PickupP50, v.Blocks.PickupP99 = 294911*time.Nanosecond, 4194303*time.Nanosecond
	b.Reset()
	writeStatus(&b, v)
	if want := "reaction  p50 327µs, p99 5.2ms (of which pickup, trigger to worker: p50 294µs, p99 4.2ms)\n"; !strings.Contains(b.String(), want) {
		t.Errorf("status does not contain %q:\n%s", want, b.String())
	}
	if strings.Contains(b.String(), "lane") {
		t.Errorf("a lane line with no lane frames:\n%s", b.String())
	}
	if strings.Contains(b.String(), "killing") {
		t.Errorf("a killing line with no kill in progress:\n%s", b.String())
	}
	v.Blocks.Killing = 1
	v.Capture.LanePackets, v.Capture.LaneNaps = 120000, 31
	b.Reset()
	writeStatus(&b, v)
	for _, want := range []string{
		"killing   the live sessions of 1 new ban(s), at the injection ceiling's pace\n",
		"lane      120000 frames, 31 naps (",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status does not contain %q:\n%s", want, b.String())
		}
	}
}
