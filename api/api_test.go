package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

const (
	rwSecret = "soar-secret-0123456789abcdef"
	roSecret = "graf-secret-0123456789abcdef"
)

type env struct {
	t     *testing.T
	srv   *Server
	ts    *httptest.Server
	rules *fakeRules
	sens  *fakeSensor
}

// newEnv starts the real handler on a real loopback listener, with a
// read-write token "soar" and a read-only token "grafana" unless open.
func newEnv(t *testing.T, open bool) *env {
	t.Helper()
	e := &env{t: t, rules: newFakeRules(), sens: newFakeSensor()}
	cfg := Config{Addr: "127.0.0.1:0", Rules: e.rules, Sensor: e.sens, Version: "1.2.3-test"}
	if !open {
		rw, err := NewToken("soar", rwSecret, false)
		if err != nil {
			t.Fatal(err)
		}
		ro, err := NewToken("grafana", roSecret, true)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Tokens = []Token{rw, ro}
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	e.ts = httptest.NewServer(srv.Handler())
	t.Cleanup(e.ts.Close)
	return e
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("answer is not JSON (%v): %s", err, a.body)
	}
}

// errBody checks that the answer is a JSON error with the given status.
func (a answer) errBody(t *testing.T, status int) errorBody {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q", ct)
	}
	var eb errorBody
	a.json(t, &eb)
	if eb.Error == "" {
		t.Fatalf("error answer without an error message: %s", a.body)
	}
	return eb
}

func (e *env) do(method, path, secret string, body any, hdr ...string) answer {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) client() *Client { return NewClient(e.ts.URL, rwSecret) }

