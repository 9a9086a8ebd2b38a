package ui

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"canopy/rules"
)

// bansPane lists the entries in force: bans and ACLs first, newest first,
// then the allowlist (which the dashboard shows but never removes).
type bansPane struct {
	st      *Styles
	w, h    int
	focused bool

	rules []rules.Entry
	order []int
	now   time.Time
	cur   cursor
	selID uint64
	valW  int // widest value, in cells

	cache string
	valid bool
	buf   []byte
}

func (p *bansPane) SetSize(w, h int) {
	if p.w != w || p.h != h {
		p.w, p.h, p.valid = w, h, false
	}
}

func (p *bansPane) SetFocused(f bool) {
	if p.focused != f {
		p.focused, p.valid = f, false
	}
}

// SetData replaces the entries; now is when "expires in" is counted from.
func (p *bansPane) SetData(rs []rules.Entry, now time.Time) {
	p.rules, p.now = rs, now
	p.order = p.order[:0]
	for i := range rs {
		p.order = append(p.order, i)
	}
	rank := func(k rules.Kind) int {
		switch k {
		case rules.KindBan:
			return 0
		case rules.KindACL:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(p.order, func(a, b int) int {
		if c := cmp.Compare(rank(rs[a].Kind), rank(rs[b].Kind)); c != 0 {
			return c
		}
		if c := rs[b].Created.Compare(rs[a].Created); c != 0 {
			return c
		}
		return cmp.Compare(rs[b].ID, rs[a].ID)
	})
	for i, j := range p.order {
		if rs[j].ID == p.selID {
			p.cur.idx = i
			break
		}
	}
	// The value column fits the widest entry; measured here, once per
	// snapshot, not on every frame.
	p.valW = 15
	var b []byte
	for i := range rs {
		if rs[i].Kind != rules.KindACL && rs[i].Value.IsValid() {
			b = rs[i].Value.AppendTo(b[:0])
			p.valW = max(p.valW, len(b))
		} else {
			p.valW = max(p.valW, width(entryValue(&rs[i])))
		}
	}
	p.cur.clamp(len(p.order), max(1, p.h-2))
	p.remember()
	p.valid = false
}

func (p *bansPane) remember() {
	if len(p.order) > 0 {
		p.selID = p.rules[p.order[p.cur.idx]].ID
	}
}

// Move shifts the selection by delta rows.
func (p *bansPane) Move(delta int) {
	p.cur.move(delta, len(p.order), max(1, p.h-2))
	p.remember()
	p.valid = false
}

// Selected returns the entry under the cursor.
func (p *bansPane) Selected() (rules.Entry, bool) {
	if len(p.order) == 0 {
		return rules.Entry{}, false
	}
	return p.rules[p.order[p.cur.idx]], true
}

// activeBans counts the entries that block or observe traffic (bans and
// ACLs, not the allowlist).
func activeBans(rs []rules.Entry) int {
	n := 0
	for i := range rs {
		if rs[i].Kind == rules.KindBan || rs[i].Kind == rules.KindACL {
			n++
		}
	}
	return n
}

// entryValue names what an entry covers: "10.0.0.5", "10.0.0.0/8", or an
// ACL's match ("tcp 10.0.0.0/8 → any:443").
func entryValue(e *rules.Entry) string {
	if e.Kind == rules.KindACL && e.ACL != nil {
		a := e.ACL
		var b []byte
		b = append(b, a.Proto...)
		b = append(b, ' ')
		b = appendPrefixPorts(b, a.Src, a.SrcPorts)
		b = append(b, " → "...)
		b = appendPrefixPorts(b, a.Dst, a.DstPorts)
		return string(b)
	}
	if !e.Value.IsValid() {
		return "?"
	}
	return targetString(e.Value)
}

func appendPrefixPorts(b []byte, p interface {
	IsValid() bool
	String() string
}, pr rules.PortRange) []byte {
	if p.IsValid() {
		b = append(b, p.String()...)
	} else {
		b = append(b, "any"...)
	}
	if pr.From != 0 || pr.To != 0 {
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(pr.From), 10)
		if pr.To != pr.From {
			b = append(b, '-')
			b = strconv.AppendUint(b, uint64(pr.To), 10)
		}
	}
	return b
}

func kindText(e *rules.Entry) string {
	s := string(e.Kind)
	if e.Action == rules.ActionObserve {
		s += " obs"
	}
	return s
}

// View renders the pane.
func (p *bansPane) View() string {
	if p.valid {
		return p.cache
	}
	valW := min(p.valW, max(18, p.w/3))
	var hb []byte
	hb = append(hb, "  "...)
	hb = appendPadRight(hb, "value", valW)
	hb = append(hb, "  "...)
	hb = appendPadRight(hb, "kind", 9)
	hb = append(hb, "  "...)
	hb = appendPadRight(hb, "origin", 6)
	hb = append(hb, "  "...)
	hb = appendPadLeft(hb, "expires in", 10)
	hb = append(hb, ' ')
	hb = appendPadLeft(hb, "hits", 11)
	hb = append(hb, "  reason"...)
	n, allow := 0, 0
	for i := range p.rules {
		if p.rules[i].Kind == rules.KindAllow {
			allow++
		} else {
			n++
		}
	}
	title := " 3 Bans · " + strconv.Itoa(n) + " in force"
	if allow > 0 {
		title += " · " + strconv.Itoa(allow) + " allowlisted (never blocked)"
	}
	var scratch []byte
	spec := listSpec{
		title:  title,
		header: string(hb),
		n:      len(p.order),
		empty:  "  no bans: select a talker and press b",
		row: func(b []byte, i int) ([]byte, *wrap) {
			e := &p.rules[p.order[i]]
			b = append(b, ' ')
			b = appendPadRight(b, entryValue(e), valW)
			b = append(b, "  "...)
			b = appendPadRight(b, kindText(e), 9)
			b = append(b, "  "...)
			b = appendPadRight(b, string(e.Origin), 6)
			b = append(b, "  "...)
			b = appendPadLeft(b, fmtRemaining(e.Expires, p.now), 10)
			b = append(b, ' ')
			scratch = appendInt(scratch[:0], e.Hits)
			b = appendPadLeftB(b, scratch, 11)
			if e.Reason != "" {
				b = append(b, "  "...)
				b = append(b, e.Reason...)
			}
			if e.Kind == rules.KindAllow {
				return b, &p.st.w.allow
			}
			return b, nil
		},
	}
	p.cache, p.buf = renderList(p.st, p.w, p.h, p.focused, &p.cur, p.buf, spec)
	p.valid = true
	return p.cache
}
