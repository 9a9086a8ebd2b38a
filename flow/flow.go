package flow

import "net/netip"

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
	bitInUse   uint8 = 1 << iota // slot holds a live flow
	bitAIsLo                     // A is the key's lo endpoint
	bitFree                      // slot is on the free list (never together with bitInUse)
	bitHasSeqA                   // HasSeq(AtoB); bitHasSeqA<<1 is HasSeq(BtoA)
	bitHasSeqB
	bitHasAckA // HasAck(AtoB); bitHasAckA<<1 is HasAck(BtoA)
	bitHasAckB
)

// Timestamps are kept as the low 32 bits of a tick count since the Unix
// epoch: last in milliseconds, first in tenths of a second. The table reads
// them back relative to the newest time it has seen (Table.Seen), so the
// count may wrap: a stored tick reads back right for 2^31 ticks after it
// was written, 24.8 days for last and 6.8 years for first. last decides
// expiry, eviction and the sensor's quiet-confirmation, whose thresholds
// are seconds and 500 ms: a millisecond is ample (Expire never expires
// early for it: see Table.Expire). first is only shown (UI, API), so it
// trades resolution for a range no flow outlives. Expire keeps every last
// within 2^30 ms (12.4 days) of now (clampLast); idle timeouts are capped
// below that (maxIdle). Reaction latency is measured from the packet's own
// capture timestamp, never from these.
const (
	lastUnit  = int64(1e6) // ns per tick of Flow.last
	firstUnit = int64(1e8) // ns per tick of Flow.first
)

// Counters: Bytes in 56 bits and Pkts in 40 bits, sharing one word and a
// half. They saturate instead of wrapping: 2^40 packets is 15 days of a
// single 10 Gb/s flow of full-size packets, which one worker cannot see
// anyway, and 2^56 bytes is 72 PB.
const (
	bytesMask = 1<<56 - 1
	maxPkts   = 1<<40 - 1
)

// DirState is what one direction of a flow has shown so far. Sequence
// fields use serial-number arithmetic (RFC 1982): they wrap at 2^32 and
// never move backwards for retransmitted or reordered segments.
//
// It is 32 bytes of 32-bit words and smaller: counters, then the TCP
// state. The time of the direction's latest packet is in the flow's first
// line (Flow.last), with the key and state, which is all Expire and
// eviction read; the first packet's time is shown only, so it lives in
// the flow's third line (Table.Seen). Timestamps, counters, whether a
// sequence or ack number was seen (Flow.HasSeq, Flow.HasAck), and the
// layer-2 details (Table.L2, kept in a per-table dictionary: most flows
// share a handful of router MAC pairs) are read through methods.
type DirState struct {
	blo  uint32 // bytes (IP-layer, like iftop), low 32 bits
	bhi  uint32 // bytes bits 32-55 in the low 24 bits; packets bits 32-39 in the top 8
	pkts uint32 // packets, low 32 bits

	Seq     uint32 // TCP sequence number of the latest segment (as sent, even if old)
	Ack     uint32 // highest acknowledgement number sent with ACK set: the sender's RCV.NXT (valid if HasAck)
	NextSeq uint32 // highest seq+payload(+1 SYN, +1 FIN) sent: the receiver's RCV.NXT once all arrived (valid if HasSeq)
	Window  uint16 // TCP window of the latest segment, unscaled

	l2    uint16 // the table's L2 dictionary entry of the latest frame (0: none, or the dictionary was full)
	stamp uint16 // talkers epoch of the bucket this direction was last counted in
	TTL   uint8  // IPv4 TTL / IPv6 hop limit of the latest packet
	Flags uint8  // TCP flags of the latest segment
}

// Pkts is the number of packets seen in this direction (saturating at 2^40-1).
func (d *DirState) Pkts() uint64 { return uint64(d.bhi>>24)<<32 | uint64(d.pkts) }

// Bytes is the IP-layer bytes (IP total length, like iftop) seen in this
// direction (saturating at 2^56-1).
func (d *DirState) Bytes() uint64 { return uint64(d.bhi&(1<<24-1))<<32 | uint64(d.blo) }

// count adds one packet of size bytes.
func (d *DirState) count(size uint64) {
	d.pkts++
	if d.pkts == 0 { // carry into the top byte of bhi, or saturate
		if d.bhi>>24 != 0xff {
			d.bhi += 1 << 24
		} else {
			d.pkts = ^uint32(0)
		}
	}
	b := min(d.Bytes()+size, bytesMask)
	d.blo = uint32(b)
	d.bhi = d.bhi&^(1<<24-1) | uint32(b>>32)
}

