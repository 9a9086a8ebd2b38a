package capture

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// randomFrame builds a random but valid frame: 0–2 VLAN tags, IPv4 (maybe
// with options) or IPv6 (maybe with a hop-by-hop header), then TCP (maybe
// with options), UDP or ICMP, and a random payload.
func randomFrame(tb testing.TB, r *rand.Rand) []byte {
	var ls []gopacket.SerializableLayer
	v6 := r.IntN(2) == 1
	l3 := layers.EthernetTypeIPv4
	if v6 {
		l3 = layers.EthernetTypeIPv6
	}
	tags := r.IntN(3)
	first := l3
	switch tags {
	case 1:
		first = layers.EthernetTypeDot1Q
	case 2:
		first = layers.EthernetTypeQinQ
	}
	src, dst := make(net.HardwareAddr, 6), make(net.HardwareAddr, 6)
	fillRand(r, src)
	fillRand(r, dst)
	ls = append(ls, &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: first})
	if tags == 2 {
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(r.IntN(4096)), Priority: uint8(r.IntN(8)), Type: layers.EthernetTypeDot1Q})
	}
	if tags >= 1 {
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(r.IntN(4096)), Priority: uint8(r.IntN(8)), Type: l3})
	}
	var proto layers.IPProtocol
	switch r.IntN(3) {
	case 0:
		proto = layers.IPProtocolTCP
	case 1:
		proto = layers.IPProtocolUDP
	default:
		proto = layers.IPProtocolICMPv4
		if v6 {
			proto = layers.IPProtocolICMPv6
		}
	}
	if v6 {
		a, b := make(net.IP, 16), make(net.IP, 16)
		fillRand(r, a)
		fillRand(r, b)
		a[0], b[0] = 0x20, 0x20 // keep them global unicast, not v4-mapped
		ip := &layers.IPv6{Version: 6, HopLimit: uint8(r.IntN(256)), NextHeader: proto, SrcIP: a, DstIP: b, FlowLabel: uint32(r.IntN(1 << 20))}
		ls = append(ls, ip)
		if r.IntN(3) == 0 {
			ip.NextHeader = layers.IPProtocolIPv6HopByHop
			ls = append(ls, ipv6Ext{next: proto, body: 6 + 8*r.IntN(3)})
		}
	} else {
		a, b := make(net.IP, 4), make(net.IP, 4)
		fillRand(r, a)
		fillRand(r, b)
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: uint8(r.IntN(256)), Protocol: proto, SrcIP: a, DstIP: b, Id: uint16(r.Uint32())}
		if r.IntN(3) == 0 {
			n := 1 + r.IntN(10)
			ip.Options = []layers.IPv4Option{{OptionType: 0x88, OptionLength: uint8(n*4 - 1 + 1), OptionData: make([]byte, n*4-2)}}
		}
		ls = append(ls, ip)
	}
	switch proto {
	case layers.IPProtocolTCP:
		t := &layers.TCP{SrcPort: layers.TCPPort(r.Uint32()), DstPort: layers.TCPPort(r.Uint32()), Seq: r.Uint32(), Ack: r.Uint32(), Window: uint16(r.Uint32()),
			SYN: r.IntN(2) == 0, ACK: r.IntN(2) == 0, FIN: r.IntN(5) == 0, RST: r.IntN(5) == 0, PSH: r.IntN(2) == 0, URG: r.IntN(9) == 0, ECE: r.IntN(9) == 0, CWR: r.IntN(9) == 0}
		if r.IntN(2) == 0 {
			t.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)}}
		}
		ls = append(ls, t)
	case layers.IPProtocolUDP:
		ls = append(ls, &layers.UDP{SrcPort: layers.UDPPort(r.Uint32()), DstPort: layers.UDPPort(r.Uint32())})
	case layers.IPProtocolICMPv4:
		ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(uint8(r.IntN(256)), uint8(r.IntN(256)))})
	case layers.IPProtocolICMPv6:
		ls = append(ls, &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode([]uint8{1, 2, 3, 4, 128, 129}[r.IntN(6)], uint8(r.IntN(256)))}) // not NDP: gopacket parses its options
	}
	pl := make([]byte, r.IntN(1400))
	fillRand(r, pl)
	ls = append(ls, gopacket.Payload(pl))
	return serialize(tb, ls...)
}

