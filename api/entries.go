package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"canopy/rules"
)

// entryKind ties a URL path to a rule kind and the body its POST takes.
type entryKind struct {
	kind  rules.Kind
	path  string                                   // "bans" → /v1/bans
	parse func(data []byte) (rules.Request, error) // one JSON object → request
	bare  bool                                     // bulk lines may be a bare IP/CIDR
}

var entryKinds = []entryKind{
	{kind: rules.KindBan, path: "bans", parse: parseBan, bare: true},
	{kind: rules.KindACL, path: "acls", parse: parseACL},
	{kind: rules.KindAllow, path: "allowlist", parse: parseAllow, bare: true},
}

// banBody is the JSON of POST /v1/bans.
type banBody struct {
	Value  string `json:"value"`  // IP or CIDR
	TTL    string `json:"ttl"`    // "1h", "7d", "" or "never"
	Reason string `json:"reason"` // why, for the audit log and the dashboard
	Action string `json:"action"` // block (default) or observe
	Force  bool   `json:"force"`  // pass the width and allowlist guards
	Origin string `json:"origin"` // api (default), cli or tui
}

// aclBody is the JSON of POST /v1/acls.
type aclBody struct {
	Proto     string `json:"proto"`     // tcp, udp or any (default)
	Src       string `json:"src"`       // IP or CIDR; "" any
	Dst       string `json:"dst"`       // IP or CIDR; "" any
	SrcPorts  string `json:"src_ports"` // "80", "1000-2000"; "" any
	DstPorts  string `json:"dst_ports"`
	Direction string `json:"direction"` // in, out or both (default)
	TTL       string `json:"ttl"`
	Reason    string `json:"reason"`
	Action    string `json:"action"`
	Force     bool   `json:"force"`
	Origin    string `json:"origin"`
}

// allowBody is the JSON of POST /v1/allowlist.
type allowBody struct {
	Value   string `json:"value"`
	TTL     string `json:"ttl"`
	Comment string `json:"comment"`
	Origin  string `json:"origin"`
}

// decodeStrict decodes exactly one JSON object into dst, rejecting unknown
// fields and trailing data.
func decodeStrict(data []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return errorf(http.StatusBadRequest, "malformed JSON", "unexpected data after the JSON object; send exactly one object")
	}
	return nil
}

func parseBan(data []byte) (rules.Request, error) {
	var b banBody
	if err := decodeStrict(data, &b); err != nil {
		return rules.Request{}, err
	}
	req := rules.Request{Kind: rules.KindBan, Reason: b.Reason, Force: b.Force}
	var err error
	if req.Value, err = parseValue("value", b.Value); err != nil {
		return req, err
	}
	return req, parseLifetime(&req, b.TTL, b.Action, b.Origin)
}

func parseACL(data []byte) (rules.Request, error) {
	var b aclBody
	if err := decodeStrict(data, &b); err != nil {
		return rules.Request{}, err
	}
	req := rules.Request{Kind: rules.KindACL, Reason: b.Reason, Force: b.Force}
	acl := &rules.ACL{}
	var err error
	switch p := rules.Proto(strings.ToLower(b.Proto)); p {
	case "", rules.ProtoAny:
		acl.Proto = rules.ProtoAny
	case rules.ProtoTCP, rules.ProtoUDP:
		acl.Proto = p
	default:
		return req, errorf(http.StatusBadRequest, "invalid proto", "proto %q: want tcp, udp or any", b.Proto)
	}
	switch d := rules.Direction(strings.ToLower(b.Direction)); d {
	case "", rules.DirBoth:
		acl.Direction = rules.DirBoth
	case rules.DirIn, rules.DirOut:
		acl.Direction = d
	default:
		return req, errorf(http.StatusBadRequest, "invalid direction", "direction %q: want in, out or both", b.Direction)
	}
	if acl.Src, err = parseOptionalPrefix("src", b.Src); err != nil {
		return req, err
	}
	if acl.Dst, err = parseOptionalPrefix("dst", b.Dst); err != nil {
		return req, err
	}
	if acl.SrcPorts, err = parsePorts("src_ports", b.SrcPorts); err != nil {
		return req, err
	}
	if acl.DstPorts, err = parsePorts("dst_ports", b.DstPorts); err != nil {
		return req, err
	}
	if !acl.Src.IsValid() && !acl.Dst.IsValid() && acl.SrcPorts == (rules.PortRange{}) && acl.DstPorts == (rules.PortRange{}) {
		return req, errorf(http.StatusBadRequest, "ACL matches all traffic", "give at least one of src, dst, src_ports, dst_ports")
	}
	if acl.Src.IsValid() && acl.Dst.IsValid() && acl.Src.Addr().Is4() != acl.Dst.Addr().Is4() {
		return req, errorf(http.StatusBadRequest, "ACL mixes IPv4 and IPv6", "src %s and dst %s can never match the same packet", acl.Src, acl.Dst)
	}
	req.ACL = acl
	return req, parseLifetime(&req, b.TTL, b.Action, b.Origin)
}

