package flow

import (
	"net/netip"

	"canopy/capture"
)

// Dir is the direction a packet travelled within its flow.
type Dir uint8

const (
	AtoB Dir = 0 // from the initiator (A) to the responder (B)
	BtoA Dir = 1 // from the responder (B) back to the initiator (A)
)

// String is "a>b" or "b>a".
func (d Dir) String() string {
	if d == AtoB {
		return "a>b"
	}
	return "b>a"
}

// Reverse is the other direction.
func (d Dir) Reverse() Dir { return d ^ 1 }

// State is a TCP flow's state as an observer of both directions sees it: a
// set of bits, because a mirror can miss packets and the bits stay true to
// what was actually seen.
type State uint8

const (
	StateSynSeen     State = 1 << iota // a SYN (without ACK) from A was seen
	StateSynAckSeen                    // a SYN-ACK from B was seen
	StateEstablished                   // both sides have sent an ACK (handshake completed, or a live session picked up mid-stream)
	StateFinAtoB                       // A sent a FIN
	StateFinBtoA                       // B sent a FIN
	StateRst                           // an RST was seen (from either side, including canopy's own if the mirror shows them)
	StateClosed                        // RST seen or both FINs seen: the short idle timeout applies
	StateResetByUs                     // canopy injected resets into this flow; later packets are survivors, not a new flow
)

// Closed reports whether the flow saw an RST or both FINs.
func (s State) Closed() bool { return s&StateClosed != 0 }

// flow.bits
const (
	bitInUse uint8 = 1 << iota // slot holds a live flow
	bitAIsLo                   // A is the key's lo endpoint
	bitFree                    // slot is on the free list (never together with bitInUse)
)

// DirState is what one direction of a flow has shown so far. Sequence
// fields use serial-number arithmetic (RFC 1982): they wrap at 2^32 and
// never move backwards for retransmitted or reordered segments.
//
// Last comes first so that both directions' Last (with the key and state)
// sit in the flow's first two cache lines, which is all Expire and eviction
// read.
type DirState struct {
	Last  int64  // timestamp of the latest packet, ns since the Unix epoch; 0 if none yet
	First int64  // timestamp of the first packet, ns since the Unix epoch; 0 if none yet
	Pkts  uint64 // packets seen in this direction
	Bytes uint64 // IP-layer bytes (IP total length, like iftop) seen in this direction

	Seq     uint32 // TCP sequence number of the latest segment (as sent, even if old)
	Ack     uint32 // highest acknowledgement number sent with ACK set: the sender's RCV.NXT (valid if HasAck)
	NextSeq uint32 // highest seq+payload(+1 SYN, +1 FIN) sent: the receiver's RCV.NXT once all arrived (valid if HasSeq)
	Window  uint16 // TCP window of the latest segment, unscaled

	TTL      uint8                          // IPv4 TTL / IPv6 hop limit of the latest packet
	Flags    uint8                          // TCP flags of the latest segment
	SrcMAC   [6]byte                        // Ethernet source of the latest frame (the sender's, or its router's)
	DstMAC   [6]byte                        // Ethernet destination of the latest frame
	VLANs    [capture.MaxVLANs]capture.VLAN // tag stack of the latest frame, outermost first
	NumVLANs uint8                          // how many of VLANs are set

	seen  uint8  // dirHasSeq | dirHasAck
	stamp uint16 // talkers epoch of the bucket this direction was last counted in (fits the struct's padding)
}

const (
	dirHasSeq uint8 = 1 << iota
	dirHasAck
)

// HasSeq reports whether a TCP segment was seen in this direction, i.e.
// whether Seq and NextSeq mean anything.
func (d *DirState) HasSeq() bool { return d.seen&dirHasSeq != 0 }

// HasAck reports whether a segment with the ACK flag was seen in this
// direction, i.e. whether Ack means anything.
func (d *DirState) HasAck() bool { return d.seen&dirHasAck != 0 }

// Enforcement is the sensor's record of what it decided and did about a
// flow. The table never reads it; it zeroes it when the slot gets a new flow.
type Enforcement struct {
	RuleGen    uint64 // generation of the rule set Action was decided under (0: never decided)
	RuleID     uint64 // rule that matched, 0 if none
	FirstReset int64  // when the first reset was sent, ns
	LastReset  int64  // when the latest reset was sent, ns
	BlockSlot  uint32 // the sensor's index of this flow's entry in its live-blocks table
	SynSeq     uint32 // sequence number (ISN) of the latest bare SYN the sensor acted on (valid if SynKnown)
	Resets     uint16 // resets (or ICMP errors) sent into this flow
	Suppressed uint16 // resets the per-flow budget held back
	Action     uint8  // the sensor's verdict code
	Outcome    uint8  // the sensor's outcome code
	Survivor   bool   // packets with payload were seen after canopy's resets
	SynKnown   bool   // SynSeq is set
}

