package capture

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	ip4A = net.IP{192, 0, 2, 1}
	ip4B = net.IP{198, 51, 100, 2}
	ip6A = net.ParseIP("2001:db8::a")
	ip6B = net.ParseIP("2001:db8::b")
)

// serialize builds a frame from gopacket layers with lengths and checksums
// fixed, the way a real stack would have sent it.
func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	for _, l := range ls {
		switch t := l.(type) {
		case *layers.TCP:
			for _, n := range ls {
				if nl, ok := n.(gopacket.NetworkLayer); ok {
					_ = t.SetNetworkLayerForChecksum(nl)
				}
			}
		case *layers.ICMPv6:
			for _, n := range ls {
				if nl, ok := n.(gopacket.NetworkLayer); ok {
					_ = t.SetNetworkLayerForChecksum(nl)
				}
			}
		case *layers.UDP:
			for _, n := range ls {
				if nl, ok := n.(gopacket.NetworkLayer); ok {
					_ = t.SetNetworkLayerForChecksum(nl)
				}
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: t}
}

func ipv4(p layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 61, Protocol: p, SrcIP: ip4A, DstIP: ip4B, Id: 77}
}

func ipv6(nh layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 33, NextHeader: nh, SrcIP: ip6A, DstIP: ip6B}
}

func tcp(flags uint8) *layers.TCP {
	t := &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1000, Ack: 2000, Window: 512, DataOffset: 5}
	t.FIN = flags&FlagFIN != 0
	t.SYN = flags&FlagSYN != 0
	t.RST = flags&FlagRST != 0
	t.PSH = flags&FlagPSH != 0
	t.ACK = flags&FlagACK != 0
	return t
}

func udp() *layers.UDP { return &layers.UDP{SrcPort: 5353, DstPort: 53} }

func payload(n int) gopacket.Payload {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return gopacket.Payload(b)
}

// ipv6Ext is a generic IPv6 extension header (hop-by-hop, routing,
// destination options) serialized by hand: gopacket cannot serialize them.
type ipv6Ext struct {
	next layers.IPProtocol
	body int // bytes after the first 2, so total = 2 + body, a multiple of 8
}

func (e ipv6Ext) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	h, err := b.PrependBytes(2 + e.body)
	if err != nil {
		return err
	}
	h[0] = byte(e.next)
	h[1] = byte((2+e.body)/8 - 1)
	for i := 2; i < len(h); i++ {
		h[i] = 0
	}
	if e.body >= 4 { // a PadN option so the header is well-formed
		h[2], h[3] = 1, byte(e.body-2)
	}
	return nil
}
func (ipv6Ext) LayerType() gopacket.LayerType { return gopacket.LayerTypePayload }

// ipv6Frag is an IPv6 fragment header.
type ipv6Frag struct {
	next   layers.IPProtocol
	offset uint16 // in 8-byte units
	more   bool
}

func (f ipv6Frag) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	h, err := b.PrependBytes(8)
	if err != nil {
		return err
	}
	h[0], h[1] = byte(f.next), 0
	v := f.offset << 3
	if f.more {
		v |= 1
	}
	be.PutUint16(h[2:4], v)
	be.PutUint32(h[4:8], 0xdeadbeef)
	return nil
}
func (ipv6Frag) LayerType() gopacket.LayerType { return gopacket.LayerTypePayload }

// ah is an IPsec authentication header with a 12-byte ICV (RFC 4302).
type ah struct{ next layers.IPProtocol }

func (a ah) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	h, err := b.PrependBytes(24)
	if err != nil {
		return err
	}
	clear(h)
	h[0], h[1] = byte(a.next), 24/4-2
	return nil
}
func (ah) LayerType() gopacket.LayerType { return gopacket.LayerTypePayload }

