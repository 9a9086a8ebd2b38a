package inject

import (
	"encoding/binary"
	"net/netip"
)

// The header views below follow gVisor's pkg/tcpip/header: each is a typed
// byte slice whose methods read or write one field at a named offset. A view
// never copies or allocates; the caller guarantees the slice is long enough
// (the builders size every view before they touch it).

// EtherType values canopy writes or reads.
const (
	EtherTypeIPv4    uint16 = 0x0800 // Internet Protocol version 4
	EtherTypeIPv6    uint16 = 0x86dd // Internet Protocol version 6
	EtherTypeVLAN    uint16 = 0x8100 // IEEE 802.1Q customer tag (C-tag)
	EtherTypeQinQ    uint16 = 0x88a8 // IEEE 802.1ad service tag (S-tag)
	EtherTypeQinQOld uint16 = 0x9100 // pre-standard QinQ tag some switches still emit
)

// Header lengths.
const (
	EthernetLen  = 14 // Ethernet II header: destination, source, EtherType
	VLANTagLen   = 4  // one 802.1Q tag: TPID (in the previous type field) + TCI + next type
	IPv4MinLen   = 20 // IPv4 header without options
	IPv6Len      = 40 // fixed IPv6 header
	TCPMinLen    = 20 // TCP header without options
	UDPLen       = 8  // UDP header
	ICMPv4MinLen = 8  // ICMPv4 error header: type, code, checksum, 4 unused bytes
	ICMPv6MinLen = 8  // ICMPv6 error header: type, code, checksum, 4 unused bytes
)

// Ethernet is a view of an Ethernet II header.
type Ethernet []byte

const (
	ethDst  = 0
	ethSrc  = 6
	ethType = 12
)

// Dst is the destination MAC address.
func (b Ethernet) Dst() (m [6]byte) { copy(m[:], b[ethDst:ethDst+6]); return m }

// Src is the source MAC address.
func (b Ethernet) Src() (m [6]byte) { copy(m[:], b[ethSrc:ethSrc+6]); return m }

// Type is the EtherType field: the payload's protocol, or the outermost
// VLAN tag's TPID when the frame is tagged.
func (b Ethernet) Type() uint16 { return binary.BigEndian.Uint16(b[ethType:]) }

// SetDst sets the destination MAC address.
func (b Ethernet) SetDst(m [6]byte) { copy(b[ethDst:ethDst+6], m[:]) }

// SetSrc sets the source MAC address.
func (b Ethernet) SetSrc(m [6]byte) { copy(b[ethSrc:ethSrc+6], m[:]) }

// SetType sets the EtherType field.
func (b Ethernet) SetType(t uint16) { binary.BigEndian.PutUint16(b[ethType:], t) }

// VLANTag is a view of the 4 bytes that follow a VLAN TPID: the tag control
// information and the type of what comes next. The TPID itself lives in the
// previous type field (the Ethernet header's, or the outer tag's).
type VLANTag []byte

const (
	vlanTCI  = 0
	vlanType = 2
)

// TCI is the tag control information: priority (3 bits), DEI (1 bit), VLAN ID (12 bits).
func (b VLANTag) TCI() uint16 { return binary.BigEndian.Uint16(b[vlanTCI:]) }

// Type is the EtherType (or inner TPID) of what follows the tag.
func (b VLANTag) Type() uint16 { return binary.BigEndian.Uint16(b[vlanType:]) }

// SetTCI sets the tag control information.
func (b VLANTag) SetTCI(tci uint16) { binary.BigEndian.PutUint16(b[vlanTCI:], tci) }

// SetType sets the EtherType (or inner TPID) of what follows the tag.
func (b VLANTag) SetType(t uint16) { binary.BigEndian.PutUint16(b[vlanType:], t) }

// isVLANTPID reports whether t is a tag protocol identifier canopy knows.
func isVLANTPID(t uint16) bool {
	return t == EtherTypeVLAN || t == EtherTypeQinQ || t == EtherTypeQinQOld
}

// IPv4 is a view of an IPv4 header (RFC 791).
type IPv4 []byte

const (
	ipv4VersIHL   = 0
	ipv4TOS       = 1
	ipv4TotalLen  = 2
	ipv4ID        = 4
	ipv4FlagsFrag = 6
	ipv4TTL       = 8
	ipv4Protocol  = 9
	ipv4Checksum  = 10
	ipv4Src       = 12
	ipv4Dst       = 16
)

