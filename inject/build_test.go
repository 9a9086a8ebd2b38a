package inject

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"canopy/capture"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Expected frames were built independently (a Python script with its own
// RFC 1071 checksum, written from the RFCs, not from this package) and then
// checked field by field against the RFC layouts. Their IPv4 ID is 0x1234;
// the builders draw a fresh ID per frame, so comparisons mask the ID and the
// IPv4 header checksum, and the checksum is verified separately.
const (
	wantV4RST    = "020000000002020000000001080045000028123440004006149a0a0000010a000002005015b3000003e8000007d0501400007a130000"
	wantV6VLAN   = "0200000000020200000000018100606486dd600000000014063920010db800000000000000000000000120010db800000000000000000000000201bb9c40deadbeef000000005004000018d30000"
	wantV4QinQ   = "aabbccddeeff11223344556688a800c881000064080045000028123440008006fc56c000020ac63364070016ee487fffffffffffffff50140200532d0000"
	quotedUDP4   = "45000021424240004011e4870a0000020a00000114e90035000d000068656c6c6f"
	wantICMP4    = "02000000000202000000000181000064080045c0003d12340000400153ca0a0000010a0000020303a3ff0000000045000021424240004011e4870a0000020a00000114e90035000d000068656c6c6f"
	quotedUDP6   = "60000000000a114020010db800000000000000000000000220010db800000000000000000000000114e90035000a00006869"
	wantICMP6QQ  = "02000000000202000000000188a8012c8100006486dd60000000003a3a3f20010db800000000000000000000000120010db8000000000000000000000002010158c40000000060000000000a114020010db800000000000000000000000220010db800000000000000000000000114e90035000a00006869"
	macA         = "\x02\x00\x00\x00\x00\x02"
	macB         = "\x02\x00\x00\x00\x00\x01"
	testIPv4ID   = 0x1234
	ipv4IDOffset = 4
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mac6(s string) (m [6]byte) { copy(m[:], s); return m }

// sum16 is the RFC 1071 checksum computed the slow, obvious way, 16 bits at
// a time, independent of checksumAdd.
func sum16(b ...[]byte) uint16 {
	var all []byte
	for _, x := range b {
		all = append(all, x...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		s += uint32(all[i])<<8 | uint32(all[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// l3Offset walks the VLAN stack of a frame built here.
func l3Offset(f []byte) (int, uint16) {
	off, typ := EthernetLen, Ethernet(f).Type()
	for isVLANTPID(typ) {
		typ = VLANTag(f[off:]).Type()
		off += VLANTagLen
	}
	return off, typ
}

// compareMasked compares got with want, ignoring an IPv4 header's ID and
// checksum, after checking that got's IPv4 header checksum is right.
func compareMasked(t *testing.T, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("frame is %d bytes, want %d\n got %x\nwant %x", len(got), len(want), got, want)
	}
	off, typ := l3Offset(got)
	g := bytes.Clone(got)
	if typ == EtherTypeIPv4 {
		ip := g[off : off+IPv4MinLen]
		if c := sum16(ip); c != 0 {
			t.Errorf("IPv4 header checksum does not verify (residue %#04x)", c)
		}
		binary.BigEndian.PutUint16(ip[ipv4IDOffset:], testIPv4ID)
		binary.BigEndian.PutUint16(ip[10:], 0)
		binary.BigEndian.PutUint16(ip[10:], sum16(ip))
	}
	if !bytes.Equal(g, want) {
		t.Errorf("frame differs\n got %x\nwant %x", g, want)
	}
}

// checkGopacket decodes frame with gopacket, fails on any decode error or
// checksum gopacket finds wrong, and returns the packet.
func checkGopacket(t *testing.T, frame []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode: %v\n%s", el.Error(), p.Dump())
	}
	if nl := p.NetworkLayer(); nl != nil {
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
				t.Fatal(err)
			}
		}
		if ic, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
			if err := ic.SetNetworkLayerForChecksum(nl); err != nil {
				t.Fatal(err)
			}
		}
	}
	err, mism := p.VerifyChecksums()
	if err != nil {
		t.Fatalf("gopacket checksum verification: %v", err)
	}
	if len(mism) > 0 {
		t.Fatalf("gopacket finds bad checksums: %+v", mism)
	}
	return p
}

// checkDecode feeds frame to canopy's own decoder: what we build must be what
// the sensor reads.
func checkDecode(t *testing.T, frame []byte) capture.Packet {
	t.Helper()
	var p capture.Packet
	m := capture.Meta{WireLen: uint32(len(frame))}
	if r := capture.Decode(frame, &m, &p); r != capture.OK {
		t.Fatalf("capture.Decode: %v", r)
	}
	return p
}

func TestBuildResetHandChecked(t *testing.T) {
	tests := []struct {
		name string
		r    Reset
		want string
	}{
		{
			name: "ipv4 RST|ACK untagged",
			r: Reset{
				DstMAC: mac6(macA), SrcMAC: mac6(macB),
				Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
				SrcPort: 80, DstPort: 5555, Seq: 1000, Ack: 2000,
				Flags: capture.FlagRST | capture.FlagACK, TTL: 64,
			},
			want: wantV4RST,
		},
		{
			name: "ipv6 RST one 802.1Q tag",
			r: Reset{
				DstMAC: mac6(macA), SrcMAC: mac6(macB),
				VLANs:    [capture.MaxVLANs]capture.VLAN{{TPID: 0x8100, TCI: 0x6064}},
				NumVLANs: 1,
				Src:      netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
				SrcPort: 443, DstPort: 40000, Seq: 0xdeadbeef, Ack: 77, // Ack dropped: no ACK flag
				Flags: capture.FlagRST, TTL: 57,
			},
			want: wantV6VLAN,
		},
		{
			name: "ipv4 RST|ACK QinQ 0x88a8 outer",
			r: Reset{
				DstMAC: mac6("\xaa\xbb\xcc\xdd\xee\xff"), SrcMAC: mac6("\x11\x22\x33\x44\x55\x66"),
				VLANs:    [capture.MaxVLANs]capture.VLAN{{TPID: 0x88a8, TCI: 200}, {TPID: 0x8100, TCI: 100}},
				NumVLANs: 2,
				Src:      netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.7"),
				SrcPort: 22, DstPort: 61000, Seq: 0x7fffffff, Ack: 0xffffffff,
				Flags: capture.FlagRST | capture.FlagACK, TTL: 128, Window: 512,
			},
			want: wantV4QinQ,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, MaxFrameLen)
			n, err := BuildReset(buf, &tt.r)
			if err != nil {
				t.Fatal(err)
			}
			frame := buf[:n]
			compareMasked(t, frame, unhex(t, tt.want))

			// gopacket: decodes, checksums verify, fields are what we asked for.
			p := checkGopacket(t, frame)
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp == nil {
				t.Fatal("gopacket finds no TCP layer")
			}
			if tcp.Seq != tt.r.Seq || !tcp.RST || tcp.ACK != (tt.r.Flags&capture.FlagACK != 0) ||
				uint16(tcp.SrcPort) != tt.r.SrcPort || uint16(tcp.DstPort) != tt.r.DstPort {
				t.Errorf("gopacket reads %+v", tcp)
			}
			var tags []*layers.Dot1Q
			for _, l := range p.Layers() {
				if q, ok := l.(*layers.Dot1Q); ok {
					tags = append(tags, q)
				}
			}
			if len(tags) != int(tt.r.NumVLANs) {
				t.Fatalf("gopacket reads %d VLAN tags, want %d", len(tags), tt.r.NumVLANs)
			}
			for i, q := range tags {
				if q.VLANIdentifier != tt.r.VLANs[i].ID() {
					t.Errorf("tag %d: VLAN %d, want %d", i, q.VLANIdentifier, tt.r.VLANs[i].ID())
				}
			}

			// canopy's decoder reads back exactly the spec.
			d := checkDecode(t, frame)
			if d.Src != tt.r.Src || d.Dst != tt.r.Dst || d.SrcPort != tt.r.SrcPort || d.DstPort != tt.r.DstPort ||
				d.Seq != tt.r.Seq || d.Flags != tt.r.Flags || d.TTL != tt.r.TTL || d.Window != tt.r.Window ||
				d.NumVLANs != tt.r.NumVLANs || d.VLANs != tt.r.VLANs || d.DstMAC != tt.r.DstMAC || d.SrcMAC != tt.r.SrcMAC ||
				d.PayloadLen != 0 {
				t.Errorf("capture.Decode reads %+v\nspec %+v", d, tt.r)
			}
			if tt.r.Flags&capture.FlagACK != 0 && d.Ack != tt.r.Ack {
				t.Errorf("ack %d, want %d", d.Ack, tt.r.Ack)
			}
		})
	}
}

