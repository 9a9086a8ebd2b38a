package inject

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"canopy/capture"
)

// Frame sizes.
const (
	// MaxICMPv4Len caps an ICMPv4 error's IP packet (RFC 1812 §4.3.2.3: no
	// more than 576 bytes).
	MaxICMPv4Len = 576
	// MaxICMPv6Len caps an ICMPv6 error's IP packet (RFC 4443 §2.4(c): must
	// not exceed the minimum IPv6 MTU).
	MaxICMPv6Len = 1280
	// MaxFrameLen is the largest frame BuildReset or BuildUnreachable ever
	// writes (Ethernet + the deepest VLAN stack + the largest ICMPv6 error).
	// A buffer of this size is always enough; frames fit a 1500-byte MTU.
	MaxFrameLen = EthernetLen + capture.MaxVLANs*VLANTagLen + MaxICMPv6Len
	// ResetFrameLen is the largest frame BuildReset writes (IPv6 under two tags).
	ResetFrameLen = EthernetLen + capture.MaxVLANs*VLANTagLen + IPv6Len + TCPMinLen
)

// DefaultTTL is written when a spec's TTL is zero: the hop count Linux starts
// with. A zero TTL means the caller never observed the impersonated host (a
// flow seen in one direction only); sending with a common default still kills
// the session, whereas refusing would let it live.
const DefaultTTL = 64

// ErrInvalidSpec is wrapped by every error the builders return: the spec
// (or buffer) the caller passed cannot produce a frame. Such an error is a
// bug in the caller, never a property of the traffic.
var ErrInvalidSpec = errors.New("invalid inject spec")

// Reset describes one TCP reset to forge: the frame goes to DstMAC and
// pretends to come from Src:SrcPort, the host the receiver Dst:DstPort is
// talking to.
type Reset struct {
	DstMAC, SrcMAC [6]byte                        // Ethernet addresses: next hop (or the observed sender, reflect mode) and the inject port's own
	VLANs          [capture.MaxVLANs]capture.VLAN // tag stack to rebuild, outermost first; a zero TPID means 0x8100
	NumVLANs       uint8                          // how many entries of VLANs are used
	Src, Dst       netip.Addr                     // impersonated host, and the host whose socket dies; both IPv4 or both IPv6
	SrcPort        uint16                         // impersonated host's port
	DstPort        uint16                         // receiver's port
	Seq            uint32                         // sequence number: the receiver's RCV.NXT
	Ack            uint32                         // acknowledgement number; written only when Flags has ACK, else zero
	Flags          uint8                          // capture.FlagRST, or capture.FlagRST|capture.FlagACK (needed toward SYN-SENT)
	TTL            uint8                          // IPv4 TTL / IPv6 hop limit: copy the impersonated host's observed value; 0 means DefaultTTL
	Window         uint16                         // TCP window to advertise (0 is what stacks put in their own resets)
}

// UnreachCode selects the code of an ICMP destination-unreachable error.
// The zero value, UnreachPort, is the one that makes a blocked client's
// connected UDP socket fail with ECONNREFUSED.
type UnreachCode uint8

const (
	// UnreachPort is "port unreachable": ICMPv4 3/3, ICMPv6 1/4. Linux
	// maps both to ECONNREFUSED (a hard error) on a connected UDP socket,
	// which is what applications treat as "nobody there, give up". This is
	// the default because it is the outcome canopy promises (proved on a
	// real kernel in TestRealKernelUnreachable).
	UnreachPort UnreachCode = iota
	// UnreachAdmin is "communication administratively prohibited": ICMPv4
	// 3/13, ICMPv6 1/1. It is the honest code for a policy block, but
	// Linux reports it as EHOSTUNREACH (v4) or EACCES (v6), errors that
	// applications may take for a transient routing problem and retry.
	UnreachAdmin
)

// String names the code as Describe prints it.
func (c UnreachCode) String() string {
	switch c {
	case UnreachPort:
		return "port"
	case UnreachAdmin:
		return "admin"
	}
	return fmt.Sprintf("UnreachCode(%d)", uint8(c))
}

// Unreachable describes one ICMP/ICMPv6 destination-unreachable error to
// forge toward the sender of a blocked datagram.
type Unreachable struct {
	DstMAC, SrcMAC [6]byte                        // Ethernet addresses, as in Reset
	VLANs          [capture.MaxVLANs]capture.VLAN // tag stack to rebuild, outermost first; a zero TPID means 0x8100
	NumVLANs       uint8                          // how many entries of VLANs are used
	Src            netip.Addr                     // the host we impersonate: the original packet's destination
	Dst            netip.Addr                     // the original packet's sender, who receives the error
	TTL            uint8                          // TTL / hop limit: copy the impersonated host's observed value; 0 means DefaultTTL
	Code           UnreachCode                    // which unreachable code; the zero value is UnreachPort
}

