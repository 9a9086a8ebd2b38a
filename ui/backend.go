package ui

import (
	"context"
	"net/netip"
	"time"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// Backend is everything the dashboard needs from the sensor: the
// in-process sensor, or the API client in attach mode, adapted to it by the
// caller. Every method is called from a tea.Cmd goroutine, never from
// Update, may be called concurrently with the others, and must honour ctx.
type Backend interface {
	// Snapshot returns the latest published snapshot. In attach mode it is
	// GET /v1/snapshot.
	Snapshot(ctx context.Context) (sensor.Snapshot, error)
	// Ban adds (or extends) an entry. Its error text is shown to the
	// operator verbatim, so it should say why (e.g. "refused: 10.0.0.5 is
	// allowlisted by 10.0.0.0/8 (core routers)").
	Ban(ctx context.Context, req rules.Request) (rules.Entry, error)
	// Unban removes the ban (rules.KindBan; the dashboard lifts nothing
	// else) with this ID and returns it as it was; reason goes to the audit
	// log.
	Unban(ctx context.Context, id uint64, reason string) (rules.Entry, error)
	// SetMode switches the whole sensor between enforce and observe.
	SetMode(ctx context.Context, m sensor.Mode) error
	// Flows lists the live flows with an endpoint in p, an address or a
	// network (drill-down view).
	Flows(ctx context.Context, p netip.Prefix) ([]flow.Info, error)
}

// Config is what the dashboard needs to start.
type Config struct {
	// Backend supplies snapshots and carries out actions. Required.
	Backend Backend
	// Ifaces are the capture interfaces, shown in the header. When empty the
	// header shows the interfaces the snapshot reports.
	Ifaces []string
	// DefaultBanTTL pre-fills the ban form's duration. Zero means one hour:
	// a ban that never expires must be asked for explicitly ("never").
	DefaultBanTTL time.Duration
	// Attached is true when the dashboard watches a daemon over its API
	// rather than running the sensor in-process: quitting then leaves the
	// daemon (and its blocking) running, and the quit prompt says so.
	Attached bool
}

// defaultBanTTL is the ban form's duration when Config.DefaultBanTTL is zero.
const defaultBanTTL = time.Hour

func (c Config) banTTL() time.Duration {
	if c.DefaultBanTTL > 0 {
		return c.DefaultBanTTL
	}
	return defaultBanTTL
}

// noBackend stands in for a missing Config.Backend: every call fails with
// errNoBackend, which the dashboard shows, instead of panicking.
type noBackend struct{}

func (noBackend) Snapshot(context.Context) (sensor.Snapshot, error) {
	return sensor.Snapshot{}, errNoBackend
}

func (noBackend) Ban(context.Context, rules.Request) (rules.Entry, error) {
	return rules.Entry{}, errNoBackend
}

func (noBackend) Unban(context.Context, uint64, string) (rules.Entry, error) {
	return rules.Entry{}, errNoBackend
}

func (noBackend) SetMode(context.Context, sensor.Mode) error { return errNoBackend }

func (noBackend) Flows(context.Context, netip.Prefix) ([]flow.Info, error) {
	return nil, errNoBackend
}
