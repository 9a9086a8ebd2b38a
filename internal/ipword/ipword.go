// Package ipword reads a netip.Addr as two 64-bit words.
//
// The obvious way, As16 and two big-endian loads, is slow where it
// matters most. The compiler keeps the [16]byte result on the stack: As16
// writes it as two 8-byte stores and the caller reads it back as one
// 16-byte load, which the CPU cannot forward from two stores. The load
// then waits until both stores retire, which is after every older
// instruction, including the previous lookup's cache miss. Lookups in
// tables far bigger than the caches then stop overlapping one another.
// Measured on the rules benchmark: 1M-ban Match 165 ns before, 85 ns after.
//
// netip.Addr keeps the address as two host-order words ahead of its zone
// handle; Of reads them directly. The layout is checked once at start-up
// against As16, and if a future Go changes it, Of falls back to As16.
package ipword

import (
	"encoding/binary"
	"net/netip"
	"unsafe"
)

// direct is true when netip.Addr starts with the (hi, lo) words this
// package expects.
var direct = layoutMatches()

// Of returns a's 128 bits as big-endian words: a's first 8 bytes in hi.
// IPv4 addresses come back in IPv4-mapped form (::ffff:a.b.c.d), as As16
// gives them; the zero Addr gives (0, 0).
func Of(a netip.Addr) (hi, lo uint64) {
	if direct {
		w := (*[2]uint64)(unsafe.Pointer(&a))
		return w[0], w[1]
	}
	return slow(a)
}

func slow(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

// From16 is the IPv6 address with words hi, lo (for IPv4, use From4).
func From16(hi, lo uint64) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// From4 is the IPv4 address in lo's low 32 bits.
func From4(lo uint64) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(lo))
	return netip.AddrFrom4(b)
}

// Direct reports whether Of reads netip.Addr's words directly (false: it
// fell back to As16 because the layout was not the expected one).
func Direct() bool { return direct }

func layoutMatches() bool {
	if unsafe.Sizeof(netip.Addr{}) < 16 {
		return false
	}
	for _, s := range []string{"0.0.0.0", "1.2.3.4", "255.254.253.252", "::", "::1", "::ffff:10.1.2.3",
		"2001:db8:1:2:3:4:5:6", "fe80::1%eth0", "ffff:eeee:dddd:cccc:bbbb:aaaa:9999:8888"} {
		a := netip.MustParseAddr(s)
		w := (*[2]uint64)(unsafe.Pointer(&a))
		if h, l := slow(a); w[0] != h || w[1] != l {
			return false
		}
	}
	return true
}
