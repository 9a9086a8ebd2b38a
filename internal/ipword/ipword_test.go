package ipword

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// The fast path is in use on this Go; if netip's layout ever changes this
// fails, so the fallback (and its cost) does not go unnoticed.
func TestDirect(t *testing.T) {
	if !Direct() {
		t.Fatal("netip.Addr's layout is not (hi, lo, zone): Of falls back to As16; update ipword")
	}
}

func TestOfMatchesAs16(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(a netip.Addr) {
		t.Helper()
		b := a.As16()
		wh, wl := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
		if h, l := Of(a); h != wh || l != wl {
			t.Fatalf("Of(%v) = %x %x, As16 gives %x %x", a, h, l, wh, wl)
		}
	}
	check(netip.Addr{})
	for range 10000 {
		var b16 [16]byte
		binary.BigEndian.PutUint64(b16[:8], rng.Uint64())
		binary.BigEndian.PutUint64(b16[8:], rng.Uint64())
		a6 := netip.AddrFrom16(b16)
		check(a6)
		check(a6.WithZone("eth0"))
		check(a6.Unmap())
		var b4 [4]byte
		binary.BigEndian.PutUint32(b4[:], rng.Uint32())
		a4 := netip.AddrFrom4(b4)
		check(a4)
		check(netip.AddrFrom16(a4.As16())) // IPv4-mapped IPv6
	}
}

func TestFromRoundTrips(t *testing.T) {
	for _, s := range []string{"1.2.3.4", "0.0.0.0", "255.255.255.255"} {
		a := netip.MustParseAddr(s)
		if _, lo := Of(a); From4(lo) != a {
			t.Errorf("From4(Of(%v)) = %v", a, From4(lo))
		}
	}
	for _, s := range []string{"::", "2001:db8::1", "::ffff:1.2.3.4", "ffff::ffff"} {
		a := netip.MustParseAddr(s)
		if got := From16(Of(a)); got != a {
			t.Errorf("From16(Of(%v)) = %v", a, got)
		}
	}
}

// BenchmarkOf compares Of with As16 on a stream of addresses.
func BenchmarkOf(b *testing.B) {
	addrs := make([]netip.Addr, 1024)
	for i := range addrs {
		var b16 [16]byte
		binary.BigEndian.PutUint64(b16[8:], uint64(i)*0x9e3779b97f4a7c15)
		addrs[i] = netip.AddrFrom16(b16)
	}
	var sink uint64
	b.Run("Of", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			h, l := Of(addrs[i&1023])
			sink += h ^ l
		}
	})
	b.Run("As16", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			h, l := slow(addrs[i&1023])
			sink += h ^ l
		}
	})
	_ = sink
}
