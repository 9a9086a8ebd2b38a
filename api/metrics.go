package api

import (
	"bytes"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"canopy/capture"
	"canopy/sensor"
)

// promWriter writes the Prometheus text exposition format (version 0.0.4)
// by hand: HELP and TYPE once per family, then its samples.
type promWriter struct{ b bytes.Buffer }

func (p *promWriter) family(name, typ, help string) {
	p.b.WriteString("# HELP ")
	p.b.WriteString(name)
	p.b.WriteByte(' ')
	p.b.WriteString(escapeHelp(help))
	p.b.WriteString("\n# TYPE ")
	p.b.WriteString(name)
	p.b.WriteByte(' ')
	p.b.WriteString(typ)
	p.b.WriteByte('\n')
}

// sample writes one line; labels are name, value pairs.
func (p *promWriter) sample(name string, v float64, labels ...string) {
	p.b.WriteString(name)
	if len(labels) > 0 {
		p.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				p.b.WriteByte(',')
			}
			p.b.WriteString(labels[i])
			p.b.WriteString(`="`)
			p.b.WriteString(escapeLabel(labels[i+1]))
			p.b.WriteByte('"')
		}
		p.b.WriteByte('}')
	}
	p.b.WriteByte(' ')
	p.b.WriteString(formatFloat(v))
	p.b.WriteByte('\n')
}

func (p *promWriter) one(name, typ, help string, v float64, labels ...string) {
	p.family(name, typ, help)
	p.sample(name, v, labels...)
}

