package flow

import (
	"errors"
	"math/bits"
	"math/rand/v2"
	"time"
	"unsafe"

	"canopy/capture"
	"canopy/internal/hugepage"
)

// Table is one shard of the flow table, owned by one capture worker. It is
// not safe for concurrent use: the fanout hash sends both directions of a
// flow to the same worker, so each worker has its own Table and none of
// them locks.
//
// All memory is reserved by NewTable: a slot array of MaxFlows+1 Flows
// (192 bytes each), the 5-tuple index (ibucket: under 5 bytes per slot,
// read on every packet), a head array by address (one head per four
// slots: only ForEach and flow creation read it), a layer-2 dictionary
// (l2Dict, 32 bytes per 64 slots) and a talkers bucket: just under 200
// bytes per slot in all (199.9 with 1M slots), never more. Slots are handed out from the bottom and reused, and
// untouched pages are not resident, so RSS follows the traffic unless
// Prefault made it all resident (the sensor does, for live capture).
type Table struct {
	cfg  Config
	seed uint64

	flows []Flow    // slot 0 is never used: index 0 means "none"
	idx   []ibucket // 5-tuple index (see ibucket)

	epHeads []uint32 // address hash → first ref (slot<<1 | side)
	epMask  uint64

	l2 l2Dict // the flows' layer-2 tuples

	used        uint32  // bump cursor: slots above it were never handed out
	hwm         uint32  // highest slot ever in use: scans and sampling stop here
	ev          evictor // the next eviction's sample (evict.go)
	free        uint32  // first slot of the free list
	live        int
	hand        uint32 // Expire's clock hand
	lastExpire  int64  // now of the previous Expire call
	rng         uint64 // eviction sampling and index walk state (wyrand)
	kicks       uint64 // keys moved to their other bucket to make room (see link)
	prefetchMin int    // Prefetch works from this many live flows (prefetchMinFlows; tests lower it)
	now         int64  // latest timestamp seen (packets or Expire)

	idle [4]int64 // timeouts in ns, by timeoutClass

	stats TableStats

	bucket *Bucket
	epoch  uint16 // the current bucket's epoch; never 0, the stamp of a direction not yet counted

	ahead lookahead // the keys Prefetch made, for Update to use
}

// TableStats are a table's counters since it was made.
type TableStats struct {
	Flows   uint64 // live flows now
	Created uint64 // flows created (including a new session reusing a closed 5-tuple)
	Evicted uint64 // flows dropped to make room because the table was full
	Expired uint64 // flows removed by Expire after their idle timeout
	// Restarted counts the Created flows that took over a closed flow's
	// 5-tuple (a new SYN after RST/FIN) instead of a new slot, so that
	// Flows = Created - Restarted - Evicted - Expired.
	Restarted uint64
	// L2Full counts frames whose layer-2 tuple (MACs, VLAN stack) could
	// not be stored because every entry of the table's L2 dictionary was
	// in use: that direction's L2 then reads as unknown until a frame with
	// a stored tuple arrives (see Table.L2).
	L2Full uint64
}

const (
	idleEstablished = iota
	idleHalfOpen
	idleClosed
	idleUDP
)

// NewTable returns an empty table sized by cfg (zero fields take their
// defaults; see Config).
func NewTable(cfg Config) *Table {
	cfg = cfg.withDefaults()
	n := cfg.MaxFlows
	hsize := 1 << bits.Len(uint(n-1)) // next power of two ≥ n
	// Each address appears once per flow side: a quarter of a head per
	// slot means lists of about eight refs in a full table, for 3 bytes
	// less per flow. Only ForEach walks them: on one address it costs a
	// few percent (0.54 µs vs 0.50 µs for 100 flows among 1M), on a /24
	// (256 lists) about 25-100 µs instead of 9 µs.
	epSize := max(hsize/4, 16)
	seed := rand.Uint64()
	t := &Table{
		cfg:     cfg,
		seed:    seed,
		rng:     rand.Uint64(),
		flows:   make([]Flow, n+1),
		idx:     make([]ibucket, ibucketsFor(n)),
		epHeads: make([]uint32, epSize),
		epMask:  uint64(epSize - 1),
		l2:      newL2Dict(n/64, seed^hk4),
		bucket:  NewBucket(cfg.MaxTalkers),
		epoch:   1,

		prefetchMin: prefetchMinFlows,
	}
	t.bucket.epoch = 1
	adviseHuge(t.flows)
	adviseHuge(t.idx)
	adviseHuge(t.epHeads)
	t.idle[idleEstablished] = int64(cfg.IdleEstablished)
	t.idle[idleHalfOpen] = int64(cfg.IdleHalfOpen)
	t.idle[idleClosed] = int64(cfg.IdleClosed)
	t.idle[idleUDP] = int64(cfg.IdleUDP)
	return t
}