func TestNewServerRefusesOpenNonLoopback(t *testing.T) {
	r, s := newFakeRules(), newFakeSensor()
	for _, addr := range []string{":7850", "0.0.0.0:7850", "192.0.2.1:7850", "[::]:7850", "example.com:7850"} {
		_, err := NewServer(Config{Addr: addr, Rules: r, Sensor: s})
		if err == nil || !strings.Contains(err.Error(), "--api-token-file") {
			t.Errorf("%s without tokens: err %v, want a refusal naming --api-token-file", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:7850", "[::1]:7850", "localhost:7850", "127.1.2.3:0"} {
		if _, err := NewServer(Config{Addr: addr, Rules: r, Sensor: s}); err != nil {
			t.Errorf("%s without tokens: %v, want allowed (loopback)", addr, err)
		}
	}
	tok, _ := NewToken("soar", rwSecret, false)
	if _, err := NewServer(Config{Addr: "0.0.0.0:7850", Tokens: []Token{tok}, Rules: r, Sensor: s}); err != nil {
		t.Errorf("tokens on a public address: %v", err)
	}
	if _, err := NewServer(Config{Addr: "0.0.0.0:7850", Tokens: []Token{tok, tok}, Rules: r, Sensor: s}); err == nil {
		t.Error("the same token twice was accepted")
	}
	if _, err := NewServer(Config{Addr: "127.0.0.1", Rules: r, Sensor: s}); err == nil {
		t.Error("an address without port was accepted")
	}
	if _, err := NewServer(Config{Addr: "127.0.0.1:1", Sensor: s}); err == nil {
		t.Error("nil Rules accepted")
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, fmt.Sprintf("t%d", time.Now().UnixNano()))
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	toks, err := LoadTokens(write("# tokens\n\nsoar:" + rwSecret + "\n  grafana : " + roSecret + ":ro  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 2 || toks[0].Name != "soar" || toks[0].ReadOnly || toks[1].Name != "grafana" || !toks[1].ReadOnly {
		t.Fatalf("tokens %+v", toks)
	}
	if tk, ok := lookupToken(toks, roSecret); !ok || tk.Name != "grafana" {
		t.Fatalf("lookup of the ro secret: %+v %v", tk, ok)
	}
	if _, ok := lookupToken(toks, roSecret+"x"); ok {
		t.Fatal("a wrong secret matched")
	}
	for name, content := range map[string]string{
		"no colon":       "soar" + rwSecret + "\n",
		"short token":    "soar:short\n",
		"empty name":     ":" + rwSecret + "\n",
		"bad name":       "so ar:" + rwSecret + "\n",
		"duplicate name": "soar:" + rwSecret + "\nsoar:" + roSecret + "\n",
		"same token":     "a:" + rwSecret + "\nb:" + rwSecret + "\n",
		"no token":       "# nothing\n",
		"reserved name":  "local:" + rwSecret + "\n",
	} {
		if _, err := LoadTokens(write(content)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, err = LoadTokens(write("soar:" + rwSecret + "\nbad line\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("error %v does not name line 2", err)
	}
	if _, err := LoadTokens(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was accepted")
	}

	// The client side reads a bare token, or one line of a daemon token file.
	for content, want := range map[string]string{
		"# mine\n" + rwSecret + "\n":        rwSecret,
		"soar:" + rwSecret + "\n":           rwSecret,
		"grafana:" + roSecret + ":ro\n":     roSecret,
		"abc:def-but-a-long-secret-value\n": "def-but-a-long-secret-value",
		"weird:short\n":                     "weird:short",
	} {
		got, err := LoadClientToken(write(content))
		if err != nil || got != want {
			t.Errorf("LoadClientToken(%q) = %q, %v; want %q", content, got, err, want)
		}
	}
	t.Setenv(ClientTokenEnv, " from-env ")
	if got, _ := LoadClientToken(""); got != "from-env" {
		t.Errorf("token from the environment: %q", got)
	}
	if _, err := LoadClientToken(write("\n# nothing\n")); err == nil {
		t.Error("an empty client token file was accepted")
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, false)
	ban := map[string]string{"value": "203.0.113.7"}

	a := e.do("GET", "/v1/bans", "", nil)
	a.errBody(t, 401)
	if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without WWW-Authenticate: Bearer: %q", a.header.Get("WWW-Authenticate"))
	}
	e.do("GET", "/v1/bans", "wrong-secret-0123456789", nil).errBody(t, 401)
	e.do("GET", "/v1/bans", "", nil, "Authorization", "Basic c29hcjp4").errBody(t, 401)
	e.do("POST", "/v1/bans", "", ban).errBody(t, 401)

	if a := e.do("GET", "/v1/bans", roSecret, nil); a.status != 200 {
		t.Fatalf("read-only GET: %d %s", a.status, a.body)
	}
	eb := e.do("POST", "/v1/bans", roSecret, ban).errBody(t, 403)
	if !strings.Contains(eb.Detail, "grafana") {
		t.Errorf("403 detail does not name the token: %q", eb.Detail)
	}
	e.do("DELETE", "/v1/bans?value=203.0.113.7", roSecret, nil).errBody(t, 403)
	e.do("POST", "/v1/mode", roSecret, map[string]string{"mode": "observe"}).errBody(t, 403)
	if n := len(e.rules.entries); n != 0 {
		t.Fatalf("a refused write changed the store: %d entries", n)
	}

	a = e.do("POST", "/v1/bans", rwSecret, ban)
	if a.status != 201 {
		t.Fatalf("read-write POST: %d %s", a.status, a.body)
	}
	var ent rules.Entry
	a.json(t, &ent)
	if ent.RequestedBy != "soar" || ent.Origin != rules.OriginAPI {
		t.Errorf("requested_by %q origin %q, want soar/api", ent.RequestedBy, ent.Origin)
	}
	// CrowdSec bouncers send X-Api-Key.
	if a := e.do("GET", "/v1/decisions", "", nil, "X-Api-Key", roSecret); a.status != 200 {
		t.Errorf("X-Api-Key: %d %s", a.status, a.body)
	}
	// Probes need no token.
	for _, p := range []string{"/livez", "/readyz"} {
		if a := e.do("GET", p, "", nil); a.status != 200 {
			t.Errorf("%s without token: %d", p, a.status)
		}
	}
	e.do("GET", "/metrics", "", nil).errBody(t, 401)
}

func TestOpenLoopbackAPI(t *testing.T) {
	e := newEnv(t, true)
	a := e.do("POST", "/v1/bans", "", map[string]string{"value": "203.0.113.9"})
	if a.status != 201 {
		t.Fatalf("open loopback POST: %d %s", a.status, a.body)
	}
	var ent rules.Entry
	a.json(t, &ent)
	if ent.RequestedBy != "local" {
		t.Errorf("requested_by %q, want local", ent.RequestedBy)
	}
	// DNS rebinding: a browser tricked into sending to 127.0.0.1 with a
	// foreign Host.
	e.do("GET", "/v1/bans", "", nil, "Host", "evil.example:7850").errBody(t, 403)
	// CSRF: a cross-site browser POST.
	e.do("POST", "/v1/bans", "", `{"value":"0.0.0.0/0","force":true}`,
		"Sec-Fetch-Site", "cross-site", "Origin", "http://evil.example", "Content-Type", "text/plain").errBody(t, 403)
}

func TestBanLifecycle(t *testing.T) {
	e := newEnv(t, false)
	a := e.do("POST", "/v1/bans", rwSecret, map[string]any{"value": "203.0.113.7", "ttl": "1h", "reason": "brute force", "action": "observe"})
	if a.status != 201 {
		t.Fatalf("first POST: %d %s", a.status, a.body)
	}
	var first rules.Entry
	a.json(t, &first)
	if loc := a.header.Get("Location"); loc != fmt.Sprintf("/v1/bans/%d", first.ID) {
		t.Errorf("Location %q", loc)
	}
	if first.Action != rules.ActionObserve || first.Reason != "brute force" || first.Expires.IsZero() {
		t.Errorf("entry %+v", first)
	}
	// Idempotent: the same value again extends and answers 200 with the same id.
	a = e.do("POST", "/v1/bans", rwSecret, map[string]any{"value": "203.0.113.7", "ttl": "2h"})
	if a.status != 200 {
		t.Fatalf("second POST: %d %s", a.status, a.body)
	}
	var again rules.Entry
	a.json(t, &again)
	if again.ID != first.ID || !again.Expires.After(first.Expires) {
		t.Errorf("second POST: id %d (want %d), expires %v (want after %v)", again.ID, first.ID, again.Expires, first.Expires)
	}
	for _, v := range []string{"198.51.100.0/24", "2001:db8::1", "192.0.2.1"} {
		if a := e.do("POST", "/v1/bans", rwSecret, map[string]any{"value": v, "origin": "cli"}); a.status != 201 {
			t.Fatalf("POST %s: %d %s", v, a.status, a.body)
		}
	}

	var l EntryList
	e.do("GET", "/v1/bans", roSecret, nil).json(t, &l)
	if l.Total != 4 || len(l.Items) != 4 {
		t.Fatalf("list: total %d items %d", l.Total, len(l.Items))
	}
	e.do("GET", "/v1/bans?contains=198.51.100.77", roSecret, nil).json(t, &l)
	if l.Total != 1 || l.Items[0].Value.String() != "198.51.100.0/24" {
		t.Fatalf("contains: %+v", l)
	}
	e.do("GET", "/v1/bans?origin=cli", roSecret, nil).json(t, &l)
	if l.Total != 3 {
		t.Fatalf("origin=cli: total %d", l.Total)
	}
	e.do("GET", "/v1/bans?offset=1&limit=2", roSecret, nil).json(t, &l)
	if l.Total != 4 || len(l.Items) != 2 || l.Items[0].ID != 2 {
		t.Fatalf("paging: %+v", l)
	}
	var got rules.Entry
	e.do("GET", fmt.Sprintf("/v1/bans/%d", first.ID), roSecret, nil).json(t, &got)
	if got.ID != first.ID {
		t.Fatalf("GET by id: %+v", got)
	}
	// An id of another kind is not found under this kind.
	e.do("GET", fmt.Sprintf("/v1/acls/%d", first.ID), roSecret, nil).errBody(t, 404)
	e.do("DELETE", fmt.Sprintf("/v1/allowlist/%d", first.ID), rwSecret, nil).errBody(t, 404)

	a = e.do("DELETE", fmt.Sprintf("/v1/bans/%d?reason=false+positive", first.ID), rwSecret, nil)
	if a.status != 200 {
		t.Fatalf("DELETE by id: %d %s", a.status, a.body)
	}
	e.do("GET", fmt.Sprintf("/v1/bans/%d", first.ID), roSecret, nil).errBody(t, 404)
	e.do("DELETE", fmt.Sprintf("/v1/bans/%d", first.ID), rwSecret, nil).errBody(t, 404)

	a = e.do("DELETE", "/v1/bans?value=198.51.100.0/24", rwSecret, nil)
	if a.status != 200 {
		t.Fatalf("DELETE by value: %d %s", a.status, a.body)
	}
	e.do("DELETE", "/v1/bans?value=198.51.100.0/24", rwSecret, nil).errBody(t, 404)
	e.do("DELETE", "/v1/bans", rwSecret, nil).errBody(t, 400)

	var audit AuditList
	e.do("GET", "/v1/audit?since=1h&limit=100", roSecret, nil).json(t, &audit)
	if len(audit.Items) != 7 {
		t.Fatalf("audit: %d records, want 7 (4 adds, 1 extend, 2 removes)", len(audit.Items))
	}
	e.do("GET", "/v1/audit?since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), roSecret, nil).json(t, &audit)
	if len(audit.Items) != 0 {
		t.Fatalf("audit since the future: %d records", len(audit.Items))
	}
	e.do("GET", "/v1/audit?since=yesterday", roSecret, nil).errBody(t, 400)
}

func TestErrorStatuses(t *testing.T) {
	e := newEnv(t, false)
	e.rules.Add(rules.Request{Kind: rules.KindAllow, Value: "192.0.2.0/24", Reason: "gateway"})
	big := `{"value":"203.0.113.7","reason":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	cases := []struct {
		name, method, path string
		body               any
		status             int
		inError            string // must appear in error or detail
	}{
		{"garbage JSON", "POST", "/v1/bans", "{value: 1.2.3.4", 400, "malformed"},
		{"empty body", "POST", "/v1/bans", "", 400, "empty"},
		{"array body", "POST", "/v1/bans", `["1.2.3.4"]`, 400, "object"},
		{"unknown field", "POST", "/v1/bans", `{"value":"203.0.113.7","tll":"1h"}`, 400, `"tll"`},
		{"wrong type", "POST", "/v1/bans", `{"value":"203.0.113.7","ttl":3600}`, 400, `"ttl"`},
		{"trailing data", "POST", "/v1/bans", `{"value":"203.0.113.7"} {"value":"203.0.113.8"}`, 400, "after"},
		{"missing value", "POST", "/v1/bans", `{"reason":"x"}`, 400, "value"},
		{"bad value", "POST", "/v1/bans", `{"value":"300.1.2.3"}`, 400, "300.1.2.3"},
		{"bad ttl", "POST", "/v1/bans", `{"value":"203.0.113.7","ttl":"soon"}`, 400, "ttl"},
		{"negative ttl", "POST", "/v1/bans", `{"value":"203.0.113.7","ttl":"-1h"}`, 400, "negative"},
		{"bad action", "POST", "/v1/bans", `{"value":"203.0.113.7","action":"drop"}`, 400, "action"},
		{"bad origin", "POST", "/v1/bans", `{"value":"203.0.113.7","origin":"system"}`, 400, "origin"},
		{"too wide", "POST", "/v1/bans", `{"value":"10.0.0.0/7"}`, 422, "force"},
		{"allowlisted", "POST", "/v1/bans", `{"value":"192.0.2.1"}`, 409, "allowlist"},
		{"oversized", "POST", "/v1/bans", big, 413, "limit"},
		{"oversized chunked", "POST", "/v1/bans", io.MultiReader(strings.NewReader(big)), 413, "limit"},
		{"not found", "GET", "/v1/bans/999", nil, 404, "999"},
		{"bad id", "GET", "/v1/bans/abc", nil, 400, "abc"},
		{"method", "PUT", "/v1/bans", nil, 405, "GET"},
		{"method on id", "POST", "/v1/bans/1", nil, 405, "DELETE"},
		{"unknown path", "GET", "/v1/nope", nil, 404, "/v1/nope"},
		{"unknown query", "GET", "/v1/bans?contain=1.2.3.4", nil, 400, `"contain"`},
		{"bad contains", "GET", "/v1/bans?contains=1.2.3", nil, 400, "contains"},
		{"bad limit", "GET", "/v1/bans?limit=-1", nil, 400, "limit"},
		{"limit too big", "GET", "/v1/bans?limit=100000", nil, 400, "maximum"},
		{"bad origin filter", "GET", "/v1/bans?origin=nobody", nil, 400, "origin"},
		{"bad acl ports", "POST", "/v1/acls", `{"dst":"192.0.2.1","dst_ports":"2000-1000"}`, 400, "dst_ports"},
		{"acl matches all", "POST", "/v1/acls", `{"proto":"tcp"}`, 400, "all traffic"},
		{"acl mixed families", "POST", "/v1/acls", `{"src":"10.0.0.1","dst":"2001:db8::1"}`, 400, "IPv6"},
		{"acl bad proto", "POST", "/v1/acls", `{"proto":"sctp","dst":"192.0.2.1"}`, 400, "proto"},
		{"acl bare bulk line", "POST", "/v1/acls", `10.0.0.1`, 400, "malformed"},
		{"allow with reason field", "POST", "/v1/allowlist", `{"value":"10.0.0.1","reason":"x"}`, 400, `"reason"`},
		{"bad check ip", "GET", "/v1/allowlist/check/nope", nil, 400, "nope"},
		{"bad mode", "POST", "/v1/mode", `{"mode":"panic"}`, 400, "enforce"},
		{"loglevel unwired", "POST", "/v1/loglevel", `{"level":"debug"}`, 501, "log level"},
		{"flows without ip", "GET", "/v1/flows", nil, 400, "ip"},
		{"talkers bad by", "GET", "/v1/talkers?by=mac", nil, 400, "by"},
		{"talkers bad window", "GET", "/v1/talkers?window=5s", nil, 400, "window"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			eb := e.do(c.method, c.path, rwSecret, c.body).errBody(t, c.status)
			if !strings.Contains(eb.Error+" "+eb.Detail, c.inError) {
				t.Errorf("error %q detail %q: want mention of %q", eb.Error, eb.Detail, c.inError)
			}
		})
	}
	// Allow lists the methods of the path.
	if a := e.do("PUT", "/v1/bans/1", rwSecret, nil); a.header.Get("Allow") != "DELETE, GET, HEAD" {
		t.Errorf("Allow %q", a.header.Get("Allow"))
	}
	// A bulk body over 32 MiB.
	huge := strings.Repeat("203.0.113.1\n", MaxBulkBodyBytes/12+1)
	e.do("POST", "/v1/bans:bulk", rwSecret, huge).errBody(t, 413)
	// The store could not save: 500 that says so, with the store's words.
	e.rules.failAdd = &fakeErr{"storage", "ban 203.0.113.9/32 is in force but was not saved: disk full"}
	eb := e.do("POST", "/v1/bans", rwSecret, `{"value":"203.0.113.9"}`).errBody(t, 500)
	if !strings.Contains(eb.Error, "could not save") || !strings.Contains(eb.Detail, "disk full") {
		t.Errorf("storage failure: %+v", eb)
	}
	e.rules.failAdd = fmt.Errorf("something unexpected")
	eb = e.do("POST", "/v1/bans", rwSecret, `{"value":"203.0.113.9"}`).errBody(t, 500)
	if eb.Error != "internal error" {
		t.Errorf("uncoded failure: %+v", eb)
	}
	e.rules.failAdd = nil
	// The store is full: 507.
	e.rules.cap = len(e.rules.entries)
	e.do("POST", "/v1/bans", rwSecret, `{"value":"203.0.113.200"}`).errBody(t, 507)
	// A too-wide ban passes with force, and is marked forced.
	e.rules.cap = 1 << 20
	a := e.do("POST", "/v1/bans", rwSecret, `{"value":"10.0.0.0/7","force":true}`)
	if a.status != 201 {
		t.Fatalf("forced wide ban: %d %s", a.status, a.body)
	}
}

func TestBulk(t *testing.T) {
	t.Run("one add at a time", func(t *testing.T) { testBulk(t, newEnv(t, false)) })
	t.Run("batched", func(t *testing.T) {
		e := newEnv(t, false)
		br := &batchRules{fakeRules: e.rules}
		e.srv.cfg.Rules = br
		testBulk(t, e)
		if br.batches.Load() == 0 {
			t.Error("the store's AddBatch was not used")
		}
	})
}

func testBulk(t *testing.T, e *env) {
	body := strings.Join([]string{
		`{"value":"203.0.113.1","ttl":"1h","reason":"feed"}`,
		`# a comment`,
		``,
		`{"value":"203.0.113.2",`,            // broken JSON
		`203.0.113.3`,                        // bare value
		`{"value":"10.0.0.0/4"}`,             // too wide
		`{"value":"203.0.113.1","ttl":"2h"}`, // again: extended
		`{"value":"nope"}`,
		`{"value":"203.0.113.4","colour":"red"}`,
	}, "\n")
	a := e.do("POST", "/v1/bans:bulk", rwSecret, body)
	if a.status != 200 || a.header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("bulk: %d %q %s", a.status, a.header.Get("Content-Type"), a.body)
	}
	var got []BulkResult
	for _, l := range bytes.Split(bytes.TrimSpace(a.body), []byte("\n")) {
		var r BulkResult
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("result line %q: %v", l, err)
		}
		got = append(got, r)
	}
	want := []struct{ line, status int }{{1, 201}, {4, 400}, {5, 201}, {6, 422}, {7, 200}, {8, 400}, {9, 400}}
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d: %s", len(got), len(want), a.body)
	}
	for i, w := range want {
		if got[i].Line != w.line || got[i].Status != w.status {
			t.Errorf("result %d: line %d status %d (%s), want line %d status %d", i, got[i].Line, got[i].Status, got[i].Error, w.line, w.status)
		}
		if w.status >= 400 && got[i].Error == "" {
			t.Errorf("result %d: error status without message", i)
		}
	}
	if !got[0].Created || got[4].Created || got[4].Entry.ID != got[0].Entry.ID {
		t.Errorf("idempotency in bulk: %+v / %+v", got[0], got[4])
	}
	if n := len(e.rules.entries); n != 2 {
		t.Errorf("%d entries after bulk, want 2", n)
	}
	e.do("POST", "/v1/bans:bulk", roSecret, body).errBody(t, 403)
	e.do("POST", "/v1/bans:bulk", rwSecret, "\n# nothing\n").errBody(t, 400)

	var many strings.Builder
	for i := 0; i <= MaxBulkLines; i++ {
		fmt.Fprintf(&many, "10.%d.%d.%d\n", i>>16&255, i>>8&255, i&255)
	}
	e.do("POST", "/v1/bans:bulk", rwSecret, many.String()).errBody(t, 413)
	if n := len(e.rules.entries); n != 2 {
		t.Errorf("an over-long bulk request applied lines: %d entries", n)
	}

	// ACL bulk: JSON lines only.
	a = e.do("POST", "/v1/acls:bulk", rwSecret, "{\"proto\":\"tcp\",\"dst\":\"192.0.2.10\",\"dst_ports\":\"22\"}\n192.0.2.1\n")
	if a.status != 200 || !bytes.Contains(a.body, []byte(`"status":201`)) || !bytes.Contains(a.body, []byte(`"status":400`)) {
		t.Errorf("acl bulk: %d %s", a.status, a.body)
	}
}

func TestACLAndAllowlist(t *testing.T) {
	e := newEnv(t, false)
	a := e.do("POST", "/v1/acls", rwSecret, map[string]any{"proto": "tcp", "src": "198.51.100.0/24", "dst": "192.0.2.10", "src_ports": "1000-2000", "dst_ports": "22", "direction": "in", "reason": "no ssh from partner"})
	if a.status != 201 {
		t.Fatalf("ACL POST: %d %s", a.status, a.body)
	}
	var acl rules.Entry
	a.json(t, &acl)
	want := rules.ACL{Proto: rules.ProtoTCP, Src: netip.MustParsePrefix("198.51.100.0/24"), Dst: netip.MustParsePrefix("192.0.2.10/32"),
		SrcPorts: rules.PortRange{From: 1000, To: 2000}, DstPorts: rules.PortRange{From: 22, To: 22}, Direction: rules.DirIn}
	if acl.Kind != rules.KindACL || acl.ACL == nil || *acl.ACL != want {
		t.Fatalf("ACL entry %+v acl %+v", acl, acl.ACL)
	}
	// An ACL read back (the store writes "any port" as 0-65535) can be sent again.
	again := *acl.ACL
	again.SrcPorts = rules.PortRange{From: 0, To: 65535}
	if _, err := e.client().Ban(context.Background(), rules.Request{Kind: rules.KindACL, ACL: &again}); err != nil {
		t.Errorf("ACL with ports 0-65535: %v", err)
	}
	if got := entryValue(rules.Entry{Kind: rules.KindACL, ACL: &again}); got != "tcp 198.51.100.0/24>192.0.2.10/32:22 in" {
		t.Errorf("ACL summary %q", got)
	}
	var l EntryList
	e.do("GET", "/v1/acls", roSecret, nil).json(t, &l)
	if l.Total != 2 {
		t.Fatalf("acls: %+v", l)
	}
	e.do("GET", "/v1/bans", roSecret, nil).json(t, &l)
	if l.Total != 0 {
		t.Fatalf("an ACL shows under bans: %+v", l)
	}

	a = e.do("POST", "/v1/allowlist", rwSecret, map[string]any{"value": "192.0.2.0/24", "comment": "core routers", "ttl": "7d"})
	if a.status != 201 {
		t.Fatalf("allow POST: %d %s", a.status, a.body)
	}
	var allow rules.Entry
	a.json(t, &allow)
	if allow.Reason != "core routers" || allow.Expires.Sub(allow.Created) != 7*24*time.Hour {
		t.Errorf("allow entry %+v", allow)
	}
	var chk AllowCheck
	e.do("GET", "/v1/allowlist/check/192.0.2.55", roSecret, nil).json(t, &chk)
	if !chk.Allowlisted || chk.Entry == nil || chk.Entry.ID != allow.ID {
		t.Errorf("check inside: %+v", chk)
	}
	chk = AllowCheck{}
	e.do("GET", "/v1/allowlist/check/203.0.113.1", roSecret, nil).json(t, &chk)
	if chk.Allowlisted || chk.Entry != nil {
		t.Errorf("check outside: %+v", chk)
	}
	if a := e.do("HEAD", "/v1/allowlist/check/192.0.2.55", roSecret, nil); a.status != 200 {
		t.Errorf("HEAD inside: %d", a.status)
	}
	if a := e.do("HEAD", "/v1/allowlist/check/203.0.113.1", roSecret, nil); a.status != 204 {
		t.Errorf("HEAD outside: %d", a.status)
	}
	eb := e.do("POST", "/v1/bans", rwSecret, `{"value":"192.0.2.9"}`).errBody(t, 409)
	if !strings.Contains(eb.Detail, "192.0.2.0/24") {
		t.Errorf("409 detail does not name the allowlist entry: %q", eb.Detail)
	}
	if a := e.do("POST", "/v1/bans", rwSecret, `{"value":"192.0.2.9","force":true}`); a.status != 201 {
		t.Errorf("forced ban over the allowlist: %d %s", a.status, a.body)
	}
	if a := e.do("DELETE", "/v1/allowlist?value=192.0.2.0/24", rwSecret, nil); a.status != 200 {
		t.Errorf("allow DELETE: %d %s", a.status, a.body)
	}
}

func TestStateEndpoints(t *testing.T) {
	e := newEnv(t, false)
	a1, b1 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	e.sens.setSnapshot(func(s *sensor.Snapshot) {
		s.Status.Flows, s.Status.Bans = 12, 3
		s.Traffic.At = time.Now()
		s.Traffic.Talkers[flow.BySrc] = []flow.Talker{
			{Src: a1, Bits: [flow.NumWindows]float64{100, 900, 50}, Flows: 1},
			{Src: b1, Bits: [flow.NumWindows]float64{500, 800, 60}, Flows: 2},
			{Other: true, Bits: [flow.NumWindows]float64{1, 2, 3}, Flows: 9},
		}
		s.Traffic.Talkers[flow.ByPort] = []flow.Talker{{Port: 443, Proto: 6, Bits: [flow.NumWindows]float64{1, 2, 3}}}
		s.Traffic.Talkers[flow.BySrcNet] = []flow.Talker{{Net: netip.MustParsePrefix("10.0.0.0/24"), Bits: [flow.NumWindows]float64{600, 1700, 110}, Flows: 3}}
		s.Blocks = []sensor.Block{{ID: 1, Src: a1, Dst: b1, Outcome: sensor.OutcomeConfirmed}}
	})
	e.sens.flows = []flow.Info{{Proto: 6, A: a1, APort: 5555, B: b1, BPort: 80, State: "established"}}

	var st StatusView
	e.do("GET", "/v1/status", roSecret, nil).json(t, &st)
	if st.Version != "test" || st.Flows != 12 || !st.Ready || st.Uptime < 3500 {
		t.Errorf("status %+v", st)
	}
	var tk Talkers
	e.do("GET", "/v1/talkers?by=src&window=2s&n=1", roSecret, nil).json(t, &tk)
	if tk.Window != "2s" || len(tk.Items) != 1 || tk.Items[0].Src != b1 || tk.Items[0].BitsPerSecond != 500 {
		t.Errorf("talkers 2s: %+v", tk)
	}
	e.do("GET", "/v1/talkers", roSecret, nil).json(t, &tk)
	if tk.By != "src" || tk.Window != "10s" || len(tk.Items) != 3 || tk.Items[0].Src != a1 || tk.Items[0].Other {
		t.Errorf("talkers default: %+v", tk)
	}
	// The row of the sources beyond the tracking limit says so: a script
	// banning the top sources must not read it as one with no address.
	if o := tk.Items[2]; !o.Other || o.Src.IsValid() || o.Flows != 9 {
		t.Errorf("talkers' other row: %+v", o)
	}
	e.do("GET", "/v1/talkers?by=port", roSecret, nil).json(t, &tk)
	if len(tk.Items) != 1 || tk.Items[0].Port != 443 || tk.Items[0].Proto != "tcp" {
		t.Errorf("talkers by port: %+v", tk)
	}
	tk = Talkers{} // decoding leaves the fields a row omits as they were
	e.do("GET", "/v1/talkers?by=srcnet", roSecret, nil).json(t, &tk)
	if tk.By != "srcnet" || len(tk.Items) != 1 || tk.Items[0].Net.String() != "10.0.0.0/24" || tk.Items[0].Src.IsValid() || tk.Items[0].Flows != 3 {
		t.Errorf("talkers by source network: %+v", tk)
	}
	var fl FlowList
	e.do("GET", "/v1/flows?ip=10.0.0.0/24", roSecret, nil).json(t, &fl)
	if len(fl.Items) != 1 || fl.Items[0].BPort != 80 {
		t.Errorf("flows: %+v", fl)
	}
	e.do("GET", "/v1/flows?ip=192.0.2.1", roSecret, nil).json(t, &fl)
	if len(fl.Items) != 0 {
		t.Errorf("flows elsewhere: %+v", fl)
	}

	c := e.client()
	snap, err := c.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Blocks) != 1 || snap.Blocks[0].Src != a1 || len(snap.Traffic.Talkers[flow.BySrc]) != 3 ||
		len(snap.Traffic.Talkers[flow.BySrcNet]) != 1 || snap.Traffic.Talkers[flow.BySrcNet][0].Net.String() != "10.0.0.0/24" {
		t.Errorf("snapshot round trip: %+v", snap)
	}
	// A large snapshot is gzip-compressed for clients that accept it.
	e.sens.setSnapshot(func(s *sensor.Snapshot) {
		for i := range 500 {
			s.Rules = append(s.Rules, rules.Entry{ID: uint64(i), Kind: rules.KindBan, Value: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32)})
		}
	})
	if a := e.do("GET", "/v1/snapshot", roSecret, nil, "Accept-Encoding", "gzip"); a.header.Get("Content-Encoding") != "gzip" {
		t.Errorf("large snapshot not compressed: %v", a.header)
	}
	if snap, err = c.Snapshot(context.Background()); err != nil || len(snap.Rules) != 500 {
		t.Errorf("compressed snapshot through the client: %d rules, %v", len(snap.Rules), err)
	}
	if snap, err = c.SnapshotRules(context.Background(), 10); err != nil || len(snap.Rules) != 10 || len(snap.Blocks) != 1 {
		t.Errorf("snapshot capped at 10 rules: %d rules, %d blocks, %v", len(snap.Rules), len(snap.Blocks), err)
	}
	if snap, err = c.SnapshotRules(context.Background(), 0); err != nil || len(snap.Rules) != 0 {
		t.Errorf("snapshot without rules: %d rules, %v", len(snap.Rules), err)
	}
	e.do("GET", "/v1/snapshot?rules=all", roSecret, nil).errBody(t, 400)

	var m ModeBody
	e.do("GET", "/v1/mode", roSecret, nil).json(t, &m)
	if m.Mode != sensor.ModeEnforce {
		t.Errorf("mode %q", m.Mode)
	}
	if err := c.SetMode(context.Background(), sensor.ModeObserve); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(context.Background()); st.Mode != sensor.ModeObserve {
		t.Errorf("mode after SetMode: %q", st.Mode)
	}
	flows, err := c.Flows(context.Background(), netip.MustParsePrefix("10.0.0.1/32"), 1000)
	if err != nil || len(flows) != 1 {
		t.Errorf("client Flows: %v %v", flows, err)
	}
}

