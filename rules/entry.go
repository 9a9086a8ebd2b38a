package rules

import (
	"net/netip"
	"time"
)

// Kind is what an entry does.
type Kind string

const (
	KindBan   Kind = "ban"   // block an address or prefix, both directions
	KindACL   Kind = "acl"   // block (or observe) layer-4 traffic matching protocol, prefixes, ports, direction
	KindAllow Kind = "allow" // never block this prefix; wins over every ban and ACL
)

// Action is what happens to traffic an entry matches.
type Action string

const (
	ActionBlock   Action = "block"   // reset the session
	ActionObserve Action = "observe" // log "would block", send nothing
)

// Origin says who asked for an entry.
type Origin string

const (
	OriginAPI    Origin = "api"    // the HTTP API (SOAR, SIEM, scripts); persisted
	OriginTUI    Origin = "tui"    // the dashboard's ban key; persisted
	OriginFile   Origin = "file"   // a line of the watched block file; re-read at start, not persisted
	OriginConfig Origin = "config" // the configuration file; re-read at start, not persisted
	OriginFeed   Origin = "feed"   // a threat-intelligence feed; persisted
	OriginCLI    Origin = "cli"    // `canopy ban …` against the daemon; persisted
	OriginSystem Origin = "system" // implicit entries: the sensor's own addresses, the next hop
)

// Proto restricts an ACL to a transport protocol.
type Proto string

const (
	ProtoAny Proto = "any" // every protocol (ports then cannot be set)
	ProtoTCP Proto = "tcp" // TCP only
	ProtoUDP Proto = "udp" // UDP only
)

// Direction restricts an ACL to traffic in one direction relative to the
// protected networks (Config.HomeNets): "in" is toward them, "out" is from
// them. It is judged per packet from its source and destination.
type Direction string

const (
	DirBoth Direction = "both" // either way
	DirIn   Direction = "in"   // source outside Config.HomeNets, destination inside
	DirOut  Direction = "out"  // source inside Config.HomeNets, destination outside
)

// PortRange is an inclusive range of ports; the zero value means any port,
// and To 0 with From set means the single port From.
type PortRange struct {
	From uint16 `json:"from"`
	To   uint16 `json:"to"`
}

// ACL is the layer-4 part of an ACL entry.
type ACL struct {
	Proto     Proto        `json:"proto"`
	Src       netip.Prefix `json:"src"`       // zero: any source
	Dst       netip.Prefix `json:"dst"`       // zero: any destination
	SrcPorts  PortRange    `json:"src_ports"` // zero: any
	DstPorts  PortRange    `json:"dst_ports"` // zero: any
	Direction Direction    `json:"direction"`
}

// Entry is one ban, ACL rule or allowlist entry, as the store keeps it and
// the API and dashboard show it.
type Entry struct {
	ID          uint64       `json:"id"`
	Kind        Kind         `json:"kind"`
	Value       netip.Prefix `json:"value"` // ban and allow: the address or prefix (a single IP is a /32 or /128)
	ACL         *ACL         `json:"acl,omitempty"`
	Action      Action       `json:"action"`
	Origin      Origin       `json:"origin"`
	Reason      string       `json:"reason,omitempty"`
	RequestedBy string       `json:"requested_by,omitempty"`
	Created     time.Time    `json:"created"`
	Expires     time.Time    `json:"expires,omitzero"` // zero: never
	Hits        uint64       `json:"hits"`             // packets matched so far
	Forced      bool         `json:"forced,omitempty"` // added past a safety guard with force
}

// Request asks the store to add (or extend) an entry.
type Request struct {
	Kind        Kind
	Value       string        // IP or CIDR, for ban and allow
	ACL         *ACL          // for KindACL
	TTL         time.Duration // zero: never expires
	Action      Action        // default block
	Reason      string
	Origin      Origin
	RequestedBy string // token name, user, file path
	Force       bool   // pass the width and allowlist guards (audited); the allowlist still wins at match time
}

// Verdict is what the compiled rule set says about one packet.
type Verdict struct {
	Action      Action // "" when nothing matched
	RuleID      uint64 // the entry that decided
	Allowlisted bool   // an allowlist entry covered the packet (Action is then "", RuleID the allowlist entry)
}

// Matched reports whether a ban or ACL decided the packet.
func (v Verdict) Matched() bool { return v.Action != "" }
