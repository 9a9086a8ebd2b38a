package api

import (
	"cmp"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// StatusView is the answer of GET /v1/status: the sensor's status plus what
// the API adds.
type StatusView struct {
	sensor.Status
	Uptime float64 `json:"uptime_seconds"`
	Ready  bool    `json:"ready"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := checkQuery(r.URL.Query()); err != nil {
		return err
	}
	st := s.cfg.Sensor.Snapshot().Status
	v := StatusView{Status: st, Ready: s.cfg.Sensor.Ready()}
	if !st.Started.IsZero() {
		v.Uptime = time.Since(st.Started).Seconds()
	}
	s.writeJSON(w, http.StatusOK, v)
	return nil
}

// snapshot answers GET /v1/snapshot with the whole sensor snapshot, for the
// dashboard's attach mode. It is gzip-compressed when the client accepts it
// (Go's client does so transparently), since the rules list can be long.
//
// ?rules=N keeps at most N entries of the rules list (0: none), for
// dashboards that page through bans separately: with a million bans the
// full list is over 100 MB.
func (s *Server) snapshot(w http.ResponseWriter, r *http.Request, c caller) error {
	q := r.URL.Query()
	if err := checkQuery(q, "rules"); err != nil {
		return err
	}
	snap := s.cfg.Sensor.Snapshot()
	if q.Has("rules") {
		n, err := intParam(q, "rules", 0, 0)
		if err != nil {
			return err
		}
		snap.Rules = snap.Rules[:min(n, len(snap.Rules))]
	}
	b, err := json.Marshal(snap)
	if err != nil {
		s.log.Error("api: encoding the snapshot failed", "err", err)
		return errorf(http.StatusInternalServerError, "internal error", "the snapshot could not be encoded; the daemon logged the cause")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Add("Vary", "Accept-Encoding")
	if len(b) > 8<<10 && acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(http.StatusOK)
		zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
		zw.Write(b)
		return zw.Close()
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(b)
	return err
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// TalkerView is one row of GET /v1/talkers, for the requested window.
type TalkerView struct {
	Net              netip.Prefix `json:"net,omitzero"` // by=srcnet: the source network (a /24 or a /64)
	Src              netip.Addr   `json:"src,omitzero"`
	Dst              netip.Addr   `json:"dst,omitzero"`
	Port             uint16       `json:"port,omitempty"`
	Proto            string       `json:"proto,omitempty"`
	BitsPerSecond    float64      `json:"bits_per_second"`
	PacketsPerSecond float64      `json:"packets_per_second"`
	Flows            int          `json:"flows"`
	Other            bool         `json:"other,omitempty"` // the row sums the keys beyond the tracking limit and names none
}

// Talkers is the answer of GET /v1/talkers.
type Talkers struct {
	At     time.Time    `json:"at"`     // when the snapshot was taken
	By     string       `json:"by"`     // src, dst, pair, port or srcnet
	Window string       `json:"window"` // 2s, 10s or 40s: the averaging window of the rates
	Items  []TalkerView `json:"items"`  // largest bits/s first
}

func (s *Server) talkers(w http.ResponseWriter, r *http.Request, c caller) error {
	q := r.URL.Query()
	if err := checkQuery(q, "by", "window", "n"); err != nil {
		return err
	}
	kind, ok := flow.BySrc, true
	if v := q.Get("by"); v != "" {
		kind, ok = parseTalkerKind(v)
		if !ok {
			return errorf(http.StatusBadRequest, "invalid by", "%q: want src, dst, pair, port or srcnet", v)
		}
	}
	win := flow.Win10s
	if v := q.Get("window"); v != "" {
		if win, ok = parseWindow(v); !ok {
			return errorf(http.StatusBadRequest, "invalid window", "%q: want 2s, 10s or 40s", v)
		}
	}
	n, err := intParam(q, "n", 20, maxTalkers)
	if err != nil {
		return err
	}
	traffic := s.cfg.Sensor.Snapshot().Traffic
	rows := slices.Clone(traffic.Talkers[kind])
	slices.SortStableFunc(rows, func(a, b flow.Talker) int { return cmp.Compare(b.Bits[win], a.Bits[win]) })
	out := Talkers{At: traffic.At, By: kind.String(), Window: win.String(), Items: make([]TalkerView, 0, min(n, len(rows)))}
	for _, t := range rows[:min(n, len(rows))] {
		v := TalkerView{Net: t.Net, Src: t.Src, Dst: t.Dst, BitsPerSecond: t.Bits[win], PacketsPerSecond: t.Pkts[win], Flows: t.Flows, Other: t.Other}
		if kind == flow.ByPort {
			v.Port, v.Proto = t.Port, protoName(t.Proto)
		}
		out.Items = append(out.Items, v)
	}
	s.writeJSON(w, http.StatusOK, out)
	return nil
}

func parseTalkerKind(s string) (flow.TalkerKind, bool) {
	for k := flow.TalkerKind(0); k < flow.NumViews; k++ {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

func parseWindow(s string) (flow.Window, bool) {
	for w := flow.Window(0); w < flow.NumWindows; w++ {
		if w.String() == s {
			return w, true
		}
	}
	return 0, false
}

func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

// FlowList is the answer of GET /v1/flows.
type FlowList struct {
	Items []flow.Info `json:"items"`
}

func (s *Server) flows(w http.ResponseWriter, r *http.Request, c caller) error {
	q := r.URL.Query()
	if err := checkQuery(q, "ip", "max"); err != nil {
		return err
	}
	v := q.Get("ip")
	if v == "" {
		return errorf(http.StatusBadRequest, "missing ip", "GET /v1/flows?ip=IP or ?ip=CIDR lists the live flows with an endpoint inside it")
	}
	p, err := parsePrefix(v)
	if err != nil {
		return errorf(http.StatusBadRequest, "invalid ip", "%v", err)
	}
	max, err := intParam(q, "max", 100, 10000)
	if err != nil {
		return err
	}
	if max == 0 {
		max = 100
	}
	items, err := s.cfg.Sensor.Flows(r.Context(), p.Masked(), max)
	if err != nil {
		return err
	}
	if items == nil {
		items = []flow.Info{}
	}
	s.writeJSON(w, http.StatusOK, FlowList{Items: items})
	return nil
}

// AuditList is the answer of GET /v1/audit.
type AuditList struct {
	Items []rules.AuditRecord `json:"items"` // audit records, oldest first
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, c caller) error {
	q := r.URL.Query()
	if err := checkQuery(q, "since", "limit"); err != nil {
		return err
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			d, derr := time.ParseDuration(v)
			if derr != nil || d <= 0 {
				return errorf(http.StatusBadRequest, "invalid since", "%q: want an RFC 3339 time such as 2026-01-02T15:04:05Z, or a duration back from now such as 1h", v)
			}
			t = time.Now().Add(-d)
		}
		since = t
	}
	limit, err := intParam(q, "limit", defaultPage, maxPage)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = defaultPage
	}
	items, err := s.cfg.Rules.ReadAudit(since, limit)
	if err != nil {
		return err
	}
	if items == nil {
		items = []rules.AuditRecord{}
	}
	s.writeJSON(w, http.StatusOK, AuditList{Items: items})
	return nil
}

// ModeBody is the JSON of POST /v1/mode and the answer of GET /v1/mode.
type ModeBody struct {
	Mode sensor.Mode `json:"mode"` // enforce or observe
}

func (s *Server) getMode(w http.ResponseWriter, r *http.Request, c caller) error {
	s.writeJSON(w, http.StatusOK, ModeBody{Mode: s.cfg.Sensor.Snapshot().Status.Mode})
	return nil
}

func (s *Server) setMode(w http.ResponseWriter, r *http.Request, c caller) error {
	data, err := readBody(r)
	if err != nil {
		return err
	}
	var b ModeBody
	if err := decodeStrict(data, &b); err != nil {
		return err
	}
	if b.Mode != sensor.ModeEnforce && b.Mode != sensor.ModeObserve {
		return errorf(http.StatusBadRequest, "invalid mode", "%q: want enforce or observe", b.Mode)
	}
	if err := s.cfg.Sensor.SetMode(b.Mode, c.name); err != nil {
		return err
	}
	s.log.Info("enforcement mode changed through the API", "mode", b.Mode, "by", c.name)
	s.writeJSON(w, http.StatusOK, b)
	return nil
}

// LogLevelBody is the JSON of POST /v1/loglevel.
type LogLevelBody struct {
	Level string `json:"level"` // debug, info, warn or error
}

func (s *Server) setLogLevel(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.SetLogLevel == nil {
		return errorf(http.StatusNotImplemented, "log level cannot be changed", "this process did not wire a log level setter")
	}
	data, err := readBody(r)
	if err != nil {
		return err
	}
	var b LogLevelBody
	if err := decodeStrict(data, &b); err != nil {
		return err
	}
	switch b.Level {
	case "debug", "info", "warn", "error":
	default:
		return errorf(http.StatusBadRequest, "invalid level", "%q: want debug, info, warn or error", b.Level)
	}
	if err := s.cfg.SetLogLevel(b.Level); err != nil {
		return errorf(http.StatusInternalServerError, "log level not changed", "%v", err)
	}
	s.log.Warn("log level changed through the API", "level", b.Level, "by", c.name)
	s.writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) livez(w http.ResponseWriter, r *http.Request, c caller) error {
	s.writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, c caller) error {
	if !s.cfg.Sensor.Ready() {
		return errorf(http.StatusServiceUnavailable, "not ready", "capture, injection or the rule set is not up yet; see the daemon log")
	}
	s.writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}