func TestLogLevelAndReadiness(t *testing.T) {
	var level string
	r, s := newFakeRules(), newFakeSensor()
	tok, _ := NewToken("soar", rwSecret, false)
	srv, err := NewServer(Config{Addr: "127.0.0.1:0", Tokens: []Token{tok}, Rules: r, Sensor: s,
		SetLogLevel: func(l string) error { level = l; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	e := &env{t: t, srv: srv, ts: ts, rules: r, sens: s}
	if a := e.do("POST", "/v1/loglevel", rwSecret, `{"level":"debug"}`); a.status != 200 || level != "debug" {
		t.Fatalf("loglevel: %d %s, level %q", a.status, a.body, level)
	}
	e.do("POST", "/v1/loglevel", rwSecret, `{"level":"trace"}`).errBody(t, 400)
	s.ready.Store(false)
	e.do("GET", "/readyz", "", nil).errBody(t, 503)
	if a := e.do("GET", "/livez", "", nil); a.status != 200 {
		t.Errorf("livez while not ready: %d", a.status)
	}
	s.ready.Store(true)
	if a := e.do("GET", "/readyz", "", nil); a.status != 200 {
		t.Errorf("readyz when ready: %d", a.status)
	}
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPanicIsRecovered(t *testing.T) {
	var logs syncBuffer
	r, s := newFakeRules(), newFakeSensor()
	tok, _ := NewToken("grafana", roSecret, true)
	srv, err := NewServer(Config{Addr: "127.0.0.1:0", Tokens: []Token{tok}, Rules: r, Sensor: s,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	e := &env{t: t, srv: srv, ts: ts, rules: r, sens: s}
	e.sens.panicOn = netip.MustParsePrefix("10.66.0.0/16")
	a := e.do("GET", "/v1/flows?ip=10.66.0.0/16", roSecret, nil)
	eb := a.errBody(t, 500)
	if strings.Contains(string(a.body), "goroutine") || strings.Contains(string(a.body), "deliberate") {
		t.Errorf("500 leaks internals: %s (%+v)", a.body, eb)
	}
	if a := e.do("GET", "/v1/status", roSecret, nil); a.status != 200 {
		t.Errorf("server unusable after a panic: %d", a.status)
	}
	if e.srv.stats.panics.Load() != 1 {
		t.Errorf("panics counted: %d", e.srv.stats.panics.Load())
	}
	// The operator finds the cause and the stack in the daemon log.
	if l := logs.String(); !strings.Contains(l, "deliberate panic") || !strings.Contains(l, "goroutine") || !strings.Contains(l, "/v1/flows") {
		t.Errorf("the panic is not in the log with its stack:\n%s", l)
	}
}

func TestDecisions(t *testing.T) {
	e := newEnv(t, false)
	c := e.client()
	ctx := context.Background()
	one, _ := c.Ban(ctx, rules.Request{Value: "203.0.113.7", TTL: time.Hour, Reason: "ssh brute force"})
	c.Ban(ctx, rules.Request{Value: "198.51.100.0/24"})
	c.Ban(ctx, rules.Request{Value: "192.0.2.99", Action: rules.ActionObserve})

	var ds []lapiDecision
	a := e.do("GET", "/v1/decisions?ip=203.0.113.7", "", nil, "X-Api-Key", roSecret)
	a.json(t, &ds)
	if len(ds) != 1 || ds[0].Scope != "Ip" || ds[0].Value != "203.0.113.7" || ds[0].Type != "ban" || ds[0].Until == "" {
		t.Fatalf("decisions for ip: %s", a.body)
	}
	if d, err := time.ParseDuration(ds[0].Duration); err != nil || d <= 0 || d > time.Hour {
		t.Errorf("duration %q", ds[0].Duration)
	}
	if a := e.do("GET", "/v1/decisions?ip=192.0.2.99", "", nil, "X-Api-Key", roSecret); strings.TrimSpace(string(a.body)) != "null" {
		t.Errorf("observe-only entry served as a decision, or no-match not null: %s", a.body)
	}
	e.do("GET", "/v1/decisions?range=198.51.100.0/25", "", nil, "X-Api-Key", roSecret).json(t, &ds)
	if len(ds) != 1 || ds[0].Scope != "Range" {
		t.Errorf("range query: %+v", ds)
	}

	// Recent bouncers push usage metrics, with their read-only key.
	if a := e.do("POST", "/v1/usage-metrics", "", `{"remediation_components":[]}`, "X-Api-Key", roSecret); a.status != 201 {
		t.Errorf("usage metrics: %d %s", a.status, a.body)
	}
	var st lapiStreamAnswer
	e.do("GET", "/v1/decisions/stream?startup=true", "", nil, "X-Api-Key", roSecret).json(t, &st)
	if len(st.New) != 2 || len(st.Deleted) != 0 {
		t.Fatalf("startup stream: %+v", st)
	}
	e.do("GET", "/v1/decisions/stream", "", nil, "X-Api-Key", roSecret).json(t, &st)
	if len(st.New) != 0 || len(st.Deleted) != 0 {
		t.Fatalf("unchanged stream: %+v", st)
	}
	c.Unban(ctx, fmt.Sprint(one.ID))
	c.Ban(ctx, rules.Request{Value: "203.0.113.8"})
	e.do("GET", "/v1/decisions/stream?startup=false", "", nil, "X-Api-Key", roSecret).json(t, &st)
	if len(st.New) != 1 || st.New[0].Value != "203.0.113.8" || len(st.Deleted) != 1 || st.Deleted[0].Value != "203.0.113.7" {
		t.Fatalf("delta stream: %+v", st)
	}
	// Each bouncer (token) has its own cursor.
	e.do("GET", "/v1/decisions/stream", "", nil, "X-Api-Key", rwSecret).json(t, &st)
	if len(st.New) != 2 {
		t.Errorf("another bouncer's first pull: %+v", st)
	}
}

func TestServeShutsDownWithStreamsOpen(t *testing.T) {
	r, s := newFakeRules(), newFakeSensor()
	srv, err := NewServer(Config{Addr: "127.0.0.1:0", Rules: r, Sensor: s})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	c := NewClient(ln.Addr().String(), "")
	evs, err := c.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	for range evs {
	}
	if _, err := c.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "no canopy daemon answers") {
		t.Errorf("after shutdown: %v", err)
	}
}
