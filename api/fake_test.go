package api

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// The fakes below stand in for rules.Store and the sensor, which are being
// built in parallel with this package. They implement just enough of the
// behaviour the API relies on (idempotent add, guards with coded errors,
// non-blocking event fan-out) to test the HTTP layer; the daemon's tests
// exercise the API against the real store and sensor.

type fakeErr struct{ code, msg string }

func (e *fakeErr) Error() string { return e.msg }
func (e *fakeErr) Code() string  { return e.code }

type fakeRules struct {
	mu      sync.Mutex
	next    uint64
	entries map[uint64]rules.Entry
	byKey   map[string]uint64 // entryKey → id
	allows  map[uint64]netip.Prefix
	cap     int
	failAdd error // when set, Add returns it (storage failures)
	audit   []rules.AuditRecord
	now     func() time.Time
}

func newFakeRules() *fakeRules {
	return &fakeRules{entries: map[uint64]rules.Entry{}, byKey: map[string]uint64{}, allows: map[uint64]netip.Prefix{}, cap: 1 << 20, now: time.Now}
}

func entryKey(kind rules.Kind, value netip.Prefix, acl *rules.ACL) string {
	if acl != nil {
		return fmt.Sprintf("%s|%+v", kind, *acl)
	}
	return fmt.Sprintf("%s|%s", kind, value)
}

func (f *fakeRules) record(op string, e rules.Entry, who string) {
	f.audit = append(f.audit, rules.AuditRecord{Time: f.now(), Action: op, Who: who,
		Entry: &rules.AuditEntry{ID: e.ID, Kind: e.Kind, Value: e.Value.String(), Origin: e.Origin}})
}

func (f *fakeRules) Add(req rules.Request) (rules.Entry, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAdd != nil {
		return rules.Entry{}, false, f.failAdd
	}
	var p netip.Prefix
	if req.Kind != rules.KindACL {
		var err error
		if p, err = parsePrefix(req.Value); err != nil {
			return rules.Entry{}, false, &fakeErr{"invalid", err.Error()}
		}
		p = p.Masked()
		min := 8
		if p.Addr().Is6() {
			min = 32
		}
		if p.Bits() < min && !req.Force {
			return rules.Entry{}, false, &fakeErr{"too_wide", fmt.Sprintf("%s is wider than /%d", p, min)}
		}
	} else if req.ACL == nil {
		return rules.Entry{}, false, &fakeErr{"invalid", "ACL missing"}
	}
	if req.Kind == rules.KindBan && !req.Force {
		for id, a := range f.allows {
			if a.Overlaps(p) {
				return rules.Entry{}, false, &fakeErr{"allowlisted", fmt.Sprintf("%s overlaps allowlist entry %d (%s)", p, id, a)}
			}
		}
	}
	now := f.now()
	var exp time.Time
	if req.TTL > 0 {
		exp = now.Add(req.TTL)
	}
	key := entryKey(req.Kind, p, req.ACL)
	if id, ok := f.byKey[key]; ok {
		e := f.entries[id]
		{
			e.Expires = exp
			if req.Reason != "" {
				e.Reason = req.Reason
			}
			f.entries[id] = e
			f.record("extend", e, req.RequestedBy)
			return e, false, nil
		}
	}
	if len(f.entries) >= f.cap {
		return rules.Entry{}, false, &fakeErr{"full", fmt.Sprintf("%d entries, the cap", f.cap)}
	}
	f.next++
	e := rules.Entry{ID: f.next, Kind: req.Kind, Value: p, ACL: req.ACL, Action: req.Action, Origin: req.Origin,
		Reason: req.Reason, RequestedBy: req.RequestedBy, Created: now, Expires: exp, Forced: req.Force}
	f.entries[e.ID] = e
	f.byKey[key] = e.ID
	if e.Kind == rules.KindAllow {
		f.allows[e.ID] = p
	}
	f.record("add", e, req.RequestedBy)
	return e, true, nil
}

func (f *fakeRules) Get(id uint64) (rules.Entry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[id]
	return e, ok
}

func (f *fakeRules) List(fl RuleFilter) ([]rules.Entry, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []rules.Entry
	for _, e := range f.entries {
		if fl.Kind != "" && e.Kind != fl.Kind || fl.Origin != "" && e.Origin != fl.Origin {
			continue
		}
		if fl.Contains.IsValid() && !e.Value.Contains(fl.Contains) {
			continue
		}
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b rules.Entry) int { return int(a.ID) - int(b.ID) })
	total := len(all)
	if fl.Offset >= len(all) {
		return nil, total
	}
	all = all[fl.Offset:]
	if fl.Limit > 0 && len(all) > fl.Limit {
		all = all[:fl.Limit]
	}
	return all, total
}

