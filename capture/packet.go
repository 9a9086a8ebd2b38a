package capture

import "net/netip"

// MaxVLANs is how many VLAN tags a Packet records (802.1Q and QinQ).
const MaxVLANs = 2

// TCP flag bits as they appear in the TCP header's flags byte.
const (
	FlagFIN uint8 = 0x01
	FlagSYN uint8 = 0x02
	FlagRST uint8 = 0x04
	FlagPSH uint8 = 0x08
	FlagACK uint8 = 0x10
	FlagURG uint8 = 0x20
	FlagECE uint8 = 0x40
	FlagCWR uint8 = 0x80
)

// IP protocol numbers canopy cares about.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// Frag says where a packet sits in an IP fragment train.
type Frag uint8

const (
	FragNone  Frag = iota // not a fragment
	FragFirst             // offset 0, more fragments follow: carries the L4 header
	FragLater             // offset > 0: no L4 header, ports are zero
)

// VLAN is one 802.1Q tag as it was on the wire.
type VLAN struct {
	TPID uint16 // tag protocol identifier: 0x8100 (C-tag) or 0x88a8 (S-tag)
	TCI  uint16 // priority (3 bits), DEI (1 bit), VLAN ID (12 bits)
}

// ID is the 12-bit VLAN identifier of the tag.
func (v VLAN) ID() uint16 { return v.TCI & 0x0fff }

// Packet is one decoded frame: the small value the rest of canopy works with.
// It holds no pointer into the frame it was decoded from, so it stays valid
// after the capture ring reuses that memory.
type Packet struct {
	Timestamp int64  // kernel receive time, nanoseconds since the Unix epoch
	WireLen   uint32 // frame length on the wire, including tags the kernel stripped
	Port      uint8  // index of the capture interface this frame came in on

	DstMAC, SrcMAC [6]byte        // Ethernet addresses
	VLANs          [MaxVLANs]VLAN // tag stack, outermost first
	NumVLANs       uint8          // how many entries of VLANs are set
	EtherType      uint16         // ether type after the VLAN stack

	IPVersion uint8      // 4 or 6; 0 when the frame is not IP
	Src, Dst  netip.Addr // network-layer addresses
	Proto     uint8      // transport protocol (after IPv6 extension headers)
	TTL       uint8      // IPv4 TTL or IPv6 hop limit
	Frag      Frag       // fragment position
	IPLen     uint16     // total IP packet length from its header (IPv4 total length; IPv6 40 + payload length)

	SrcPort, DstPort uint16 // TCP/UDP ports; zero for later fragments and other protocols
	Seq, Ack         uint32 // TCP sequence and acknowledgement numbers
	Flags            uint8  // TCP flags (FlagSYN …)
	Window           uint16 // TCP window, unscaled
	PayloadLen       uint16 // L4 payload bytes, from the IP length (never the padded frame length)

	ICMPType, ICMPCode uint8 // for ICMP and ICMPv6

	// L3Offset is where the IP header starts in the frame this Packet was
	// decoded from. It is meaningful only while that frame is still valid
	// (inside the Handler callback), e.g. to quote it in an ICMP error.
	L3Offset uint16
}

// IsTCP reports whether the packet carries a TCP header.
func (p *Packet) IsTCP() bool { return p.Proto == ProtoTCP && p.Frag != FragLater }

// IsUDP reports whether the packet carries a UDP header.
func (p *Packet) IsUDP() bool { return p.Proto == ProtoUDP && p.Frag != FragLater }

// SeqSpace is how much sequence space the segment occupies: payload plus
// one for SYN and one for FIN. seq+SeqSpace is the receiver's RCV.NXT after it.
func (p *Packet) SeqSpace() uint32 {
	n := uint32(p.PayloadLen)
	if p.Flags&FlagSYN != 0 {
		n++
	}
	if p.Flags&FlagFIN != 0 {
		n++
	}
	return n
}
