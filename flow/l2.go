package flow

import (
	"encoding/binary"

	"canopy/capture"
)

// L2 is how one direction's latest frame looked at layer 2: what a reset
// impersonating that sender must carry to be delivered like its frames.
type L2 struct {
	SrcMAC   [6]byte                        // Ethernet source (the sender's, or its router's)
	DstMAC   [6]byte                        // Ethernet destination
	VLANs    [capture.MaxVLANs]capture.VLAN // tag stack, outermost first; tags past NumVLANs are zero
	NumVLANs uint8                          // how many of VLANs are set
}

// sameAs reports whether p's frame has tuple a. It reads p's fields
// directly: building an L2 from them to compare would be a 16-byte load
// over bytes just written in smaller pieces, which waits until they retire
// (after the packet's cache misses).
func (a *L2) sameAs(p *capture.Packet) bool {
	n := min(p.NumVLANs, capture.MaxVLANs)
	if a.SrcMAC != p.SrcMAC || a.DstMAC != p.DstMAC || a.NumVLANs != n {
		return false
	}
	for i := range n {
		if a.VLANs[i] != p.VLANs[i] {
			return false
		}
	}
	return true
}

// l2Entry is one dictionary entry: a tuple and how many flow directions
// refer to it.
type l2Entry struct {
	l2   L2
	refs uint32 // directions whose l2 is this entry; 0: free
	next uint32 // hash chain (in use) or free list (free)
}

// l2Dict interns the L2 tuples of a table's flows. Flows refer to an entry
// by a 16-bit index, so a direction costs 2 bytes instead of 21, and since
// a mirror port sees few distinct (MAC pair, VLAN stack) tuples (a router
// pair sees one per direction; a LAN one per host and gateway), a small
// dictionary holds them all. It is exact: entries are reference counted
// and freed only when no direction refers to them, so an index always
// names the tuple it was given for. It is bounded: when every entry is in
// use, a new tuple is not stored (the direction's L2 reads as unknown,
// Table.L2 says so, and TableStats.L2Full counts it) rather than evicting
// one some flow still needs. It never allocates after newL2Dict.
type l2Dict struct {
	ents  []l2Entry // index 0 is never used: 0 means "none"
	heads []uint32  // hash → first entry
	mask  uint64
	seed  uint64
	free  uint32 // free list
	used  uint32 // entries ever handed out; above it all are free and unlinked
	full  uint64 // tuples that did not fit
}

// l2DictMax is the most entries a dictionary can have (a uint16 index).
const l2DictMax = 1<<16 - 1

func newL2Dict(n int, seed uint64) l2Dict {
	n = min(max(n, 64), l2DictMax)
	hs := 1
	for hs < 2*n {
		hs <<= 1
	}
	return l2Dict{ents: make([]l2Entry, n+1), heads: make([]uint32, hs), mask: uint64(hs - 1), seed: seed}
}

func (d *l2Dict) hash(l *L2) uint64 {
	return d.hashOf(&l.SrcMAC, &l.DstMAC, l.NumVLANs, l.VLANs[0], l.VLANs[1])
}

// hashOf hashes a tuple given by its parts; tags past n must be zero.
func (d *l2Dict) hashOf(src, dst *[6]byte, n uint8, v0, v1 capture.VLAN) uint64 {
	a := uint64(binary.LittleEndian.Uint32(src[:4])) | uint64(binary.LittleEndian.Uint16(src[4:]))<<32 |
		uint64(binary.LittleEndian.Uint16(dst[:2]))<<48
	b := uint64(binary.LittleEndian.Uint32(dst[2:])) | uint64(n)<<32
	c := uint64(v0.TPID) | uint64(v0.TCI)<<16 | uint64(v1.TPID)<<32 | uint64(v1.TCI)<<48
	// Two rounds for the MACs: with a and b through the last multiply
	// alone, by a constant that did not depend on the seed, the hosts
	// behind one switch port filled chains of up to 29 where 8 is the
	// longest expected (TestL2HashSpreadsOneSegmentsMACs).
	return mix(mix(a^hk1^d.seed, b^hk2), c^hk3^d.seed)
}

// acquire returns the entry holding p's tuple with one more reference, or
// 0 if the tuple is new and the dictionary is full. It reads p's fields
// in place and builds a new entry field by field (see L2.sameAs).
func (d *l2Dict) acquire(p *capture.Packet) uint16 {
	n := min(p.NumVLANs, capture.MaxVLANs)
	var v [capture.MaxVLANs]capture.VLAN
	for i := range n {
		v[i] = p.VLANs[i]
	}
	b := d.hashOf(&p.SrcMAC, &p.DstMAC, n, v[0], v[1]) & d.mask
	for i := d.heads[b]; i != 0; i = d.ents[i].next {
		if e := &d.ents[i]; e.l2.sameAs(p) {
			e.refs++
			return uint16(i)
		}
	}
	i := d.free
	if i != 0 {
		d.free = d.ents[i].next
	} else if d.used+1 < uint32(len(d.ents)) {
		d.used++
		i = d.used
	} else {
		d.full++
		return 0
	}
	e := &d.ents[i]
	e.l2.SrcMAC, e.l2.DstMAC, e.l2.NumVLANs = p.SrcMAC, p.DstMAC, n
	e.l2.VLANs[0], e.l2.VLANs[1] = v[0], v[1] // unused tags zero: one entry per real stack
	e.refs, e.next = 1, d.heads[b]
	d.heads[b] = i
	return uint16(i)
}

// release drops one reference to entry i (0: none) and frees it when it
// was the last.
func (d *l2Dict) release(i uint16) {
	if i == 0 {
		return
	}
	e := &d.ents[i]
	if e.refs--; e.refs != 0 {
		return
	}
	b := d.hash(&e.l2) & d.mask
	if d.heads[b] == uint32(i) {
		d.heads[b] = e.next
	} else {
		for j := d.heads[b]; j != 0; j = d.ents[j].next {
			if d.ents[j].next == uint32(i) {
				d.ents[j].next = e.next
				break
			}
		}
	}
	*e = l2Entry{next: d.free}
	d.free = uint32(i)
}

// setL2 makes direction d refer to p's layer-2 tuple. The common case, the
// same tuple as the previous frame, is one compare with an entry that is
// in cache.
func (t *Table) setL2(d *DirState, p *capture.Packet) {
	if d.l2 != 0 && t.l2.ents[d.l2].l2.sameAs(p) {
		return
	}
	// Release first: in a full dictionary the entry this direction gives
	// up (if no other refers to it) is the room its new tuple needs.
	t.l2.release(d.l2)
	d.l2 = t.l2.acquire(p)
}

// L2 returns the layer-2 details of direction d's latest frame; ok is false
// if no frame was seen in that direction, or if its tuple did not fit in
// the table's dictionary (see TableStats.L2Full).
func (t *Table) L2(f *Flow, d Dir) (l L2, ok bool) {
	i := f.Dirs[d].l2
	if i == 0 {
		return L2{}, false
	}
	return t.l2.ents[i].l2, true
}
