package flow

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
)

// talkerKey is what a talker row aggregates by; unused fields stay zero.
type talkerKey struct {
	a, b  ip16   // BySrc/ByDst: a; ByPair: a = source, b = destination
	port  uint16 // ByPort
	proto uint8  // ByPort
	v6    uint8  // address family of a and b
}

// talkerRow is one key's counters within one second. Its key is in the
// map's keys, not here: a probe compares the key's full 64-bit hash
// instead (two keys of one map share it about once in 10^12 seconds of
// traffic, and would share a row for that second, a display figure), so
// the row a packet counts into is 24 bytes, and a map's rows take a third
// of the cache they did with the 36-byte key inside. Packets fit 32 bits:
// a worker counts far fewer than 2^32 in a second.
type talkerRow struct {
	h     uint64 // the key's hash
	bytes uint64
	pkts  uint32
	flows uint32 // distinct flows counted for this key in the second
}

// talkerMap is a fixed-capacity open-addressing (linear probing) map from
// talkerKey to a row. It never allocates after NewBucket and is cleared in
// time proportional to the rows used. Keys beyond capacity go to other.
type talkerMap struct {
	// index: slot → row index + 1 (0: empty) in the low indexRowBits,
	// and a tag from the key's hash above them, so a probe passes over
	// another key's slot without reading its row: with the map full (a
	// flood of sources) most keys are absent, and each row read was a
	// cache miss. Twice the rows, so probes stay short.
	index []uint32
	rows  []talkerRow // len = rows in use, cap = capacity
	// keys holds rows[i]'s key at keys[i*kb:], packed to the bytes its
	// kind uses (keyBytes): written when a row is made, read by the
	// Aggregator.
	keys  []byte
	kind  TalkerKind
	kb    int // keyBytes(kind)
	mask  uint64
	other talkerRow // everything that did not fit
	// seen is a Bloom filter of the keys in rows (8 bits a row, three
	// bits a key), read only once the map is full: then most keys that
	// come are not in it (a flood of sources, or uniformly random flows),
	// and a probe that has to reach an empty slot, a mispredicted branch
	// or two a slot, cost more than all the rest of counting a packet.
	// Three bits of one word answer "not here" for about 96% of those
	// keys (3.8% false positives measured with 4096 keys). Talker
	// accounting of uniformly random flows of a million went from 42 to
	// 22 ns a packet (in cache), Update from about 150 to 133 ns.
	seen  []uint64
	smask uint64 // bits in seen, minus one
}

// The index packs a row number (up to maxMaxTalkers, plus one) and a tag.
const (
	indexRowBits = 17
	indexRowMask = 1<<indexRowBits - 1
	indexTagBits = 32 - indexRowBits
)

func newTalkerMap(kind TalkerKind, n int) talkerMap {
	size := 1 << bits.Len(uint(2*n-1))
	sbits := max(1<<bits.Len(uint(8*n-1)), 64)
	kb := keyBytes(kind)
	return talkerMap{
		index: make([]uint32, size),
		rows:  make([]talkerRow, 0, n),
		keys:  make([]byte, 0, n*kb),
		kind:  kind,
		kb:    kb,
		mask:  uint64(size - 1),
		seen:  make([]uint64, sbits/64),
		smask: uint64(sbits - 1),
	}
}

// add counts packet tp for the key of hash h, which is the map's kind of
// key of tp (see putKey: stored only when the key gets a row); countFlow
// adds one to the distinct-flow count. It returns the row it counted into
// (-1: other). Bucket.add does the same for each kind written out, so
// that the compiler inlines turnsAway and first there, which it cannot do
// for add as one call.
func (m *talkerMap) add(h uint64, tp *talkerPacket, countFlow bool) int32 {
	row := int32(rowFull)
	if !m.turnsAway(h) {
		if row = m.first(h); row == rowProbe {
			row = m.slow(h, tp)
		}
	}
	m.bump(row, tp.size, countFlow)
	return row
}

// Outcomes of a lookup besides a row.
const (
	rowFull  = -1 // the key has no row and the map is full: it counts in other
	rowProbe = -2 // first's look was not enough
)

