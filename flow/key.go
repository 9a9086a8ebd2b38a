package flow

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// key identifies a flow independent of direction: the (address, port)
// endpoint that sorts lower is always lo. It is a comparable value of fixed
// size, so lookups compare it with == and never allocate.
type key struct {
	lo, hi         [16]byte // addresses; IPv4 in the last 4 bytes
	loPort, hiPort uint16
	proto          uint8
	v6             uint8 // 1 for IPv6, 0 for IPv4: keeps ::ffff:a.b.c.d apart from a.b.c.d
}

// makeKey builds the normalised key of p and reports whether p's source is
// the lo endpoint.
func makeKey(p *addrPorts) (k key, srcIsLo bool) {
	s, d := p.src, p.dst
	srcIsLo = cmp16(&s, &d) < 0 || (s == d && p.sport <= p.dport)
	if srcIsLo {
		k.lo, k.hi, k.loPort, k.hiPort = s, d, p.sport, p.dport
	} else {
		k.lo, k.hi, k.loPort, k.hiPort = d, s, p.dport, p.sport
	}
	k.proto = p.proto
	k.v6 = p.v6
	return k, srcIsLo
}

// addrPorts is the part of a packet a key is made of, with the addresses
// already in their 16-byte form.
type addrPorts struct {
	src, dst     [16]byte
	sport, dport uint16
	proto        uint8
	v6           uint8
}

// cmp16 orders two addresses as big-endian 128-bit numbers.
func cmp16(a, b *[16]byte) int {
	ah, bh := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])
	if ah != bh {
		if ah < bh {
			return -1
		}
		return 1
	}
	al, bl := binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:])
	switch {
	case al < bl:
		return -1
	case al > bl:
		return 1
	}
	return 0
}

// addrOf turns a stored address back into a netip.Addr without allocating.
func addrOf(b *[16]byte, v6 uint8) netip.Addr {
	if v6 == 0 {
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	return netip.AddrFrom16(*b)
}

// bytesOf is the stored form of a: IPv4 in the last four bytes (as As16 gives it).
func bytesOf(a netip.Addr) (b [16]byte, v6 uint8) {
	if a.Is4() {
		return a.As16(), 0
	}
	return a.As16(), 1
}

// Hashing: a wyhash-style multiply-fold with a per-table random seed, so an
// attacker who picks addresses and ports cannot aim for one hash chain
// without knowing the seed.
const (
	hk1 = 0xa0761d6478bd642f
	hk2 = 0xe7037ed1a0b428db
	hk3 = 0x8ebc6af09c88c6e3
	hk4 = 0x589965cc75374cc3
)

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hash16 hashes one address.
func hash16(seed uint64, a *[16]byte, v6 uint8) uint64 {
	x := binary.LittleEndian.Uint64(a[:8])
	y := binary.LittleEndian.Uint64(a[8:])
	h := mix(x^hk1^seed, y^hk2^uint64(v6))
	return mix(h^hk3, seed^hk4)
}

// hash hashes a whole key.
func (k *key) hash(seed uint64) uint64 {
	h := mix(binary.LittleEndian.Uint64(k.lo[:8])^hk1^seed, binary.LittleEndian.Uint64(k.lo[8:])^hk2)
	h2 := mix(binary.LittleEndian.Uint64(k.hi[:8])^hk3^seed, binary.LittleEndian.Uint64(k.hi[8:])^hk4)
	x := uint64(k.loPort) | uint64(k.hiPort)<<16 | uint64(k.proto)<<32 | uint64(k.v6)<<40
	return mix(h^h2^hk2, x^hk1^seed)
}

// eq compares two keys field by field: inlined, unlike the runtime's
// memequal call that == on the 38-byte struct compiles to.
func (k *key) eq(o *key) bool {
	return binary.LittleEndian.Uint64(k.lo[:8]) == binary.LittleEndian.Uint64(o.lo[:8]) &&
		binary.LittleEndian.Uint64(k.lo[8:]) == binary.LittleEndian.Uint64(o.lo[8:]) &&
		binary.LittleEndian.Uint64(k.hi[:8]) == binary.LittleEndian.Uint64(o.hi[:8]) &&
		binary.LittleEndian.Uint64(k.hi[8:]) == binary.LittleEndian.Uint64(o.hi[8:]) &&
		k.loPort == o.loPort && k.hiPort == o.hiPort && k.proto == o.proto && k.v6 == o.v6
}
