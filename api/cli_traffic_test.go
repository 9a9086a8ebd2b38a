package api

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"canopy/flow"
	"canopy/sensor"
)

// trafficEnv is a daemon whose sensor has seen two sources, a port, a
// network, the sources beyond the tracking limit, and two flows of
// 10.0.0.1.
func trafficEnv(t *testing.T) *env {
	e := newEnv(t, false)
	a1, b1 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	srv := netip.MustParseAddr("192.0.2.80")
	e.sens.setSnapshot(func(s *sensor.Snapshot) {
		s.Traffic.At = time.Now()
		s.Traffic.Talkers[flow.BySrc] = []flow.Talker{
			{Src: a1, Bits: [flow.NumWindows]float64{100, 85e6, 50}, Pkts: [flow.NumWindows]float64{1, 45600, 1}, Flows: 7},
			{Src: b1, Bits: [flow.NumWindows]float64{500, 1500, 60}, Pkts: [flow.NumWindows]float64{1, 2, 1}, Flows: 1},
			{Other: true, Bits: [flow.NumWindows]float64{1, 999, 3}, Flows: 40},
		}
		s.Traffic.Talkers[flow.ByPair] = []flow.Talker{{Src: a1, Dst: srv, Bits: [flow.NumWindows]float64{1, 2, 3}, Flows: 7}}
		s.Traffic.Talkers[flow.ByPort] = []flow.Talker{{Port: 443, Proto: 6, Bits: [flow.NumWindows]float64{1, 2, 3}, Flows: 7}}
		s.Traffic.Talkers[flow.BySrcNet] = []flow.Talker{{Net: netip.MustParsePrefix("10.0.0.0/24"), Bits: [flow.NumWindows]float64{1, 2, 3}, Flows: 8}}
	})
	now := time.Now()
	e.sens.flows = []flow.Info{
		{Proto: 6, A: a1, APort: 5555, B: srv, BPort: 443, State: "established", PktsAB: 3, BytesAB: 180, PktsBA: 2, BytesBA: 120,
			FirstSeen: now.Add(-3 * time.Minute), LastSeen: now.Add(-42 * time.Second)},
		{Proto: 17, A: a1, APort: 53000, B: srv, BPort: 53, State: "udp", PktsAB: 900, BytesAB: 1_220_000_000, PktsBA: 1, BytesBA: 60,
			FirstSeen: now.Add(-time.Minute), LastSeen: now, Blocked: true},
	}
	return e
}

func TestCLITalkers(t *testing.T) {
	e := trafficEnv(t)

	code, out, errs := e.cli(roSecret, "talkers")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != ExitOK || len(lines) != 5 {
		t.Fatalf("talkers: %d %q %q", code, out, errs)
	}
	if !strings.HasPrefix(lines[0], "top talkers by src, 10s average, at ") {
		t.Errorf("heading %q", lines[0])
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "# SOURCE BITS/S PKTS/S FLOWS" {
		t.Errorf("header %q", lines[1])
	}
	// The 10 s window, in the dashboard's units, largest first.
	if f := strings.Fields(lines[2]); strings.Join(f, " ") != "1 10.0.0.1 85.0 Mb/s 45.6k 7" {
		t.Errorf("row 1 %q", lines[2])
	}
	if f := strings.Fields(lines[3]); strings.Join(f, " ") != "2 10.0.0.2 1.50 kb/s 2 1" {
		t.Errorf("row 2 %q", lines[3])
	}
	if !strings.Contains(lines[4], "(others, beyond the tracking limit)") || !strings.Contains(lines[4], "999 b/s") {
		t.Errorf("the other row %q", lines[4])
	}
	col := strings.Index(lines[1], "BITS/S")
	for _, l := range lines[2:] {
		if l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("misaligned row %q", l)
		}
	}

	// The 2 s window ranks the other source first; -n keeps the top row.
	_, out, _ = e.cli(roSecret, "talkers", "--window", "2s", "-n", "1")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[2], "10.0.0.2") {
		t.Errorf("talkers --window 2s -n 1:\n%s", out)
	}
	for by, want := range map[string]string{
		"pair":   "10.0.0.1 → 192.0.2.80",
		"port":   "tcp/443",
		"srcnet": "10.0.0.0/24",
	} {
		code, out, _ := e.cli(roSecret, "talkers", "--by", by)
		if code != ExitOK || !strings.Contains(out, "by "+by) || !strings.Contains(out, want) {
			t.Errorf("talkers --by %s: %d\n%s", by, code, out)
		}
	}

	code, out, _ = e.cli(roSecret, "talkers", "--json")
	var tk Talkers
	if code != ExitOK || json.Unmarshal([]byte(out), &tk) != nil || len(tk.Items) != 3 || !tk.Items[2].Other || tk.Items[0].Flows != 7 {
		t.Errorf("talkers --json: %d %q", code, out)
	}

	e.sens.setSnapshot(func(s *sensor.Snapshot) { s.Traffic.Talkers[flow.ByDst] = nil })
	if _, out, _ := e.cli(roSecret, "talkers", "--by", "dst"); !strings.Contains(out, "no traffic seen") {
		t.Errorf("talkers of an empty view: %q", out)
	}

	// A bad command line is refused before the daemon is asked, naming what is wrong.
	for _, c := range []struct{ args, want string }{
		{"--by source", `--by "source": want src, dst, pair, port or srcnet`},
		{"--window 5s", `--window "5s": want 2s, 10s or 40s`},
		{"-n 0", "-n 0: want 1 to 1000 rows"},
		{"-n 1001", "-n 1001: want 1 to 1000 rows"},
		{"10.0.0.1", "talkers takes no arguments"},
	} {
		code, out, errs := e.cli(roSecret, append([]string{"talkers"}, strings.Fields(c.args)...)...)
		if code != ExitUsage || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("talkers %s: %d %q %q", c.args, code, out, errs)
		}
	}
	if code, _, errs := e.cli("", "talkers"); code != ExitError || !strings.Contains(errs, "needs a token") {
		t.Errorf("talkers without a token: %d %q", code, errs)
	}
}