// turnsAway reports whether the map is full and its Bloom filter says the
// key of hash h is not in it: the key counts in other. With first, what
// Bucket.add inlines of a lookup (each is small enough to be inlined; the
// two together are not).
func (m *talkerMap) turnsAway(h uint64) bool {
	return len(m.rows) == cap(m.rows) && !m.maySee(h)
}

// first returns the row of the key of hash h if the first index slot its
// probe reads holds it, else rowProbe.
func (m *talkerMap) first(h uint64) int32 {
	e := m.index[h&m.mask]
	if e != 0 && e>>indexRowBits == uint32(h>>(64-indexTagBits)) {
		if i := e&indexRowMask - 1; m.rows[i].h == h {
			return int32(i)
		}
	}
	return rowProbe
}

// find returns the row of the key of hash h; rowFull if it has none and
// the map is full; or, if it has none and the map has room, -2 minus the
// index slot its row would take (see insert). It calls nothing, so that
// the probe keeps its values in registers.
func (m *talkerMap) find(h uint64) int32 {
	full := len(m.rows) == cap(m.rows)
	index, rows, mask := m.index, m.rows, m.mask
	tag := uint32(h >> (64 - indexTagBits))
	for s := h & mask; ; s = (s + 1) & mask {
		e := index[s]
		if e == 0 {
			if full {
				return rowFull
			}
			return int32(-2 - int64(s))
		}
		if e>>indexRowBits == tag {
			if i := e&indexRowMask - 1; rows[i].h == h {
				return int32(i)
			}
		}
	}
}

// insert gives the key of hash h, which is the map's kind of key of tp, a
// row whose number it stores in index slot s (from find), and returns the
// row.
func (m *talkerMap) insert(h, s uint64, tp *talkerPacket) int32 {
	m.rows = append(m.rows, talkerRow{h: h})
	m.putKey(tp.ap, tp.port, tp.proto)
	m.index[s] = uint32(h>>(64-indexTagBits))<<indexRowBits | uint32(len(m.rows))
	m.see(h)
	return int32(len(m.rows) - 1)
}

// slow is the rest of a lookup that turnsAway and first did not settle.
func (m *talkerMap) slow(h uint64, tp *talkerPacket) int32 {
	row := m.find(h)
	if row < -1 {
		row = m.insert(h, uint64(-2-row), tp)
	}
	return row
}

// bump counts one packet into row (-1: other).
func (m *talkerMap) bump(row int32, size uint64, countFlow bool) {
	r := m.row(row)
	r.pkts++
	r.bytes += size
	if countFlow {
		r.flows++
	}
}

// bumpN counts pkts packets of bytes bytes in all into row (-1: other).
func (m *talkerMap) bumpN(row int32, pkts uint32, bytes uint64) {
	r := m.row(row)
	r.pkts += pkts
	r.bytes += bytes
}

// row is the counters of row i, or other for -1.
func (m *talkerMap) row(i int32) *talkerRow {
	if i < 0 {
		return &m.other
	}
	return &m.rows[i]
}

func (m *talkerMap) reset() {
	// Clear only the index slots rows took: each row's is on its key's
	// probe path, marked with its number.
	for i := range m.rows {
		for s := m.rows[i].h & m.mask; ; s = (s + 1) & m.mask {
			if m.index[s]&indexRowMask == uint32(i+1) {
				m.index[s] = 0
				break
			}
		}
	}
	m.rows, m.keys = m.rows[:0], m.keys[:0]
	m.other = talkerRow{}
	clear(m.seen)
}

// seenBits are the three bits of seen that stand for a key of hash h,
// from bits of h that neither the index slot (the low bits) nor the tag
// (the top 15) uses, all in one word so a check is one load.
func (m *talkerMap) seenBits(h uint64) (word uint64, mask uint64) {
	x := h >> 20
	word = (x & m.smask) >> 6
	return word, 1<<(x>>20&63) | 1<<(x>>26&63) | 1<<(x>>32&63)
}

// see marks a key of hash h as in the map.
func (m *talkerMap) see(h uint64) {
	w, b := m.seenBits(h)
	m.seen[w] |= b
}

// maySee reports whether a key of hash h may be in the map (false: it is
// not).
func (m *talkerMap) maySee(h uint64) bool {
	w, b := m.seenBits(h)
	return m.seen[w]&b == b
}