func TestDecodeTable(t *testing.T) {
	a4, b4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")
	a6, b6 := netip.MustParseAddr("2001:db8::a"), netip.MustParseAddr("2001:db8::b")

	tcpOpts := tcp(FlagSYN)
	tcpOpts.Options = []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		{OptionType: layers.TCPOptionKindNop},
	}
	ip4opts := ipv4(layers.IPProtocolTCP)
	ip4opts.Options = []layers.IPv4Option{{OptionType: 0x94, OptionLength: 4, OptionData: []byte{0, 0}}} // router alert
	frag1 := ipv4(layers.IPProtocolTCP)
	frag1.Flags = layers.IPv4MoreFragments
	frag2 := ipv4(layers.IPProtocolTCP)
	frag2.FragOffset = 3

	type want struct {
		reason     Reason
		ipv        uint8
		src, dst   netip.Addr
		proto      uint8
		frag       Frag
		sport      uint16
		dport      uint16
		flags      uint8
		payload    uint16
		vlans      []VLAN
		icmp       [2]uint8
		l3off      uint16
		ethertype  uint16
		checkPorts bool
	}
	cases := []struct {
		name  string
		frame []byte
		meta  Meta
		want  want
	}{
		{"ipv4/tcp syn", serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagSYN)), Meta{},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoTCP, sport: 40000, dport: 443, flags: FlagSYN, l3off: 14, ethertype: 0x0800}},
		{"ipv4/tcp options+payload", serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcpOpts, payload(100)), Meta{},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoTCP, sport: 40000, dport: 443, flags: FlagSYN, payload: 100, l3off: 14, ethertype: 0x0800}},
		{"ipv4 options", serialize(t, eth(layers.EthernetTypeIPv4), ip4opts, tcp(FlagACK|FlagPSH), payload(7)), Meta{},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoTCP, sport: 40000, dport: 443, flags: FlagACK | FlagPSH, payload: 7, l3off: 14, ethertype: 0x0800}},
		{"ipv4/udp", serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolUDP), udp(), payload(12)), Meta{},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoUDP, sport: 5353, dport: 53, payload: 12, l3off: 14, ethertype: 0x0800}},
		{"ipv4/icmp", serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, payload(28)), Meta{},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoICMP, icmp: [2]uint8{3, 3}, payload: 32, l3off: 14, ethertype: 0x0800}},
		{"ipv4 first fragment", serialize(t, eth(layers.EthernetTypeIPv4), frag1, tcp(FlagACK), payload(24)), Meta{},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoTCP, frag: FragFirst, sport: 40000, dport: 443, flags: FlagACK, payload: 24, l3off: 14, ethertype: 0x0800}},
		{"ipv4 later fragment", serialize(t, eth(layers.EthernetTypeIPv4), frag2, payload(40)), Meta{},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoTCP, frag: FragLater, payload: 40, l3off: 14, ethertype: 0x0800, checkPorts: true}},
		{"ipv6/tcp", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolTCP), tcp(FlagSYN|FlagACK), payload(3)), Meta{},
			want{reason: OK, ipv: 6, src: a6, dst: b6, proto: ProtoTCP, sport: 40000, dport: 443, flags: FlagSYN | FlagACK, payload: 3, l3off: 14, ethertype: 0x86dd}},
		{"ipv6 ext hbh+routing+dst+ah/tcp", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolIPv6HopByHop),
			ipv6Ext{next: layers.IPProtocolIPv6Routing, body: 6}, ipv6Ext{next: layers.IPProtocolIPv6Destination, body: 14},
			ipv6Ext{next: layers.IPProtocolAH, body: 6}, ah{next: layers.IPProtocolTCP}, tcp(FlagFIN|FlagACK), payload(9)), Meta{},
			want{reason: OK, ipv: 6, src: a6, dst: b6, proto: ProtoTCP, sport: 40000, dport: 443, flags: FlagFIN | FlagACK, payload: 9, l3off: 14, ethertype: 0x86dd}},
		{"ipv6 first fragment", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolIPv6Fragment), ipv6Frag{next: layers.IPProtocolUDP, more: true}, udp(), payload(16)), Meta{},
			want{reason: OK, ipv: 6, src: a6, dst: b6, proto: ProtoUDP, frag: FragFirst, sport: 5353, dport: 53, payload: 16, l3off: 14, ethertype: 0x86dd}},
		{"ipv6 later fragment", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolIPv6Fragment), ipv6Frag{next: layers.IPProtocolTCP, offset: 185}, payload(64)), Meta{},
			want{reason: OK, ipv: 6, src: a6, dst: b6, proto: ProtoTCP, frag: FragLater, payload: 64, l3off: 14, ethertype: 0x86dd, checkPorts: true}},
		{"ipv6 esp stops", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolESP), payload(40)), Meta{},
			want{reason: OK, ipv: 6, src: a6, dst: b6, proto: 50, payload: 40, l3off: 14, ethertype: 0x86dd, checkPorts: true}},
		{"ipv6/icmpv6", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolICMPv6), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(1, 4)}, payload(4)), Meta{},
			want{reason: OK, ipv: 6, src: a6, dst: b6, proto: ProtoICMPv6, icmp: [2]uint8{1, 4}, payload: 4, l3off: 14, ethertype: 0x86dd}},
		{"802.1q in frame", serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 100, Priority: 5, Type: layers.EthernetTypeIPv4}, ipv4(layers.IPProtocolTCP), tcp(FlagRST)), Meta{},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoTCP, sport: 40000, dport: 443, flags: FlagRST, vlans: []VLAN{{0x8100, 5<<13 | 100}}, l3off: 18, ethertype: 0x0800}},
		{"qinq in frame", serialize(t, eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 300, Type: layers.EthernetTypeIPv6}, ipv6(layers.IPProtocolUDP), udp()), Meta{},
			want{reason: OK, ipv: 6, src: a6, dst: b6, proto: ProtoUDP, sport: 5353, dport: 53, vlans: []VLAN{{0x88a8, 200}, {0x8100, 300}}, l3off: 22, ethertype: 0x86dd}},
		{"stripped tag from meta", serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagSYN)), Meta{HasVLAN: true, VLANTPID: 0x8100, VLANTCI: 42},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoTCP, sport: 40000, dport: 443, flags: FlagSYN, vlans: []VLAN{{0x8100, 42}}, l3off: 14, ethertype: 0x0800}},
		{"stripped outer S-tag + inner C-tag in frame", serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 300, Type: layers.EthernetTypeIPv4}, ipv4(layers.IPProtocolTCP), tcp(FlagSYN)), Meta{HasVLAN: true, VLANTPID: 0x88a8, VLANTCI: 200},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoTCP, sport: 40000, dport: 443, flags: FlagSYN, vlans: []VLAN{{0x88a8, 200}, {0x8100, 300}}, l3off: 18, ethertype: 0x0800}},
		{"meta tag without tpid", serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolUDP), udp()), Meta{HasVLAN: true, VLANTCI: 7},
			want{reason: OK, ipv: 4, src: a4, dst: b4, proto: ProtoUDP, sport: 5353, dport: 53, vlans: []VLAN{{0x8100, 7}}, l3off: 14, ethertype: 0x0800}},
		{"three tags", serialize(t, eth(layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 1, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 2, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 3, Type: layers.EthernetTypeIPv4}, ipv4(layers.IPProtocolUDP), udp()), Meta{},
			want{reason: ReasonVLANDepth, vlans: []VLAN{{0x88a8, 1}, {0x8100, 2}}, ethertype: 0}},
		{"arp is not ip", serialize(t, eth(layers.EthernetTypeARP), &layers.ARP{AddrType: 1, Protocol: 0x0800, HwAddressSize: 6, ProtAddressSize: 4, Operation: 1,
			SourceHwAddress: macA, SourceProtAddress: ip4A, DstHwAddress: macB, DstProtAddress: ip4B}), Meta{},
			want{reason: ReasonNotIP, ethertype: 0x0806}},
		{"empty", nil, Meta{}, want{reason: ReasonTruncEther}},
		{"13 bytes", make([]byte, 13), Meta{}, want{reason: ReasonTruncEther}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p Packet
			r := Decode(c.frame, &c.meta, &p)
			if r != c.want.reason {
				t.Fatalf("reason = %v, want %v", r, c.want.reason)
			}
			if len(c.frame) >= 14 && (p.SrcMAC != [6]byte(macA) || p.DstMAC != [6]byte(macB)) {
				t.Errorf("MACs = %x→%x", p.SrcMAC, p.DstMAC)
			}
			if int(p.NumVLANs) != len(c.want.vlans) {
				t.Fatalf("NumVLANs = %d, want %d (%v)", p.NumVLANs, len(c.want.vlans), p.VLANs)
			}
			for i, v := range c.want.vlans {
				if p.VLANs[i] != v {
					t.Errorf("VLANs[%d] = %+v, want %+v", i, p.VLANs[i], v)
				}
			}
			if r != OK {
				return
			}
			w := c.want
			if p.IPVersion != w.ipv || p.Src != w.src || p.Dst != w.dst || p.Proto != w.proto || p.Frag != w.frag {
				t.Errorf("ip = v%d %v→%v proto %d frag %d, want v%d %v→%v proto %d frag %d", p.IPVersion, p.Src, p.Dst, p.Proto, p.Frag, w.ipv, w.src, w.dst, w.proto, w.frag)
			}
			if p.SrcPort != w.sport || p.DstPort != w.dport || p.Flags != w.flags || p.PayloadLen != w.payload {
				t.Errorf("l4 = %d→%d flags %#x payload %d, want %d→%d flags %#x payload %d", p.SrcPort, p.DstPort, p.Flags, p.PayloadLen, w.sport, w.dport, w.flags, w.payload)
			}
			if [2]uint8{p.ICMPType, p.ICMPCode} != w.icmp {
				t.Errorf("icmp = %d/%d, want %v", p.ICMPType, p.ICMPCode, w.icmp)
			}
			if p.L3Offset != w.l3off || p.EtherType != w.ethertype {
				t.Errorf("L3Offset %d ethertype %#x, want %d %#x", p.L3Offset, p.EtherType, w.l3off, w.ethertype)
			}
			if p.Proto == ProtoTCP && p.Frag != FragLater && (p.Seq != 1000 || p.Ack != 2000 || p.Window != 512) {
				t.Errorf("seq/ack/win = %d/%d/%d", p.Seq, p.Ack, p.Window)
			}
			if w.ipv == 4 && p.TTL != 61 || w.ipv == 6 && p.TTL != 33 {
				t.Errorf("TTL = %d", p.TTL)
			}
			wantWire := uint32(len(c.frame))
			if c.meta.HasVLAN {
				wantWire += 4
			}
			if p.WireLen != wantWire {
				t.Errorf("WireLen = %d, want %d", p.WireLen, wantWire)
			}
		})
	}
}