// IPv4 header flag bits, in the flags/fragment-offset field.
const (
	IPv4FlagDF uint16 = 0x4000 // don't fragment
	IPv4FlagMF uint16 = 0x2000 // more fragments
)

// Version is the IP version nibble (4 for a valid header).
func (b IPv4) Version() uint8 { return b[ipv4VersIHL] >> 4 }

// HeaderLen is the header length in bytes, from the IHL field.
func (b IPv4) HeaderLen() int { return int(b[ipv4VersIHL]&0x0f) * 4 }

// TOS is the type-of-service (DSCP and ECN) byte.
func (b IPv4) TOS() uint8 { return b[ipv4TOS] }

// TotalLen is the length of the whole IP packet, header included.
func (b IPv4) TotalLen() uint16 { return binary.BigEndian.Uint16(b[ipv4TotalLen:]) }

// ID is the identification field.
func (b IPv4) ID() uint16 { return binary.BigEndian.Uint16(b[ipv4ID:]) }

// FlagsFrag is the flags (3 bits) and fragment offset (13 bits) field.
func (b IPv4) FlagsFrag() uint16 { return binary.BigEndian.Uint16(b[ipv4FlagsFrag:]) }

// TTL is the time-to-live.
func (b IPv4) TTL() uint8 { return b[ipv4TTL] }

// Protocol is the transport protocol number.
func (b IPv4) Protocol() uint8 { return b[ipv4Protocol] }

// Checksum is the header checksum field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[ipv4Checksum:]) }

// Src is the source address.
func (b IPv4) Src() netip.Addr { return netip.AddrFrom4([4]byte(b[ipv4Src : ipv4Src+4])) }

// Dst is the destination address.
func (b IPv4) Dst() netip.Addr { return netip.AddrFrom4([4]byte(b[ipv4Dst : ipv4Dst+4])) }

// SetVersionIHL sets version 4 and a header length of n bytes (a multiple of 4).
func (b IPv4) SetVersionIHL(n int) { b[ipv4VersIHL] = 4<<4 | uint8(n/4)&0x0f }

// SetTOS sets the type-of-service byte.
func (b IPv4) SetTOS(t uint8) { b[ipv4TOS] = t }

// SetTotalLen sets the total length.
func (b IPv4) SetTotalLen(n uint16) { binary.BigEndian.PutUint16(b[ipv4TotalLen:], n) }

// SetID sets the identification field.
func (b IPv4) SetID(id uint16) { binary.BigEndian.PutUint16(b[ipv4ID:], id) }

// SetFlagsFrag sets the flags and fragment offset field.
func (b IPv4) SetFlagsFrag(v uint16) { binary.BigEndian.PutUint16(b[ipv4FlagsFrag:], v) }

// SetTTL sets the time-to-live.
func (b IPv4) SetTTL(t uint8) { b[ipv4TTL] = t }

// SetProtocol sets the transport protocol number.
func (b IPv4) SetProtocol(p uint8) { b[ipv4Protocol] = p }

// SetChecksum sets the header checksum field.
func (b IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[ipv4Checksum:], c) }

// SetSrc sets the source address: an IPv4 (or IPv4-mapped) address;
// anything else is written as 0.0.0.0.
func (b IPv4) SetSrc(a netip.Addr) { a4 := as4(a); copy(b[ipv4Src:ipv4Src+4], a4[:]) }

// SetDst sets the destination address: an IPv4 (or IPv4-mapped) address;
// anything else is written as 0.0.0.0.
func (b IPv4) SetDst(a netip.Addr) { a4 := as4(a); copy(b[ipv4Dst:ipv4Dst+4], a4[:]) }

// as4 is a's IPv4 form without netip's panic for other addresses.
func as4(a netip.Addr) [4]byte {
	if a = a.Unmap(); a.Is4() {
		return a.As4()
	}
	return [4]byte{}
}

// CalculateChecksum returns the header checksum over HeaderLen bytes with
// the checksum field taken as zero. Store it with SetChecksum.
func (b IPv4) CalculateChecksum() uint16 {
	n := b.HeaderLen()
	s := checksumAdd(0, b[:ipv4Checksum])
	s = checksumAdd(s, b[ipv4Checksum+2:n])
	return checksumFinish(s)
}

// pseudoSum is the one's complement sum of the IPv4 pseudo-header for an
// upper-layer packet of length n and protocol proto (RFC 793 §3.1).
func (b IPv4) pseudoSum(proto uint8, n int) uint64 {
	s := checksumAdd(0, b[ipv4Src:ipv4Dst+4])
	return s + uint64(proto) + uint64(n)
}

