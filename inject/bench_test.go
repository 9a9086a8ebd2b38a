package inject

import (
	"net/netip"
	"testing"

	"canopy/capture"
)

// Speed targets (not asserted; read the figures): BuildReset well under
// 100 ns and 0 allocs/op, so crafting never shows next to the send syscall
// (several µs); BuildUnreachable with a 1232-byte quote under 1 µs.

func benchReset(b *testing.B, r Reset) {
	buf := make([]byte, MaxFrameLen)
	b.ReportAllocs()
	b.SetBytes(int64(EthernetLen + int(r.NumVLANs)*VLANTagLen + TCPMinLen + map[bool]int{true: IPv4MinLen, false: IPv6Len}[r.Src.Is4()]))
	for b.Loop() {
		r.Seq++
		if _, err := BuildReset(buf, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildResetV4(b *testing.B) {
	benchReset(b, Reset{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
		SrcPort: 80, DstPort: 5555, Ack: 7, Flags: capture.FlagRST | capture.FlagACK, TTL: 64})
}

func BenchmarkBuildResetV6(b *testing.B) {
	benchReset(b, Reset{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
		SrcPort: 80, DstPort: 5555, Flags: capture.FlagRST, TTL: 64})
}

func BenchmarkBuildResetQinQV4(b *testing.B) {
	benchReset(b, Reset{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
		VLANs: [2]capture.VLAN{{TPID: 0x88a8, TCI: 10}, {TPID: 0x8100, TCI: 20}}, NumVLANs: 2,
		SrcPort: 80, DstPort: 5555, Flags: capture.FlagRST, TTL: 64})
}

func benchUnreach(b *testing.B, u Unreachable, q []byte) {
	buf := make([]byte, MaxFrameLen)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildUnreachable(buf, &u, q); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildUnreachableV4(b *testing.B) {
	benchUnreach(b, Unreachable{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2")}, unhex(b, quotedUDP4))
}

func BenchmarkBuildUnreachableV6Max(b *testing.B) {
	benchUnreach(b, Unreachable{Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2")}, bigUDP6(b, 1400))
}