// Flow is one bidirectional session in a Table. A *Flow is valid only until
// the next Update or Expire call on its table (the slot may be recycled);
// keep a Handle to find it again. Callers may write only Enf; everything
// else belongs to the table and is read through the fields and methods.
//
// Layout: the key and the fields every packet reads come first, so a lookup
// and an update of direction AtoB touch the first two cache lines of the
// 256-byte struct; the enforcement record and the index links, rarely
// touched, come last.
type Flow struct {
	key   key
	state State
	bits  uint8
	gen   uint32 // bumped whenever the slot gets a new flow
	idx   uint32 // the slot's own index, for Handle

	Dirs [2]DirState // per-direction state, indexed by Dir
	Enf  Enforcement // the sensor's record; the table only zeroes it

	ep [2]epLink // per-address index links, for the key's lo (0) and hi (1) endpoints
}

// epLink links one endpoint of a flow into the per-address index. Values
// are refs: slot<<1 | side, 0 meaning none.
type epLink struct{ next, prev uint32 }

// Handle refers to a flow across Update calls; Table.Get returns nil once
// the flow it named was evicted, expired or replaced by a new session on the
// same slot or 5-tuple. The zero Handle names no flow.
type Handle struct {
	idx uint32
	gen uint32
}

// IsZero reports whether h names no flow.
func (h Handle) IsZero() bool { return h.idx == 0 }

// Handle returns a stable reference to f.
func (f *Flow) Handle() Handle { return Handle{idx: f.idx, gen: f.gen} }

// Proto is the transport protocol (capture.ProtoTCP or capture.ProtoUDP).
func (f *Flow) Proto() uint8 { return f.key.proto }

// IsIPv6 reports whether the flow is IPv6.
func (f *Flow) IsIPv6() bool { return f.key.v6 != 0 }

// State is the flow's TCP state bits (0 for UDP).
func (f *Flow) State() State { return f.state }

// A is the initiator's address: the SYN's sender when the handshake was
// seen (also when only the SYN-ACK was), else the first packet's sender.
func (f *Flow) A() netip.Addr {
	if f.bits&bitAIsLo != 0 {
		return addrOf(&f.key.lo, f.key.v6)
	}
	return addrOf(&f.key.hi, f.key.v6)
}

// B is the responder's address.
func (f *Flow) B() netip.Addr {
	if f.bits&bitAIsLo != 0 {
		return addrOf(&f.key.hi, f.key.v6)
	}
	return addrOf(&f.key.lo, f.key.v6)
}

// APort is the initiator's port.
func (f *Flow) APort() uint16 {
	if f.bits&bitAIsLo != 0 {
		return f.key.loPort
	}
	return f.key.hiPort
}

// BPort is the responder's port (the service port when the handshake was seen).
func (f *Flow) BPort() uint16 {
	if f.bits&bitAIsLo != 0 {
		return f.key.hiPort
	}
	return f.key.loPort
}

// Src is the sender's address for packets travelling in direction d.
func (f *Flow) Src(d Dir) netip.Addr {
	if d == AtoB {
		return f.A()
	}
	return f.B()
}

// Dst is the receiver's address for packets travelling in direction d.
func (f *Flow) Dst(d Dir) netip.Addr { return f.Src(d ^ 1) }

// SrcPort is the sender's port for packets travelling in direction d.
func (f *Flow) SrcPort(d Dir) uint16 {
	if d == AtoB {
		return f.APort()
	}
	return f.BPort()
}

// DstPort is the receiver's port for packets travelling in direction d.
func (f *Flow) DstPort(d Dir) uint16 { return f.SrcPort(d ^ 1) }

// FirstSeen is the timestamp of the flow's first packet (ns).
func (f *Flow) FirstSeen() int64 {
	a, b := f.Dirs[0].First, f.Dirs[1].First
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// LastSeen is the timestamp of the flow's latest packet (ns).
func (f *Flow) LastSeen() int64 { return max(f.Dirs[0].Last, f.Dirs[1].Last) }

// MarkResetByUs records that canopy injected resets into f: from now on
// packets of this 5-tuple stay attributed to f (even a new SYN), so the
// sensor sees them as survivors instead of a fresh, unblocked flow. The
// mark lives until the flow expires.
func (f *Flow) MarkResetByUs() { f.state |= StateResetByUs }

// ResetByUs reports whether MarkResetByUs was called on f.
func (f *Flow) ResetByUs() bool { return f.state&StateResetByUs != 0 }