// IPv6 is a view of the fixed IPv6 header (RFC 8200).
type IPv6 []byte

const (
	ipv6VersTCFL   = 0
	ipv6PayloadLen = 4
	ipv6NextHeader = 6
	ipv6HopLimit   = 7
	ipv6Src        = 8
	ipv6Dst        = 24
)

// Version is the IP version nibble (6 for a valid header).
func (b IPv6) Version() uint8 { return b[ipv6VersTCFL] >> 4 }

// PayloadLen is the length of everything after the fixed header.
func (b IPv6) PayloadLen() uint16 { return binary.BigEndian.Uint16(b[ipv6PayloadLen:]) }

// NextHeader is the protocol of the header after the fixed header.
func (b IPv6) NextHeader() uint8 { return b[ipv6NextHeader] }

// HopLimit is the hop limit (IPv6's TTL).
func (b IPv6) HopLimit() uint8 { return b[ipv6HopLimit] }

// Src is the source address.
func (b IPv6) Src() netip.Addr { return netip.AddrFrom16([16]byte(b[ipv6Src : ipv6Src+16])) }

// Dst is the destination address.
func (b IPv6) Dst() netip.Addr { return netip.AddrFrom16([16]byte(b[ipv6Dst : ipv6Dst+16])) }

// SetVersionClassFlow sets version 6 with traffic class tc and flow label 0.
func (b IPv6) SetVersionClassFlow(tc uint8) {
	binary.BigEndian.PutUint32(b[ipv6VersTCFL:], 6<<28|uint32(tc)<<20)
}

// SetPayloadLen sets the payload length.
func (b IPv6) SetPayloadLen(n uint16) { binary.BigEndian.PutUint16(b[ipv6PayloadLen:], n) }

// SetNextHeader sets the next header protocol.
func (b IPv6) SetNextHeader(p uint8) { b[ipv6NextHeader] = p }

// SetHopLimit sets the hop limit.
func (b IPv6) SetHopLimit(h uint8) { b[ipv6HopLimit] = h }

// SetSrc sets the source address (an IPv4 address is written in its
// IPv4-mapped form, the zero Addr as ::).
func (b IPv6) SetSrc(a netip.Addr) { a16 := a.As16(); copy(b[ipv6Src:ipv6Src+16], a16[:]) }

// SetDst sets the destination address (an IPv4 address is written in its
// IPv4-mapped form, the zero Addr as ::).
func (b IPv6) SetDst(a netip.Addr) { a16 := a.As16(); copy(b[ipv6Dst:ipv6Dst+16], a16[:]) }

// pseudoSum is the one's complement sum of the IPv6 pseudo-header for an
// upper-layer packet of length n and protocol proto (RFC 8200 §8.1).
func (b IPv6) pseudoSum(proto uint8, n int) uint64 {
	s := checksumAdd(0, b[ipv6Src:ipv6Dst+16])
	return s + uint64(proto) + uint64(n)
}

// TCP is a view of a TCP header (RFC 9293).
type TCP []byte

const (
	tcpSrcPort  = 0
	tcpDstPort  = 2
	tcpSeq      = 4
	tcpAck      = 8
	tcpDataOff  = 12
	tcpFlags    = 13
	tcpWindow   = 14
	tcpChecksum = 16
	tcpUrgent   = 18
)

// SrcPort is the source port.
func (b TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[tcpSrcPort:]) }

// DstPort is the destination port.
func (b TCP) DstPort() uint16 { return binary.BigEndian.Uint16(b[tcpDstPort:]) }

// Seq is the sequence number.
func (b TCP) Seq() uint32 { return binary.BigEndian.Uint32(b[tcpSeq:]) }

// Ack is the acknowledgement number.
func (b TCP) Ack() uint32 { return binary.BigEndian.Uint32(b[tcpAck:]) }

// HeaderLen is the header length in bytes, from the data offset field.
func (b TCP) HeaderLen() int { return int(b[tcpDataOff]>>4) * 4 }

// Flags is the flags byte (capture.FlagFIN …).
func (b TCP) Flags() uint8 { return b[tcpFlags] }

// Window is the receive window, unscaled.
func (b TCP) Window() uint16 { return binary.BigEndian.Uint16(b[tcpWindow:]) }

// Checksum is the checksum field.
func (b TCP) Checksum() uint16 { return binary.BigEndian.Uint16(b[tcpChecksum:]) }

