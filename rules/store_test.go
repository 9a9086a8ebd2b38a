package rules

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustAdd(t testing.TB, s *Store, req Request) Entry {
	t.Helper()
	e, _, err := s.Add(req)
	if err != nil {
		t.Fatalf("Add(%+v): %v", req, err)
	}
	return e
}

var ip = netip.MustParseAddr

func TestMatchBansMostSpecificWins(t *testing.T) {
	s := newStore(t, Config{})
	wide := mustAdd(t, s, Request{Kind: KindBan, Value: "198.51.0.0/16"})
	narrow := mustAdd(t, s, Request{Kind: KindBan, Value: "198.51.100.0/24", Action: ActionObserve})
	host := mustAdd(t, s, Request{Kind: KindBan, Value: "2001:db8::1"})
	other := ip("192.0.2.1")
	cases := []struct {
		src, dst netip.Addr
		want     Verdict
	}{
		{ip("198.51.1.1"), other, Verdict{Action: ActionBlock, RuleID: wide.ID}},
		{other, ip("198.51.100.7"), Verdict{Action: ActionObserve, RuleID: narrow.ID}},
		{ip("::ffff:198.51.100.7"), other, Verdict{Action: ActionObserve, RuleID: narrow.ID}},
		{ip("2001:db8::1"), ip("2001:db8::2"), Verdict{Action: ActionBlock, RuleID: host.ID}},
		{ip("2001:db8::2"), ip("2001:db8::3"), Verdict{}},
		{other, ip("198.52.0.1"), Verdict{}},
		{netip.Addr{}, netip.Addr{}, Verdict{}},
		// both ends banned: the more specific prefix decides
		{ip("198.51.1.1"), ip("198.51.100.1"), Verdict{Action: ActionObserve, RuleID: narrow.ID}},
	}
	set := s.Set()
	for _, c := range cases {
		if got := set.Match(c.src, c.dst, 6, 1000, 80); got != c.want {
			t.Errorf("Match(%s, %s) = %+v, want %+v", c.src, c.dst, got, c.want)
		}
	}
	e, _ := s.Get(narrow.ID)
	if e.Hits != 3 {
		t.Errorf("hits of %s = %d, want 3", narrow.Value, e.Hits)
	}
}

func TestMappedValueIsStoredUnmapped(t *testing.T) {
	s := newStore(t, Config{})
	e := mustAdd(t, s, Request{Kind: KindBan, Value: "::ffff:203.0.113.0/120"})
	if e.Value.String() != "203.0.113.0/24" {
		t.Fatalf("value = %s, want 203.0.113.0/24", e.Value)
	}
	if v := s.Set().Match(ip("203.0.113.9"), ip("10.0.0.1"), 6, 1, 2); v.RuleID != e.ID {
		t.Fatalf("plain IPv4 did not match the mapped ban: %+v", v)
	}
	// A range given in CIDR form must never be inserted as one address.
	r := mustAdd(t, s, Request{Kind: KindBan, Value: "159.138.96.0/20"})
	if v := s.Set().Match(ip("159.138.111.255"), ip("10.0.0.1"), 6, 1, 2); v.RuleID != r.ID {
		t.Fatalf("last address of a /20 not matched: %+v", v)
	}
	h := mustAdd(t, s, Request{Kind: KindBan, Value: "192.0.2.77/24"})
	if h.Value.String() != "192.0.2.0/24" {
		t.Fatalf("host bits not cleared: %s", h.Value)
	}
}

