package sensor

import (
	"net/netip"
	"time"

	"canopy/capture"
	"canopy/flow"
	"canopy/rules"
)

// Mode is the sensor-wide enforcement mode.
type Mode string

const (
	ModeEnforce Mode = "enforce" // send resets for block verdicts
	ModeObserve Mode = "observe" // log what would be sent, send nothing (dry run)
)

// Outcome is how a blocked flow ended up after canopy injected resets.
type Outcome string

const (
	OutcomePending   Outcome = "pending"   // resets sent, waiting to see the flow go quiet
	OutcomeRetrying  Outcome = "retrying"  // payload kept flowing after the first resets; chasing again
	OutcomeConfirmed Outcome = "confirmed" // silence, or the hosts' own RST/FIN
	OutcomeFailed    Outcome = "failed"    // payload still flowing after the per-flow budget was spent
	OutcomeObserved  Outcome = "observed"  // observe mode: would have blocked, sent nothing
)

// Block is one blocked (or, in observe mode, would-be-blocked) flow, as the
// live-blocks feed, the events log and the API show it.
type Block struct {
	ID         uint64        `json:"id"`
	At         time.Time     `json:"time"` // when the first reset for this flow was decided
	Proto      string        `json:"proto"`
	Src        netip.Addr    `json:"src"` // the side that opened the flow, when known
	SrcPort    uint16        `json:"src_port"`
	Dst        netip.Addr    `json:"dst"`
	DstPort    uint16        `json:"dst_port"`
	RuleID     uint64        `json:"rule_id"`
	RuleKind   rules.Kind    `json:"rule_kind"`
	Origin     rules.Origin  `json:"origin"`
	Reason     string        `json:"reason,omitempty"`
	ToSrc      int           `json:"rsts_to_src"` // resets (or ICMP errors) sent toward Src
	ToDst      int           `json:"rsts_to_dst"` // resets sent toward Dst
	Suppressed int           `json:"suppressed"`  // resets the per-flow budget or the global ceiling held back
	Outcome    Outcome       `json:"outcome"`
	Reaction   time.Duration `json:"reaction_ns"`         // trigger's kernel timestamp → first reset handed to the kernel
	Proactive  bool          `json:"proactive,omitempty"` // killed from the flow table on a new ban, not on a packet
}

// BlockStats summarise enforcement since start.
type BlockStats struct {
	Attempted   uint64  `json:"attempted"` // flows canopy injected into
	Confirmed   uint64  `json:"confirmed"`
	Failed      uint64  `json:"failed"`
	Observed    uint64  `json:"observed"`     // would-blocks in observe mode
	SuccessRate float64 `json:"success_rate"` // confirmed / (confirmed + failed); 1 when none decided yet
	ResetsSent  uint64  `json:"resets_sent"`
	ICMPSent    uint64  `json:"icmp_sent"`
	Suppressed  uint64  `json:"suppressed"` // held back by budgets or the global pps ceiling
	SendErrors  uint64  `json:"send_errors"`
	// Killing is how many new bans' live sessions are still being reset
	// from the flow table: a step at a time, and no faster than the
	// injection ceiling lets (the most any worker has in hand).
	Killing     int           `json:"killing"`
	ReactionP50 time.Duration `json:"reaction_p50_ns"`
	ReactionP99 time.Duration `json:"reaction_p99_ns"`
	// ReactionBuckets, ReactionCount and ReactionSum are the
	// canopy_reaction_seconds histogram: cumulative counts of reactions at
	// or below each of PromBuckets, their number and their sum (copy them
	// from a merged Reaction). Zero until the sensor fills them.
	ReactionBuckets [len(PromBuckets)]uint64 `json:"reaction_buckets"`
	ReactionCount   uint64                   `json:"reaction_count"`
	ReactionSum     time.Duration            `json:"reaction_sum_ns"`
	// Pickup is the first part of each reaction: trigger's kernel
	// timestamp → the worker starting on it (the rest is canopy's own
	// work and the sendto). Slow reactions with a slow pickup point at the
	// box (ring wakeups, CPU contention, softirq backlog), not the engine.
	// Same buckets as ReactionBuckets.
	PickupP50     time.Duration            `json:"pickup_p50_ns"`
	PickupP99     time.Duration            `json:"pickup_p99_ns"`
	PickupBuckets [len(PromBuckets)]uint64 `json:"pickup_buckets"`
	PickupCount   uint64                   `json:"pickup_count"`
	PickupSum     time.Duration            `json:"pickup_sum_ns"`
}

// Status is the sensor's health and headline numbers.
type Status struct {
	Version      string        `json:"version"`
	Started      time.Time     `json:"started"`
	Mode         Mode          `json:"mode"`
	Source       string        `json:"source"` // "live" or the capture file's path
	Ifaces       []string      `json:"interfaces"`
	InjectIface  string        `json:"inject_interface,omitempty"`
	Capture      capture.Stats `json:"capture"`
	DecodeErrors uint64        `json:"decode_errors"`
	Flows        int           `json:"flows"`
	Bans         int           `json:"bans"`
	Blocks       BlockStats    `json:"blocks"`
}

// Snapshot is everything a dashboard or the API shows at one instant. It is
// immutable once published: readers may keep it as long as they like.
type Snapshot struct {
	Status  Status        `json:"status"`
	Traffic flow.Snapshot `json:"traffic"`
	Blocks  []Block       `json:"blocks"` // most recent first, bounded
	Rules   []rules.Entry `json:"rules"`  // entries in force, newest first, at most Config.RulesInSnapshot (Status.Bans counts all bans)
}

// EventType names what an Event reports.
type EventType string

const (
	EventBlock      EventType = "block"       // resets sent for a flow (and its later outcome)
	EventWouldBlock EventType = "would-block" // observe mode: what would have been sent
	EventBan        EventType = "ban"         // an entry was added
	EventUnban      EventType = "unban"       // an entry was removed by someone
	EventExpire     EventType = "expire"      // an entry reached its expiry
	EventMode       EventType = "mode"        // enforcement mode changed
)

// Event is one line of the events log and one SSE message.
type Event struct {
	Type  EventType    `json:"type"`
	Time  time.Time    `json:"time"`
	Block *Block       `json:"block,omitempty"`
	Entry *rules.Entry `json:"entry,omitempty"`
	Mode  Mode         `json:"mode,omitempty"`
	// Sent lists, for would-block events, exactly the frames canopy would
	// have injected, e.g. "RST|ACK 10.0.0.1:80 > 10.0.0.2:5555 seq=… ack=…".
	Sent []string `json:"sent,omitempty"`
}
