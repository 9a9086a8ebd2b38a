package flow

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"canopy/capture"
	"canopy/internal/ipword"
)

// key identifies a flow independent of direction: the (address, port)
// endpoint that sorts lower is always lo. It is a comparable value of fixed
// size, so lookups compare it with == and never allocate.
type key struct {
	lo, hi         ip16 // addresses; IPv4 in the last 4 bytes
	loPort, hiPort uint16
	proto          uint8
	v6             uint8 // 1 for IPv6, 0 for IPv4: keeps ::ffff:a.b.c.d apart from a.b.c.d
}

// makeKey sets k to the normalised key of p and reports whether p's source
// is the lo endpoint. It writes in place, 8 bytes at a time from words:
// copying a struct or a [16]byte that was just written in pieces makes the
// CPU wait for the pieces to retire (see addrPorts).
func makeKey(p *addrPorts, k *key) (srcIsLo bool) {
	sport, dport := p.sport, p.dport
	srcIsLo = p.sh < p.dh || p.sh == p.dh && (p.sl < p.dl || p.sl == p.dl && sport <= dport)
	if srcIsLo {
		k.lo.set(p.sh, p.sl)
		k.hi.set(p.dh, p.dl)
	} else {
		k.lo.set(p.dh, p.dl)
		k.hi.set(p.sh, p.sl)
		sport, dport = dport, sport
	}
	// From registers, one at a time: a copy of both from p, in the order
	// they lie in, becomes one 4-byte load that cannot be forwarded from
	// the two 2-byte stores that wrote them (see addrPorts).
	k.loPort, k.hiPort = sport, dport
	k.proto = p.proto
	k.v6 = p.v6
	return srcIsLo
}

// addrPorts is the part of a packet a key is made of, the addresses as
// big-endian words (ipword.Of). Words and not As16's [16]byte: the
// compiler copies a [16]byte through the stack with a 16-byte load that
// the two 8-byte stores before it cannot forward to, so the load waits
// until they retire, after every older instruction including the previous
// packet's cache miss. Packets then stop overlapping their misses.
type addrPorts struct {
	sh, sl, dh, dl uint64 // source and destination address words
	// The other way round from capture.Packet's SrcPort and DstPort:
	// copied from a packet in the same order, the two become one 4-byte
	// load, which waits for the decoder's two 2-byte stores to retire
	// when the packet was just decoded (one at a time).
	dport, sport uint16
	proto        uint8
	v6           uint8
}

// fill sets the addresses, family and protocol of p (not the ports), in
// place for the same reason.
func (ap *addrPorts) fill(p *capture.Packet) {
	ap.sh, ap.sl = ipword.Of(p.Src)
	ap.dh, ap.dl = ipword.Of(p.Dst)
	if !p.Src.Is4() {
		ap.v6 = 1 // from the address itself, so A() and B() give back exactly p.Src and p.Dst
	}
	ap.proto = p.Proto
}

// ip16 is a stored address: 16 bytes, big-endian (as As16 gives it; IPv4
// in the last four), read and written 8 bytes at a time.
type ip16 [16]byte

func (a *ip16) set(hi, lo uint64) {
	binary.BigEndian.PutUint64(a[:8], hi)
	binary.BigEndian.PutUint64(a[8:], lo)
}

func (a *ip16) words() (hi, lo uint64) {
	return binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
}

// copyFrom copies o 8 bytes at a time (see addrPorts for why not *a = *o).
func (a *ip16) copyFrom(o *ip16) { a.set(o.words()) }

// addr is the address as a netip.Addr, without allocating.
func (a *ip16) addr(v6 uint8) netip.Addr {
	hi, lo := a.words()
	if v6 == 0 {
		return ipword.From4(lo)
	}
	return ipword.From16(hi, lo)
}

// cmp16 orders two addresses as big-endian 128-bit numbers.
func cmp16(a, b *ip16) int {
	ah, al := a.words()
	bh, bl := b.words()
	switch {
	case ah < bh || ah == bh && al < bl:
		return -1
	case ah == bh && al == bl:
		return 0
	}
	return 1
}

// ipOf is the stored form of a and its family (1: IPv6).
func ipOf(a netip.Addr) (b ip16, v6 uint8) {
	b.set(ipword.Of(a))
	if a.Is4() {
		return b, 0
	}
	return b, 1
}

// Hashing: a wyhash-style multiply-fold with a per-table random seed, so an
// attacker who picks addresses and ports cannot aim for one index bucket
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

// hash16 hashes one stored address.
func hash16(seed uint64, a *ip16, v6 uint8) uint64 {
	return hashWords(seed, binary.LittleEndian.Uint64(a[:8]), binary.LittleEndian.Uint64(a[8:]), v6)
}

// hashWords hashes an address given as two words (any fixed byte order).
func hashWords(seed, x, y uint64, v6 uint8) uint64 {
	h := mix(x^hk1^seed, y^hk2^uint64(v6))
	return mix(h^hk3, seed^hk4)
}

// hash hashes a whole key.
func (k *key) hash(seed uint64) uint64 {
	h := mix(binary.LittleEndian.Uint64(k.lo[:8])^hk1^seed, binary.LittleEndian.Uint64(k.lo[8:])^hk2)
	h2 := mix(binary.LittleEndian.Uint64(k.hi[:8])^hk3^seed, binary.LittleEndian.Uint64(k.hi[8:])^hk4)
	// Not loPort | hiPort<<16 | ...: the compiler reads fields OR-ed at
	// their memory offsets with one wide load, and a 4-byte load of the
	// ports cannot be forwarded from makeKey's two 2-byte stores just
	// before it, so it waited for them to retire: 52% of hash's samples.
	// Sums at other offsets are read field by field, and as injective.
	x := uint64(k.loPort) + uint64(k.hiPort)<<17 + uint64(k.proto)<<34 + uint64(k.v6)<<42
	// The ports get a multiply of their own, beside the addresses' (no
	// longer a chain): through the last one alone, keys that differ in a
	// port only (a scanner's, a NAT's) fell into so few index buckets
	// with about one seed in 500 that a full table dropped up to a fifth
	// of them (TestIndexHoldsOneHostsPorts).
	hx := mix(x^hk1^seed, seed^hk3)
	return mix(h^h2^hk2, hx^hk4)
}

// copyFrom sets k to o, 8 bytes at a time (see addrPorts for why not
// *k = *o).
func (k *key) copyFrom(o *key) {
	k.lo.copyFrom(&o.lo)
	k.hi.copyFrom(&o.hi)
	k.loPort, k.hiPort, k.proto, k.v6 = o.loPort, o.hiPort, o.proto, o.v6
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