func TestAllowlistPrecedence(t *testing.T) {
	s := newStore(t, Config{ImplicitAllow: []ImplicitAllow{{Prefix: netip.MustParsePrefix("192.0.2.254/32"), Comment: "next hop"}}})
	allow := mustAdd(t, s, Request{Kind: KindAllow, Value: "10.0.0.0/8", Reason: "core routers"})

	_, _, err := s.Add(Request{Kind: KindBan, Value: "10.1.2.3"})
	if CodeOf(err) != CodeAllowlisted {
		t.Fatalf("ban inside allowlist: err = %v, want code allowlisted", err)
	}
	if want := "refused: 10.1.2.3 is allowlisted by 10.0.0.0/8 (core routers)"; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("message %q does not start with %q", err, want)
	}
	if e := err.(*Error); e.Entry == nil || e.Entry.ID != allow.ID || e.HTTPStatus() != 409 {
		t.Fatalf("error entry/status wrong: %+v", e)
	}
	// A ban covering an allowlisted address is refused too.
	if _, _, err := s.Add(Request{Kind: KindBan, Value: "192.0.2.0/24"}); CodeOf(err) != CodeAllowlisted || !strings.Contains(err.Error(), "next hop") {
		t.Fatalf("ban covering the next hop: %v", err)
	}
	// Forced: accepted and audited, but the allowlist still wins at match time.
	forced, _, err := s.Add(Request{Kind: KindBan, Value: "10.1.2.0/24", Force: true, RequestedBy: "alice"})
	if err != nil || !forced.Forced {
		t.Fatalf("forced ban: %+v %v", forced, err)
	}
	v := s.Set().Match(ip("10.1.2.3"), ip("203.0.113.1"), 6, 1, 2)
	if !v.Allowlisted || v.Action != "" || v.RuleID != allow.ID {
		t.Fatalf("allowlisted address got %+v", v)
	}
	v = s.Set().Match(ip("203.0.113.1"), ip("10.1.2.3"), 6, 1, 2)
	if !v.Allowlisted {
		t.Fatalf("allowlisted destination got %+v", v)
	}
	recs, _ := s.ReadAudit(time.Time{}, 0)
	var sawOverride bool
	for _, r := range recs {
		if r.Action == AuditOverride && r.Entry.ID == forced.ID && r.Who == "alice" {
			sawOverride = true
		}
	}
	if !sawOverride {
		t.Fatalf("no override audit record in %+v", recs)
	}
	// Removing the allowlist entry makes the forced ban bite.
	if _, err := s.Remove(allow.ID, "bob", "done"); err != nil {
		t.Fatal(err)
	}
	if v := s.Set().Match(ip("10.1.2.3"), ip("203.0.113.1"), 6, 1, 2); v.RuleID != forced.ID {
		t.Fatalf("after allowlist removal got %+v", v)
	}
	// Implicit entries cannot be removed.
	if _, err := s.RemoveValue(KindAllow, "192.0.2.254", "bob", ""); CodeOf(err) != CodeInvalid {
		t.Fatalf("removing implicit allow: %v", err)
	}
	if e, ok := s.CheckAllow(ip("::ffff:192.0.2.254")); !ok || e.Origin != OriginSystem {
		t.Fatalf("CheckAllow next hop = %+v %v", e, ok)
	}
}