// ipIDState drives the IPv4 identification of forged packets. A constant ID
// (Suricata writes 0) fingerprints an injector (Weaver et al., NDSS 2009).
// A Weyl sequence run through the splitmix64 finalizer (a cheap xorshift-
// multiply mix) costs one atomic add shared by all workers, gives every call
// a distinct 64-bit value, and its low 16 bits look random. Resets carry DF
// and are never fragmented, so an ID repeating now and then is harmless.
var ipIDState atomic.Uint64

func init() { ipIDState.Store(uint64(time.Now().UnixNano())) }

func nextIPID() uint16 {
	x := ipIDState.Add(0x9e3779b97f4a7c15)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return uint16(x)
}

// family reports 4 or 6 for a pair of addresses of one family, 0 otherwise.
// IPv4-mapped IPv6 addresses count as IPv6: they are what the wire carried.
func family(a, b netip.Addr) int {
	switch {
	case a.Is4() && b.Is4():
		return 4
	case a.Is6() && b.Is6():
		return 6
	}
	return 0
}

// putL2 writes the Ethernet header and the VLAN stack for a payload of
// etherType and returns where the payload starts. buf must hold
// EthernetLen + n*VLANTagLen bytes and n ≤ capture.MaxVLANs.
func putL2(buf []byte, dst, src [6]byte, vlans *[capture.MaxVLANs]capture.VLAN, n int, etherType uint16) int {
	eth := Ethernet(buf[:EthernetLen])
	eth.SetDst(dst)
	eth.SetSrc(src)
	if n == 0 {
		eth.SetType(etherType)
		return EthernetLen
	}
	eth.SetType(tpid(vlans[0]))
	off := EthernetLen
	for i := 0; i < n; i++ {
		tag := VLANTag(buf[off : off+VLANTagLen])
		tag.SetTCI(vlans[i].TCI)
		if i+1 < n {
			tag.SetType(tpid(vlans[i+1]))
		} else {
			tag.SetType(etherType)
		}
		off += VLANTagLen
	}
	return off
}

// tpid is v's TPID, with 0x8100 for a tag recorded without one (kernels
// before 3.14 report offloaded tags without their TPID).
func tpid(v capture.VLAN) uint16 {
	if v.TPID == 0 {
		return EtherTypeVLAN
	}
	return v.TPID
}

func ttlOrDefault(t uint8) uint8 {
	if t == 0 {
		return DefaultTTL
	}
	return t
}

