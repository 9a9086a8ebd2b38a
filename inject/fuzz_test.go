package inject

import (
	"errors"
	"net/netip"
	"testing"

	"canopy/capture"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func addrFrom(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b) // 4 or 16 bytes give an address, anything else the zero Addr
	return a
}

// FuzzBuildReset: any spec either fails with ErrInvalidSpec and leaves the
// buffer alone, or yields a frame that gopacket and capture.Decode both read
// back as exactly that spec, checksums valid.
func FuzzBuildReset(f *testing.F) {
	f.Add([]byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, uint16(80), uint16(5555), uint32(1), uint32(2), uint8(0x14), uint8(64), uint16(0), uint8(0), uint16(0x8100), uint16(100), uint16(0x88a8), uint16(200), MaxFrameLen)
	f.Add(netip.MustParseAddr("2001:db8::1").AsSlice(), netip.MustParseAddr("2001:db8::2").AsSlice(), uint16(1), uint16(2), uint32(0xffffffff), uint32(0), uint8(0x04), uint8(0), uint16(65535), uint8(2), uint16(0x88a8), uint16(0xffff), uint16(0), uint16(1), ResetFrameLen)
	f.Add([]byte{1, 2, 3, 4}, netip.MustParseAddr("::1").AsSlice(), uint16(0), uint16(0), uint32(0), uint32(0), uint8(0x02), uint8(1), uint16(0), uint8(3), uint16(0), uint16(0), uint16(0), uint16(0), 10)
	f.Fuzz(func(t *testing.T, src, dst []byte, sport, dport uint16, seq, ack uint32, flags, ttl uint8, win uint16,
		nvlan uint8, tp0, tci0, tp1, tci1 uint16, bufLen int) {
		r := Reset{
			DstMAC: mac6(macA), SrcMAC: mac6(macB),
			VLANs:    [capture.MaxVLANs]capture.VLAN{{TPID: tp0, TCI: tci0}, {TPID: tp1, TCI: tci1}},
			NumVLANs: nvlan,
			Src:      addrFrom(src), Dst: addrFrom(dst), SrcPort: sport, DstPort: dport,
			Seq: seq, Ack: ack, Flags: flags, TTL: ttl, Window: win,
		}
		bufLen = max(0, min(bufLen, 2*MaxFrameLen))
		buf := make([]byte, bufLen)
		n, err := BuildReset(buf, &r)
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) || n != 0 {
				t.Fatalf("BuildReset = %d, %v", n, err)
			}
			for _, b := range buf {
				if b != 0 {
					t.Fatal("buffer written despite the error")
				}
			}
			return
		}
		frame := buf[:n]
		// Tags with TPIDs the decoders do not know as VLAN (the caller passed
		// garbage TPIDs) are not readable back; everything else must be.
		for i := range int(r.NumVLANs) {
			if t := tpid(r.VLANs[i]); !isVLANTPID(t) {
				return
			}
		}
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			t.Fatalf("gopacket: %v", el.Error())
		}
		var d capture.Packet
		if reason := capture.Decode(frame, &capture.Meta{WireLen: uint32(n)}, &d); reason != capture.OK {
			t.Fatalf("capture.Decode: %v for %s", reason, Describe(frame))
		}
		wantTTL := ttlOrDefault(r.TTL)
		if d.Src != r.Src || d.Dst != r.Dst || d.SrcPort != sport || d.DstPort != dport || d.Seq != seq ||
			d.Flags != flags || d.TTL != wantTTL || d.Window != win || d.NumVLANs != nvlan || d.PayloadLen != 0 {
			t.Fatalf("decoded %+v from spec %+v", d, r)
		}
		if flags&capture.FlagACK != 0 && d.Ack != ack || flags&capture.FlagACK == 0 && d.Ack != 0 {
			t.Fatalf("ack %d, spec %d flags %#x", d.Ack, ack, flags)
		}
		off, _ := l3Offset(frame)
		verifyL4Checksum(t, frame[off:])
	})
}

