package flow

import (
	"net/netip"
	"time"
)

// Window is one of the rate windows an operator can pick, like iftop's.
type Window uint8

const (
	Win2s      Window = iota // last 2 seconds
	Win10s                   // last 10 seconds
	Win40s                   // last 40 seconds
	NumWindows               // how many windows there are
)

// Seconds is the length of the window (0 for an invalid Window).
func (w Window) Seconds() int {
	if w >= NumWindows {
		return 0
	}
	return [...]int{2, 10, 40}[w]
}

// String is the window's label, e.g. "10s".
func (w Window) String() string {
	if w >= NumWindows {
		return "?"
	}
	return [...]string{"2s", "10s", "40s"}[w]
}

// TalkerKind says what a talker row aggregates by.
type TalkerKind uint8

const (
	BySrc    TalkerKind = iota // source IP
	ByDst                      // destination IP
	ByPair                     // source and destination IP
	ByPort                     // destination port (and protocol)
	NumKinds                   // how many kinds the workers count
	// BySrcNet is the source network (SrcNetBits4, SrcNetBits6): not
	// counted by the workers but summed from the tracked sources when a
	// Snapshot is taken, so it costs the hot path nothing. A flood from
	// many addresses of few networks shows as those networks, each what
	// to ban.
	BySrcNet = NumKinds
	NumViews = NumKinds + 1 // the kinds a Snapshot has talkers of
)

// The prefix lengths of BySrcNet's networks.
const (
	SrcNetBits4 = 24
	SrcNetBits6 = 64
)

// String is the kind's short name: "src", "dst", "pair", "port" or "srcnet".
func (k TalkerKind) String() string {
	if k >= NumViews {
		return "?"
	}
	return [...]string{"src", "dst", "pair", "port", "srcnet"}[k]
}

// SparkLen is how many one-second points a talker's sparkline holds.
const SparkLen = 60

// Talker is one row of a top-talkers table.
//
// Rates count IP-layer bytes (the IP total length, like iftop). A window's
// rate is its sum divided by its length; while the sensor has run for less
// than the window, by the seconds it has run.
type Talker struct {
	Net   netip.Prefix        // BySrcNet: the source network; otherwise invalid
	Src   netip.Addr          // BySrc, ByPair: the source; ByDst: invalid
	Dst   netip.Addr          // ByDst, ByPair: the destination; BySrc: invalid
	Port  uint16              // ByPort: the flow's service port (B's port, the initiator's destination port) for TCP/UDP; the destination port (0 for ICMP and later fragments) otherwise
	Proto uint8               // ByPort: transport protocol
	Bits  [NumWindows]float64 // bits per second averaged over each window
	Pkts  [NumWindows]float64 // packets per second averaged over each window
	Flows int                 // distinct flows this talker took part in during the latest second (0 if silent)
	Spark [SparkLen]float32   // bits/s of each of the last 60 seconds, oldest first
	Other bool                // the row sums keys beyond the tracking limits; Src, Dst, Port are unset
}

// Totals are the whole sensor's rates.
type Totals struct {
	Bits        [NumWindows]float64 // bits per second per window
	Pkts        [NumWindows]float64 // packets per second per window
	ActiveFlows int                 // flows in the tables now
	NewFlows    float64             // new flows per second over the last 10 s
	Evictions   uint64              // flows evicted because a table was full, since start
	// L2Full counts frames whose MACs and VLAN stack found no room in a
	// table's L2 dictionary, since start; resets for those directions fall
	// back to the other direction's addressing. Non-zero means the mirror
	// shows more distinct (MAC pair, VLAN stack) tuples than fit.
	L2Full uint64
}

// Snapshot is an immutable picture of the traffic, safe to hand to other
// goroutines; nothing in it is shared with the workers.
type Snapshot struct {
	At      time.Time // end of the latest complete second it covers (zero before any traffic)
	Totals  Totals
	Talkers [NumViews][]Talker // top N per kind, sorted by bits/s over 10 s, largest first
}

// Info is one flow as the drill-down view and the API show it: a copy, safe
// to keep.
type Info struct {
	Proto     uint8      `json:"proto"`
	A         netip.Addr `json:"a"` // the initiator when the handshake was seen, else the first sender
	APort     uint16     `json:"a_port"`
	B         netip.Addr `json:"b"`
	BPort     uint16     `json:"b_port"`
	State     string     `json:"state"` // e.g. "syn-sent", "established", "fin", "closed", "reset"
	PktsAB    uint64     `json:"pkts_ab"`
	BytesAB   uint64     `json:"bytes_ab"`
	PktsBA    uint64     `json:"pkts_ba"`
	BytesBA   uint64     `json:"bytes_ba"`
	FirstSeen time.Time  `json:"first_seen"`
	LastSeen  time.Time  `json:"last_seen"`
	Blocked   bool       `json:"blocked"` // canopy has sent resets into this flow
}