func TestBuildUnreachableHandChecked(t *testing.T) {
	padded := append(unhex(t, quotedUDP4), make([]byte, 13)...) // Ethernet padding after the datagram
	tests := []struct {
		name   string
		u      Unreachable
		quoted []byte
		want   string
	}{
		{
			name: "icmpv4 port unreachable, tagged, padding dropped",
			u: Unreachable{
				DstMAC: mac6(macA), SrcMAC: mac6(macB),
				VLANs:    [capture.MaxVLANs]capture.VLAN{{TCI: 100}}, // zero TPID means 0x8100
				NumVLANs: 1,
				Src:      netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
				TTL: 64,
			},
			quoted: padded,
			want:   wantICMP4,
		},
		{
			name: "icmpv6 admin prohibited, QinQ",
			u: Unreachable{
				DstMAC: mac6(macA), SrcMAC: mac6(macB),
				VLANs:    [capture.MaxVLANs]capture.VLAN{{TPID: 0x88a8, TCI: 300}, {TPID: 0x8100, TCI: 100}},
				NumVLANs: 2,
				Src:      netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
				TTL: 63, Code: UnreachAdmin,
			},
			quoted: unhex(t, quotedUDP6),
			want:   wantICMP6QQ,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, MaxFrameLen)
			n, err := BuildUnreachable(buf, &tt.u, tt.quoted)
			if err != nil {
				t.Fatal(err)
			}
			frame := buf[:n]
			compareMasked(t, frame, unhex(t, tt.want))
			p := checkGopacket(t, frame)
			if tt.u.Src.Is4() {
				ic, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
				if ic == nil || ic.TypeCode != layers.CreateICMPv4TypeCode(3, 3) {
					t.Fatalf("gopacket reads ICMPv4 %v", ic)
				}
			} else {
				ic, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
				if ic == nil || ic.TypeCode != layers.CreateICMPv6TypeCode(1, 1) {
					t.Fatalf("gopacket reads ICMPv6 %v", ic)
				}
			}
			d := checkDecode(t, frame)
			if d.Src != tt.u.Src || d.Dst != tt.u.Dst || d.TTL != tt.u.TTL || d.NumVLANs != tt.u.NumVLANs {
				t.Errorf("capture.Decode reads %+v", d)
			}
		})
	}
}

