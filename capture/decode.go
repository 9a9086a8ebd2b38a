package capture

import (
	"encoding/binary"
	"net/netip"
)

// Ether types and header sizes the decoder knows. Offsets are written as in
// the RFCs so the code can be audited against them.
const (
	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86dd
	etherTypeVLAN   = 0x8100 // 802.1Q C-tag
	etherTypeQinQ   = 0x88a8 // 802.1ad S-tag
	etherTypeQinQv1 = 0x9100 // pre-standard S-tag, still seen on old switches

	ethHeaderLen  = 14
	vlanTagLen    = 4
	ipv4MinHeader = 20
	ipv6HeaderLen = 40
	tcpMinHeader  = 20
	udpHeaderLen  = 8
	icmpMinHeader = 4 // type, code, checksum: the part every ICMP/ICMPv6 message has

	// maxVLANWalk bounds the tag walk so a frame of 0x8100s cannot spin.
	maxVLANWalk = 8
	// maxIPv6Ext bounds the extension-header walk (RFC 8200 allows each
	// header once, destination options twice, so 8 is generous).
	maxIPv6Ext = 8
)

// IPv6 next-header values that are extension headers (RFC 8200 §4, RFC 4302).
const (
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6ESP      = 50
	ipv6AH       = 51
	ipv6NoNext   = 59
	ipv6DestOpts = 60
)

var be = binary.BigEndian

// Decode parses one Ethernet frame into p and reports whether it could.
//
// p is reset first, so nothing from an earlier packet survives. When the
// result is not OK, p holds what was decoded before the failure (MACs, VLANs,
// addresses…) and zero after it, so callers can still attribute the error.
// m supplies what the kernel knows besides the bytes: the timestamp, the wire
// length and a VLAN tag it stripped, which becomes the outermost tag (wire
// order: the metadata tag first, then the tags still in the frame).
//
// Lengths come from the IP header, never from the frame length, because
// Ethernet pads short frames. A frame the capture cut short (m.WireLen longer
// than the bytes present) is accepted as long as every header canopy reads is
// present; its IP length is then checked against the wire length instead.
//
// PayloadLen is the TCP or UDP payload; for ICMP/ICMPv6 the bytes after
// type, code and checksum; for a later fragment (no transport header) the
// fragment's data; for other protocols everything after the IP headers. A
// first fragment's PayloadLen covers that fragment only: live capture
// defragments before the fanout, so this only shows in files.
//
// Decode never allocates, never panics on any input, and keeps no reference
// to frame.
func Decode(frame []byte, m *Meta, p *Packet) Reason {
	*p = Packet{}
	p.Timestamp = m.Timestamp
	p.Port = m.Port

	stripped := 0
	if m.HasVLAN {
		stripped = vlanTagLen
	}
	p.WireLen = m.WireLen
	if p.WireLen == 0 {
		p.WireLen = uint32(len(frame) + stripped)
	}
	// wire is how long the frame, as handed to us, was before any snap
	// length cut it; IP lengths may reach up to it but not beyond.
	wire := len(frame)
	if w := int(m.WireLen) - stripped; w > wire {
		wire = w
	}

	if len(frame) < ethHeaderLen {
		return ReasonTruncEther
	}
	copy(p.DstMAC[:], frame[0:6])
	copy(p.SrcMAC[:], frame[6:12])

	if m.HasVLAN {
		tpid := m.VLANTPID
		if tpid == 0 {
			tpid = etherTypeVLAN // kernels before 3.14 report no TPID; 802.1Q is the safe guess
		}
		p.VLANs[0] = VLAN{TPID: tpid, TCI: m.VLANTCI}
		p.NumVLANs = 1
	}

	et := be.Uint16(frame[12:14])
	off := ethHeaderLen
	for i := 0; et == etherTypeVLAN || et == etherTypeQinQ || et == etherTypeQinQv1; i++ {
		if len(frame) < off+vlanTagLen {
			return ReasonTruncVLAN
		}
		if int(p.NumVLANs) >= MaxVLANs || i >= maxVLANWalk {
			return ReasonVLANDepth
		}
		p.VLANs[p.NumVLANs] = VLAN{TPID: et, TCI: be.Uint16(frame[off : off+2])}
		p.NumVLANs++
		et = be.Uint16(frame[off+2 : off+4])
		off += vlanTagLen
	}
	p.EtherType = et

	switch et {
	case etherTypeIPv4:
		return decodeIPv4(frame, off, wire, p)
	case etherTypeIPv6:
		return decodeIPv6(frame, off, wire, p)
	}
	return ReasonNotIP
}