// TestDecodeMalformed corrupts valid frames one field at a time and checks
// the decoder names the damage.
func TestDecodeMalformed(t *testing.T) {
	v4 := serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagACK), payload(10))
	v6 := serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolTCP), tcp(FlagACK), payload(10))
	u4 := serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolUDP), udp())
	i4 := serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolICMPv4), &layers.ICMPv4{})
	ext := serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolIPv6HopByHop), ipv6Ext{next: layers.IPProtocolTCP, body: 6}, tcp(FlagSYN))
	vl := serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 9, Type: layers.EthernetTypeIPv4}, ipv4(layers.IPProtocolTCP), tcp(FlagSYN))

	edit := func(f []byte, fn func(b []byte)) []byte {
		b := append([]byte(nil), f...)
		fn(b)
		return b
	}
	cases := []struct {
		name  string
		frame []byte
		meta  Meta
		want  Reason
	}{
		{"vlan cut", vl[:16], Meta{}, ReasonTruncVLAN},
		{"ipv4 cut in header", v4[:14+19], Meta{}, ReasonTruncIPv4},
		{"ipv4 ihl 4", edit(v4, func(b []byte) { b[14] = 0x44 }), Meta{}, ReasonBadIPv4},
		{"ipv4 version 6 under 0x0800", edit(v4, func(b []byte) { b[14] = 0x65 }), Meta{}, ReasonBadIPv4},
		{"ipv4 ihl beyond frame", edit(v4[:14+24], func(b []byte) { b[14] = 0x4f }), Meta{}, ReasonTruncIPv4},
		{"ipv4 total < ihl", edit(v4, func(b []byte) { be.PutUint16(b[16:], 19) }), Meta{}, ReasonBadIPv4},
		{"ipv4 total > frame", edit(v4, func(b []byte) { be.PutUint16(b[16:], uint16(len(v4)-14+1)) }), Meta{}, ReasonBadIPv4},
		{"ipv4 total > wire even when snapped", v4[:54], Meta{WireLen: uint32(len(v4) - 1)}, ReasonBadIPv4},
		{"tcp cut", v4[:14+20+19], Meta{}, ReasonBadIPv4},
		{"tcp header beyond ip length", edit(v4, func(b []byte) { be.PutUint16(b[16:], 20+19) }), Meta{}, ReasonTruncTCP},
		{"tcp doff 4", edit(v4, func(b []byte) { b[14+20+12] = 0x40 }), Meta{}, ReasonBadTCP},
		{"tcp doff beyond ip payload", edit(v4, func(b []byte) { b[14+20+12] = 0xf0 }), Meta{}, ReasonBadTCP},
		{"tcp header snapped away", v4[:14+20+10], Meta{WireLen: uint32(len(v4))}, ReasonTruncTCP},
		{"udp cut by ip length", edit(u4, func(b []byte) { be.PutUint16(b[16:], 20+7) }), Meta{}, ReasonTruncUDP},
		{"icmp cut by ip length", edit(i4, func(b []byte) { be.PutUint16(b[16:], 20+3) }), Meta{}, ReasonTruncICMP},
		{"ipv6 cut", v6[:14+39], Meta{}, ReasonTruncIPv6},
		{"ipv6 version 4 under 0x86dd", edit(v6, func(b []byte) { b[14] = 0x45 }), Meta{}, ReasonBadIPv6},
		{"ipv6 payload > frame", edit(v6, func(b []byte) { be.PutUint16(b[18:], uint16(len(v6)-54+1)) }), Meta{}, ReasonBadIPv6},
		{"ipv6 ext runs past packet", edit(ext, func(b []byte) { b[54+1] = 200 }), Meta{}, ReasonBadIPv6Ext},
		{"ipv6 ext cut by capture", ext[:54+4], Meta{WireLen: uint32(len(ext))}, ReasonTruncIPv6},
		{"ipv6 ext chain too long", serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolIPv6HopByHop),
			ipv6Ext{next: 0, body: 6}, ipv6Ext{next: 0, body: 6}, ipv6Ext{next: 0, body: 6}, ipv6Ext{next: 0, body: 6},
			ipv6Ext{next: 0, body: 6}, ipv6Ext{next: 0, body: 6}, ipv6Ext{next: 0, body: 6}, ipv6Ext{next: 0, body: 6},
			ipv6Ext{next: layers.IPProtocolTCP, body: 6}, tcp(FlagSYN)), Meta{}, ReasonBadIPv6Ext},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p Packet
			if r := Decode(c.frame, &c.meta, &p); r != c.want {
				t.Fatalf("reason = %v, want %v", r, c.want)
			}
		})
	}
}

