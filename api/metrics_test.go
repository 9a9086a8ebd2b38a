package api

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"canopy/capture"
	"canopy/sensor"
)

var (
	helpLine   = regexp.MustCompile(`^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$`)
	typeLine   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$`)
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? (\S+)$`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"`)
)

func TestMetricsExposition(t *testing.T) {
	e := newEnv(t, false)
	e.srv.cfg.Version = `v1 "quoted" \ back`
	e.sens.setSnapshot(func(s *sensor.Snapshot) {
		s.Status.Capture = capture.Stats{Packets: 1000, Drops: 3, LanePackets: 300, LaneNaps: 17, Sockets: []capture.SocketStats{{Iface: "eth1", Worker: 0, Packets: 600}, {Iface: "eth1", Worker: 1, Packets: 400, Drops: 3}}}
		s.Status.Blocks = sensor.BlockStats{Confirmed: 9, Failed: 1, Observed: 2, ResetsSent: 40, SuccessRate: 0.9,
			ReactionCount: 10, ReactionSum: 5 * time.Millisecond}
		for i := range sensor.PromBuckets {
			s.Status.Blocks.ReactionBuckets[i] = uint64(min(10, i*2))
		}
		s.Status.Blocks.ReactionBuckets[len(sensor.PromBuckets)-1] = 10
		s.Status.Blocks.PickupCount, s.Status.Blocks.PickupSum = 10, 2*time.Millisecond
		s.Traffic.Totals.Evictions, s.Traffic.Totals.L2Full = 7, 5
		s.Status.Blocks.Killing = 2
	})
	a := e.do("GET", "/metrics", roSecret, nil)
	if a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("metrics: %d %q", a.status, a.header.Get("Content-Type"))
	}
	types := map[string]string{}
	helps := map[string]bool{}
	values := map[string]float64{}
	var lastLe float64
	var lastBucket float64 = -1
	for i, line := range strings.Split(strings.TrimSuffix(string(a.body), "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP"):
			m := helpLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("line %d: bad HELP: %q", i+1, line)
			}
			helps[m[1]] = true
		case strings.HasPrefix(line, "# TYPE"):
			m := typeLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("line %d: bad TYPE: %q", i+1, line)
			}
			if _, dup := types[m[1]]; dup {
				t.Errorf("line %d: TYPE of %s twice", i+1, m[1])
			}
			if !helps[m[1]] {
				t.Errorf("line %d: TYPE of %s without HELP before it", i+1, m[1])
			}
			types[m[1]] = m[2]
			if m[2] == "counter" && !strings.HasSuffix(m[1], "_total") {
				t.Errorf("counter %s does not end in _total", m[1])
			}
			if m[2] != "counter" && strings.HasSuffix(m[1], "_total") {
				t.Errorf("%s %s ends in _total", m[2], m[1])
			}
		default:
			m := sampleLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("line %d does not match the exposition format: %q", i+1, line)
			}
			name, val := m[1], m[len(m)-1]
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				t.Fatalf("line %d: value %q: %v", i+1, val, err)
			}
			family := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if f, ok := strings.CutSuffix(name, suf); ok && types[f] == "histogram" {
					family = f
				}
			}
			if types[family] == "" {
				t.Errorf("line %d: sample of %s before its TYPE", i+1, name)
			}
			for _, lp := range labelPair.FindAllStringSubmatch(m[2], -1) {
				if l := lp[1]; l == "ip" || l == "src" || l == "dst" || l == "addr" {
					t.Errorf("line %d: label %s carries addresses", i+1, l)
				}
				if lp[1] == "le" && name == "canopy_reaction_seconds_bucket" {
					le, _ := strconv.ParseFloat(strings.Replace(lp[2], "+Inf", "Inf", 1), 64)
					if le <= lastLe && lastBucket >= 0 {
						t.Errorf("line %d: le not ascending", i+1)
					}
					if v < lastBucket {
						t.Errorf("line %d: bucket counts not cumulative", i+1)
					}
					lastLe, lastBucket = le, v
				}
			}
			values[line[:len(line)-len(val)-1]] = v
		}
	}
	want := map[string]float64{
		"canopy_packets_total":                                            1000,
		"canopy_drops_total":                                              3,
		`canopy_blocks_total{outcome="confirmed"}`:                        9,
		`canopy_blocks_total{outcome="failed"}`:                           1,
		`canopy_blocks_total{outcome="observed"}`:                         2,
		"canopy_resets_sent_total":                                        40,
		`canopy_mode{mode="enforce"}`:                                     1,
		`canopy_mode{mode="observe"}`:                                     0,
		`canopy_reaction_seconds_bucket{le="+Inf"}`:                       10,
		"canopy_reaction_seconds_count":                                   10,
		"canopy_reaction_seconds_sum":                                     0.005,
		"canopy_pickup_seconds_count":                                     10,
		"canopy_pickup_seconds_sum":                                       0.002,
		"canopy_flow_evictions_total":                                     7,
		"canopy_flow_l2_full_total":                                       5,
		"canopy_proactive_kills":                                          2,
		"canopy_lane_packets_total":                                       300,
		"canopy_lane_naps_total":                                          17,
		`canopy_build_info{version="v1 \"quoted\" \\ back"}`:              1,
		`canopy_socket_drops_total{iface="eth1",worker="1",lane="false"}`: 3,
	}
	for k, v := range want {
		if got, ok := values[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	for _, f := range []string{"canopy_decode_errors_total", "canopy_icmp_sent_total", "canopy_resets_suppressed_total", "canopy_bans", "canopy_flows"} {
		if types[f] == "" {
			t.Errorf("family %s missing", f)
		}
	}
	if types["canopy_reaction_seconds"] != "histogram" {
		t.Errorf("canopy_reaction_seconds is %q", types["canopy_reaction_seconds"])
	}
}