// Urgent is the urgent pointer.
func (b TCP) Urgent() uint16 { return binary.BigEndian.Uint16(b[tcpUrgent:]) }

// SetSrcPort sets the source port.
func (b TCP) SetSrcPort(p uint16) { binary.BigEndian.PutUint16(b[tcpSrcPort:], p) }

// SetDstPort sets the destination port.
func (b TCP) SetDstPort(p uint16) { binary.BigEndian.PutUint16(b[tcpDstPort:], p) }

// SetSeq sets the sequence number.
func (b TCP) SetSeq(s uint32) { binary.BigEndian.PutUint32(b[tcpSeq:], s) }

// SetAck sets the acknowledgement number.
func (b TCP) SetAck(a uint32) { binary.BigEndian.PutUint32(b[tcpAck:], a) }

// SetHeaderLen sets the data offset to n bytes (a multiple of 4) and clears the reserved bits.
func (b TCP) SetHeaderLen(n int) { b[tcpDataOff] = uint8(n/4) << 4 }

// SetFlags sets the flags byte.
func (b TCP) SetFlags(f uint8) { b[tcpFlags] = f }

// SetWindow sets the receive window.
func (b TCP) SetWindow(w uint16) { binary.BigEndian.PutUint16(b[tcpWindow:], w) }

// SetChecksum sets the checksum field.
func (b TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[tcpChecksum:], c) }

// SetUrgent sets the urgent pointer.
func (b TCP) SetUrgent(u uint16) { binary.BigEndian.PutUint16(b[tcpUrgent:], u) }

// UDP is a view of a UDP header (RFC 768). canopy only reads it, to describe
// the datagram an ICMP error quotes.
type UDP []byte

const (
	udpSrcPort = 0
	udpDstPort = 2
)

// SrcPort is the source port.
func (b UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[udpSrcPort:]) }

// DstPort is the destination port.
func (b UDP) DstPort() uint16 { return binary.BigEndian.Uint16(b[udpDstPort:]) }

// ICMP types and codes canopy writes (destination unreachable) and names.
const (
	ICMPv4TypeUnreachable uint8 = 3  // destination unreachable (RFC 792)
	ICMPv4CodePort        uint8 = 3  // port unreachable: ECONNREFUSED on Linux
	ICMPv4CodeHostAdmin   uint8 = 10 // host administratively prohibited: EHOSTUNREACH on Linux
	ICMPv4CodeAdmin       uint8 = 13 // communication administratively prohibited (RFC 1812): EHOSTUNREACH on Linux

	ICMPv6TypeUnreachable uint8 = 1 // destination unreachable (RFC 4443)
	ICMPv6CodeAdmin       uint8 = 1 // communication administratively prohibited: EACCES on Linux
	ICMPv6CodePort        uint8 = 4 // port unreachable: ECONNREFUSED on Linux
)

// ICMP is a view of an ICMPv4 or ICMPv6 error message header; the two share
// their layout (type, code, checksum, 4 bytes that are unused for
// destination unreachable) and differ only in how the checksum is computed.
type ICMP []byte

// ICMPv4 is a view of an ICMPv4 error message (RFC 792); its checksum covers
// the message only.
type ICMPv4 = ICMP

// ICMPv6 is a view of an ICMPv6 error message (RFC 4443); its checksum also
// covers the IPv6 pseudo-header.
type ICMPv6 = ICMP

const (
	icmpType     = 0
	icmpCode     = 1
	icmpChecksum = 2
	icmpRest     = 4
	icmpPayload  = 8
)

// Type is the message type.
func (b ICMP) Type() uint8 { return b[icmpType] }

// Code is the message code.
func (b ICMP) Code() uint8 { return b[icmpCode] }

// Checksum is the checksum field.
func (b ICMP) Checksum() uint16 { return binary.BigEndian.Uint16(b[icmpChecksum:]) }

// Payload is what the error quotes: the offending packet's IP header and the
// start of its payload.
func (b ICMP) Payload() []byte { return b[icmpPayload:] }

// SetType sets the message type.
func (b ICMP) SetType(t uint8) { b[icmpType] = t }

// SetCode sets the message code.
func (b ICMP) SetCode(c uint8) { b[icmpCode] = c }

// SetChecksum sets the checksum field.
func (b ICMP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(b[icmpChecksum:], c) }

// SetRest sets the 4 bytes after the checksum (unused, zero, for destination unreachable).
func (b ICMP) SetRest(v uint32) { binary.BigEndian.PutUint32(b[icmpRest:], v) }
