package flow

import (
	"math"
	"net/netip"
)

// This file finds flows by address: ForEach for a lookup done in one go,
// and Walk for one a worker does a step at a time between batches of
// frames (killing a wide prefix's live sessions on a new ban).

// ForEach calls fn for every live flow with an endpoint inside p, once
// per flow, until fn returns false. For a single address (a /32 or /128) it
// walks that address's index list: cost proportional to its flows, not to
// the table (the 100 flows of one address among 1M: under a microsecond).
// For a small prefix it walks each address's list in turn, as long as that
// is cheaper than a scan (a /24 in a 1M table: 256 walks, ~10 µs); wider
// prefixes scan every slot in use (a /8 matching all of a 1M table: ~20 ms,
// which holds the worker that long: use a Walk to do it in steps). fn may
// read any flow and write its Decision, RuleGen and Enf, but must not call
// Update or Expire on this table.
func (t *Table) ForEach(p netip.Prefix, fn func(*Flow) bool) {
	w := t.NewWalk(p)
	t.Step(&w, math.MaxInt, fn)
}

// Walk is a ForEach that can stop and go on later, with the table changing
// in between (NewWalk, Step). The zero Walk is done.
type Walk struct {
	m      prefixMatcher
	byAddr bool
	addr   netip.Addr // by address: the next address whose list to walk
	left   uint64     // by address: addresses not walked yet, addr among them
	slot   uint32     // scan: the next slot to look at
	done   bool
}

// NewWalk starts a walk over the live flows with an endpoint in p, by
// address or by scan as ForEach chooses. An invalid p gives a done walk.
func (t *Table) NewWalk(p netip.Prefix) Walk {
	if !p.IsValid() {
		return Walk{done: true}
	}
	p = p.Masked()
	if host := p.Addr().BitLen() - p.Bits(); host <= enumMaxHostBits && uint64(1)<<host*enumCost <= uint64(t.hwm) {
		return addrWalk(p, host)
	}
	return scanWalk(p)
}

// Enumerating a prefix address by address costs about one cache miss per
// address; a scan costs about a thirtieth of that per slot.
const (
	enumMaxHostBits = 16
	enumCost        = 32
)

// addrWalk walks the index list of each of the 1<<host addresses of p.
func addrWalk(p netip.Prefix, host int) Walk {
	return Walk{m: matcherOf(p), byAddr: true, addr: p.Addr(), left: uint64(1) << host}
}

// scanWalk checks every slot in use.
func scanWalk(p netip.Prefix) Walk { return Walk{m: matcherOf(p), slot: 1} }

// Done reports whether the walk has been everywhere.
func (w *Walk) Done() bool { return w.done }

// Step goes on with walk w, calling fn for the flows of its prefix as
// ForEach does, until it has looked at about budget slots (a scan) or
// addresses and index entries (a walk by address), or fn returned false.
// It reports whether the walk is done. A walk that stops because fn
// returned false starts with that flow at the next Step; a walk by
// address starts that address's list again, so fn sees the flows before
// it in that list again, and must return true for those (a worker
// killing a ban's sessions does: a flow reset since the ban needs nothing
// more). A budget ends a step between two addresses, never inside a
// list, so a Step makes progress however long a list is, unless fn
// refuses the first flow it has not accepted before.
//
// Between steps the table may change as it likes: a walk visits every
// flow that lived through it, once (but for the repeats above), and no
// flow outside its prefix; a flow created or removed during the walk may
// or may not be visited.
func (t *Table) Step(w *Walk, budget int, fn func(*Flow) bool) bool {
	if w.done {
		return true
	}
	if w.byAddr {
		t.stepAddrs(w, budget, fn)
	} else {
		t.stepScan(w, budget, fn)
	}
	return w.done
}

// stepAddrs and stepScan keep the walk's place in locals and store it
// when they stop: fn could change *w for all the compiler knows, so it
// would reload the fields after every call. ForEach of one address's 100
// flows among 1M (BenchmarkForEachSingleIP, taskset -c 1, three runs side
// by side with ForEach before Walk): 588–636 ns before, 653–693 with the
// place in *w, 630–638 with it in locals; a /8 scan 11–15 ms either way.
func (t *Table) stepAddrs(w *Walk, budget int, fn func(*Flow) bool) {
	m, addr, left := &w.m, w.addr, w.left
	defer func() { w.addr, w.left, w.done = addr, left, left == 0 }()
	for ; left > 0; left-- {
		if budget <= 0 {
			return
		}
		budget--
		ab, v6 := ipOf(addr)
		for ref := t.epHeads[t.epBucket(&ab, v6)]; ref != 0; budget-- {
			f := &t.flows[ref>>1]
			s := int(ref & 1)
			ref = f.ep[s].next
			if f.key.v6 != v6 || *f.epAddr(s) != ab {
				continue // another address in the same bucket
			}
			if s == 1 && m.contains(&f.key.lo, f.key.v6) {
				continue // both ends inside p: visited through its lo end
			}
			if !fn(f) {
				return // this address again, from the top
			}
		}
		addr = addr.Next()
	}
}

func (t *Table) stepScan(w *Walk, budget int, fn func(*Flow) bool) {
	m, i, flows := w.m, w.slot, t.flows
	defer func() { w.slot, w.done = i, i > t.hwm }()
	for ; i <= t.hwm; i++ {
		if budget <= 0 {
			return
		}
		budget--
		f := &flows[i]
		if f.bits&bitInUse == 0 {
			continue
		}
		if m.contains(&f.key.lo, f.key.v6) || m.contains(&f.key.hi, f.key.v6) {
			if !fn(f) {
				return // this slot again
			}
		}
	}
}

// prefixMatcher tests stored addresses against a prefix with two masked
// 64-bit compares instead of building a netip.Addr per slot.
type prefixMatcher struct {
	hi, lo, mhi, mlo uint64
	v6               uint8
}

// matcherOf builds the matcher of a masked, valid prefix. An IPv4 prefix
// matches the stored (v4-mapped) form of IPv4 addresses only, and an IPv6
// prefix IPv6 addresses only, as netip.Prefix.Contains does.
func matcherOf(p netip.Prefix) prefixMatcher {
	a, v6 := ipOf(p.Addr())
	n := p.Bits()
	if v6 == 0 {
		n += 96
	}
	var m prefixMatcher
	m.v6 = v6
	switch {
	case n >= 128:
		m.mhi, m.mlo = ^uint64(0), ^uint64(0)
	case n > 64:
		m.mhi, m.mlo = ^uint64(0), ^uint64(0)<<(128-n)
	case n > 0:
		m.mhi = ^uint64(0) << (64 - n)
	}
	hi, lo := a.words()
	m.hi, m.lo = hi&m.mhi, lo&m.mlo
	return m
}

func (m *prefixMatcher) contains(b *ip16, v6 uint8) bool {
	hi, lo := b.words()
	return v6 == m.v6 && hi&m.mhi == m.hi && lo&m.mlo == m.lo
}