// BuildReset writes the frame r describes into buf and returns its length:
// Ethernet, r's VLAN stack (each tag with its own TPID), an IPv4 (DF set,
// fresh ID) or IPv6 header, and a 20-byte TCP header without options, all
// checksums filled in. buf must hold the frame; MaxFrameLen (or
// ResetFrameLen) always does. It does not allocate. It fails, wrapping
// ErrInvalidSpec, when the addresses are missing or of mixed families, the
// flags are neither RST nor RST|ACK, NumVLANs exceeds capture.MaxVLANs, or
// buf is too small; buf is then left untouched.
func BuildReset(buf []byte, r *Reset) (int, error) {
	fam := family(r.Src, r.Dst)
	if fam == 0 {
		return 0, fmt.Errorf("%w: reset %v > %v: source and destination must both be IPv4 or both IPv6", ErrInvalidSpec, r.Src, r.Dst)
	}
	if r.Flags != capture.FlagRST && r.Flags != capture.FlagRST|capture.FlagACK {
		return 0, fmt.Errorf("%w: reset flags %#02x: want RST or RST|ACK", ErrInvalidSpec, r.Flags)
	}
	if r.NumVLANs > capture.MaxVLANs {
		return 0, fmt.Errorf("%w: %d VLAN tags, at most %d", ErrInvalidSpec, r.NumVLANs, capture.MaxVLANs)
	}
	ipLen := IPv4MinLen
	etherType := EtherTypeIPv4
	if fam == 6 {
		ipLen, etherType = IPv6Len, EtherTypeIPv6
	}
	l2Len := EthernetLen + int(r.NumVLANs)*VLANTagLen
	n := l2Len + ipLen + TCPMinLen
	if len(buf) < n {
		return 0, fmt.Errorf("%w: reset needs a %d-byte buffer, got %d", ErrInvalidSpec, n, len(buf))
	}
	buf = buf[:n]

	off := putL2(buf, r.DstMAC, r.SrcMAC, &r.VLANs, int(r.NumVLANs), etherType)
	tcp := TCP(buf[off+ipLen:])
	tcp.SetSrcPort(r.SrcPort)
	tcp.SetDstPort(r.DstPort)
	tcp.SetSeq(r.Seq)
	if r.Flags&capture.FlagACK != 0 {
		tcp.SetAck(r.Ack)
	} else {
		tcp.SetAck(0) // ignored by receivers, but a stale value would fingerprint us
	}
	tcp.SetHeaderLen(TCPMinLen)
	tcp.SetFlags(r.Flags)
	tcp.SetWindow(r.Window)
	tcp.SetChecksum(0)
	tcp.SetUrgent(0)

	var pseudo uint64
	if fam == 4 {
		ip := IPv4(buf[off : off+IPv4MinLen])
		ip.SetVersionIHL(IPv4MinLen)
		ip.SetTOS(0)
		ip.SetTotalLen(uint16(IPv4MinLen + TCPMinLen))
		ip.SetID(nextIPID())
		ip.SetFlagsFrag(IPv4FlagDF)
		ip.SetTTL(ttlOrDefault(r.TTL))
		ip.SetProtocol(capture.ProtoTCP)
		ip.SetSrc(r.Src)
		ip.SetDst(r.Dst)
		ip.SetChecksum(ip.CalculateChecksum())
		pseudo = ip.pseudoSum(capture.ProtoTCP, TCPMinLen)
	} else {
		ip := IPv6(buf[off : off+IPv6Len])
		ip.SetVersionClassFlow(0)
		ip.SetPayloadLen(TCPMinLen)
		ip.SetNextHeader(capture.ProtoTCP)
		ip.SetHopLimit(ttlOrDefault(r.TTL))
		ip.SetSrc(r.Src)
		ip.SetDst(r.Dst)
		pseudo = ip.pseudoSum(capture.ProtoTCP, TCPMinLen)
	}
	tcp.SetChecksum(checksumFinish(checksumAdd(pseudo, tcp)))
	return n, nil
}