// Bucket is one worker's traffic counters for one second: totals and, per
// TalkerKind, a bounded table of keys. Update adds to the table's current
// Bucket; SwapBucket hands it over; Aggregator.Add merges and clears it.
// A Bucket is used by one goroutine at a time.
type Bucket struct {
	seed     uint64
	maps     [NumKinds]talkerMap
	pkts     uint64 // every packet handed to Update, IP or not
	bytes    uint64
	newFlows uint64    // flows created
	evicted  uint64    // flows evicted because the table was full
	epoch    uint16    // the installing table's epoch; a put-back keeps it
	frows    []flowRow // spareRows entries, then the ones handed out in this bucket; cap: spareRows+flowRowsFor(maxTalkers)
}

// flowRow is one flow's talker rows in one bucket, and the packets and
// bytes of its later packets in that second, held until the bucket is
// swapped out (flushAll). A flow's first packet in a bucket takes an
// entry (addFlow) and stores its index in the flow (Flow.talk); each
// direction's first packet looks its four keys up (Bucket.add) and stores
// the rows here, and every later packet of the second adds to pkts and
// bytes: one counter in a line the flow points at, instead of four hashes
// and probes. Entries are handed out in order and not reused within a
// bucket, so the flows that come first in a second (the busy ones, with
// heavy-tailed traffic) keep theirs all second; once they are all taken,
// flows new in the second share a few spares (spareRows). Handing all of
// a full bucket's entries on by a hash of the slot (the row cache this
// replaced worked like that) measured worse for Zipf-distributed flows
// (98 against 89 ns a packet: the tail took the busy flows' entries) and
// uniformly random ones (128 against 119: every packet read another
// entry). TestFlowRowsCountLikeFullLookups compares every row with and
// without them.
type flowRow struct {
	slot  uint32              // the flow's slot: whose entry this is
	rows  [2][NumKinds]uint16 // per direction; otherRow: "other"; rowUnknown: not looked up yet
	pkts  [2]uint16           // packets held, not yet in the rows
	bytes [2]uint32           // their bytes
	// Both are counted into the rows early rather than overflow: 32
	// bytes, two entries a cache line.
}

// Row numbers a flowRow holds besides real ones, which maxMaxTalkers
// keeps below them.
const (
	rowUnknown = 1<<16 - 2 // this direction's keys were not looked up in this entry
	otherRow   = 1<<16 - 1 // the key's packets go to "other"
)

var unknownRows = [2][NumKinds]uint16{
	{rowUnknown, rowUnknown, rowUnknown, rowUnknown},
	{rowUnknown, rowUnknown, rowUnknown, rowUnknown},
}

// flowRowsOn lets a test compare counts made with and without flow rows.
var flowRowsOn = true

// talkersOn lets BenchmarkUpdateNoTalkers measure the table without
// talker accounting; nothing else changes it.
var talkersOn = true

// NewBucket returns an empty bucket holding up to maxTalkers keys of each
// kind (0 or less: DefaultMaxTalkers). Make all buckets of a table with
// its Config.MaxTalkers.
func NewBucket(maxTalkers int) *Bucket {
	if maxTalkers <= 0 {
		maxTalkers = DefaultMaxTalkers
	}
	maxTalkers = min(maxTalkers, maxMaxTalkers)
	b := &Bucket{seed: rand.Uint64(), frows: newFlowRows(flowRowsFor(maxTalkers))}
	for k := range b.maps {
		b.maps[k] = newTalkerMap(TalkerKind(k), maxTalkers)
	}
	return b
}

// Reset clears b for reuse without freeing its memory.
func (b *Bucket) Reset() {
	b.frows = b.frows[:spareRows]
	clear(b.frows) // flushAll has counted what they held
	for k := range b.maps {
		b.maps[k].reset()
	}
	b.pkts, b.bytes, b.newFlows, b.evicted = 0, 0, 0, 0
}

func (b *Bucket) dirty() bool {
	if b.pkts != 0 || b.newFlows != 0 || b.evicted != 0 {
		return true
	}
	for k := range b.maps {
		if len(b.maps[k].rows) != 0 || b.maps[k].other.pkts != 0 {
			return true
		}
	}
	return false
}