func TestBuildUnreachableCodes(t *testing.T) {
	q4 := unhex(t, quotedUDP4)
	q6 := unhex(t, quotedUDP6)
	for _, tc := range []struct {
		src, dst   string
		q          []byte
		code       UnreachCode
		typ, wcode uint8
	}{
		{"10.0.0.1", "10.0.0.2", q4, UnreachPort, 3, 3},
		{"10.0.0.1", "10.0.0.2", q4, UnreachAdmin, 3, 13},
		{"2001:db8::1", "2001:db8::2", q6, UnreachPort, 1, 4},
		{"2001:db8::1", "2001:db8::2", q6, UnreachAdmin, 1, 1},
	} {
		u := Unreachable{Src: netip.MustParseAddr(tc.src), Dst: netip.MustParseAddr(tc.dst), Code: tc.code}
		buf := make([]byte, MaxFrameLen)
		n, err := BuildUnreachable(buf, &u, tc.q)
		if err != nil {
			t.Fatal(err)
		}
		icmp := ICMP(buf[n-len(tc.q)-ICMPv4MinLen : n])
		if icmp.Type() != tc.typ || icmp.Code() != tc.wcode {
			t.Errorf("%s %v: type/code %d/%d, want %d/%d", tc.src, tc.code, icmp.Type(), icmp.Code(), tc.typ, tc.wcode)
		}
		if ip := IPv4(buf[EthernetLen:]); u.Src.Is4() && ip.TTL() != DefaultTTL {
			t.Errorf("zero TTL written as %d, want DefaultTTL", ip.TTL())
		}
		checkGopacket(t, buf[:n])
	}
}

