package ui

import (
	"net/netip"

	"canopy/rules"
)

// mark is what the talkers table says about an address next to it.
type mark uint8

const (
	markNone    mark = iota
	markObserve      // a ban with action observe covers it ("would block")
	markBan          // a ban with action block covers the address
	markAllow        // an allowlist entry covers it: no ban can touch it
)

// markText is the marker column's text; it is the state, readable without
// colour.
func (k mark) text() string {
	return [...]string{"", "OBS", "BAN", "ALLOW"}[k]
}

// ruleIndex answers "is this address banned or allowlisted?" for the talker
// rows on screen. It is rebuilt once per snapshot: single addresses go into
// a map, wider prefixes are scanned (there are few of them).
type ruleIndex struct {
	exact map[netip.Addr]int // address → index into entries
	wide  []int              // indexes of prefix entries, in snapshot order
	rules []rules.Entry
}

// newRuleIndex indexes the ban and allow entries of rs; ACLs are layer-4
// rules that do not mark a whole address and are left out.
func newRuleIndex(rs []rules.Entry) *ruleIndex {
	ri := &ruleIndex{exact: make(map[netip.Addr]int), rules: rs}
	for i := range rs {
		e := &rs[i]
		if e.Kind != rules.KindBan && e.Kind != rules.KindAllow || !e.Value.IsValid() {
			continue
		}
		if e.Value.IsSingleIP() {
			if j, ok := ri.exact[e.Value.Addr()]; ok && rs[j].Kind == rules.KindAllow {
				continue // allow wins: keep it
			}
			ri.exact[e.Value.Addr()] = i
			continue
		}
		ri.wide = append(ri.wide, i)
	}
	return ri
}

// mark says whether a is allowlisted (that wins, as in the sensor), banned,
// or neither.
func (ri *ruleIndex) mark(a netip.Addr) mark {
	if ri == nil || !a.IsValid() {
		return markNone
	}
	a = a.Unmap()
	m := markNone
	if i, ok := ri.exact[a]; ok {
		m = m.with(&ri.rules[i])
	}
	for _, i := range ri.wide {
		if m == markAllow {
			break
		}
		if ri.rules[i].Value.Contains(a) {
			m = m.with(&ri.rules[i])
		}
	}
	return m
}

// with is m once entry e, which covers the address, is considered too:
// the allowlist wins over every ban, as in the sensor, and a ban that
// blocks over one that observes.
func (m mark) with(e *rules.Entry) mark {
	switch {
	case e.Kind == rules.KindAllow:
		return markAllow
	case m == markAllow:
		return m
	case e.Action == rules.ActionObserve:
		return max(m, markObserve)
	}
	return markBan
}

// banFor returns the most specific ban covering a, for `u` on a talker row.
func (ri *ruleIndex) banFor(a netip.Addr) (rules.Entry, bool) {
	if ri == nil || !a.IsValid() {
		return rules.Entry{}, false
	}
	a = a.Unmap()
	if i, ok := ri.exact[a]; ok && ri.rules[i].Kind == rules.KindBan {
		return ri.rules[i], true
	}
	best := -1
	for _, i := range ri.wide {
		e := &ri.rules[i]
		if e.Kind == rules.KindBan && e.Value.Contains(a) && (best < 0 || e.Value.Bits() > ri.rules[best].Value.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return rules.Entry{}, false
	}
	return ri.rules[best], true
}

// markNet is mark for a network row: whether a ban or allow entry covers
// the whole network (entries inside it mark its addresses' rows instead).
func (ri *ruleIndex) markNet(n netip.Prefix) mark {
	if ri == nil || !n.IsValid() {
		return markNone
	}
	if n.IsSingleIP() {
		return ri.mark(n.Addr())
	}
	m := markNone
	for _, i := range ri.wide {
		if e := &ri.rules[i]; e.Value.Bits() <= n.Bits() && e.Value.Contains(n.Addr()) {
			m = m.with(e)
		}
	}
	return m
}

// banForNet is banFor for a target: the most specific ban covering all of
// it.
func (ri *ruleIndex) banForNet(n netip.Prefix) (rules.Entry, bool) {
	if ri == nil || !n.IsValid() {
		return rules.Entry{}, false
	}
	if n.IsSingleIP() {
		return ri.banFor(n.Addr())
	}
	best := -1
	for _, i := range ri.wide {
		e := &ri.rules[i]
		if e.Kind == rules.KindBan && e.Value.Bits() <= n.Bits() && e.Value.Contains(n.Addr()) && (best < 0 || e.Value.Bits() > ri.rules[best].Value.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return rules.Entry{}, false
	}
	return ri.rules[best], true
}
