package rules

import (
	"log/slog"
	"net/netip"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxPrefixV4 = 16
	DefaultMaxPrefixV6 = 48
	DefaultMaxEntries  = 2_000_000
)

// ImplicitAllow is an allowlist entry the sensor derives from its own setup
// (its addresses, the next hop): always present, never persisted, and not
// removable through the API.
type ImplicitAllow struct {
	Prefix  netip.Prefix
	Comment string // shown in refusals, e.g. "sensor inject address"
}

// Config configures a Store. The zero value is a working in-memory store
// with the default guards.
type Config struct {
	// StateDir holds state.json, journal-*.jsonl and audit.jsonl. Empty:
	// nothing is persisted and the audit log is kept in memory (last
	// 10,000 records).
	StateDir string
	// MaxPrefixV4 is the widest IPv4 ban accepted without Force (0: /16).
	MaxPrefixV4 int
	// MaxPrefixV6 is the widest IPv6 ban accepted without Force (0: /48).
	MaxPrefixV6 int
	// MaxEntries caps the number of entries, implicit ones excluded
	// (0: 2,000,000).
	MaxEntries int
	// ImplicitAllow lists the addresses that must never be blocked.
	ImplicitAllow []ImplicitAllow
	// HomeNets are the protected networks; ACL directions "in" and "out"
	// are relative to them. Empty: ACLs with a direction are refused.
	HomeNets []netip.Prefix
	// Now is the clock (nil: time.Now). Tests pass a fake.
	Now func() time.Time
	// Logger receives operational messages (nil: slog.Default()).
	Logger *slog.Logger
}

// ChangeOp says what happened to an entry.
type ChangeOp string

const (
	OpAdded    ChangeOp = "added"    // a new entry is in force
	OpExtended ChangeOp = "extended" // an existing entry's expiry moved later
	OpUpdated  ChangeOp = "updated"  // an existing entry's action changed (treat like added: re-evaluate live flows)
	OpRemoved  ChangeOp = "removed"  // lifted by someone (API, block file line removed)
	OpExpired  ChangeOp = "expired"  // reached its expiry
)

// Change is one event of the changes feed. When it is delivered, the Set
// reflecting it is already published (Store.Set returns it or a later one).
type Change struct {
	Op    ChangeOp
	Entry Entry
	At    time.Time
}

// Filter selects entries for List. Zero fields match everything; Limit 0
// means no limit.
type Filter struct {
	Kind     Kind
	Origin   Origin
	Contains netip.Addr // entries whose prefix (or ACL src/dst) covers this address
	Offset   int
	Limit    int
}

// Audit actions.
const (
	AuditAdd      = "add"
	AuditExtend   = "extend"
	AuditUpdate   = "update"
	AuditRemove   = "remove"
	AuditExpire   = "expire"
	AuditOverride = "override" // an add that passed a safety guard with force
	AuditMode     = "mode"     // enforcement mode changed (written by the sensor/API)
	AuditReload   = "reload"   // configuration or block file reloaded
	AuditLoad     = "load"     // state loaded at start, with anything that was wrong with it
)

// AuditEntry is the part of an entry an audit record carries.
type AuditEntry struct {
	ID          uint64    `json:"id"`
	Kind        Kind      `json:"kind"`
	Value       string    `json:"value,omitempty"`
	ACL         *ACL      `json:"acl,omitempty"`
	Action      Action    `json:"action,omitempty"`
	Origin      Origin    `json:"origin"`
	Reason      string    `json:"reason,omitempty"`
	RequestedBy string    `json:"requested_by,omitempty"`
	Expires     time.Time `json:"expires,omitzero"`
}

// AuditRecord is one line of the audit log.
type AuditRecord struct {
	Time   time.Time   `json:"time"`
	Action string      `json:"action"`
	Entry  *AuditEntry `json:"entry,omitempty"`
	Who    string      `json:"who,omitempty"`
	Detail string      `json:"detail,omitempty"`
}

func auditEntry(e *Entry) *AuditEntry {
	a := &AuditEntry{
		ID: e.ID, Kind: e.Kind, ACL: e.ACL, Action: e.Action, Origin: e.Origin,
		Reason: e.Reason, RequestedBy: e.RequestedBy, Expires: e.Expires,
	}
	if e.Value.IsValid() {
		a.Value = e.Value.String()
	}
	return a
}