func TestBuildUnreachableCapsQuote(t *testing.T) {
	for _, tc := range []struct {
		name  string
		src   string
		dst   string
		big   []byte
		maxIP int
	}{
		{"v4", "10.0.0.1", "10.0.0.2", bigUDP4(t, 1400), MaxICMPv4Len},
		{"v6", "2001:db8::1", "2001:db8::2", bigUDP6(t, 1400), MaxICMPv6Len},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := Unreachable{Src: netip.MustParseAddr(tc.src), Dst: netip.MustParseAddr(tc.dst)}
			buf := make([]byte, MaxFrameLen)
			n, err := BuildUnreachable(buf, &u, tc.big)
			if err != nil {
				t.Fatal(err)
			}
			if n-EthernetLen != tc.maxIP {
				t.Errorf("IP packet is %d bytes, want the cap %d", n-EthernetLen, tc.maxIP)
			}
			// The quote is a prefix of the original.
			hdr := IPv4MinLen
			if u.Src.Is6() {
				hdr = IPv6Len
			}
			q := buf[EthernetLen+hdr+ICMPv4MinLen : n]
			if !bytes.Equal(q, tc.big[:len(q)]) {
				t.Error("quote is not a prefix of the offending packet")
			}
			checkGopacket(t, buf[:n])
		})
	}
}