func TestGuardsAndCodes(t *testing.T) {
	s := newStore(t, Config{MaxEntries: 3, HomeNets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	cases := []struct {
		req  Request
		code ErrCode
	}{
		{Request{Kind: KindBan, Value: "1.0.0.0/15"}, CodeTooWide},
		{Request{Kind: KindBan, Value: "2001:db8::/47"}, CodeTooWide},
		{Request{Kind: KindBan, Value: "not-an-ip"}, CodeInvalid},
		{Request{Kind: KindBan, Value: ""}, CodeInvalid},
		{Request{Kind: KindBan, Value: "fe80::1%eth0"}, CodeInvalid},
		{Request{Kind: "nope", Value: "1.2.3.4"}, CodeInvalid},
		{Request{Kind: KindBan, Value: "1.2.3.4", Action: "drop"}, CodeInvalid},
		{Request{Kind: KindBan, Value: "1.2.3.4", TTL: -time.Second}, CodeInvalid},
		{Request{Kind: KindBan, Value: "1.2.3.4", Origin: OriginSystem}, CodeInvalid},
		{Request{Kind: KindBan, Value: "1.2.3.4", Reason: strings.Repeat("x", 2000)}, CodeInvalid},
		{Request{Kind: KindACL}, CodeInvalid},
		{Request{Kind: KindACL, ACL: &ACL{Proto: ProtoTCP, Direction: DirIn}}, CodeTooWide},
		{Request{Kind: KindACL, ACL: &ACL{Proto: "icmp"}}, CodeInvalid},
		{Request{Kind: KindACL, ACL: &ACL{DstPorts: PortRange{22, 22}}}, CodeInvalid}, // ports without proto
		{Request{Kind: KindACL, ACL: &ACL{Proto: ProtoTCP, DstPorts: PortRange{30, 20}}}, CodeInvalid},
	}
	for _, c := range cases {
		_, _, err := s.Add(c.req)
		if CodeOf(err) != c.code {
			t.Errorf("Add(%+v): err %v, want code %s", c.req, err, c.code)
		}
	}
	if _, _, err := s.Add(Request{Kind: KindBan, Value: "1.0.0.0/15", Force: true}); err != nil {
		t.Fatalf("forced wide ban: %v", err)
	}
	mustAdd(t, s, Request{Kind: KindBan, Value: "1.2.3.4"})
	mustAdd(t, s, Request{Kind: KindBan, Value: "1.2.3.5"})
	_, _, err := s.Add(Request{Kind: KindBan, Value: "1.2.3.6"})
	if CodeOf(err) != CodeFull || err.(*Error).HTTPStatus() != 507 {
		t.Fatalf("over the cap: %v", err)
	}
	// Re-adding an existing value is not a new entry and is allowed when full.
	if _, created, err := s.Add(Request{Kind: KindBan, Value: "1.2.3.5"}); err != nil || created {
		t.Fatalf("re-add when full: created=%v err=%v", created, err)
	}
	if _, err := s.Remove(999, "x", ""); CodeOf(err) != CodeNotFound {
		t.Fatalf("remove unknown: %v", err)
	}
	if _, err := s.RemoveValue(KindBan, "9.9.9.9", "x", ""); CodeOf(err) != CodeNotFound {
		t.Fatalf("remove unknown value: %v", err)
	}
}

func TestIdempotentAddExtendsNeverShortens(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := newStore(t, Config{Now: clk.Now})
	ch, cancel := s.Subscribe()
	defer cancel()
	e1, created, _ := s.Add(Request{Kind: KindBan, Value: "203.0.113.5", TTL: time.Hour})
	if !created {
		t.Fatal("first add not created")
	}
	e2, created, _ := s.Add(Request{Kind: KindBan, Value: "203.0.113.5", TTL: time.Minute})
	if created || e2.ID != e1.ID || !e2.Expires.Equal(e1.Expires) {
		t.Fatalf("shorter re-add changed the entry: %+v", e2)
	}
	e3, _, _ := s.Add(Request{Kind: KindBan, Value: "203.0.113.5", TTL: 2 * time.Hour})
	if !e3.Expires.Equal(clk.Now().Add(2 * time.Hour)) {
		t.Fatalf("longer re-add did not extend: %v", e3.Expires)
	}
	e4, _, _ := s.Add(Request{Kind: KindBan, Value: "203.0.113.5"})
	if !e4.Expires.IsZero() {
		t.Fatalf("re-add without ttl should make it permanent: %v", e4.Expires)
	}
	e5, _, _ := s.Add(Request{Kind: KindBan, Value: "203.0.113.5", TTL: time.Hour})
	if !e5.Expires.IsZero() {
		t.Fatalf("permanent ban shortened: %v", e5.Expires)
	}
	e6, _, _ := s.Add(Request{Kind: KindBan, Value: "203.0.113.5", Action: ActionObserve})
	if e6.Action != ActionObserve || s.Set().Match(ip("203.0.113.5"), ip("10.0.0.1"), 6, 1, 2).Action != ActionObserve {
		t.Fatalf("action change not applied: %+v", e6)
	}
	var ops []ChangeOp
	for len(ops) < 4 {
		select {
		case c := <-ch:
			ops = append(ops, c.Op)
		case <-time.After(time.Second):
			t.Fatalf("changes so far %v", ops)
		}
	}
	want := []ChangeOp{OpAdded, OpExtended, OpExtended, OpUpdated}
	if fmt.Sprint(ops) != fmt.Sprint(want) {
		t.Fatalf("changes %v, want %v", ops, want)
	}
	if n := s.Len(); n != 1 {
		t.Fatalf("Len = %d", n)
	}
}

func TestExpiryWithFakeClock(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := newStore(t, Config{Now: clk.Now})
	ch, cancel := s.Subscribe()
	defer cancel()
	short := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.1", TTL: 10 * time.Second})
	long := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.0/24", TTL: time.Hour})
	allow := mustAdd(t, s, Request{Kind: KindAllow, Value: "198.51.100.1", TTL: 5 * time.Second})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	clk.Advance(9 * time.Second)
	waitFor("allow expiry", func() bool { _, ok := s.Get(allow.ID); return !ok })
	if _, ok := s.Get(short.ID); !ok {
		t.Fatal("ban expired 1 s early")
	}
	clk.Advance(time.Second)
	waitFor("short ban expiry", func() bool { _, ok := s.Get(short.ID); return !ok })
	if v := s.Set().Match(ip("203.0.113.1"), ip("10.0.0.1"), 6, 1, 2); v.RuleID != long.ID {
		t.Fatalf("after expiry of the /32 the /24 should decide: %+v", v)
	}
	var expired []uint64
	for len(expired) < 2 {
		select {
		case c := <-ch:
			if c.Op == OpExpired {
				expired = append(expired, c.Entry.ID)
			}
		case <-time.After(time.Second):
			t.Fatalf("expired changes: %v", expired)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestACLMatching(t *testing.T) {
	home := netip.MustParsePrefix("10.0.0.0/8")
	s := newStore(t, Config{HomeNets: []netip.Prefix{home}})
	inSSH := mustAdd(t, s, Request{Kind: KindACL, ACL: &ACL{Proto: ProtoTCP, DstPorts: PortRange{From: 22}, Direction: DirIn}})
	outSMB := mustAdd(t, s, Request{Kind: KindACL, ACL: &ACL{Proto: ProtoTCP, DstPorts: PortRange{445, 445}, Direction: DirOut}, Action: ActionObserve})
	dns := mustAdd(t, s, Request{Kind: KindACL, ACL: &ACL{Proto: ProtoUDP, Src: netip.MustParsePrefix("203.0.113.0/24"), DstPorts: PortRange{53, 53}}})
	hiPorts := mustAdd(t, s, Request{Kind: KindACL, ACL: &ACL{Proto: ProtoAny, Dst: netip.MustParsePrefix("10.9.9.9/32")}})
	srcRange := mustAdd(t, s, Request{Kind: KindACL, ACL: &ACL{Proto: ProtoTCP, SrcPorts: PortRange{6000, 6010}}})
	ext, in := ip("198.51.100.1"), ip("10.1.1.1")
	cases := []struct {
		name     string
		src, dst netip.Addr
		proto    uint8
		sp, dp   uint16
		want     Verdict
	}{
		{"ssh in", ext, in, 6, 40000, 22, Verdict{Action: ActionBlock, RuleID: inSSH.ID}},
		{"ssh out not matched", in, ext, 6, 40000, 22, Verdict{}},
		{"ssh in udp not matched", ext, in, 17, 40000, 22, Verdict{}},
		{"ssh mapped", ip("::ffff:198.51.100.1"), ip("::ffff:10.1.1.1"), 6, 40000, 22, Verdict{Action: ActionBlock, RuleID: inSSH.ID}},
		{"smb out", in, ext, 6, 40000, 445, Verdict{Action: ActionObserve, RuleID: outSMB.ID}},
		{"smb in not matched", ext, in, 6, 40000, 445, Verdict{}},
		{"smb internal not matched", in, ip("10.2.2.2"), 6, 40000, 445, Verdict{}},
		{"dns from bad net", ip("203.0.113.9"), in, 17, 5353, 53, Verdict{Action: ActionBlock, RuleID: dns.ID}},
		{"dns from other net", ext, in, 17, 5353, 53, Verdict{}},
		{"any proto to host", ext, ip("10.9.9.9"), 1, 0, 0, Verdict{Action: ActionBlock, RuleID: hiPorts.ID}},
		{"src port range", ext, in, 6, 6005, 80, Verdict{Action: ActionBlock, RuleID: srcRange.ID}},
		{"src port range edge out", ext, in, 6, 6011, 80, Verdict{}},
		{"v6 nothing", ip("2001:db8::1"), ip("2001:db8::2"), 6, 1, 22, Verdict{}},
	}
	set := s.Set()
	for _, c := range cases {
		if got := set.Match(c.src, c.dst, c.proto, c.sp, c.dp); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
	// A ban decides before ACLs; the allowlist before both.
	ban := mustAdd(t, s, Request{Kind: KindBan, Value: "198.51.100.1"})
	if v := s.Set().Match(ext, in, 6, 40000, 22); v.RuleID != ban.ID {
		t.Errorf("ban should decide before the ACL: %+v", v)
	}
	mustAdd(t, s, Request{Kind: KindAllow, Value: "10.1.1.1", Force: true})
	if v := s.Set().Match(ext, in, 6, 40000, 22); !v.Allowlisted {
		t.Errorf("allowlist should win over ban and ACL: %+v", v)
	}
	// Same ACL again is idempotent.
	if _, created, _ := s.Add(Request{Kind: KindACL, ACL: &ACL{Proto: ProtoTCP, DstPorts: PortRange{22, 22}, Direction: DirIn}}); created {
		t.Error("same ACL added twice")
	}
	if got, total := s.List(Filter{Kind: KindACL, Contains: ip("203.0.113.4")}); total != 1 || got[0].ID != dns.ID {
		t.Errorf("List ACL contains: %v %d", got, total)
	}
}

func TestListFilterAndPaging(t *testing.T) {
	s := newStore(t, Config{})
	for i := range 10 {
		origin := OriginAPI
		if i%2 == 1 {
			origin = OriginTUI
		}
		mustAdd(t, s, Request{Kind: KindBan, Value: fmt.Sprintf("203.0.113.%d", i), Origin: origin})
	}
	mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.0/24"})
	got, total := s.List(Filter{Origin: OriginTUI, Offset: 1, Limit: 2})
	if total != 5 || len(got) != 2 || got[0].Value.String() != "203.0.113.3/32" {
		t.Fatalf("paging: total %d, %v", total, got)
	}
	got, total = s.List(Filter{Contains: ip("203.0.113.4")})
	if total != 2 {
		t.Fatalf("contains: %d %v", total, got)
	}
	if _, err := s.RemoveValue(KindBan, "203.0.113.4", "x", ""); err != nil {
		t.Fatal(err)
	}
	if _, total = s.List(Filter{}); total != 10 {
		t.Fatalf("after remove total %d", total)
	}
}

// Many adds and removes through the overlay, with folds in between, agree
// with a brute-force model at every step.
func TestStoreChurnMatchesModel(t *testing.T) {
	s := newStore(t, Config{MaxPrefixV4: 8})
	live := map[netip.Prefix]uint64{}
	rngSeed := uint64(11)
	rng := newRand(rngSeed)
	for step := range 12000 {
		p := randPrefix4(rng, 12)
		if id, ok := live[p]; ok && rng.IntN(2) == 0 {
			if _, err := s.Remove(id, "t", ""); err != nil {
				t.Fatal(err)
			}
			delete(live, p)
		} else {
			e, _, err := s.Add(Request{Kind: KindBan, Value: p.String()})
			if err != nil {
				t.Fatal(err)
			}
			live[p] = e.ID
		}
		if step%1000 == 999 {
			var ps []netip.Prefix
			for p := range live {
				ps = append(ps, p)
			}
			set := s.Set()
			for range 2000 {
				a := randAddr4(rng)
				v := set.Match(a, ip("255.255.255.255"), 6, 1, 2)
				want := uint64(0)
				if w := bruteLPM(ps, a); w >= 0 {
					want = live[ps[w]]
				}
				if v.RuleID != want {
					t.Fatalf("step %d: Match(%s) = %d, want %d", step, a, v.RuleID, want)
				}
			}
		}
	}
}

func TestAddBatch(t *testing.T) {
	s := newStore(t, Config{StateDir: t.TempDir()})
	ch, cancel := s.Subscribe()
	defer cancel()
	res := s.AddBatch([]Request{
		{Kind: KindBan, Value: "203.0.113.1"},
		{Kind: KindBan, Value: "bogus"},
		{Kind: KindBan, Value: "203.0.113.0/24", Action: ActionObserve},
		{Kind: KindBan, Value: "203.0.113.1", TTL: time.Hour}, // same value: not a new entry
	})
	if res[0].Err != nil || !res[0].Created || CodeOf(res[1].Err) != CodeInvalid || res[2].Err != nil || res[3].Created || res[3].Entry.ID != res[0].Entry.ID {
		t.Fatalf("results: %+v", res)
	}
	set := s.Set()
	if v := set.Match(ip("203.0.113.1"), ip("10.0.0.1"), 6, 1, 2); v.RuleID != res[0].Entry.ID {
		t.Fatalf("batch ban not matched: %+v", v)
	}
	if v := set.Match(ip("203.0.113.2"), ip("10.0.0.1"), 6, 1, 2); v.RuleID != res[2].Entry.ID || v.Action != ActionObserve {
		t.Fatalf("batch prefix not matched: %+v", v)
	}
	// Changes arrive only after the Set that reflects them is published.
	for range 2 {
		c := <-ch
		if c.Op != OpAdded || s.Set().Generation() < set.Generation() {
			t.Fatalf("change %+v before its set", c)
		}
	}
}

// Error satisfies the API's seam, interface{ Code() string }.
var _ interface{ Code() string } = (*Error)(nil)

func TestClosedStoreRefusesWithoutHanging(t *testing.T) {
	s := newStore(t, Config{StateDir: t.TempDir()})
	e := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.1", TTL: time.Millisecond})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, _, err := s.Add(Request{Kind: KindBan, Value: "203.0.113.2"}); CodeOf(err) != CodeStorage {
			t.Errorf("Add after Close: %v", err)
		}
		if _, err := s.Remove(e.ID, "x", ""); CodeOf(err) != CodeStorage {
			t.Errorf("Remove after Close: %v", err)
		}
		if err := s.Audit(AuditRecord{Action: AuditMode}); err == nil {
			t.Error("Audit after Close: no error")
		}
		s.expireDue()
		if _, err := s.LoadBlockFile(filepath.Join(t.TempDir(), "x")); err == nil {
			t.Error("LoadBlockFile after Close: no error")
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a call on a closed store hung")
	}
}

// Hit counts add up across folds (the compiled rule, and its counter,
// moves from the overlay into a new base).
func TestHitsSurviveFolds(t *testing.T) {
	s := newStore(t, Config{})
	x := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.7"})
	match := func(n int) {
		for range n {
			if v := s.Set().Match(ip("203.0.113.7"), ip("10.0.0.1"), 6, 1, 2); v.RuleID != x.ID {
				t.Fatalf("no match: %+v", v)
			}
		}
	}
	match(5) // through the overlay
	folded := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.folding && s.ov.size()+s.young.size() == 0
	}
	for round := range 2 {
		var reqs []Request
		for i := range foldAt + 10 {
			reqs = append(reqs, Request{Kind: KindBan, Value: fmt.Sprintf("198.%d.%d.%d", 18+round, i/256, i%256)})
		}
		s.AddBatch(reqs)
		deadline := time.Now().Add(5 * time.Second)
		for !folded() {
			if time.Now().After(deadline) {
				t.Fatal("fold did not finish")
			}
			time.Sleep(5 * time.Millisecond)
		}
		match(3) // through the base of this round
	}
	if e, _ := s.Get(x.ID); e.Hits != 11 {
		t.Fatalf("hits = %d, want 11", e.Hits)
	}
}

// Whenever a subscriber receives Added, the current Set already blocks the
// entry: the sensor kills live sessions on that signal.
func TestChangeArrivesAfterPublish(t *testing.T) {
	s := newStore(t, Config{StateDir: t.TempDir()})
	ch, cancel := s.Subscribe()
	defer cancel()
	const writers, each = 8, 300
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, _, err := s.Add(Request{Kind: KindBan, Value: fmt.Sprintf("10.%d.%d.%d", g, i/256, i%256)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for n := 0; n < writers*each; n++ {
		select {
		case c := <-ch:
			if v := s.Set().Match(c.Entry.Value.Addr(), ip("192.0.2.1"), 6, 1, 2); v.RuleID != c.Entry.ID {
				t.Fatalf("change for %s delivered before its Set: %+v", c.Entry.Value, v)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d changes delivered", n, writers*each)
		}
	}
	wg.Wait()
	if d := s.DroppedChanges(); d != 0 {
		t.Fatalf("%d changes dropped with a subscriber keeping up", d)
	}
}

// A subscriber that never reads does not block adds; its losses are counted.
func TestSlowSubscriberDoesNotBlock(t *testing.T) {
	s := newStore(t, Config{})
	_, cancel := s.Subscribe()
	defer cancel()
	var reqs []Request
	for i := range subBuffer + 100 {
		reqs = append(reqs, Request{Kind: KindBan, Value: fmt.Sprintf("10.0.%d.%d", i/256, i%256)})
	}
	done := make(chan struct{})
	go func() { s.AddBatch(reqs); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a subscriber that does not read blocked the store")
	}
	if d := s.DroppedChanges(); d != 100 {
		t.Fatalf("dropped %d changes, want 100", d)
	}
}

func TestStats(t *testing.T) {
	s := newStore(t, Config{ImplicitAllow: []ImplicitAllow{{Prefix: pfx("192.0.2.1/32"), Comment: "sensor"}}})
	mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.1"})
	mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.2", Origin: OriginTUI})
	s.Add(Request{Kind: KindBan, Value: "192.0.2.1"})
	s.Add(Request{Kind: KindBan, Value: "1.0.0.0/8"})
	s.Add(Request{Kind: KindBan, Value: "junk"})
	st := s.Stats()
	if st.Entries[KindBan] != 2 || st.Entries[KindAllow] != 1 || st.ByOrigin[OriginTUI] != 1 || st.ByOrigin[OriginSystem] != 1 {
		t.Fatalf("entries: %+v", st)
	}
	if st.Rejected[CodeAllowlisted] != 1 || st.Rejected[CodeTooWide] != 1 || st.Rejected[CodeInvalid] != 1 {
		t.Fatalf("rejected: %+v", st.Rejected)
	}
	if st.Generation != s.Set().Generation() {
		t.Fatalf("generation %d, set %d", st.Generation, s.Set().Generation())
	}
}

// Every match counts on the entry that decided it, and on no other: with
// nested bans in the compiled base (the counters live in its blocks),
// through the overlay, past tombstones, and across a rebuild. The
// reference is a brute-force longest-prefix match.
func TestHitCountsBruteForce(t *testing.T) {
	for _, fam := range []string{"v4", "v6"} {
		t.Run(fam, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(11, 11))
			gen, other := randAddr4, ip("203.0.113.1")
			newPrefix := func() netip.Prefix { return randPrefix4(rng, 8) }
			if fam == "v6" {
				gen, other = randAddr6, ip("3fff::1")
				newPrefix = func() netip.Prefix { return randPrefix6(rng, 16) }
			}
			s := newStore(t, Config{})
			fold := func() {
				s.mu.Lock()
				s.rebuildLocked()
				s.publishLocked(true)
				s.mu.Unlock()
			}
			live := map[netip.Prefix]uint64{} // prefix → entry ID
			add := func(n int) {
				var reqs []Request
				for range n {
					p := newPrefix()
					if _, dup := live[p]; !dup {
						live[p] = 0
						reqs = append(reqs, Request{Kind: KindBan, Value: p.String(), Force: true})
					}
				}
				for _, r := range s.AddBatch(reqs) {
					if r.Err != nil {
						t.Fatal(r.Err)
					}
					live[r.Entry.Value] = r.Entry.ID
				}
			}
			want := map[uint64]uint64{}
			match := func(n int) {
				var ps []netip.Prefix
				for p := range live {
					ps = append(ps, p)
				}
				set := s.Set()
				for i := range n {
					a := gen(rng)
					if i%3 == 0 { // exactly on a prefix, often a nested one
						a = ps[rng.IntN(len(ps))].Addr()
					}
					var wantID uint64
					if w := bruteLPM(ps, a); w >= 0 {
						wantID = live[ps[w]]
						want[wantID]++
					}
					src, dst := a, other
					if i%2 == 1 {
						src, dst = other, a
					}
					if v := set.Match(src, dst, 6, 1, 2); v.RuleID != wantID {
						t.Fatalf("Match(%s) = %+v, want rule %d", a, v, wantID)
					}
				}
			}
			add(300)
			fold()
			if !s.Set().plain {
				t.Fatal("a freshly folded Set should take the base-only path")
			}
			match(4000)
			// Overlay rules and tombstones over the same base.
			add(40)
			var removed []netip.Prefix
			for p, id := range live {
				if len(removed) == 30 {
					break
				}
				if _, err := s.Remove(id, "test", ""); err != nil {
					t.Fatal(err)
				}
				removed = append(removed, p)
			}
			for _, p := range removed {
				delete(live, p)
			}
			if s.Set().plain {
				t.Fatal("a Set with an overlay should not take the base-only path")
			}
			match(4000)
			fold()
			match(4000)
			for p, id := range live {
				e, ok := s.Get(id)
				if !ok {
					t.Fatalf("%s: entry %d gone", p, id)
				}
				if e.Hits != want[id] {
					t.Errorf("%s: hits = %d, want %d", p, e.Hits, want[id])
				}
			}
		})
	}
}

// Run starts a fold when the overlay has been non-empty for a while, and
// it may do so between an Add (whose op is still pending) and the
// committer's round. The committer must still publish a Set with the new
// ban before the Add returns and the change goes out: otherwise the ban is
// not in force until the fold finishes (a quarter second and more with a
// million bans), while the sensor, told of it, finds nothing to block.
// The interleaving is replayed step by step under the lock.
func TestFoldStartedBeforeCommitStillPublishes(t *testing.T) {
	s := newStore(t, Config{})
	ch, cancel := s.Subscribe()
	defer cancel()
	s.mu.Lock()
	e, _, err := s.addLocked(Request{Kind: KindBan, Value: "203.0.113.7"}, s.now()) // Add, before commitLocked
	if err != nil {
		s.mu.Unlock()
		t.Fatal(err)
	}
	s.startFoldLocked()    // Run: an idle fold
	s.publishLocked(false) // the committer's round for the Add
	set := s.cur.Load()
	s.mu.Unlock()
	select {
	case c := <-ch:
		if c.Entry.ID != e.ID {
			t.Fatalf("change for %d, want %d", c.Entry.ID, e.ID)
		}
	default:
		t.Fatal("the change was not delivered")
	}
	if v := set.Match(ip("203.0.113.7"), ip("10.0.0.1"), 6, 1, 2); v.RuleID != e.ID {
		t.Fatalf("change delivered, but the published Set does not match the new ban: %+v", v)
	}
}
