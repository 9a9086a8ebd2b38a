package inject

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"canopy/capture"
)

// Describe renders a frame built by this package as one line for logs,
// observe mode and tests, e.g.
//
//	RST|ACK 10.0.0.1:80 > 10.0.0.2:5555 seq=1 ack=2 ttl=64 vlan=[100]
//	ICMP unreach/port 10.0.0.1 > 10.0.0.2 ttl=64 quoting udp 10.0.0.2:5353 > 10.0.0.1:53
//
// It reads any Ethernet frame defensively and says what it could not
// parse; it allocates and is not meant for the hot path.
func Describe(frame []byte) string {
	var sb strings.Builder
	d := describer{b: &sb}
	d.frame(frame)
	return sb.String()
}

type describer struct{ b *strings.Builder }

func (d describer) printf(format string, a ...any) { fmt.Fprintf(d.b, format, a...) }

func (d describer) frame(f []byte) {
	if len(f) < EthernetLen {
		d.printf("truncated frame (%d bytes)", len(f))
		return
	}
	typ := Ethernet(f).Type()
	off := EthernetLen
	var vlans []uint16
	for isVLANTPID(typ) {
		if len(f) < off+VLANTagLen {
			d.printf("truncated VLAN tag (%d bytes)", len(f))
			return
		}
		tag := VLANTag(f[off:])
		vlans = append(vlans, tag.TCI()&0x0fff)
		typ = tag.Type()
		off += VLANTagLen
	}
	d.ip(f[off:], typ)
	if len(vlans) > 0 {
		d.b.WriteString(" vlan=[")
		for i, v := range vlans {
			if i > 0 {
				d.b.WriteByte(',')
			}
			d.b.WriteString(strconv.Itoa(int(v)))
		}
		d.b.WriteByte(']')
	}
}

// ipHeader parses an IPv4 or IPv6 header and returns its fields; payload is
// cut to the IP length.
func ipHeader(p []byte, etherType uint16) (src, dst netip.Addr, proto, ttl uint8, payload []byte, err error) {
	switch etherType {
	case EtherTypeIPv4:
		if len(p) < IPv4MinLen || IPv4(p).Version() != 4 || IPv4(p).HeaderLen() < IPv4MinLen || len(p) < IPv4(p).HeaderLen() {
			return src, dst, 0, 0, nil, fmt.Errorf("bad IPv4 header (%d bytes)", len(p))
		}
		ip := IPv4(p)
		end := min(int(ip.TotalLen()), len(p))
		if end < ip.HeaderLen() {
			end = ip.HeaderLen()
		}
		return ip.Src(), ip.Dst(), ip.Protocol(), ip.TTL(), p[ip.HeaderLen():end], nil
	case EtherTypeIPv6:
		if len(p) < IPv6Len || IPv6(p).Version() != 6 {
			return src, dst, 0, 0, nil, fmt.Errorf("bad IPv6 header (%d bytes)", len(p))
		}
		ip := IPv6(p)
		end := min(IPv6Len+int(ip.PayloadLen()), len(p))
		return ip.Src(), ip.Dst(), ip.NextHeader(), ip.HopLimit(), p[IPv6Len:end], nil
	}
	return src, dst, 0, 0, nil, fmt.Errorf("ethertype %#04x", etherType)
}

func (d describer) ip(p []byte, etherType uint16) {
	src, dst, proto, ttl, payload, err := ipHeader(p, etherType)
	if err != nil {
		d.printf("not IP: %v", err)
		return
	}
	switch {
	case proto == capture.ProtoTCP && len(payload) >= TCPMinLen:
		t := TCP(payload)
		d.printf("%s %s > %s seq=%d", flagString(t.Flags()), hostPort(src, t.SrcPort()), hostPort(dst, t.DstPort()), t.Seq())
		if t.Flags()&capture.FlagACK != 0 {
			d.printf(" ack=%d", t.Ack())
		}
		if t.Window() != 0 {
			d.printf(" win=%d", t.Window())
		}
		d.printf(" ttl=%d", ttl)
	case proto == capture.ProtoICMP && len(payload) >= ICMPv4MinLen:
		d.icmp("ICMP", ICMP(payload), src, dst, ttl, EtherTypeIPv4, ICMPv4TypeUnreachable, icmp4Codes)
	case proto == capture.ProtoICMPv6 && len(payload) >= ICMPv6MinLen:
		d.icmp("ICMPv6", ICMP(payload), src, dst, ttl, EtherTypeIPv6, ICMPv6TypeUnreachable, icmp6Codes)
	default:
		d.printf("%s > %s proto=%d len=%d ttl=%d", src, dst, proto, len(payload), ttl)
	}
}

var icmp4Codes = map[uint8]string{0: "net", 1: "host", 2: "proto", 3: "port", 4: "frag-needed", 9: "net-admin", 10: "host-admin", 13: "admin"}
var icmp6Codes = map[uint8]string{0: "no-route", 1: "admin", 2: "beyond-scope", 3: "addr", 4: "port", 5: "policy", 6: "reject-route"}

func (d describer) icmp(name string, m ICMP, src, dst netip.Addr, ttl uint8, quotedType uint16, unreach uint8, codes map[uint8]string) {
	if m.Type() != unreach {
		d.printf("%s type=%d code=%d %s > %s ttl=%d", name, m.Type(), m.Code(), src, dst, ttl)
		return
	}
	code, ok := codes[m.Code()]
	if !ok {
		code = strconv.Itoa(int(m.Code()))
	}
	d.printf("%s unreach/%s %s > %s ttl=%d quoting ", name, code, src, dst, ttl)
	qsrc, qdst, qproto, _, qp, err := ipHeader(m.Payload(), quotedType)
	if err != nil {
		d.printf("garbage (%v)", err)
		return
	}
	switch {
	case qproto == capture.ProtoUDP && len(qp) >= 4:
		d.printf("udp %s > %s", hostPort(qsrc, UDP(qp).SrcPort()), hostPort(qdst, UDP(qp).DstPort()))
	case qproto == capture.ProtoTCP && len(qp) >= 4:
		d.printf("tcp %s > %s", hostPort(qsrc, TCP(qp).SrcPort()), hostPort(qdst, TCP(qp).DstPort()))
	default:
		d.printf("proto=%d %s > %s", qproto, qsrc, qdst)
	}
}

func hostPort(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

// flagString renders TCP flags the way Describe prints them: "RST|ACK".
func flagString(f uint8) string {
	names := [...]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}
	// RST first, it is what matters here; then the rest in bit order.
	order := [...]int{2, 1, 0, 3, 4, 5, 6, 7}
	var parts []string
	for _, i := range order {
		if f&(1<<i) != 0 {
			parts = append(parts, names[i])
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}