func (f *fakeRules) Remove(id uint64, who, reason string) (rules.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[id]
	if !ok {
		return e, &fakeErr{"not_found", fmt.Sprintf("no entry %d", id)}
	}
	delete(f.entries, id)
	delete(f.byKey, entryKey(e.Kind, e.Value, e.ACL))
	delete(f.allows, id)
	f.record("remove", e, who)
	return e, nil
}

func (f *fakeRules) RemoveValue(kind rules.Kind, value, who, reason string) (rules.Entry, error) {
	p, err := parsePrefix(value)
	if err != nil {
		return rules.Entry{}, &fakeErr{"invalid", err.Error()}
	}
	f.mu.Lock()
	var id uint64
	for _, e := range f.entries {
		if e.Kind == kind && e.Value == p.Masked() {
			id = e.ID
		}
	}
	f.mu.Unlock()
	if id == 0 {
		return rules.Entry{}, &fakeErr{"not_found", fmt.Sprintf("no %s for %s", kind, value)}
	}
	return f.Remove(id, who, reason)
}

func (f *fakeRules) CheckAllow(ip netip.Addr) (rules.Entry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.entries {
		if e.Kind == rules.KindAllow && e.Value.Contains(ip) {
			return e, true
		}
	}
	return rules.Entry{}, false
}

func (f *fakeRules) ReadAudit(since time.Time, limit int) ([]rules.AuditRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []rules.AuditRecord
	for _, a := range f.audit {
		if !a.Time.Before(since) && len(out) < limit {
			out = append(out, a)
		}
	}
	return out, nil
}

// batchRules is fakeRules with AddBatch, as the real store has.
type batchRules struct {
	*fakeRules
	batches atomic.Int64
}

func (b *batchRules) AddBatch(reqs []rules.Request) []rules.AddResult {
	b.batches.Add(1)
	out := make([]rules.AddResult, len(reqs))
	for i, r := range reqs {
		out[i].Entry, out[i].Created, out[i].Err = b.Add(r)
	}
	return out
}

// fakeSensor publishes events like the real bus: never blocking, dropping
// for a subscriber whose channel is full.
type fakeSensor struct {
	mu      sync.Mutex
	snap    sensor.Snapshot
	ready   atomic.Bool
	subs    map[chan sensor.Event]struct{}
	subBuf  int
	dropped atomic.Uint64
	flows   []flow.Info
	panicOn netip.Prefix // Flows panics for this prefix, to test recovery
}

func newFakeSensor() *fakeSensor {
	s := &fakeSensor{subs: map[chan sensor.Event]struct{}{}, subBuf: 4096}
	s.snap.Status = sensor.Status{Version: "test", Started: time.Now().Add(-time.Hour), Mode: sensor.ModeEnforce, Source: "live", Ifaces: []string{"eth1"}}
	s.ready.Store(true)
	return s
}

func (s *fakeSensor) Snapshot() sensor.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

func (s *fakeSensor) setSnapshot(fn func(*sensor.Snapshot)) {
	s.mu.Lock()
	fn(&s.snap)
	s.mu.Unlock()
}

func (s *fakeSensor) Flows(ctx context.Context, p netip.Prefix, max int) ([]flow.Info, error) {
	if p == s.panicOn {
		panic("fake sensor: deliberate panic in Flows")
	}
	var out []flow.Info
	for _, f := range s.flows {
		if (p.Contains(f.A) || p.Contains(f.B)) && len(out) < max {
			out = append(out, f)
		}
	}
	return out, nil
}

func (s *fakeSensor) SetMode(m sensor.Mode, who string) error {
	s.mu.Lock()
	s.snap.Status.Mode = m
	s.mu.Unlock()
	s.Publish(sensor.Event{Type: sensor.EventMode, Time: time.Now(), Mode: m})
	return nil
}

func (s *fakeSensor) Subscribe() (<-chan sensor.Event, func()) {
	ch := make(chan sensor.Event, s.subBuf)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.subs, ch)
			s.mu.Unlock()
			close(ch)
		})
	}
}

func (s *fakeSensor) subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// Publish never blocks, like the sensor's bus.
func (s *fakeSensor) Publish(ev sensor.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}

func (s *fakeSensor) Ready() bool { return s.ready.Load() }