func bigUDP4(t testing.TB, n int) []byte {
	b := make([]byte, n)
	copy(b, unhex(t, quotedUDP4)[:IPv4MinLen])
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	for i := IPv4MinLen; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

func bigUDP6(t testing.TB, n int) []byte {
	b := make([]byte, n)
	copy(b, unhex(t, quotedUDP6)[:IPv6Len])
	binary.BigEndian.PutUint16(b[4:], uint16(n-IPv6Len))
	for i := IPv6Len; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

func TestBuildInvalid(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	v6a := netip.MustParseAddr("2001:db8::1")
	good := Reset{Src: v4a, Dst: v4b, Flags: capture.FlagRST, TTL: 64}
	for _, tc := range []struct {
		name string
		mod  func(r *Reset)
		buf  int
		want string
	}{
		{"mixed families", func(r *Reset) { r.Dst = v6a }, MaxFrameLen, "must both be IPv4 or both IPv6"},
		{"no addresses", func(r *Reset) { r.Src, r.Dst = netip.Addr{}, netip.Addr{} }, MaxFrameLen, "must both be IPv4"},
		{"SYN flag", func(r *Reset) { r.Flags = capture.FlagSYN }, MaxFrameLen, "want RST or RST|ACK"},
		{"no flags", func(r *Reset) { r.Flags = 0 }, MaxFrameLen, "want RST or RST|ACK"},
		{"three tags", func(r *Reset) { r.NumVLANs = 3 }, MaxFrameLen, "at most 2"},
		{"small buffer", func(r *Reset) {}, 53, "54-byte buffer, got 53"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.mod(&r)
			buf := make([]byte, tc.buf)
			n, err := BuildReset(buf, &r)
			if err == nil || n != 0 {
				t.Fatalf("BuildReset = %d, %v; want an error", n, err)
			}
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want ErrInvalidSpec mentioning %q", err, tc.want)
			}
			if !bytes.Equal(buf, make([]byte, tc.buf)) {
				t.Error("buffer written despite the error")
			}
		})
	}
	if _, err := BuildReset(make([]byte, ResetFrameLen), &Reset{Src: v6a, Dst: v6a, Flags: capture.FlagRST,
		NumVLANs: 2}); err != nil {
		t.Errorf("ResetFrameLen is not enough for the largest reset: %v", err)
	}

	q4 := unhex(t, quotedUDP4)
	uGood := Unreachable{Src: v4a, Dst: v4b}
	for _, tc := range []struct {
		name string
		u    Unreachable
		q    []byte
		want string
	}{
		{"mixed", Unreachable{Src: v4a, Dst: v6a}, q4, "must both be IPv4"},
		{"bad code", Unreachable{Src: v4a, Dst: v4b, Code: 7}, q4, "unknown unreachable code"},
		{"empty quote", uGood, nil, "nothing to quote"},
		{"v6 quote in v4 error", uGood, unhex(t, quotedUDP6), "IPv6, the error is IPv4"},
		{"short quote", uGood, q4[:IPv4MinLen+7], "need the 20-byte IP header and 8 bytes"},
		{"quote header only", uGood, q4[:12], "truncated"},
		{"quote from someone else", Unreachable{Src: v4b, Dst: v4a}, q4, "quoted packet is from 10.0.0.2, the error goes to 10.0.0.1"},
		{"total length below header", uGood, func() []byte { b := bytes.Clone(q4); b[3] = 10; return b }(), "need the 20-byte"},
		{"bad IHL", uGood, func() []byte { b := bytes.Clone(q4); b[0] = 0x42; return b }(), "header length 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := BuildUnreachable(make([]byte, MaxFrameLen), &tc.u, tc.q)
			if err == nil || n != 0 {
				t.Fatalf("BuildUnreachable = %d, %v; want an error", n, err)
			}
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want ErrInvalidSpec mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := BuildUnreachable(make([]byte, 60), &uGood, q4); err == nil || !strings.Contains(err.Error(), "buffer") {
		t.Errorf("small buffer: %v", err)
	}
}

func TestIPv4IDVaries(t *testing.T) {
	r := Reset{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Flags: capture.FlagRST, TTL: 1}
	buf := make([]byte, MaxFrameLen)
	seen := map[uint16]bool{}
	for range 1000 {
		if _, err := BuildReset(buf, &r); err != nil {
			t.Fatal(err)
		}
		seen[IPv4(buf[EthernetLen:]).ID()] = true
	}
	// 1000 draws from 65536 values: expect ~992 distinct; a counter or a
	// constant would give 1000 or 1, a broken mixer far fewer.
	if len(seen) < 950 {
		t.Errorf("%d distinct IPv4 IDs in 1000 resets", len(seen))
	}
	if seen[0] && len(seen) == 1 {
		t.Error("IPv4 ID is constant 0")
	}
}

func TestDescribe(t *testing.T) {
	build := func(r Reset) []byte {
		buf := make([]byte, MaxFrameLen)
		n, err := BuildReset(buf, &r)
		if err != nil {
			t.Fatal(err)
		}
		return buf[:n]
	}
	v4a, v4b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	tests := []struct {
		frame []byte
		want  string
	}{
		{build(Reset{Src: v4a, Dst: v4b, SrcPort: 80, DstPort: 5555, Seq: 1, Ack: 2, Flags: capture.FlagRST | capture.FlagACK, TTL: 64,
			VLANs: [2]capture.VLAN{{TCI: 100}}, NumVLANs: 1}),
			"RST|ACK 10.0.0.1:80 > 10.0.0.2:5555 seq=1 ack=2 ttl=64 vlan=[100]"},
		{build(Reset{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), SrcPort: 443, DstPort: 1, Seq: 9,
			Flags: capture.FlagRST, TTL: 3, Window: 7, VLANs: [2]capture.VLAN{{TPID: 0x88a8, TCI: 0x2000 | 300}, {TCI: 100}}, NumVLANs: 2}),
			"RST [2001:db8::1]:443 > [2001:db8::2]:1 seq=9 win=7 ttl=3 vlan=[300,100]"},
		{unhex(t, wantICMP4), "ICMP unreach/port 10.0.0.1 > 10.0.0.2 ttl=64 quoting udp 10.0.0.2:5353 > 10.0.0.1:53 vlan=[100]"},
		{unhex(t, wantICMP6QQ), "ICMPv6 unreach/admin 2001:db8::1 > 2001:db8::2 ttl=63 quoting udp [2001:db8::2]:5353 > [2001:db8::1]:53 vlan=[300,100]"},
		{nil, "truncated frame (0 bytes)"},
		{unhex(t, "020000000002020000000001810000"), "truncated VLAN tag (15 bytes)"},
		{unhex(t, "0200000000020200000000010806"), "not IP: ethertype 0x0806"},
		{unhex(t, "020000000002020000000001080045"), "not IP: bad IPv4 header (1 bytes)"},
	}
	for _, tt := range tests {
		if got := Describe(tt.frame); got != tt.want {
			t.Errorf("Describe:\n got %q\nwant %q", got, tt.want)
		}
	}
}

func TestReflectMACs(t *testing.T) {
	p := capture.Packet{DstMAC: mac6(macA), SrcMAC: mac6(macB)}
	dst, src := ReflectMACs(&p)
	if dst != p.SrcMAC || src != p.DstMAC {
		t.Errorf("ReflectMACs = %x, %x", dst, src)
	}
}

func TestChecksumAgainstSlowSum(t *testing.T) {
	b := make([]byte, 1500)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	for n := 0; n <= len(b); n += 1 + n/7 {
		if got, want := checksumFinish(checksumAdd(0, b[:n])), sum16(b[:n]); got != want {
			t.Fatalf("len %d: checksum %#04x, want %#04x", n, got, want)
		}
	}
}