// verifyL4Checksum checks the IPv4 header and the TCP/ICMP/ICMPv6 checksum
// of the IP packet ip with the test's own slow sum.
func verifyL4Checksum(t *testing.T, ip []byte) {
	t.Helper()
	switch ip[0] >> 4 {
	case 4:
		h := IPv4(ip)
		if sum16(ip[:h.HeaderLen()]) != 0 {
			t.Fatal("IPv4 header checksum wrong")
		}
		l4 := ip[h.HeaderLen():h.TotalLen()]
		var res uint16
		if h.Protocol() == capture.ProtoICMP {
			res = sum16(l4)
		} else {
			res = sum16(ip[12:20], []byte{0, h.Protocol(), byte(len(l4) >> 8), byte(len(l4))}, l4)
		}
		if res != 0 {
			t.Fatalf("proto %d checksum wrong", h.Protocol())
		}
	case 6:
		h := IPv6(ip)
		l4 := ip[IPv6Len : IPv6Len+int(h.PayloadLen())]
		n := len(l4)
		if sum16(ip[8:40], []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), 0, 0, 0, h.NextHeader()}, l4) != 0 {
			t.Fatalf("proto %d checksum wrong", h.NextHeader())
		}
	default:
		t.Fatalf("IP version %d", ip[0]>>4)
	}
}

// FuzzBuildUnreachable: any quote either fails with ErrInvalidSpec or
// yields a well-formed error within the size cap whose quote is a prefix of
// the input.
func FuzzBuildUnreachable(f *testing.F) {
	f.Add(false, uint8(0), uint8(0), unhex(f, quotedUDP4))
	f.Add(true, uint8(1), uint8(2), unhex(f, quotedUDP6))
	f.Add(false, uint8(1), uint8(1), bigUDP4(f, 1400))
	f.Add(true, uint8(0), uint8(0), bigUDP6(f, 1500))
	f.Add(false, uint8(3), uint8(0), []byte{0x4f})
	f.Fuzz(func(t *testing.T, v6 bool, code, nvlan uint8, quoted []byte) {
		u := Unreachable{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Code: UnreachCode(code),
			NumVLANs: nvlan, VLANs: [2]capture.VLAN{{TCI: 1}, {TPID: 0x88a8, TCI: 2}}}
		if v6 {
			u.Src, u.Dst = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
		}
		// Make the quote's source match often enough to get past validation.
		if !v6 && len(quoted) >= IPv4MinLen {
			copy(quoted[12:16], u.Dst.AsSlice())
		} else if v6 && len(quoted) >= IPv6Len {
			copy(quoted[8:24], u.Dst.AsSlice())
		}
		buf := make([]byte, MaxFrameLen)
		n, err := BuildUnreachable(buf, &u, quoted)
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) || n != 0 {
				t.Fatalf("BuildUnreachable = %d, %v", n, err)
			}
			return
		}
		off, _ := l3Offset(buf[:n])
		ip := buf[off:n]
		limit, hdr := MaxICMPv4Len, IPv4MinLen
		if v6 {
			limit, hdr = MaxICMPv6Len, IPv6Len
		}
		if len(ip) > limit {
			t.Fatalf("IP packet %d bytes over the %d cap", len(ip), limit)
		}
		q := ip[hdr+ICMPv4MinLen:]
		if len(q) > len(quoted) || string(q) != string(quoted[:len(q)]) {
			t.Fatal("quote is not a prefix of the input")
		}
		verifyL4Checksum(t, ip)
		var d capture.Packet
		if reason := capture.Decode(buf[:n], &capture.Meta{WireLen: uint32(n)}, &d); reason != capture.OK {
			t.Fatalf("capture.Decode: %v", reason)
		}
		_ = Describe(buf[:n])
	})
}

// FuzzDescribe: no frame, however broken, makes Describe panic.
func FuzzDescribe(f *testing.F) {
	for _, s := range []string{wantV4RST, wantV6VLAN, wantV4QinQ, wantICMP4, wantICMP6QQ} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if Describe(frame) == "" {
			t.Fatal("empty description")
		}
	})
}