func TestCLIFlows(t *testing.T) {
	e := trafficEnv(t)

	code, out, errs := e.cli(roSecret, "flows", "10.0.0.1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != ExitOK || len(lines) != 4 {
		t.Fatalf("flows: %d %q %q", code, out, errs)
	}
	if lines[0] != "2 live flows of 10.0.0.1, the heaviest first" {
		t.Errorf("heading %q", lines[0])
	}
	if f := strings.Fields(lines[2]); strings.Join(f, " ") != "udp 10.0.0.1:53000 → 192.0.2.80:53 udp 900 1 1.22 GB 60 B 1m 0s yes" {
		t.Errorf("heaviest flow %q", lines[2])
	}
	if f := strings.Fields(lines[3]); strings.Join(f, " ") != "tcp 10.0.0.1:5555 → 192.0.2.80:443 established 3 2 180 B 120 B 3m 42s -" {
		t.Errorf("second flow %q", lines[3])
	}

	if _, out, _ := e.cli(roSecret, "flows", "192.0.2.0/24", "--max", "1"); !strings.HasPrefix(out, "the first 1 live flows of 192.0.2.0/24 (--max for more)") {
		t.Errorf("flows --max 1: %q", out)
	}
	if _, out, _ := e.cli(roSecret, "flows", "198.51.100.7"); strings.TrimSpace(out) != "no live flows of 198.51.100.7" {
		t.Errorf("flows of a quiet address: %q", out)
	}
	code, out, _ = e.cli(roSecret, "flows", "--json", "10.0.0.0/8")
	var fl FlowList
	if code != ExitOK || json.Unmarshal([]byte(out), &fl) != nil || len(fl.Items) != 2 {
		t.Errorf("flows --json: %d %q", code, out)
	}
	if _, out, _ = e.cli(roSecret, "flows", "--json", "198.51.100.7"); !strings.Contains(out, `"items": []`) {
		t.Errorf("flows --json of a quiet address is not an empty list: %q", out)
	}

	for _, c := range []struct{ args, want string }{
		{"", "flows takes exactly one IP or CIDR, got 0"},
		{"10.0.0.1 10.0.0.2", "got 2"},
		{"10.0.0", "is neither an IP address nor a CIDR prefix"},
		{"10.0.0.0/33", "is not a CIDR prefix"},
		{"10.0.0.1 --max 0", "--max 0: want 1 to 10000 flows"},
	} {
		code, out, errs := e.cli(roSecret, append([]string{"flows"}, strings.Fields(c.args)...)...)
		if code != ExitUsage || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("flows %s: %d %q %q", c.args, code, out, errs)
		}
	}
}
