package ui

import (
	"net/netip"
	"time"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// Messages the dashboard's commands send back to Update. Each carries the
// result of one Backend call made off the event loop.

// tickMsg is the 1 Hz heartbeat that asks for a fresh snapshot.
type tickMsg time.Time

// snapshotMsg is the answer to one Backend.Snapshot call. seq orders the
// calls so a slow, older answer never replaces a newer one.
type snapshotMsg struct {
	seq  uint64
	snap sensor.Snapshot
	err  error
}

// banResultMsg is the answer to a ban the operator confirmed.
type banResultMsg struct {
	target netip.Prefix
	ttl    time.Duration
	entry  rules.Entry
	err    error
}

// unbanResultMsg is the answer to an unban the operator confirmed.
type unbanResultMsg struct {
	target rules.Entry
	err    error
}

// modeResultMsg is the answer to a mode switch the operator confirmed.
type modeResultMsg struct {
	mode sensor.Mode
	err  error
}

// flowsMsg is the answer to a drill-down's Backend.Flows call.
type flowsMsg struct {
	target netip.Prefix
	flows  []flow.Info
	err    error
}