// decodeIPv4 parses the IPv4 header at off (RFC 791) and what follows it.
func decodeIPv4(frame []byte, off, wire int, p *Packet) Reason {
	if len(frame) < off+ipv4MinHeader {
		return ReasonTruncIPv4
	}
	ip := frame[off:]
	if ip[0]>>4 != 4 {
		return ReasonBadIPv4
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < ipv4MinHeader {
		return ReasonBadIPv4
	}
	if len(ip) < ihl {
		return ReasonTruncIPv4
	}
	total := int(be.Uint16(ip[2:4]))
	if total < ihl || off+total > wire {
		return ReasonBadIPv4
	}
	p.L3Offset = uint16(off)
	p.IPVersion = 4
	p.IPLen = uint16(total)
	p.TTL = ip[8]
	p.Proto = ip[9]
	p.Src = netip.AddrFrom4([4]byte(ip[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(ip[16:20]))

	fragField := be.Uint16(ip[6:8])
	switch {
	case fragField&0x1fff != 0:
		p.Frag = FragLater
	case fragField&0x2000 != 0:
		p.Frag = FragFirst
	}
	l4, end := off+ihl, off+total
	if p.Frag == FragLater {
		// No transport header here: PayloadLen is the fragment's data.
		p.PayloadLen = uint16(end - l4)
		return OK
	}
	return decodeL4(frame, l4, end, p)
}

// decodeIPv6 parses the fixed IPv6 header at off (RFC 8200), walks the
// extension headers and decodes the transport header after them.
func decodeIPv6(frame []byte, off, wire int, p *Packet) Reason {
	if len(frame) < off+ipv6HeaderLen {
		return ReasonTruncIPv6
	}
	ip := frame[off:]
	if ip[0]>>4 != 6 {
		return ReasonBadIPv6
	}
	plen := int(be.Uint16(ip[4:6]))
	end := off + ipv6HeaderLen + plen
	if end > wire {
		return ReasonBadIPv6
	}
	p.L3Offset = uint16(off)
	p.IPVersion = 6
	p.IPLen = uint16(min(ipv6HeaderLen+plen, 0xffff))
	p.TTL = ip[7]
	p.Src = netip.AddrFrom16([16]byte(ip[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(ip[24:40]))

	nh := ip[6]
	pos := off + ipv6HeaderLen
	for i := 0; ; i++ {
		var hdrLen int
		switch nh {
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts, ipv6Fragment, ipv6AH:
		default:
			// A transport protocol, ESP (encrypted: nothing more to read)
			// or No Next Header.
			p.Proto = nh
			if nh == ipv6ESP || nh == ipv6NoNext {
				p.PayloadLen = uint16(end - pos)
				return OK
			}
			return decodeL4(frame, pos, end, p)
		}
		if i >= maxIPv6Ext {
			return ReasonBadIPv6Ext
		}
		if pos+8 > end { // every extension header is at least 8 bytes
			return ReasonBadIPv6Ext
		}
		if pos+8 > len(frame) {
			return ReasonTruncIPv6
		}
		switch nh {
		case ipv6Fragment:
			hdrLen = 8
			fragField := be.Uint16(frame[pos+2 : pos+4])
			if fragField&0xfff8 != 0 {
				p.Frag = FragLater
			} else if fragField&1 != 0 {
				p.Frag = FragFirst
			}
		case ipv6AH:
			hdrLen = (int(frame[pos+1]) + 2) * 4 // RFC 4302: in 4-byte units, minus 2
		default:
			hdrLen = (int(frame[pos+1]) + 1) * 8 // in 8-byte units, not counting the first 8
		}
		nh = frame[pos]
		pos += hdrLen
		if pos > end {
			return ReasonBadIPv6Ext
		}
		if p.Frag == FragLater {
			p.Proto = nh
			p.PayloadLen = uint16(end - pos)
			return OK
		}
	}
}

// decodeL4 parses the transport header at l4; end is where the IP packet
// ends (from its header), which may lie beyond the captured bytes.
func decodeL4(frame []byte, l4, end int, p *Packet) Reason {
	switch p.Proto {
	case ProtoTCP:
		if l4+tcpMinHeader > end || l4+tcpMinHeader > len(frame) {
			return ReasonTruncTCP
		}
		t := frame[l4 : l4+tcpMinHeader]
		doff := int(t[12]>>4) * 4
		if doff < tcpMinHeader || l4+doff > end {
			return ReasonBadTCP
		}
		p.SrcPort = be.Uint16(t[0:2])
		p.DstPort = be.Uint16(t[2:4])
		p.Seq = be.Uint32(t[4:8])
		p.Ack = be.Uint32(t[8:12])
		p.Flags = t[13]
		p.Window = be.Uint16(t[14:16])
		p.PayloadLen = uint16(end - l4 - doff)
	case ProtoUDP:
		if l4+udpHeaderLen > end || l4+udpHeaderLen > len(frame) {
			return ReasonTruncUDP
		}
		p.SrcPort = be.Uint16(frame[l4 : l4+2])
		p.DstPort = be.Uint16(frame[l4+2 : l4+4])
		p.PayloadLen = uint16(end - l4 - udpHeaderLen)
	case ProtoICMP, ProtoICMPv6:
		if p.Proto == ProtoICMP && p.IPVersion != 4 || p.Proto == ProtoICMPv6 && p.IPVersion != 6 {
			// ICMPv4 inside IPv6 (or the reverse) is not an ICMP message
			// any host would act on: report the payload, read nothing.
			p.PayloadLen = uint16(end - l4)
			return OK
		}
		if l4+icmpMinHeader > end || l4+icmpMinHeader > len(frame) {
			return ReasonTruncICMP
		}
		p.ICMPType = frame[l4]
		p.ICMPCode = frame[l4+1]
		p.PayloadLen = uint16(end - l4 - icmpMinHeader)
	default:
		p.PayloadLen = uint16(end - l4)
	}
	return OK
}