// Config returns the table's configuration with defaults filled in.
func (t *Table) Config() Config { return t.cfg }

// Len is the number of live flows.
func (t *Table) Len() int { return t.live }

// Cap is the most flows the table holds.
func (t *Table) Cap() int { return t.cfg.MaxFlows }

// Stats returns the table's counters.
func (t *Table) Stats() TableStats {
	s := t.stats
	s.Flows = uint64(t.live)
	s.L2Full = t.l2.full
	return s
}

// Get returns the flow h names, or nil if it was evicted, expired or its
// slot now holds another flow.
func (t *Table) Get(h Handle) *Flow {
	if h.idx == 0 || h.idx > t.hwm {
		return nil
	}
	f := &t.flows[h.idx]
	if f.gen != h.gen || f.bits&bitInUse == 0 {
		return nil
	}
	return f
}

// Handle returns a stable reference to f, a flow of this table.
func (t *Table) Handle(f *Flow) Handle { return Handle{idx: t.slotOf(f), gen: f.gen} }

// slotOf is the index of f in t.flows.
func (t *Table) slotOf(f *Flow) uint32 {
	return uint32((uintptr(unsafe.Pointer(f)) - uintptr(unsafe.Pointer(&t.flows[0]))) / unsafe.Sizeof(Flow{}))
}

// Seen returns the times of direction d's first and latest packet (ns; 0, 0
// if none), rounded down: first to 100 ms, last to 1 ms (see lastUnit).
func (t *Table) Seen(f *Flow, d Dir) (first, last int64) {
	ds := &f.Dirs[d]
	if ds.Pkts() == 0 {
		return 0, 0
	}
	return tickTime(t.now, f.first[d], firstUnit), tickTime(t.now, f.last[d], lastUnit)
}

// tickTime is the start (ns) of the latest tick of unit ns at or before
// now whose count has the low 32 bits v.
func tickTime(now int64, v uint32, unit int64) int64 {
	n := now / unit
	return (n - int64(uint32(n)-v)) * unit
}

