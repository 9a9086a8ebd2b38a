package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"canopy/capture"
)

func TestExampleIsTheDefault(t *testing.T) {
	b, err := os.ReadFile("../config.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b, "config.toml.example")
	if err != nil {
		t.Fatalf("the shipped example does not load: %v", err)
	}
	if got, want := c.TOML(), Default().TOML(); got != want {
		t.Errorf("config.toml.example differs from Default():\n--- example\n%s\n--- default\n%s", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"typo'd key", "[capture]\ninterfacs = [\"eth1\"]\n", "unknown key capture.interfacs"},
		{"unknown table", "[captur]\nworkers = 2\n", "unknown key captur"},
		{"type error names line", "mode = \"enforce\"\n[capture]\nworkers = \"two\"\n", "line 3"},
		{"bad duration", "[capture]\nblock_timeout = \"fast\"\n", "line 2"},
		{"syntax", "mode = \n", "line 1"},
		{"bad mode", "mode = \"block\"\n", `mode = "block"`},
		{"block size not power of two", "[capture]\nblock_size = 5000\n", "capture.block_size"},
		{"block timeout too small", "[capture]\nblock_timeout = \"100us\"\n", "capture.block_timeout"},
		{"worker nice", "[capture]\nworker_nice = -30\n", "capture.worker_nice = -30"},
		{"lane nap too long", "[capture]\nlane_nap = \"2ms\"\n", "capture.lane_nap = 2ms: want between 0s (never nap) and 1ms"},
		{"lane nap negative", "[capture]\nlane_nap = \"-1us\"\n", "capture.lane_nap = -1µs"},
		{"worker rt priority", "[capture]\nworker_rt_priority = 100\n", "capture.worker_rt_priority = 100"},
		{"next hop", "[inject]\nnext_hop = \"router\"\n", "inject.next_hop"},
		{"allow value", "[[rules.allow]]\nvalue = \"10.0.0.0/33\"\n", "rules.allow[0].value"},
		{"ban action", "[[rules.ban]]\nvalue = \"192.0.2.1\"\naction = \"drop\"\n", "rules.ban[0].action"},
		{"home nets", "[rules]\nhome_nets = [\"10.0.0.0\"]\n", "rules.home_nets[0]"},
		{"api listen", "[api]\nlisten = \"7850\"\n", "api.listen"},
		{"log level", "[log]\nlevel = \"verbose\"\n", "log.level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), "test.toml")
			if err == nil {
				t.Fatalf("Parse accepted %q", tc.in)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	c, err := Parse([]byte(`
mode = "observe"
[capture]
interfaces = ["tap0", "tap1"]
block_timeout = "2ms"
[inject]
next_hop = "02:00:00:00:00:01"
[[rules.allow]]
value = "10.0.0.0/8"
comment = "core"
[[rules.ban]]
value = "2001:db8::1"
ttl = "4h"
`), "t")
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "observe" || len(c.Capture.Interfaces) != 2 || c.Capture.BlockTimeout != 2*time.Millisecond {
		t.Errorf("decoded %+v", c)
	}
	if c.Rules.Allow[0].Comment != "core" || c.Rules.Ban[0].TTL != 4*time.Hour {
		t.Errorf("rules decoded %+v", c.Rules)
	}
	if c.Flow.MaxFlows != Default().Flow.MaxFlows {
		t.Errorf("unset keys must keep defaults, got max_flows %d", c.Flow.MaxFlows)
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":        "192.0.2.7/32",
		"192.0.2.7/24":     "192.0.2.0/24",
		"2001:db8::1":      "2001:db8::1/128",
		"::ffff:192.0.2.7": "192.0.2.7/32",
	} {
		p, err := ParsePrefix(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "host", "1.2.3.4/40", "1.2.3"} {
		if _, err := ParsePrefix(in); err == nil {
			t.Errorf("ParsePrefix(%q) accepted garbage", in)
		}
	}
}

// The config's defaults that restate a capture default must not drift
// from it.
func TestDefaultsMatchCapture(t *testing.T) {
	if got := Default().Capture.LaneNap; got != capture.DefaultLaneNap {
		t.Errorf("capture.lane_nap defaults to %v, capture.DefaultLaneNap is %v", got, capture.DefaultLaneNap)
	}
	if got := Default().Capture.BlockTimeout; got != capture.DefaultBlockTimeout {
		t.Errorf("capture.block_timeout defaults to %v, capture.DefaultBlockTimeout is %v", got, capture.DefaultBlockTimeout)
	}
}
