package api

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"canopy/rules"
)

// This file serves canopy's bans read-only in the shape of CrowdSec's Local
// API (GET /v1/decisions and /v1/decisions/stream), so that existing
// CrowdSec bouncers (firewall, nginx, Cloudflare…) can enforce canopy's
// bans too. Bouncers authenticate with "X-Api-Key: TOKEN", using a token
// from the same token file; read-only tokens suffice. Only bans with action
// block are served: ACLs have no decision equivalent, and observe entries
// must not block anywhere.

// lapiDecision is CrowdSec's models.Decision, as bouncers parse it.
type lapiDecision struct {
	ID        int64  `json:"id"`
	Origin    string `json:"origin"`
	Type      string `json:"type"`
	Scope     string `json:"scope"`
	Value     string `json:"value"`
	Duration  string `json:"duration"` // remaining at answer time, Go syntax
	Until     string `json:"until,omitempty"`
	Scenario  string `json:"scenario"`
	Simulated bool   `json:"simulated"`
}

// lapiStreamAnswer is the body of /v1/decisions/stream.
type lapiStreamAnswer struct {
	New     []lapiDecision `json:"new"`
	Deleted []lapiDecision `json:"deleted"`
}

// neverDuration is what a ban without expiry reports: LAPI decisions always
// have a duration, and bouncers that program kernel timeouts clamp it.
const neverDuration = 10 * 365 * 24 * time.Hour

// decisionCursors remember, per bouncer (token name), which decisions the
// last stream answer held, so that startup=false returns exactly what
// changed since. Unlike LAPI's timestamp cursor this cannot miss a ban
// that expired between two pulls.
type decisionCursors struct {
	mu   sync.Mutex
	seen map[string]map[uint64]lapiDecision
}

func (d *decisionCursors) init() { d.seen = map[string]map[uint64]lapiDecision{} }

func toDecision(e rules.Entry, now time.Time) (lapiDecision, bool) {
	if e.Kind != rules.KindBan || e.Action != rules.ActionBlock || !e.Value.IsValid() {
		return lapiDecision{}, false
	}
	d := lapiDecision{
		ID:       int64(e.ID & (1<<63 - 1)),
		Origin:   "canopy",
		Type:     "ban",
		Scope:    "Range",
		Value:    e.Value.String(),
		Scenario: "canopy " + string(e.Origin),
	}
	if e.Reason != "" {
		d.Scenario += ": " + e.Reason
	}
	if e.Value.IsSingleIP() {
		d.Scope, d.Value = "Ip", e.Value.Addr().String()
	}
	left := neverDuration
	if !e.Expires.IsZero() {
		left = e.Expires.Sub(now)
		if left <= 0 {
			return lapiDecision{}, false
		}
		d.Until = e.Expires.UTC().Format(time.RFC3339)
	}
	d.Duration = left.Round(time.Second).String()
	return d, true
}

// activeDecisions lists every ban in force as decisions, filtered by scope
// ("ip", "range"; empty: both).
func (s *Server) activeDecisions(scopes map[string]bool, contains netip.Addr) []lapiDecision {
	items, _ := s.cfg.Rules.List(RuleFilter{Kind: rules.KindBan, Contains: contains})
	now := time.Now()
	out := make([]lapiDecision, 0, len(items))
	for _, e := range items {
		d, ok := toDecision(e, now)
		if ok && (len(scopes) == 0 || scopes[strings.ToLower(d.Scope)]) {
			out = append(out, d)
		}
	}
	return out
}

// lapiDecisions answers GET /v1/decisions (LAPI "live mode"): filters ip,
// range, scope, value and type; unknown parameters are ignored as LAPI
// does. No match answers the JSON null, as LAPI does.
func (s *Server) lapiDecisions(w http.ResponseWriter, r *http.Request, c caller) error {
	q := r.URL.Query()
	var contains netip.Addr
	var within netip.Prefix
	if v := q.Get("ip"); v != "" {
		ip, err := netip.ParseAddr(v)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid ip", "%q is not an IP address", v)
		}
		contains = ip
	}
	if v := q.Get("range"); v != "" {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid range", "%q is not a CIDR prefix", v)
		}
		within = p.Masked()
	}
	var scopes map[string]bool
	if v := q.Get("scope"); v != "" {
		scopes = map[string]bool{strings.ToLower(v): true}
	}
	if t := q.Get("type"); t != "" && t != "ban" {
		s.writeJSON(w, http.StatusOK, nil)
		return nil
	}
	value := q.Get("value")
	var out []lapiDecision
	for _, d := range s.activeDecisions(scopes, contains) {
		if value != "" && d.Value != value {
			continue
		}
		if within.IsValid() {
			p, err := parsePrefix(d.Value)
			if err != nil || !prefixCovers(p, within) {
				continue
			}
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		s.writeJSON(w, http.StatusOK, nil)
		return nil
	}
	s.writeJSON(w, http.StatusOK, out)
	return nil
}

// prefixCovers reports whether outer contains all of inner.
func prefixCovers(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// lapiStream answers GET /v1/decisions/stream (LAPI "stream mode").
// startup=true returns every ban in force under "new"; later calls return
// what appeared under "new" and what went away under "deleted". The
// bouncer's cursor moves only on GET, not HEAD.
func (s *Server) lapiStream(w http.ResponseWriter, r *http.Request, c caller) error {
	q := r.URL.Query()
	scopes := map[string]bool{"ip": true, "range": true}
	if v := q.Get("scopes"); v != "" {
		scopes = map[string]bool{}
		for _, sc := range strings.Split(v, ",") {
			scopes[strings.ToLower(strings.TrimSpace(sc))] = true
		}
	}
	startup := q.Get("startup") == "true"
	current := s.activeDecisions(scopes, netip.Addr{})
	ans := lapiStreamAnswer{New: []lapiDecision{}, Deleted: []lapiDecision{}}

	s.decisions.mu.Lock()
	prev, known := s.decisions.seen[c.name]
	next := make(map[uint64]lapiDecision, len(current))
	for _, d := range current {
		id := uint64(d.ID)
		next[id] = d
		if _, had := prev[id]; startup || !known || !had {
			ans.New = append(ans.New, d)
		}
	}
	if known && !startup {
		for id, d := range prev {
			if _, still := next[id]; !still {
				d.Duration = "-1s"
				ans.Deleted = append(ans.Deleted, d)
			}
		}
	}
	s.decisions.mu.Unlock()

	b, err := json.Marshal(ans)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(b); err != nil {
		return err // the cursor stays: the bouncer gets the same delta again
	}
	if r.Method == http.MethodGet {
		s.decisions.mu.Lock()
		s.decisions.seen[c.name] = next
		s.decisions.mu.Unlock()
	}
	return nil
}

// lapiUsageMetrics accepts and discards the usage metrics that recent
// CrowdSec bouncers push every 30 minutes, so that they do not log an error
// each time. A bouncer's read-only token may send them.
func (s *Server) lapiUsageMetrics(w http.ResponseWriter, r *http.Request, c caller) error {
	if _, err := readBody(r); err != nil {
		return err
	}
	s.writeJSON(w, http.StatusCreated, struct{}{})
	return nil
}