// Pkts is the number of packets counted in b.
func (b *Bucket) Pkts() uint64 { return b.pkts }

// Bytes is the number of bytes counted in b (IP lengths; frame lengths for non-IP).
func (b *Bucket) Bytes() uint64 { return b.bytes }

// NewFlows is the number of flows created while b was current.
func (b *Bucket) NewFlows() uint64 { return b.newFlows }

// Evicted is the number of flows evicted while b was current.
func (b *Bucket) Evicted() uint64 { return b.evicted }

// Keys is how many distinct keys of kind k b holds (not counting "other").
func (b *Bucket) Keys(k TalkerKind) int {
	if k >= NumKinds {
		return 0
	}
	return len(b.maps[k].rows)
}

// add counts one IP packet into the four talker tables. It stores the
// rows it counted into in *rows one by one: a [4]int32 returned by value
// goes through the stack and is read back with one 16-byte load, which
// cannot be forwarded from the four 4-byte stores that wrote it and so
// waits for them to retire (see addrPorts).
//
// Each kind's lookup is written out here rather than a call of
// talkerMap.add: calls cost more than the lookups, because Go keeps no
// register across a call and every one reloads the arguments (callgrind:
// 370 → 275 instructions a packet with uniformly random flows). The
// compiler inlines turnsAway and first, which settle nearly every key: a
// full map turns most away, and most hits are in their first slot. Only
// the rest take a call (slow). A pair whose source or destination has no
// row has none either (the pairs' map, as large, fills no later than
// theirs), so its lookup is skipped. Measured side by side (taskset -c 1,
// medians of 9): BenchmarkUpdate/random-batch32 97.9 → 90.8 ns a packet,
// zipf 79.8 → 75.2, hot16k 58.9 → 57.3, train8 57.5 → 56.0;
// BenchmarkBucketAdd 19.8 → 15.2 ns (medians of 5).
//
// Uniformly random flows spent about a quarter of Update here before
// (random-batch32 with talker accounting taken out, medians of 5 side by
// side: 94.4 → 67.3 ns a packet; Zipf 73.7 → 65.8). Ways to cut it that
// measured nothing (medians of 7 side by side, random-batch32; 3 % is
// within this machine's noise): loading every map's filter word and first
// index slot before any probe (97.5 → 95.9, Zipf 77.0 → 78.6); 47 bits of
// the hash in 8-byte index slots, so that a hit reads no row (101.6 →
// 101.4, trains 58.3 → 61.2); and in Prefetch, hashing each packet's
// addresses and fetching their index slots, then the rows their tags name
// (random 89.0 → 102.0, Zipf 69.6 → 82.7: more work than the misses it
// saves). Nor is it the maps' size in cache: with MaxTalkers 256 instead
// of 4096, so that they stay in L1 and L2, random-batch32 was 3 % faster
// (medians of 3 side by side, 135.7 → 132.1 on a slow day): the cost is
// the lookups' instructions.
func (b *Bucket) add(tp *talkerPacket, rows *[NumKinds]uint16) {
	ap := tp.ap
	hs := hashWords(b.seed, ap.sh, ap.sl, ap.v6)
	hd := hashWords(b.seed^hk3, ap.dh, ap.dl, ap.v6)
	ms := &b.maps
	src := int32(rowFull)
	if m := &ms[BySrc]; !m.turnsAway(hs) {
		if src = m.first(hs); src == rowProbe {
			src = m.slow(hs, tp)
		}
	}
	ms[BySrc].bump(src, tp.size, tp.countDir)
	rows[BySrc] = uint16(src)
	dst := int32(rowFull)
	if m := &ms[ByDst]; !m.turnsAway(hd) {
		if dst = m.first(hd); dst == rowProbe {
			dst = m.slow(hd, tp)
		}
	}
	ms[ByDst].bump(dst, tp.size, tp.countDir)
	rows[ByDst] = uint16(dst)
	pair := int32(rowFull)
	if hp := mix(hs^hk1, hd^hk2); src >= 0 && dst >= 0 && !ms[ByPair].turnsAway(hp) {
		if pair = ms[ByPair].first(hp); pair == rowProbe {
			pair = ms[ByPair].slow(hp, tp)
		}
	}
	ms[ByPair].bump(pair, tp.size, tp.countDir)
	rows[ByPair] = uint16(pair)
	svc := int32(rowFull)
	if hp := portHash(b.seed, tp.port, tp.proto); !ms[ByPort].turnsAway(hp) {
		if svc = ms[ByPort].first(hp); svc == rowProbe {
			svc = ms[ByPort].slow(hp, tp)
		}
	}
	ms[ByPort].bump(svc, tp.size, tp.countFlow)
	rows[ByPort] = uint16(svc)
}