func parseAllow(data []byte) (rules.Request, error) {
	var b allowBody
	if err := decodeStrict(data, &b); err != nil {
		return rules.Request{}, err
	}
	req := rules.Request{Kind: rules.KindAllow, Reason: b.Comment, Action: rules.ActionBlock}
	var err error
	if req.Value, err = parseValue("value", b.Value); err != nil {
		return req, err
	}
	if req.TTL, err = parseTTL(b.TTL); err != nil {
		return req, err
	}
	req.Origin, err = parseOrigin(b.Origin)
	return req, err
}

// parseLifetime fills what bans and ACLs share: TTL, action and origin.
func parseLifetime(req *rules.Request, ttl, action, origin string) error {
	var err error
	if req.TTL, err = parseTTL(ttl); err != nil {
		return err
	}
	if req.Action, err = parseAction(action); err != nil {
		return err
	}
	req.Origin, err = parseOrigin(origin)
	return err
}

// parseValue checks that s is an IP address or CIDR prefix and returns it
// trimmed; the store gets the text (it owns canonical forms).
func parseValue(field, s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errorf(http.StatusBadRequest, "missing "+field, "give an IP address or CIDR prefix, e.g. 203.0.113.7 or 203.0.113.0/24")
	}
	if _, err := parsePrefix(s); err != nil {
		return "", errorf(http.StatusBadRequest, "invalid "+field, "%v", err)
	}
	return s, nil
}

// parsePrefix reads an IP (as a full-length prefix) or a CIDR prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix such as 203.0.113.0/24", s)
		}
		return p, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a CIDR prefix", s)
	}
	if ip.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q has an IPv6 zone, which traffic on the wire does not carry", s)
	}
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

func parseOptionalPrefix(field, s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "any" {
		return netip.Prefix{}, nil
	}
	p, err := parsePrefix(s)
	if err != nil {
		return p, errorf(http.StatusBadRequest, "invalid "+field, "%v", err)
	}
	return p, nil
}

// parsePorts reads "", "any", "80" or "1000-2000"; "0-65535" (how the store
// writes "any") is accepted too, so an entry read back can be sent again.
func parsePorts(field, s string) (rules.PortRange, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "any" {
		return rules.PortRange{}, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	from, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	to, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || from > to || from == 0 && to != 0 && to != 65535 {
		return rules.PortRange{}, errorf(http.StatusBadRequest, "invalid "+field, "%q: want a port 1-65535 or a range such as 1000-2000", s)
	}
	return rules.PortRange{From: uint16(from), To: uint16(to)}, nil
}

// parseTTL reads a Go duration, with "d" for days allowed in front
// ("7d", "1d12h"); "" and "never" mean no expiry.
func parseTTL(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "never" || s == "0" {
		return 0, nil
	}
	var days int64
	rest := s
	if d, r, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.ParseInt(d, 10, 32)
		if err != nil || n < 0 || n > 36500 {
			return 0, errorf(http.StatusBadRequest, "invalid ttl", "%q: want a duration such as 30m, 4h, 7d or 1d12h", s)
		}
		days, rest = n, r
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, errorf(http.StatusBadRequest, "invalid ttl", "%q: want a duration such as 30m, 4h, 7d or 1d12h", s)
		}
	}
	d += time.Duration(days) * 24 * time.Hour
	if d < 0 {
		return 0, errorf(http.StatusBadRequest, "invalid ttl", "%q is negative; use DELETE to lift an entry", s)
	}
	if d > 0 && d < time.Second {
		return 0, errorf(http.StatusBadRequest, "invalid ttl", "%q is shorter than a second", s)
	}
	return d, nil
}