// FirstSeen is the time of the flow's first packet (ns, to 100 ms).
func (t *Table) FirstSeen(f *Flow) int64 {
	a, _ := t.Seen(f, AtoB)
	b, _ := t.Seen(f, BtoA)
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// LastSeen is the time of the flow's latest packet (ns, to 1 ms, rounded
// down). Expire and eviction call it for every slot they look at, so it
// reads back one tick, not four.
func (t *Table) LastSeen(f *Flow) int64 { return tickTime(t.now, lastTick(f), lastUnit) }

// lastTick is the later of the directions' last ticks: a direction with no
// packet yet holds the flow's first (see Flow.last).
func lastTick(f *Flow) uint32 {
	if int32(f.last[BtoA]-f.last[AtoB]) > 0 {
		return f.last[BtoA]
	}
	return f.last[AtoB]
}

// pktBytes is the size a packet counts for: its IP length like iftop's,
// or the frame length when there is no IP length (non-IP, or a GRO/BIG TCP
// super-packet whose length field is 0).
func pktBytes(p *capture.Packet) uint64 {
	if p.IPLen != 0 {
		return uint64(p.IPLen)
	}
	return uint64(p.WireLen)
}

// Update accounts p: it finds or creates p's flow, updates the direction p
// travelled in, and adds p to the current talkers Bucket. It returns the
// flow (nil for packets that have no flow: non-IP, protocols other than
// TCP and UDP, IPv4 later fragments; those still count in the talkers),
// the direction, and whether this packet started a new flow (also when a
// new SYN reuses the 5-tuple of a closed flow: the flow's Handle then
// changes).
//
// Update never allocates, never fails and never stops tracking new flows:
// when the table is full it evicts (see Config.EvictSample).
func (t *Table) Update(p *capture.Packet) (f *Flow, dir Dir, created bool) {
	return t.update(p, nil, nil, 0, false, 0, false)
}

// UpdateAhead is Update(&ps[j]) for the packets ps of the latest Prefetch
// call, using what Prefetch worked out for ps[j]: its key and hash, which
// Update would make again, and the flow whose index entry had its tag,
// which is almost always its flow, so that Update need not look in the
// index again. With a million flows, batch32, medians of 7 runs side by
// side (taskset -c 1), the key and hash took Zipf 81.2 → 78.2 ns a
// packet, uniformly random 102.2 → 96.5, hot set 65.4 → 59.3, trains
// 61.0 → 54.6 (the sensor's BenchmarkWorkerFrames, 5 runs, 99.4 → 91.9 ns
// a frame); the candidate then Zipf 74.5 → 63.9, random 91.3 → 84.5, hot
// set 56.3 → 51.1, trains 52.5 → 48.8 (WorkerFrames 92.8 → 84.2). j
// indexes that call's ps, and
// ps[j] must not have changed since. Each packet's look-ahead is used
// once: UpdateAhead for the same j again, or for a packet Prefetch made
// no key for, is Update.
func (t *Table) UpdateAhead(j int) (f *Flow, dir Dir, created bool) {
	k, h, srcIsLo, cand, away := t.ahead.take(j)
	if t.kicks != t.ahead.kicks {
		cand = 0 // see lookahead.cand
	}
	var ap *addrPorts
	if k != nil {
		ap = &t.ahead.aps[j]
	}
	return t.update(&t.ahead.ps[j], ap, k, h, srcIsLo, cand, away)
}

// update is Update, given p's addresses and ports, key, hash and srcIsLo
// if k is not nil (then p is a TCP or UDP packet with a flow), and then
// the slot Prefetch found a candidate for p's flow in (0: none, or no
// Prefetch), and whether in the key's secondary bucket.
func (t *Table) update(p *capture.Packet, ap *addrPorts, k *key, h uint64, srcIsLo bool, cand uint32, away bool) (f *Flow, dir Dir, created bool) {
	ts := p.Timestamp
	if ts > t.now {
		t.now = ts
	}
	size := pktBytes(p)
	b := t.bucket
	b.pkts++
	b.bytes += size
	tcp := p.IsTCP()
	if k == nil {
		ap, k = new(addrPorts), new(key) // on the stack: neither escapes
		var ok bool
		if srcIsLo, ok = flowKey(p, k, ap); !ok {
			if isIP(p) {
				// IP without a flow (ICMP, other protocols, later
				// fragments): the talkers count it.
				ap.fill(p)
				var rows [NumKinds]uint16
				b.add(&talkerPacket{ap: ap, size: size, port: p.DstPort, proto: p.Proto}, &rows)
			}
			return nil, AtoB, false // not IP, or addresses no decoder should produce: totals only
		}
		h = k.hash(t.seed)
	}
	if c := &t.flows[cand]; cand != 0 && c.bits&bitInUse != 0 && c.key.eq(k) {
		// Prefetch's candidate is the flow: no second look at the index
		// (see UpdateAhead).
		f = c
		if away {
			t.goHome(cand, h)
		}
	} else if i, away := t.find(k, h); i != 0 {
		f = &t.flows[i]
		if away {
			t.goHome(i, h)
		}
	}
	if f == nil {
		f = t.create(k, h, srcIsLo, p)
		created = true
	} else if tcp && p.Flags&(capture.FlagSYN|capture.FlagACK|capture.FlagRST) == capture.FlagSYN &&
		f.state&(StateClosed|StateResetByUs) == StateClosed {
		// A fresh SYN on a closed 5-tuple is a new session (port reuse):
		// start over so its numbers, counters and enforcement are its own.
		t.reinit(f, srcIsLo)
		created = true
	}
	// Start fetching the flow's talkers entry (Bucket.addFlow) now: it is
	// read last, and is in cache for a busy flow only (hot16k 78 → 75 ns).
	// A flow not yet counted in this bucket gets a new entry, so its old
	// index names another flow's: fetching that would only take a fill
	// buffer from the misses that matter.
	flowNewInBucket := f.Dirs[AtoB].stamp != t.epoch && f.Dirs[BtoA].stamp != t.epoch
	if i := int(f.talk); i < len(b.frows) && !flowNewInBucket {
		touch(unsafe.Pointer(&b.frows[i]))
	}
	dir = BtoA
	if srcIsLo == (f.bits&bitAIsLo != 0) {
		dir = AtoB
	}

	// Distinct flows per talker key: a flow counts once per bucket (per
	// direction for source, destination and pair). Epochs, not timestamps,
	// so a garbage or stepped packet clock cannot make every packet "new".
	d := &f.Dirs[dir]
	newInBucket := d.stamp != t.epoch
	d.stamp = t.epoch
	lt := uint32(ts / lastUnit)
	if created {
		f.last = [2]uint32{lt, lt} // see Flow.last
	}
	if d.Pkts() == 0 {
		f.first[dir] = uint32(ts / firstUnit)
		f.last[dir] = lt
	} else if int32(lt-f.last[dir]) > 0 {
		f.last[dir] = lt
	}
	d.count(size)
	d.TTL = p.TTL
	if i := d.l2; i == 0 || !t.l2.ents[i].l2.sameAs(p) {
		t.setL2(d, p) // setL2's first test, inlined: it is nearly always the same tuple
	}
	if tcp {
		t.trackTCP(f, dir, p)
	}
	if created {
		b.newFlows++
	}
	// Counted now, while the flow and its addresses are in registers and
	// cache. Holding a batch's talker counting back for one loop at the
	// end of Prefetch (or between its passes, to fill the wait for the
	// flows' lines) was slower: random-batch32 93.5 → 103.2 ns a packet,
	// Zipf 81.5 → 86.2 (medians of 7 side by side).
	if talkersOn {
		b.addFlow(&f.talk, t.slotOf(f), dir, &talkerPacket{ap: ap, size: size, port: f.BPort(), proto: p.Proto, countDir: newInBucket, countFlow: flowNewInBucket})
	}
	return f, dir, created
}

// seqGT reports a > b in 32-bit serial-number arithmetic.
func seqGT(a, b uint32) bool { return int32(a-b) > 0 }

// trackTCP updates the sequence state of direction dir and the flow's TCP
// state bits from segment p.
func (t *Table) trackTCP(f *Flow, dir Dir, p *capture.Packet) {
	d := &f.Dirs[dir]
	fl := p.Flags
	d.Flags = fl
	d.Window = p.Window
	d.Seq = p.Seq
	if fl&capture.FlagRST == 0 {
		// An RST occupies no sequence space and may be forged, so it never
		// moves NextSeq. A SYN defines the sequence space, so it always sets
		// it; anything else only moves it forward.
		end := p.Seq + p.SeqSpace()
		if fl&capture.FlagSYN != 0 || f.bits&(bitHasSeqA<<dir) == 0 || seqGT(end, d.NextSeq) {
			d.NextSeq = end
		}
		f.bits |= bitHasSeqA << dir
	}
	if fl&capture.FlagACK != 0 {
		// RCV.NXT never goes backwards, so neither does Ack: a reordered old
		// segment's ack must not overwrite a newer one. A SYN-ACK starts over.
		if fl&capture.FlagSYN != 0 || f.bits&(bitHasAckA<<dir) == 0 || seqGT(p.Ack, d.Ack) {
			d.Ack = p.Ack
		}
		f.bits |= bitHasAckA << dir
	} else if fl&(capture.FlagSYN|capture.FlagRST) == capture.FlagSYN {
		// A bare SYN starts a new sequence space (a survivor reconnecting on
		// the same 5-tuple): the sender has acknowledged nothing in it yet,
		// and its next ACK must be taken even if it looks older.
		f.bits &^= bitHasAckA << dir
	}

	s := f.state
	switch {
	case fl&capture.FlagRST != 0:
		s |= StateRst | StateClosed
	case fl&(capture.FlagSYN|capture.FlagACK) == capture.FlagSYN:
		if dir == AtoB {
			s |= StateSynSeen
		}
	case fl&(capture.FlagSYN|capture.FlagACK) == capture.FlagSYN|capture.FlagACK:
		if dir == BtoA {
			s |= StateSynAckSeen
		}
	case fl&capture.FlagACK != 0:
		// Both sides have acknowledged something: the handshake's third
		// packet, or a session picked up mid-stream (or whose SYN-ACK the
		// mirror lost) that is plainly alive in both directions. An ACK scan
		// that draws no answer (or an RST) never gets here.
		if f.bits&(bitHasAckA|bitHasAckB) == bitHasAckA|bitHasAckB {
			s |= StateEstablished
		}
	}
	if fl&capture.FlagFIN != 0 {
		if dir == AtoB {
			s |= StateFinAtoB
		} else {
			s |= StateFinBtoA
		}
		if s&(StateFinAtoB|StateFinBtoA) == StateFinAtoB|StateFinBtoA {
			s |= StateClosed
		}
	}
	f.state = s
}

// create takes a slot (evicting if full) and links a new flow for k into
// both indexes. A is the SYN-ACK's receiver if p is a SYN-ACK, else p's sender.
func (t *Table) create(k *key, h uint64, srcIsLo bool, p *capture.Packet) *Flow {
	i := t.alloc()
	f := &t.flows[i]
	*f = Flow{gen: f.gen + 1, bits: bitInUse}
	f.key.copyFrom(k)
	if aIsLo(srcIsLo, p) {
		f.bits |= bitAIsLo
	}
	t.link(i, h)
	t.epLink(f, 0)
	t.epLink(f, 1)
	t.live++
	t.stats.Created++
	return f
}

// aIsLo decides which endpoint is A for a flow whose first packet is p.
func aIsLo(srcIsLo bool, p *capture.Packet) bool {
	if p.IsTCP() && p.Flags&(capture.FlagSYN|capture.FlagACK|capture.FlagRST) == capture.FlagSYN|capture.FlagACK {
		return !srcIsLo // the SYN-ACK's receiver sent the SYN
	}
	return srcIsLo
}

// reinit turns f into a new flow of the same 5-tuple whose A is the SYN's
// sender. Its slot and index links stay; its handle changes.
func (t *Table) reinit(f *Flow, srcIsLo bool) {
	f.gen++
	t.l2.release(f.Dirs[0].l2)
	t.l2.release(f.Dirs[1].l2)
	f.Dirs, f.first = [2]DirState{}, [2]uint32{}
	f.Decision, f.RuleGen, f.Enf = Decision{}, 0, Enforcement{}
	f.state = 0
	f.bits = bitInUse
	if srcIsLo {
		f.bits |= bitAIsLo
	}
	t.stats.Created++
	t.stats.Restarted++
}

// alloc returns a free slot for a new flow: one from the free list, else
// a never-used one, else it evicts. Free slots at or below the bump
// cursor are all on the free list, marked bitFree.
func (t *Table) alloc() uint32 {
	i := t.free
	switch {
	case i != 0:
		t.freePop()
	case t.used < uint32(t.cfg.MaxFlows):
		t.used++
		i = t.used
	default:
		i = t.evict()
	}
	t.hwm = max(t.hwm, i)
	return i
}

// freePush puts a just-unlinked slot on the free list. A free slot's
// address-index links are unused, so the first holds the list's link.
// The list is only ever popped at its head, so it is singly linked:
// pushing and popping write no other slot (a doubly linked list wrote
// the prev link of another free slot, a cold line, on every pop).
func (t *Table) freePush(i uint32) {
	f := &t.flows[i]
	f.bits = bitFree
	f.ep[0] = epLink{next: t.free}
	t.free = i
}

// freePop takes the head slot off the free list.
func (t *Table) freePop() {
	f := &t.flows[t.free]
	t.free = f.ep[0].next
	f.ep[0] = epLink{}
	f.bits = 0
}

// timeout is f's idle timeout in ns.
func (t *Table) timeout(f *Flow) int64 {
	if f.key.proto != capture.ProtoTCP {
		return t.idle[idleUDP]
	}
	switch {
	case f.state&StateClosed != 0:
		return t.idle[idleClosed]
	case f.state&StateEstablished != 0:
		return t.idle[idleEstablished]
	}
	return t.idle[idleHalfOpen]
}

// unlink removes f from both indexes and marks its slot unused. The caller
// puts the slot on the free list or reuses it.
func (t *Table) unlink(f *Flow) {
	t.unindex(t.slotOf(f), f.key.hash(t.seed))
	t.forget(f)
}

// dropUnindexed evicts f, which an index walk left in no bucket (see
// link), and frees its slot.
func (t *Table) dropUnindexed(f *Flow) {
	t.forget(f)
	t.freePush(t.slotOf(f))
	t.stats.Evicted++
	t.bucket.evicted++
}

// forget is unlink after the 5-tuple index: it takes f out of the address
// index and the L2 dictionary and marks its slot unused.
func (t *Table) forget(f *Flow) {
	t.epUnlink(f, 1)
	t.epUnlink(f, 0)
	t.l2.release(f.Dirs[0].l2)
	t.l2.release(f.Dirs[1].l2)
	f.Dirs[0].l2, f.Dirs[1].l2 = 0, 0
	f.bits = 0
	t.live--
}

// epAddr is the address of the key's side s (0 lo, 1 hi).
func (f *Flow) epAddr(s int) *ip16 {
	if s == 0 {
		return &f.key.lo
	}
	return &f.key.hi
}

func (t *Table) epBucket(a *ip16, v6 uint8) uint64 {
	return hash16(t.seed, a, v6) & t.epMask
}

// epLink puts side s of f at the head of its address's list.
func (t *Table) epLink(f *Flow, s int) {
	b := t.epBucket(f.epAddr(s), f.key.v6)
	ref := t.slotOf(f)<<1 | uint32(s)
	old := t.epHeads[b]
	f.ep[s] = epLink{next: old}
	if old != 0 {
		t.flows[old>>1].ep[old&1].prev = ref
	}
	t.epHeads[b] = ref
}

// epUnlink takes side s of f out of its address's list.
func (t *Table) epUnlink(f *Flow, s int) {
	l := f.ep[s]
	if l.prev != 0 {
		t.flows[l.prev>>1].ep[l.prev&1].next = l.next
	} else {
		t.epHeads[t.epBucket(f.epAddr(s), f.key.v6)] = l.next
	}
	if l.next != 0 {
		t.flows[l.next>>1].ep[l.next&1].prev = l.prev
	}
	f.ep[s] = epLink{}
}

// Expire removes flows idle longer than their state's timeout at time now
// (ns, the same clock as packet timestamps) and returns how many it
// removed. It continues a clock hand where the previous call stopped and
// examines about Cap × (now − previous call) / Config.SweepEvery slots, at
// least min(1024, ExpireBatch) and at most ExpireBatch, so calling it often
// (the sensor does every 10 ms) costs a little each time and sweeps the
// whole table about once per SweepEvery, and no call holds the worker for
// long (8192 slots ≈ 0.2 ms on a 1M table). Pointers to removed flows
// become invalid; Handles see nil.
func (t *Table) Expire(now int64) int {
	if now > t.now {
		t.now = now
	}
	budget := t.cfg.ExpireBatch
	if t.lastExpire != 0 && now > t.lastExpire {
		b := uint64(t.hwm) * uint64(now-t.lastExpire) / uint64(t.cfg.SweepEvery)
		budget = int(min(b, uint64(budget)))
	} else if t.lastExpire != 0 {
		budget = 0
	}
	if now > t.lastExpire {
		t.lastExpire = now
	}
	budget = max(budget, min(1024, t.cfg.ExpireBatch))
	budget = min(budget, int(t.hwm))
	n := 0
	nowTick := t.now / lastUnit // LastSeen's arithmetic, hoisted: this loop is the sweep
	for ; budget > 0; budget-- {
		t.hand++
		if t.hand > t.hwm {
			t.hand = 1
		}
		f := &t.flows[t.hand]
		if ahead := t.hand + expireAhead; ahead <= t.hwm {
			t.touchFlowHead(ahead)
		}
		if f.bits&bitInUse == 0 {
			continue
		}
		// last is kept to the ms, rounded down: only a flow idle past its
		// timeout whatever the sub-millisecond part was goes.
		age := uint32(nowTick) - lastTick(f)
		if now-(nowTick-int64(age))*lastUnit < t.timeout(f)+lastUnit {
			if uint32(nowTick)-f.last[0] > 1<<30 || uint32(nowTick)-f.last[1] > 1<<30 {
				t.clampLast(f)
			}
			continue
		}
		t.unlink(f)
		t.freePush(t.hand)
		n++
	}
	t.stats.Expired += uint64(n)
	return n
}

// expireAhead is how many slots ahead of its hand Expire fetches the one
// line it reads of each: reading one line in three, the hardware's own
// prefetcher left the sweep waiting.
const expireAhead = 128

// clampLast keeps each direction's last tick within 2^30 ms (12.4 days)
// of now, so it never ages past the 2^31 ticks that tickTime and Update's
// serial compare can tell apart. Only a direction silent that long in a
// flow the other direction keeps alive gets there (idle timeouts are below
// maxIdle); its last then reads 12.4 days ago.
func (t *Table) clampLast(f *Flow) {
	n := uint32(t.now / lastUnit)
	for i := range f.last {
		if n-f.last[i] > 1<<30 {
			f.last[i] = n - 1<<30
		}
	}
}

// Info returns a copy of f for the drill-down view and the API (the zero
// Info for nil).
func (t *Table) Info(f *Flow) Info {
	if f == nil {
		return Info{}
	}
	return Info{
		Proto:     f.key.proto,
		A:         f.A(),
		APort:     f.APort(),
		B:         f.B(),
		BPort:     f.BPort(),
		State:     f.StateName(),
		PktsAB:    f.Dirs[AtoB].Pkts(),
		BytesAB:   f.Dirs[AtoB].Bytes(),
		PktsBA:    f.Dirs[BtoA].Pkts(),
		BytesBA:   f.Dirs[BtoA].Bytes(),
		FirstSeen: time.Unix(0, t.FirstSeen(f)).UTC(),
		LastSeen:  time.Unix(0, t.LastSeen(f)).UTC(),
		Blocked:   f.ResetByUs() || f.Enf.Resets != 0,
	}
}

// StateName is a short name for the flow's state: "udp", "syn-sent",
// "syn-received", "half-open" (picked up mid-stream, one direction seen),
// "established", "fin-wait" (one FIN), "closed" (both FINs) or "reset".
func (f *Flow) StateName() string {
	s := f.state
	switch {
	case f.key.proto != capture.ProtoTCP:
		return "udp"
	case s&StateRst != 0:
		return "reset"
	case s&StateClosed != 0:
		return "closed"
	case s&(StateFinAtoB|StateFinBtoA) != 0:
		return "fin-wait"
	case s&StateEstablished != 0:
		return "established"
	case s&StateSynAckSeen != 0:
		return "syn-received"
	case s&StateSynSeen != 0:
		return "syn-sent"
	}
	return "half-open"
}

// SwapBucket installs fresh as the table's current talkers bucket and
// returns the previous one. The sensor calls it once a second on the
// worker's goroutine and hands the old bucket to the Aggregator, which
// clears it in Add so it can come back as the next fresh one. fresh is
// installed as it is, so a bucket that could not be handed over can be put
// back and keeps counting where it left off. nil makes a new bucket (an
// allocation: recycle instead).
func (t *Table) SwapBucket(fresh *Bucket) *Bucket {
	if fresh == nil {
		fresh = NewBucket(t.cfg.MaxTalkers)
	}
	if !fresh.dirty() {
		t.epoch++
		if t.epoch == 0 {
			t.epoch = 1
		}
		fresh.epoch = t.epoch
	}
	old := t.bucket
	old.flushAll()
	t.bucket = fresh
	t.epoch = fresh.epoch // a put-back bucket keeps its own epoch: its flows are not counted twice
	return old
}

// Prefault makes the table's memory resident now instead of on first use:
// each fresh page a new flow lands on is otherwise a page fault on the
// capture path, and on a virtual machine a fresh 2 MiB page took 5-7 ms
// here, stalling the worker while the first banned connections raced
// past. It costs start-up time (about 2.4 ms per 2 MiB page, so about
// half a second for a million flows here) and makes all of the table's
// memory resident at once rather than as the traffic grows.
//
// An error (a kernel before 5.14) leaves the table as it was: its pages
// then fault in on first use.
func (t *Table) Prefault() error {
	return errors.Join(hugepage.Populate(t.flows), hugepage.Populate(t.idx), hugepage.Populate(t.epHeads))
}

// hugePages lets a benchmark measure the table without the THP hint.
var hugePages = true

// adviseHuge asks for transparent huge pages for one of the table's arrays
// before it is written: with 4 KiB pages every random flow lookup also
// misses the TLB.
func adviseHuge[T any](s []T) {
	if hugePages {
		hugepage.Advise(s)
	}
}