// portHash is the hash of a ByPort key. Two rounds, as hashWords: with
// one multiply by a seed-dependent constant, for about one bucket in 50
// the consecutive ports of a scan piled into one run of the map's index,
// and a lookup probed over 1,500 slots on average instead of under one
// (TestTalkerHashesSpreadAScan).
func portHash(seed uint64, port uint16, proto uint8) uint64 {
	return mix(mix(uint64(port)|uint64(proto)<<16^hk4, seed^hk1)^hk3, seed^hk2)
}

// talkerPacket is what the talker counters take of one packet. Update
// builds it once and it is handed down by pointer: Go passes arguments in
// registers and keeps none across a call, so with them one by one every
// call level stored and reloaded all six.
type talkerPacket struct {
	ap    *addrPorts // its addresses and family
	size  uint64     // bytes it counts for (pktBytes)
	port  uint16     // its service port: the flow's B port, else the destination port (0 for ICMP and later fragments)
	proto uint8
	// countDir: the first packet of its flow's direction in the bucket
	// (counts a flow for source, destination and pair); countFlow: the
	// first of its flow (counts it for the port).
	countDir, countFlow bool
}

// keyBytes is the bytes a key of kind k takes in a talkerMap: an address
// and its family for a source or destination, two and the family for a
// pair, port and protocol for a port. A talkerKey takes 36 whatever its
// kind.
func keyBytes(k TalkerKind) int {
	switch k {
	case BySrc, ByDst:
		return 17
	case ByPair:
		return 33
	}
	return 3
}

// putKey appends the map's kind of key of a packet with addresses ap and
// service port port/proto to keys (within their capacity: no allocation).
func (m *talkerMap) putKey(ap *addrPorts, port uint16, proto uint8) {
	n := len(m.keys)
	m.keys = m.keys[:n+m.kb]
	k := m.keys[n:]
	switch m.kind {
	case BySrc:
		putAddr(k, ap.sh, ap.sl, ap.v6)
	case ByDst:
		putAddr(k, ap.dh, ap.dl, ap.v6)
	case ByPair:
		putAddr(k, ap.sh, ap.sl, ap.v6)
		putAddr(k[16:], ap.dh, ap.dl, ap.v6)
	case ByPort:
		binary.BigEndian.PutUint16(k, port)
		k[2] = proto
	}
}

// putAddr writes an address's two words to k[:16] and its family to k[16].
func putAddr(k []byte, hi, lo uint64, v6 uint8) {
	binary.BigEndian.PutUint64(k[:8], hi)
	binary.BigEndian.PutUint64(k[8:16], lo)
	k[16] = v6
}

// key is row i's key.
func (m *talkerMap) key(i int) talkerKey {
	var k talkerKey
	b := m.keys[i*m.kb : (i+1)*m.kb]
	switch m.kind {
	case BySrc, ByDst:
		k.a.set(binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]))
		k.v6 = b[16]
	case ByPair:
		k.a.set(binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]))
		k.b.set(binary.BigEndian.Uint64(b[16:]), binary.BigEndian.Uint64(b[24:]))
		k.v6 = b[32]
	case ByPort:
		k.port, k.proto = binary.BigEndian.Uint16(b), b[2]
	}
	return k
}

// flowRowsFor is how many flows a bucket keeps rows for besides the
// spares: four per talker key of a kind, and at most what Flow.talk can
// index.
func flowRowsFor(maxTalkers int) int { return min(4*maxTalkers, 1<<16-spareRows) }