func parseAction(s string) (rules.Action, error) {
	switch a := rules.Action(strings.ToLower(strings.TrimSpace(s))); a {
	case "", rules.ActionBlock:
		return rules.ActionBlock, nil
	case rules.ActionObserve:
		return a, nil
	}
	return "", errorf(http.StatusBadRequest, "invalid action", "%q: want block or observe", s)
}

// parseOrigin accepts the origins a client of the API can claim.
func parseOrigin(s string) (rules.Origin, error) {
	switch o := rules.Origin(strings.ToLower(strings.TrimSpace(s))); o {
	case "":
		return rules.OriginAPI, nil
	case rules.OriginAPI, rules.OriginCLI, rules.OriginTUI:
		return o, nil
	}
	return "", errorf(http.StatusBadRequest, "invalid origin", "%q: API clients may claim api, cli or tui", s)
}

// knownOrigins are the values GET filters accept.
var knownOrigins = map[rules.Origin]bool{
	rules.OriginAPI: true, rules.OriginTUI: true, rules.OriginFile: true, rules.OriginConfig: true,
	rules.OriginFeed: true, rules.OriginCLI: true, rules.OriginSystem: true,
}

// checkQuery rejects query parameters the endpoint does not know, so that a
// typo (?contain=) does not silently widen a listing or a deletion.
func checkQuery(q url.Values, allowed ...string) error {
	for k := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			return errorf(http.StatusBadRequest, "unknown query parameter "+quote(k), "this endpoint takes: %s", strings.Join(allowed, ", "))
		}
	}
	return nil
}

// intParam reads a non-negative integer query parameter.
func intParam(q url.Values, name string, def, max int) (int, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, errorf(http.StatusBadRequest, "invalid "+name, "%q: want a whole number ≥ 0", s)
	}
	if max > 0 && n > max {
		return 0, errorf(http.StatusBadRequest, "invalid "+name, "%d is above the maximum of %d; page with offset", n, max)
	}
	return n, nil
}

// Paging of GET listings.
const (
	defaultPage = 1000
	maxPage     = 10000
)

// EntryList is the answer of GET /v1/bans, /v1/acls and /v1/allowlist.
type EntryList struct {
	Items []rules.Entry `json:"items"` // one page, in the store's order
	Total int           `json:"total"` // entries matching the filter, all pages
}

func (s *Server) listEntries(k entryKind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		q := r.URL.Query()
		if err := checkQuery(q, "contains", "origin", "offset", "limit"); err != nil {
			return err
		}
		f := RuleFilter{Kind: k.kind}
		if v := q.Get("contains"); v != "" {
			ip, err := netip.ParseAddr(v)
			if err != nil {
				return errorf(http.StatusBadRequest, "invalid contains", "%q is not an IP address", v)
			}
			f.Contains = ip
		}
		if v := q.Get("origin"); v != "" {
			f.Origin = rules.Origin(v)
			if !knownOrigins[f.Origin] {
				return errorf(http.StatusBadRequest, "invalid origin", "%q: want one of api, cli, tui, file, config, feed, system", v)
			}
		}
		var err error
		if f.Offset, err = intParam(q, "offset", 0, 0); err != nil {
			return err
		}
		if f.Limit, err = intParam(q, "limit", defaultPage, maxPage); err != nil {
			return err
		}
		if f.Limit == 0 {
			f.Limit = defaultPage
		}
		items, total := s.cfg.Rules.List(f)
		if items == nil {
			items = []rules.Entry{}
		}
		s.writeJSON(w, http.StatusOK, EntryList{Items: items, Total: total})
		return nil
	}
}