// HasSeq reports whether a TCP segment was seen in direction d, i.e.
// whether Seq and NextSeq mean anything.
func (f *Flow) HasSeq(d Dir) bool { return f.bits&(bitHasSeqA<<d) != 0 }

// HasAck reports whether a segment with the ACK flag was seen in direction
// d, i.e. whether Ack means anything.
func (f *Flow) HasAck(d Dir) bool { return f.bits&(bitHasAckA<<d) != 0 }

// Decision is the part of the sensor's record of a flow that it reads for
// every packet: its verdict and whether an outcome is being watched. With
// Flow.RuleGen it lives in the flow's first two cache lines, which a
// packet's Update reads anyway, so that deciding about a packet costs no
// third line (Enf's). The table never reads it; it zeroes it when the
// slot gets a new flow.
type Decision struct {
	Action  uint8 // the sensor's verdict code
	Outcome uint8 // the sensor's outcome code
}

// Enforcement is the rest of the sensor's record of what it decided and
// did about a flow. The table never reads it; it zeroes it when the slot
// gets a new flow.
type Enforcement struct {
	RuleID     uint64 // rule that matched, 0 if none
	FirstReset int64  // when the first reset was sent, ns
	LastReset  int64  // when the latest reset was sent, ns
	BlockSlot  uint32 // the sensor's index of this flow's entry in its live-blocks table
	SynSeq     uint32 // sequence number (ISN) of the latest bare SYN the sensor acted on (valid if SynKnown)
	Resets     uint16 // resets (or ICMP errors) sent into this flow
	Suppressed uint16 // resets the per-flow budget held back
	Survivor   bool   // packets with payload were seen after canopy's resets
	SynKnown   bool   // SynSeq is set
}

// Flow is one bidirectional session in a Table. A *Flow is valid only until
// the next Update or Expire call on its table (the slot may be recycled);
// keep a Handle to find it again. Callers may write only Decision, RuleGen
// and Enf; everything else belongs to the table and is read through the
// fields and methods.
//
// Layout: 192 bytes, three cache lines. The key and the fields every
// packet reads come first, so a lookup and an update touch the first two,
// and Expire and eviction, which read the key, state and last, only the
// first; the enforcement record and the address-index links come last. What made
// it small (it was 256 bytes): MACs and VLAN tags live in a per-table
// dictionary (2 bytes per direction instead of 21), timestamps are 32-bit
// ticks, counters are 56+40 bits, the seq/ack-seen bits moved into bits,
// and the slot index is computed from the pointer (Table.Handle) instead
// of stored. The first line has no byte free.
type Flow struct {
	key   key
	state State
	bits  uint8
	gen   uint32 // bumped whenever the slot gets a new flow

	Decision Decision // the sensor's per-packet record (see Decision); the table only zeroes it
	talk     uint16   // the flow's entry in the current talkers bucket (Bucket.addFlow), valid while a direction's stamp is the bucket's epoch
	// last is per direction the ms of its latest packet (low 32 bits),
	// or of the flow's first packet while the direction has none, so that
	// the later of the two is the flow's, without reading the counters.
	last    [2]uint32
	Dirs    [2]DirState // per-direction state, indexed by Dir
	RuleGen uint64      // the sensor's: generation of the rule set Decision.Action was decided under (0: never decided)

	Enf   Enforcement // the rest of the sensor's record; the table only zeroes it
	first [2]uint32   // per direction, tenth of a second of the first packet (low 32 bits): shown only
	ep    [2]epLink   // per-address index links, for the key's lo (0) and hi (1) endpoints
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
		return f.key.lo.addr(f.key.v6)
	}
	return f.key.hi.addr(f.key.v6)
}

// B is the responder's address.
func (f *Flow) B() netip.Addr {
	if f.bits&bitAIsLo != 0 {
		return f.key.hi.addr(f.key.v6)
	}
	return f.key.lo.addr(f.key.v6)
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

// MarkResetByUs records that canopy injected resets into f: from now on
// packets of this 5-tuple stay attributed to f (even a new SYN), so the
// sensor sees them as survivors instead of a fresh, unblocked flow. The
// mark lives until the flow expires.
func (f *Flow) MarkResetByUs() { f.state |= StateResetByUs }

// ResetByUs reports whether MarkResetByUs was called on f.
func (f *Flow) ResetByUs() bool { return f.state&StateResetByUs != 0 }