func fillRand(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// TestDecodeCrossCheckGopacket decodes random valid frames with both Decode
// and gopacket's layers and demands they agree on every field canopy uses.
func TestDecodeCrossCheckGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		frame := randomFrame(t, r)
		var p Packet
		if reason := Decode(frame, &Meta{}, &p); reason != OK {
			t.Fatalf("frame %d: Decode = %v on a valid frame %x", i, reason, frame)
		}
		g := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		if el := g.ErrorLayer(); el != nil && g.TransportLayer() == nil && g.Layer(layers.LayerTypeICMPv4) == nil && g.Layer(layers.LayerTypeICMPv6) == nil {
			// Errors above the transport layer are gopacket guessing an
			// application protocol from a random port; they do not matter.
			t.Fatalf("frame %d: gopacket cannot decode its own frame: %v", i, el.Error())
		}
		e := g.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		if p.SrcMAC != [6]byte(e.SrcMAC) || p.DstMAC != [6]byte(e.DstMAC) {
			t.Fatalf("frame %d: MACs differ", i)
		}
		var tags []VLAN
		for _, l := range g.Layers() {
			if d, ok := l.(*layers.Dot1Q); ok {
				tags = append(tags, VLAN{TCI: uint16(d.Priority)<<13 | d.VLANIdentifier})
			}
		}
		if int(p.NumVLANs) != len(tags) {
			t.Fatalf("frame %d: %d tags, gopacket %d", i, p.NumVLANs, len(tags))
		}
		for j := range tags {
			if p.VLANs[j].TCI != tags[j].TCI {
				t.Fatalf("frame %d: tag %d TCI %#x, gopacket %#x", i, j, p.VLANs[j].TCI, tags[j].TCI)
			}
		}
		var src, dst net.IP
		var l4payload int
		if ip, ok := g.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
			src, dst = ip.SrcIP, ip.DstIP
			if p.IPVersion != 4 || p.TTL != ip.TTL || p.Proto != uint8(ip.Protocol) || p.IPLen != ip.Length {
				t.Fatalf("frame %d: ipv4 header differs: %+v vs %+v", i, p, ip)
			}
		} else {
			ip := g.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			src, dst = ip.SrcIP, ip.DstIP
			if p.IPVersion != 6 || p.TTL != ip.HopLimit || p.IPLen != 40+ip.Length {
				t.Fatalf("frame %d: ipv6 header differs: %+v vs %+v", i, p, ip)
			}
		}
		if p.Src != netip.AddrFrom16([16]byte(src.To16())).Unmap() || p.Dst != netip.AddrFrom16([16]byte(dst.To16())).Unmap() {
			t.Fatalf("frame %d: addresses %v→%v, gopacket %v→%v", i, p.Src, p.Dst, src, dst)
		}
		switch l := g.TransportLayer().(type) {
		case *layers.TCP:
			l4payload = len(l.Payload)
			flags := boolBit(l.FIN, FlagFIN) | boolBit(l.SYN, FlagSYN) | boolBit(l.RST, FlagRST) | boolBit(l.PSH, FlagPSH) |
				boolBit(l.ACK, FlagACK) | boolBit(l.URG, FlagURG) | boolBit(l.ECE, FlagECE) | boolBit(l.CWR, FlagCWR)
			if p.Proto != ProtoTCP || p.SrcPort != uint16(l.SrcPort) || p.DstPort != uint16(l.DstPort) || p.Seq != l.Seq || p.Ack != l.Ack ||
				p.Window != l.Window || p.Flags != flags {
				t.Fatalf("frame %d: tcp differs: %+v vs %+v", i, p, l)
			}
		case *layers.UDP:
			l4payload = len(l.Payload)
			if p.Proto != ProtoUDP || p.SrcPort != uint16(l.SrcPort) || p.DstPort != uint16(l.DstPort) {
				t.Fatalf("frame %d: udp differs", i)
			}
		default:
			if ic, ok := g.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
				l4payload = len(ic.Payload) + 4 // gopacket counts id/seq as header
				if p.ICMPType != ic.TypeCode.Type() || p.ICMPCode != ic.TypeCode.Code() {
					t.Fatalf("frame %d: icmp differs", i)
				}
			} else if ic, ok := g.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
				l4payload = len(ic.Payload)
				if p.ICMPType != ic.TypeCode.Type() || p.ICMPCode != ic.TypeCode.Code() {
					t.Fatalf("frame %d: icmpv6 differs", i)
				}
			} else {
				t.Fatalf("frame %d: gopacket found no transport layer", i)
			}
		}
		if int(p.PayloadLen) != l4payload {
			t.Fatalf("frame %d: PayloadLen %d, gopacket %d (proto %d)", i, p.PayloadLen, l4payload, p.Proto)
		}
	}
}

func boolBit(b bool, f uint8) uint8 {
	if b {
		return f
	}
	return 0
}