func (s *Server) addEntry(k entryKind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		if err := checkQuery(r.URL.Query()); err != nil {
			return err
		}
		data, err := readBody(r)
		if err != nil {
			return err
		}
		req, err := k.parse(data)
		if err != nil {
			return err
		}
		req.RequestedBy = c.name
		e, created, err := s.cfg.Rules.Add(req)
		if err != nil {
			return err
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
			w.Header().Set("Location", "/v1/"+k.path+"/"+strconv.FormatUint(e.ID, 10))
		}
		s.writeJSON(w, status, e)
		return nil
	}
}

// entryID reads {id} and fetches the entry, which must be of kind k.
func (s *Server) entryID(k entryKind, r *http.Request) (rules.Entry, error) {
	raw := r.PathValue("id")
	id, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return rules.Entry{}, errorf(http.StatusBadRequest, "invalid id", "%q is not an entry id (a whole number); to find one, GET /v1/%s?contains=IP", raw, k.path)
	}
	e, ok := s.cfg.Rules.Get(id)
	if !ok || e.Kind != k.kind {
		return rules.Entry{}, errorf(http.StatusNotFound, "no such entry", "no %s with id %d; it may have expired or been lifted", k.kind, id)
	}
	return e, nil
}

func (s *Server) getEntry(k entryKind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		if err := checkQuery(r.URL.Query()); err != nil {
			return err
		}
		e, err := s.entryID(k, r)
		if err != nil {
			return err
		}
		s.writeJSON(w, http.StatusOK, e)
		return nil
	}
}

func (s *Server) removeEntry(k entryKind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		q := r.URL.Query()
		if err := checkQuery(q, "reason"); err != nil {
			return err
		}
		e, err := s.entryID(k, r)
		if err != nil {
			return err
		}
		e, err = s.cfg.Rules.Remove(e.ID, c.name, q.Get("reason"))
		if err != nil {
			return err
		}
		s.writeJSON(w, http.StatusOK, e)
		return nil
	}
}

func (s *Server) removeEntryByValue(k entryKind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		q := r.URL.Query()
		if err := checkQuery(q, "value", "reason"); err != nil {
			return err
		}
		v := strings.TrimSpace(q.Get("value"))
		if v == "" {
			return errorf(http.StatusBadRequest, "missing value", "DELETE /v1/%s?value=IP|CIDR lifts one entry; DELETE /v1/%s/{id} lifts by id", k.path, k.path)
		}
		if k.bare {
			if _, err := parseValue("value", v); err != nil {
				return err
			}
		}
		e, err := s.cfg.Rules.RemoveValue(k.kind, v, c.name, q.Get("reason"))
		if err != nil {
			return err
		}
		s.writeJSON(w, http.StatusOK, e)
		return nil
	}
}

// BulkResult is one line of the answer of POST /v1/bans:bulk (and of the
// acls and allowlist equivalents): the outcome of the input line Line.
type BulkResult struct {
	Line    int          `json:"line"`              // 1-based line number of the input
	Status  int          `json:"status"`            // what a single POST would have answered
	Created bool         `json:"created,omitempty"` // a new entry (else an existing one was extended)
	Entry   *rules.Entry `json:"entry,omitempty"`
	Error   string       `json:"error,omitempty"`
	Detail  string       `json:"detail,omitempty"`
}