// BuildUnreachable writes into buf an ICMP (IPv4: type 3) or ICMPv6 (type 1)
// destination-unreachable error from u.Src to u.Dst quoting the offending
// packet, and returns the frame length. quoted starts at the offending
// packet's IP header (e.g. frame[p.L3Offset:] inside the capture handler);
// it must hold that header and at least 8 bytes of its payload, and its
// source must be u.Dst. Bytes past the quoted packet's own IP length
// (Ethernet padding) are dropped, and the quote is cut so the error's IP
// packet stays within MaxICMPv4Len or MaxICMPv6Len. buf must hold the frame;
// MaxFrameLen always does. It does not allocate; invalid input fails with
// an error wrapping ErrInvalidSpec.
//
// Which code: Linux turns ICMPv4 3/3 and ICMPv6 1/4 (UnreachPort, the
// default) into ECONNREFUSED on the client's connected UDP socket — the
// outcome canopy promises — whereas 3/13 yields EHOSTUNREACH and 1/1 yields
// EACCES (UnreachAdmin). Unconnected sockets see nothing in either case
// unless they enabled IP_RECVERR.
func BuildUnreachable(buf []byte, u *Unreachable, quoted []byte) (int, error) {
	fam := family(u.Src, u.Dst)
	if fam == 0 {
		return 0, fmt.Errorf("%w: unreachable %v > %v: source and destination must both be IPv4 or both IPv6", ErrInvalidSpec, u.Src, u.Dst)
	}
	if u.NumVLANs > capture.MaxVLANs {
		return 0, fmt.Errorf("%w: %d VLAN tags, at most %d", ErrInvalidSpec, u.NumVLANs, capture.MaxVLANs)
	}
	if u.Code != UnreachPort && u.Code != UnreachAdmin {
		return 0, fmt.Errorf("%w: unknown unreachable code %d", ErrInvalidSpec, uint8(u.Code))
	}
	q, err := trimQuote(quoted, fam, u.Dst)
	if err != nil {
		return 0, err
	}
	ipLen, maxIP, etherType := IPv4MinLen, MaxICMPv4Len, EtherTypeIPv4
	if fam == 6 {
		ipLen, maxIP, etherType = IPv6Len, MaxICMPv6Len, EtherTypeIPv6
	}
	if room := maxIP - ipLen - ICMPv4MinLen; len(q) > room {
		q = q[:room]
	}
	icmpLen := ICMPv4MinLen + len(q)
	l2Len := EthernetLen + int(u.NumVLANs)*VLANTagLen
	n := l2Len + ipLen + icmpLen
	if len(buf) < n {
		return 0, fmt.Errorf("%w: unreachable needs a %d-byte buffer, got %d", ErrInvalidSpec, n, len(buf))
	}
	buf = buf[:n]

	off := putL2(buf, u.DstMAC, u.SrcMAC, &u.VLANs, int(u.NumVLANs), etherType)
	icmp := ICMP(buf[off+ipLen:])
	// copy first: quoted may alias buf in a careless caller; copy handles overlap.
	copy(icmp[icmpPayload:], q)
	icmp.SetChecksum(0)
	icmp.SetRest(0)
	if fam == 4 {
		code := ICMPv4CodePort
		if u.Code == UnreachAdmin {
			code = ICMPv4CodeAdmin
		}
		icmp.SetType(ICMPv4TypeUnreachable)
		icmp.SetCode(code)
		icmp.SetChecksum(checksumFinish(checksumAdd(0, icmp)))

		ip := IPv4(buf[off : off+IPv4MinLen])
		ip.SetVersionIHL(IPv4MinLen)
		ip.SetTOS(0xc0) // precedence "internetwork control", as Linux's icmp_send
		ip.SetTotalLen(uint16(IPv4MinLen + icmpLen))
		ip.SetID(nextIPID())
		ip.SetFlagsFrag(0) // ≤ 576 bytes: every link carries it; Linux sends errors without DF
		ip.SetTTL(ttlOrDefault(u.TTL))
		ip.SetProtocol(capture.ProtoICMP)
		ip.SetSrc(u.Src)
		ip.SetDst(u.Dst)
		ip.SetChecksum(ip.CalculateChecksum())
		return n, nil
	}
	code := ICMPv6CodePort
	if u.Code == UnreachAdmin {
		code = ICMPv6CodeAdmin
	}
	icmp.SetType(ICMPv6TypeUnreachable)
	icmp.SetCode(code)
	ip := IPv6(buf[off : off+IPv6Len])
	ip.SetVersionClassFlow(0)
	ip.SetPayloadLen(uint16(icmpLen))
	ip.SetNextHeader(capture.ProtoICMPv6)
	ip.SetHopLimit(ttlOrDefault(u.TTL))
	ip.SetSrc(u.Src)
	ip.SetDst(u.Dst)
	icmp.SetChecksum(checksumFinish(checksumAdd(ip.pseudoSum(capture.ProtoICMPv6, icmpLen), icmp)))
	return n, nil
}

// trimQuote checks that q starts with an IP header of family fam sent by
// sender, and returns q cut to that packet's own length (dropping link
// padding). It requires the header plus 8 bytes of payload: the receiving
// stack matches the error to a socket by the quoted ports.
func trimQuote(q []byte, fam int, sender netip.Addr) ([]byte, error) {
	if len(q) == 0 {
		return nil, fmt.Errorf("%w: nothing to quote", ErrInvalidSpec)
	}
	if v := int(q[0] >> 4); v != fam {
		return nil, fmt.Errorf("%w: quoted packet is IPv%d, the error is IPv%d", ErrInvalidSpec, v, fam)
	}
	var hdr, total int
	var src netip.Addr
	if fam == 4 {
		if len(q) < IPv4MinLen {
			return nil, fmt.Errorf("%w: quoted IPv4 header truncated (%d bytes)", ErrInvalidSpec, len(q))
		}
		ip := IPv4(q)
		hdr, total, src = ip.HeaderLen(), int(ip.TotalLen()), ip.Src()
		if hdr < IPv4MinLen {
			return nil, fmt.Errorf("%w: quoted IPv4 header length %d", ErrInvalidSpec, hdr)
		}
	} else {
		if len(q) < IPv6Len {
			return nil, fmt.Errorf("%w: quoted IPv6 header truncated (%d bytes)", ErrInvalidSpec, len(q))
		}
		ip := IPv6(q)
		hdr, total, src = IPv6Len, IPv6Len+int(ip.PayloadLen()), ip.Src()
	}
	if total < len(q) {
		q = q[:total]
	}
	if len(q) < hdr+8 {
		return nil, fmt.Errorf("%w: quote has %d bytes, need the %d-byte IP header and 8 bytes of payload", ErrInvalidSpec, len(q), hdr)
	}
	if src != sender {
		return nil, fmt.Errorf("%w: quoted packet is from %v, the error goes to %v", ErrInvalidSpec, src, sender)
	}
	return q, nil
}