// TestDecodeSnapTruncated checks a frame the capture cut short still decodes
// when every header is present, with PayloadLen from the IP header.
func TestDecodeSnapTruncated(t *testing.T) {
	f := serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagACK), payload(1400))
	var p Packet
	if r := Decode(f[:96], &Meta{WireLen: uint32(len(f))}, &p); r != OK {
		t.Fatalf("reason = %v", r)
	}
	if p.PayloadLen != 1400 || p.WireLen != uint32(len(f)) {
		t.Fatalf("PayloadLen %d WireLen %d", p.PayloadLen, p.WireLen)
	}
}

// TestDecodePaddedFrame checks Ethernet padding does not count as payload.
func TestDecodePaddedFrame(t *testing.T) {
	f := serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagACK))
	f = append(f, make([]byte, 60-len(f))...) // 54 → 60 bytes, as on the wire
	var p Packet
	if r := Decode(f, &Meta{}, &p); r != OK || p.PayloadLen != 0 || p.IPLen != 40 {
		t.Fatalf("reason %v PayloadLen %d IPLen %d", r, p.PayloadLen, p.IPLen)
	}
}

// TestDecodeResets checks no field survives from the previous packet.
func TestDecodeResets(t *testing.T) {
	var p Packet
	full := serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 9, Type: layers.EthernetTypeIPv4}, ipv4(layers.IPProtocolTCP), tcp(FlagSYN), payload(5))
	if r := Decode(full, &Meta{Timestamp: 5, Port: 3}, &p); r != OK {
		t.Fatal(r)
	}
	arp := serialize(t, eth(layers.EthernetTypeARP), payload(28))
	Decode(arp, &Meta{}, &p)
	want := Packet{WireLen: uint32(len(arp)), EtherType: 0x0806, SrcMAC: [6]byte(macA), DstMAC: [6]byte(macB)}
	if p != want {
		t.Fatalf("stale fields after reset:\n got %+v\nwant %+v", p, want)
	}
}

func TestReasonString(t *testing.T) {
	seen := map[string]bool{}
	for r := Reason(0); r < NumReasons; r++ {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("Reason(%d).String() = %q (empty, unknown or duplicate)", r, s)
		}
		seen[s] = true
	}
	if ReasonNotIP.String() != "not-ip" || ReasonNotIP.Malformed() || OK.Malformed() || !ReasonTruncTCP.Malformed() {
		t.Error("not-ip must be named not-ip and not count as malformed")
	}
	if NumReasons.String() != "unknown" {
		t.Error("out-of-range reason must not panic and must say unknown")
	}
}

func TestDecodeZeroAllocs(t *testing.T) {
	f := serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolTCP), tcp(FlagACK), payload(10))
	var p Packet
	m := Meta{HasVLAN: true, VLANTCI: 5}
	if n := testing.AllocsPerRun(1000, func() { Decode(f, &m, &p) }); n != 0 {
		t.Fatalf("Decode allocates %v times per packet", n)
	}
}
