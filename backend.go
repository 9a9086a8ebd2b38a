package main

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"canopy/api"
	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// setMode switches the engine's mode and records who did it in the audit
// log.
func (s *stack) setMode(m sensor.Mode, who string) error {
	before := s.engine.Mode()
	if err := s.engine.SetMode(m, who); err != nil {
		return err
	}
	if before != m {
		if err := s.store.Audit(rules.AuditRecord{Time: time.Now(), Action: "mode", Who: who,
			Detail: fmt.Sprintf("%s -> %s", before, m)}); err != nil {
			s.log.Warn("mode change not audited", "err", err)
		}
	}
	return nil
}

// localBackend is the dashboard's view of an in-process sensor.
type localBackend struct{ s *stack }

func (b localBackend) Snapshot(ctx context.Context) (sensor.Snapshot, error) {
	return b.s.engine.Snapshot(), nil
}

func (b localBackend) Ban(ctx context.Context, req rules.Request) (rules.Entry, error) {
	e, _, err := b.s.store.Add(req)
	if err == nil {
		b.s.engine.Refresh(ctx)
	}
	return e, err
}

func (b localBackend) Unban(ctx context.Context, id uint64, reason string) (rules.Entry, error) {
	e, err := b.s.store.Remove(id, "tui", reason)
	if err == nil {
		b.s.engine.Refresh(ctx)
	}
	return e, err
}

func (b localBackend) SetMode(ctx context.Context, m sensor.Mode) error {
	err := b.s.setMode(m, "tui")
	b.s.engine.Refresh(ctx)
	return err
}

func (b localBackend) Flows(ctx context.Context, p netip.Prefix) ([]flow.Info, error) {
	return b.s.engine.Flows(ctx, p, dashboardFlows)
}

// attachBackend is the dashboard's view of a daemon, through its API.
type attachBackend struct{ c *api.Client }

// Snapshot asks for at most snapshotRules rule entries: a daemon with a
// million bans would otherwise send them all every second.
func (b attachBackend) Snapshot(ctx context.Context) (sensor.Snapshot, error) {
	return b.c.SnapshotRules(ctx, snapshotRules)
}

// snapshotRules is how many rule entries the attached dashboard shows.
const snapshotRules = 1000

func (b attachBackend) Ban(ctx context.Context, req rules.Request) (rules.Entry, error) {
	return b.c.Ban(ctx, req)
}

func (b attachBackend) Unban(ctx context.Context, id uint64, reason string) (rules.Entry, error) {
	return b.c.Remove(ctx, rules.KindBan, strconv.FormatUint(id, 10), reason)
}

func (b attachBackend) SetMode(ctx context.Context, m sensor.Mode) error { return b.c.SetMode(ctx, m) }

func (b attachBackend) Flows(ctx context.Context, p netip.Prefix) ([]flow.Info, error) {
	return b.c.Flows(ctx, p, dashboardFlows)
}

// dashboardFlows is the most flows the drill-down lists, in-process or
// attached.
const dashboardFlows = 500

// apiSensor adapts the engine to the API's Sensor seam; mode changes are
// audited.
type apiSensor struct{ s *stack }

func (a apiSensor) Snapshot() sensor.Snapshot { return a.s.engine.Snapshot() }
func (a apiSensor) Flows(ctx context.Context, p netip.Prefix, max int) ([]flow.Info, error) {
	return a.s.engine.Flows(ctx, p, max)
}
func (a apiSensor) SetMode(m sensor.Mode, who string) error  { return a.s.setMode(m, who) }
func (a apiSensor) Subscribe() (<-chan sensor.Event, func()) { return a.s.engine.Subscribe() }
func (a apiSensor) Ready() bool                              { return a.s.engine.Ready() }