// addFlow is add for a packet of the flow in slot going in direction dir,
// through the flow's entry in frows (*talk: its index, which addFlow sets
// when it gives the flow an entry). tp.countFlow says this is the flow's
// first packet in the bucket, so *talk is from an older bucket.
func (b *Bucket) addFlow(talk *uint16, slot uint32, dir Dir, tp *talkerPacket) {
	var e *flowRow
	switch i := int(*talk); {
	case tp.countFlow:
		// The next free entry, or else a spare. Written here rather than
		// in a function of its own: a call costs more than this does.
		if n := len(b.frows); n < cap(b.frows) && flowRowsOn {
			b.frows = b.frows[:n+1]
			e = b.give(talk, slot, n)
		} else {
			e = b.takeSpare(talk, slot) // nil without flow rows
		}
	case i < len(b.frows) && b.frows[i].slot == slot:
		e = &b.frows[i]
		if !tp.countDir && e.rows[dir][BySrc] != rowUnknown {
			if e.bytes[dir] > math.MaxUint32-uint32(tp.size) || e.pkts[dir] == math.MaxUint16 {
				b.flushRow(e, dir)
			}
			e.pkts[dir]++
			e.bytes[dir] += uint32(tp.size)
			return
		}
	default:
		// Its spare was taken by another flow (or the index is from a
		// stamp that wrapped around after 2^16 seconds idle): take it
		// back.
		e = b.takeSpare(talk, slot)
	}
	if e == nil {
		var rows [NumKinds]uint16
		b.add(tp, &rows)
		return
	}
	b.add(tp, &e.rows[dir])
}

// spareRows entries at the start of frows are shared, direct-mapped by
// slot, by the flows that come once all the others are taken: a flow
// takes the one its slot hashes to (counting what it held into its rows
// first), so a burst of packets still goes the short way after its first
// (trains of 8 packets a flow: 77 → 71 ns a packet), while they stay in
// L1, so that a flow of one packet a second costs next to nothing more
// than the long way. More of them did not pay: with 256 or 1024 spares,
// Zipf-distributed flows of a million (BenchmarkUpdate/zipf-batch32,
// medians of 5 side by side) went 86.6 → 88.8 and 89.8 ns a packet,
// though a quarter of their key lookups follow a stolen spare. Nor did
// taking a spare only at a flow's second packet in the bucket, so that
// the one-packet flows of uniformly random traffic skip giving one out
// (taskset -c 1, medians of 7 side by side, on a machine about 1.6 times
// as slow as for the figures above: random-batch32 139.7 → 163.7, train8 85.0 →
// 91.1, Zipf 116.3 → 121.2).
const (
	spareBits = 6
	spareRows = 1 << spareBits
)

// newFlowRows makes a bucket's frows for n entries besides the spares.
func newFlowRows(n int) []flowRow { return make([]flowRow, spareRows, spareRows+n) }

// takeSpare gives the flow in slot the spare its slot hashes to.
func (b *Bucket) takeSpare(talk *uint16, slot uint32) *flowRow {
	if !flowRowsOn {
		return nil
	}
	i := int(slot * 0x9e3779b1 >> (32 - spareBits))
	if e := &b.frows[i]; e.pkts != [2]uint16{} {
		b.flushRow(e, AtoB)
		b.flushRow(e, BtoA)
	}
	return b.give(talk, slot, i)
}

// give makes entry i the flow in slot's, and stores i in *talk.
func (b *Bucket) give(talk *uint16, slot uint32, i int) *flowRow {
	e := &b.frows[i]
	e.slot = slot
	e.rows = unknownRows
	e.pkts, e.bytes = [2]uint16{}, [2]uint32{}
	*talk = uint16(i)
	return e
}

// flushRow counts the packets e holds for direction dir into its rows.
func (b *Bucket) flushRow(e *flowRow, dir Dir) {
	if e.pkts[dir] != 0 {
		for k, r := range e.rows[dir] {
			row := int32(r)
			if r >= rowUnknown {
				row = -1
			}
			b.maps[k].bumpN(row, uint32(e.pkts[dir]), uint64(e.bytes[dir]))
		}
	}
	e.pkts[dir], e.bytes[dir] = 0, 0
}

// flushAll puts every packet the flow rows hold into the talker rows: the
// table does it when it swaps b out, before anyone reads b.
func (b *Bucket) flushAll() {
	for i := range b.frows {
		b.flushRow(&b.frows[i], AtoB)
		b.flushRow(&b.frows[i], BtoA)
	}
}