// histogram writes one of the sensor's latency histograms: cumulative
// counts at or below each of sensor.PromBuckets, their count and sum.
func (p *promWriter) histogram(name, help string, buckets *[len(sensor.PromBuckets)]uint64, count uint64, sum time.Duration) {
	p.family(name, "histogram", help)
	for i, b := range sensor.PromBuckets {
		p.sample(name+"_bucket", float64(buckets[i]), "le", formatFloat(b.Seconds()))
	}
	p.sample(name+"_bucket", float64(count), "le", "+Inf")
	p.sample(name+"_sum", sum.Seconds())
	p.sample(name+"_count", float64(count))
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
func escapeHelp(s string) string  { return helpEscaper.Replace(s) }

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metrics answers GET /metrics. Counters end in _total, times are seconds,
// and no label ever carries an IP address (unbounded cardinality).
func (s *Server) metrics(w http.ResponseWriter, r *http.Request, c caller) error {
	snap := s.cfg.Sensor.Snapshot()
	st := snap.Status
	bs := st.Blocks
	var p promWriter

	p.one("canopy_build_info", "gauge", "Build information of the running canopy; always 1.", 1, "version", s.cfg.Version)
	if !st.Started.IsZero() {
		p.one("canopy_start_time_seconds", "gauge", "When the sensor started, in seconds since the Unix epoch.", float64(st.Started.UnixNano())/1e9)
	}
	p.one("canopy_ready", "gauge", "1 when capture, injection and the rule set are up (what /readyz reports).", boolFloat(s.cfg.Sensor.Ready()))
	p.family("canopy_mode", "gauge", "Enforcement mode: 1 for the current mode, 0 for the other.")
	for _, m := range []sensor.Mode{sensor.ModeEnforce, sensor.ModeObserve} {
		p.sample("canopy_mode", boolFloat(st.Mode == m), "mode", string(m))
	}

	p.one("canopy_packets_total", "counter", "Frames received by the capture sockets, including those the kernel dropped.", float64(st.Capture.Packets))
	p.one("canopy_capture_bytes_total", "counter", "Bytes of the frames handed to the workers.", float64(st.Capture.Bytes))
	p.one("canopy_drops_total", "counter", "Frames the kernel dropped because a capture ring was full.", float64(st.Capture.Drops))
	p.one("canopy_capture_queue_freezes_total", "counter", "TPACKET_V3 queue freezes.", float64(st.Capture.QueueFreezes))
	p.one("canopy_lane_packets_total", "counter", "Frames delivered through the low-latency lane.", float64(st.Capture.LanePackets))
	p.one("canopy_lane_naps_total", "counter", "Times a capture worker napped (capture.lane_nap) instead of waking for each lane frame, lane frames coming at a flood's rate.", float64(st.Capture.LaneNaps))
	if len(st.Capture.Sockets) > 0 {
		p.family("canopy_socket_packets_total", "counter", "Frames received per capture socket.")
		for _, sk := range st.Capture.Sockets {
			p.sample("canopy_socket_packets_total", float64(sk.Packets), socketLabels(sk)...)
		}
		p.family("canopy_socket_drops_total", "counter", "Frames dropped per capture socket because its ring was full.")
		for _, sk := range st.Capture.Sockets {
			p.sample("canopy_socket_drops_total", float64(sk.Drops), socketLabels(sk)...)
		}
	}
	p.one("canopy_decode_errors_total", "counter", "Frames that could not be decoded.", float64(st.DecodeErrors))
	p.one("canopy_flows", "gauge", "Flows in the flow tables.", float64(st.Flows))
	p.one("canopy_flow_evictions_total", "counter", "Flows dropped to make room because a flow table was full.", float64(snap.Traffic.Totals.Evictions))
	p.one("canopy_flow_l2_full_total", "counter", "Frames whose MACs and VLAN stack found no room in a flow table's L2 dictionary (resets for them use the other direction's addressing).", float64(snap.Traffic.Totals.L2Full))
	p.one("canopy_bans", "gauge", "Bans and ACL entries in force.", float64(st.Bans))

	p.family("canopy_blocks_total", "counter", "Blocked flows by outcome: confirmed (went quiet), failed (payload kept flowing), observed (observe mode, nothing sent).")
	p.sample("canopy_blocks_total", float64(bs.Confirmed), "outcome", "confirmed")
	p.sample("canopy_blocks_total", float64(bs.Failed), "outcome", "failed")
	p.sample("canopy_blocks_total", float64(bs.Observed), "outcome", "observed")
	p.one("canopy_block_attempts_total", "counter", "Flows canopy injected resets into.", float64(bs.Attempted))
	p.one("canopy_block_success_ratio", "gauge", "confirmed / (confirmed + failed) since start; 1 when none decided yet.", bs.SuccessRate)
	p.one("canopy_resets_sent_total", "counter", "TCP resets injected.", float64(bs.ResetsSent))
	p.one("canopy_icmp_sent_total", "counter", "ICMP unreachable messages injected for UDP flows.", float64(bs.ICMPSent))
	p.one("canopy_resets_suppressed_total", "counter", "Resets held back by the per-flow budget or the global rate ceiling.", float64(bs.Suppressed))
	p.one("canopy_send_errors_total", "counter", "Injections the kernel refused.", float64(bs.SendErrors))
	p.one("canopy_proactive_kills", "gauge", "New bans whose live sessions are still being reset from the flow table, at the injection ceiling's pace.", float64(bs.Killing))

	p.histogram("canopy_reaction_seconds", "Time from the trigger packet's kernel timestamp to the first reset handed to the kernel.",
		&bs.ReactionBuckets, bs.ReactionCount, bs.ReactionSum)
	p.histogram("canopy_pickup_seconds", "The first part of each reaction: trigger's kernel timestamp to the worker starting on it (capture wakeup and scheduling, not canopy's own work).",
		&bs.PickupBuckets, bs.PickupCount, bs.PickupSum)

	p.family("canopy_api_requests_total", "counter", "API requests answered, by status class.")
	for i, class := range []string{"1xx", "2xx", "3xx", "4xx", "5xx"} {
		p.sample("canopy_api_requests_total", float64(s.stats.requests[i+1].Load()), "class", class)
	}
	p.one("canopy_api_panics_total", "counter", "API handlers that panicked (a bug; the daemon log has the stack).", float64(s.stats.panics.Load()))
	p.one("canopy_api_event_streams", "gauge", "Clients following /v1/events.", float64(s.stats.sseClients.Load()))
	p.one("canopy_api_event_streams_cut_total", "counter", "Event stream clients disconnected for reading too slowly.", float64(s.stats.sseSlowCuts.Load()))

	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(p.b.Len()))
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(p.b.Bytes())
	return err
}

func socketLabels(sk capture.SocketStats) []string {
	return []string{"iface", sk.Iface, "worker", strconv.Itoa(sk.Worker), "lane", strconv.FormatBool(sk.Lane)}
}