// bulkEntries applies NDJSON lines one by one. A bad line gets an error
// result and does not stop the others. Blank lines and '#' comments are
// skipped; for bans and the allowlist a line may also be a bare IP/CIDR.
func (s *Server) bulkEntries(k entryKind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		if err := checkQuery(r.URL.Query()); err != nil {
			return err
		}
		data, err := readBody(r)
		if err != nil {
			return err
		}
		lines := bytes.Split(data, []byte("\n"))
		n := 0
		for _, l := range lines {
			if l = bytes.TrimSpace(l); len(l) > 0 && l[0] != '#' {
				n++
			}
		}
		if n > MaxBulkLines {
			return errorf(http.StatusRequestEntityTooLarge, "too many lines", "%d entries sent, limit is %d per request; split the input", n, MaxBulkLines)
		}
		if n == 0 {
			return errorf(http.StatusBadRequest, "empty bulk request", "send one JSON object per line (NDJSON)")
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		// Lines are parsed and applied in chunks: one store commit per chunk
		// when the store supports batches, and results stream out as each
		// chunk is done.
		chunk := make([]BulkResult, 0, bulkChunk)
		reqs := make([]rules.Request, 0, bulkChunk)
		flush := func() error {
			s.applyBulk(chunk, reqs)
			for _, res := range chunk {
				if err := enc.Encode(res); err != nil {
					return fmt.Errorf("writing bulk result for line %d: %w", res.Line, err)
				}
			}
			chunk, reqs = chunk[:0], reqs[:0]
			return nil
		}
		for i, l := range lines {
			l = bytes.TrimSpace(l)
			if len(l) == 0 || l[0] == '#' {
				continue
			}
			res := BulkResult{Line: i + 1}
			req, err := parseBulkLine(k, l)
			if err != nil {
				he := fromStore(err)
				res.Status, res.Error, res.Detail = he.status, he.msg, he.detail
			} else {
				req.RequestedBy = c.name
				reqs = append(reqs, req)
			}
			chunk = append(chunk, res)
			if len(chunk) == bulkChunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	}
}

// bulkChunk is how many lines a bulk request applies per store commit: large
// enough to amortise the fsync, small enough not to hold the store's lock
// for long.
const bulkChunk = 2000

// parseBulkLine reads one line of a bulk body: a JSON object, or for bans
// and the allowlist a bare IP/CIDR as in a block list.
func parseBulkLine(k entryKind, line []byte) (rules.Request, error) {
	if line[0] == '{' {
		return k.parse(line)
	}
	if !k.bare {
		return rules.Request{}, errorf(http.StatusBadRequest, "malformed line", "each line must be one JSON object")
	}
	b, _ := json.Marshal(map[string]string{"value": string(line)})
	return k.parse(b)
}

// applyBulk adds reqs, which belong in order to the results of chunk that
// have no status yet, and fills those results in.
func (s *Server) applyBulk(chunk []BulkResult, reqs []rules.Request) {
	if len(reqs) == 0 {
		return
	}
	var added []rules.AddResult
	if ba, ok := s.cfg.Rules.(batchAdder); ok {
		added = ba.AddBatch(reqs)
	} else {
		added = make([]rules.AddResult, len(reqs))
		for i, req := range reqs {
			added[i].Entry, added[i].Created, added[i].Err = s.cfg.Rules.Add(req)
		}
	}
	j := 0
	for i := range chunk {
		if chunk[i].Status != 0 {
			continue
		}
		res := &chunk[i]
		if j >= len(added) {
			he := errorf(http.StatusInternalServerError, "internal error", "the rule store answered fewer results than requests")
			res.Status, res.Error, res.Detail = he.status, he.msg, he.detail
			continue
		}
		a := added[j]
		j++
		switch {
		case a.Err != nil:
			he := fromStore(a.Err)
			res.Status, res.Error, res.Detail = he.status, he.msg, he.detail
		case a.Created:
			e := a.Entry
			res.Status, res.Created, res.Entry = http.StatusCreated, true, &e
		default:
			e := a.Entry
			res.Status, res.Entry = http.StatusOK, &e
		}
	}
}

// checkAllow answers GET /v1/allowlist/check/{ip}. HEAD answers 200 when
// allowlisted and 204 when not, as CrowdSec's allowlist check does.
func (s *Server) checkAllow(w http.ResponseWriter, r *http.Request, c caller) error {
	raw := r.PathValue("ip")
	ip, err := netip.ParseAddr(raw)
	if err != nil {
		return errorf(http.StatusBadRequest, "invalid ip", "%q is not an IP address", raw)
	}
	e, ok := s.cfg.Rules.CheckAllow(ip)
	if r.Method == http.MethodHead {
		if ok {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusNoContent)
		}
		return nil
	}
	res := AllowCheck{IP: ip, Allowlisted: ok}
	if ok {
		res.Entry = &e
	}
	s.writeJSON(w, http.StatusOK, res)
	return nil
}

// AllowCheck is the answer of GET /v1/allowlist/check/{ip}.
type AllowCheck struct {
	IP          netip.Addr   `json:"ip"`
	Allowlisted bool         `json:"allowlisted"`
	Entry       *rules.Entry `json:"entry,omitempty"` // the covering allowlist entry
}
