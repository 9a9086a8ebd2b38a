package api

import (
	"context"
	"net/netip"
	"time"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// RuleFilter selects entries for [Rules.List] and [Client.Bans]. It is the
// rule store's own filter (Kind, Origin, Contains, Offset, Limit; zero
// fields match everything, Limit 0 means no limit), so that *rules.Store
// can be passed as Rules without an adapter.
type RuleFilter = rules.Filter

// Rules is what the API needs from the rule store (bans, ACLs, allowlist);
// *rules.Store implements it. Errors should implement interface{ Code()
// string } with one of "invalid", "too_wide", "allowlisted", "full",
// "not_found" or "storage" so the API can answer with the matching status;
// any other error is reported as a 500. If the store also has
// AddBatch([]rules.Request) []rules.AddResult, bulk requests use it (one
// commit for a whole batch instead of one per line).
type Rules interface {
	// Add creates an entry, or extends the existing entry for the same
	// kind and value (created is then false).
	Add(req rules.Request) (e rules.Entry, created bool, err error)
	// Get returns the entry with this id.
	Get(id uint64) (rules.Entry, bool)
	// List returns one page of matching entries and how many match in all.
	List(f RuleFilter) (page []rules.Entry, total int)
	// Remove lifts an entry by id; who and reason go to the audit log.
	Remove(id uint64, who, reason string) (rules.Entry, error)
	// RemoveValue lifts the entry of this kind whose value is value.
	RemoveValue(kind rules.Kind, value, who, reason string) (rules.Entry, error)
	// CheckAllow reports the allowlist entry covering ip, if any.
	CheckAllow(ip netip.Addr) (rules.Entry, bool)
	// ReadAudit returns up to limit audit records at or after since (zero:
	// from the beginning), oldest first.
	ReadAudit(since time.Time, limit int) ([]rules.AuditRecord, error)
}

// Sensor is what the API needs from the running sensor.
type Sensor interface {
	// Snapshot returns the latest published snapshot; it must be cheap.
	Snapshot() sensor.Snapshot
	// Flows returns up to max live flows with an endpoint inside p.
	Flows(ctx context.Context, p netip.Prefix, max int) ([]flow.Info, error)
	// SetMode switches enforcement on or off; who goes to the audit log.
	SetMode(m sensor.Mode, who string) error
	// Subscribe returns a bounded channel of events and a function that
	// ends the subscription. The sensor must never block on the channel:
	// when it is full, it drops.
	Subscribe() (events <-chan sensor.Event, cancel func())
	// Ready reports whether capture, injection and the rules are up.
	Ready() bool
}

// coder is implemented by the rule store's errors.
type coder interface{ Code() string }

// batchAdder is implemented by rule stores that can apply many adds as one
// change (one publish, one fsync).
type batchAdder interface {
	AddBatch(reqs []rules.Request) []rules.AddResult
}
