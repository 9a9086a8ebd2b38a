package ui

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"canopy/flow"
)

// sortKey is what the talkers table is ordered by.
type sortKey uint8

const (
	sortBits sortKey = iota
	sortPkts
	sortFlows
	numSorts
)

func (s sortKey) String() string { return [...]string{"bits/s", "pkts/s", "flows"}[s] }

// talkerKey identifies a talker row across snapshots, so the selection
// follows the IP (or pair, or port) rather than the row number.
type talkerKey struct {
	src, dst netip.Addr
	port     uint16
	proto    uint8
}

func keyOf(t *flow.Talker) talkerKey {
	return talkerKey{src: t.Src, dst: t.Dst, port: t.Port, proto: t.Proto}
}

// talkerView is how the operator asked to see the talkers.
type talkerView struct {
	kind   flow.TalkerKind
	window flow.Window
	sort   sortKey
	bytes  bool
	filter filterSpec
}

// talkerCols is the column plan for one width: which optional columns fit.
type talkerCols struct {
	rank, key  int
	allWindows bool // bits/s for 2s, 10s and 40s, not just the selected window
	allPkts    bool // pkts/s for all three windows
	spark      int  // sparkline cells (a divisor of 60), 0 when none fit
}

const (
	markW  = 5  // "ALLOW"
	rateW  = 9  // "1.23 Gb/s"
	pktsW  = 11 // "pkts/s 10s▼"
	flowsW = 6
)

// talkersPane is the top-talkers table. It keeps the snapshot's rows,
// orders and filters them on SetData/SetView, and renders only the visible
// rows, caching the result until something it shows changes.
type talkersPane struct {
	st      *Styles
	w, h    int
	focused bool
	paused  bool

	view  talkerView
	all   []flow.Talker
	order []int32 // indexes into all: filtered and sorted
	marks *ruleIndex

	sel    talkerKey
	hasSel bool
	cur    cursor
	keyW   int // widest key of the filtered rows, in cells

	cache       string
	valid       bool
	buf         []byte
	num         []byte
	marksStyled [markAllow + 1]string
}

func (p *talkersPane) SetSize(w, h int) {
	if p.w != w || p.h != h {
		p.w, p.h = w, h
		p.cur.clamp(len(p.order), p.bodyHeight())
		p.valid = false
	}
}

func (p *talkersPane) SetFocused(f bool) {
	if p.focused != f {
		p.focused, p.valid = f, false
	}
}

func (p *talkersPane) SetPaused(v bool) {
	if p.paused != v {
		p.paused, p.valid = v, false
	}
}

// SetMarks replaces the rule index used for the BAN/ALLOW column.
func (p *talkersPane) SetMarks(ri *ruleIndex) {
	p.marks, p.valid = ri, false
}

// SetData replaces the rows (the snapshot's talkers of the current kind).
func (p *talkersPane) SetData(ts []flow.Talker) {
	p.all = ts
	p.reorder()
}

// SetView changes kind, window, sort, units or filter.
func (p *talkersPane) SetView(v talkerView) {
	p.view = v
	p.reorder()
}

// bodyHeight is how many rows fit under the title and the column header.
func (p *talkersPane) bodyHeight() int { return max(1, p.h-2) }

// reorder filters and sorts, then puts the cursor back on the selected key.
func (p *talkersPane) reorder() {
	p.order = p.order[:0]
	for i := range p.all {
		if p.view.filter.matchTalker(&p.all[i]) {
			p.order = append(p.order, int32(i))
		}
	}
	w := p.view.window
	ts := p.all
	var by func(a, b int32) int
	switch p.view.sort {
	case sortPkts:
		by = func(a, b int32) int { return cmp.Compare(ts[b].Pkts[w], ts[a].Pkts[w]) }
	case sortFlows:
		by = func(a, b int32) int { return cmp.Compare(ts[b].Flows, ts[a].Flows) }
	default:
		by = func(a, b int32) int { return cmp.Compare(ts[b].Bits[w], ts[a].Bits[w]) }
	}
	slices.SortFunc(p.order, func(a, b int32) int {
		if c := by(a, b); c != 0 {
			return c
		}
		// Ties keep a stable, address order so rows do not swap places
		// every second.
		if c := ts[a].Src.Compare(ts[b].Src); c != 0 {
			return c
		}
		if c := ts[a].Dst.Compare(ts[b].Dst); c != 0 {
			return c
		}
		return cmp.Compare(ts[a].Port, ts[b].Port)
	})
	if p.hasSel {
		for i, j := range p.order {
			if keyOf(&ts[j]) == p.sel {
				p.cur.idx = i
				break
			}
		}
	}
	// The key column fits the widest row shown, measured once per change
	// so columns hold still while the operator scrolls.
	p.keyW = width(keyHeader(p.view.kind))
	for _, j := range p.order {
		p.num = appendKey(p.num[:0], p.view.kind, &p.all[j])
		p.keyW = max(p.keyW, len(p.num)-bytes.Count(p.num, arrow)*2)
	}
	p.cur.clamp(len(p.order), p.bodyHeight())
	p.remember()
	p.valid = false
}

// remember records the key under the cursor.
func (p *talkersPane) remember() {
	if len(p.order) == 0 {
		return
	}
	p.sel, p.hasSel = keyOf(&p.all[p.order[p.cur.idx]]), true
}

// Move shifts the selection by delta rows.
func (p *talkersPane) Move(delta int) {
	p.cur.move(delta, len(p.order), p.bodyHeight())
	p.remember()
	p.valid = false
}

// Selected returns the talker under the cursor.
func (p *talkersPane) Selected() (flow.Talker, bool) {
	if len(p.order) == 0 {
		return flow.Talker{}, false
	}
	return p.all[p.order[p.cur.idx]], true
}

// Len is the number of rows after filtering.
func (p *talkersPane) Len() int { return len(p.order) }

// targetOf is what an action on t acts on: the source for src and pair
// rows, the destination for dst rows (each a single address), the network
// for srcnet rows; port rows and "other" have none.
func targetOf(kind flow.TalkerKind, t flow.Talker) netip.Prefix {
	var a netip.Addr
	switch kind {
	case flow.BySrc, flow.ByPair:
		a = t.Src
	case flow.ByDst:
		a = t.Dst
	case flow.BySrcNet:
		return t.Net
	}
	if !a.IsValid() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// targetString is how the dashboard names a target: an address alone for
// a single one, else the prefix.
func targetString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	case 58:
		return "icmp6"
	case 0:
		return "ip"
	}
	return strconv.Itoa(int(p))
}

// appendKey appends the row's identity: an address, a pair, a port, a
// network, or othersKey for the row summing the keys beyond the tracking
// limit.
func appendKey(dst []byte, kind flow.TalkerKind, t *flow.Talker) []byte {
	if t.Other {
		return append(dst, othersKey...)
	}
	switch kind {
	case flow.BySrc:
		return t.Src.AppendTo(dst)
	case flow.ByDst:
		return t.Dst.AppendTo(dst)
	case flow.ByPair:
		dst = t.Src.AppendTo(dst)
		dst = append(dst, " → "...)
		return t.Dst.AppendTo(dst)
	case flow.BySrcNet:
		return t.Net.AppendTo(dst)
	default:
		dst = append(dst, protoName(t.Proto)...)
		dst = append(dst, '/')
		return strconv.AppendUint(dst, uint64(t.Port), 10)
	}
}

var arrow = []byte("→")

// othersKey names the row that sums the keys beyond the tracking limit.
const othersKey = "(others)"

// noTarget says why the selected row has no address to ban or open.
func noTarget(t flow.Talker) string {
	if t.Other {
		return othersKey + " sums the keys beyond the tracking limit and names none; t → net sums the sources by network"
	}
	return "port rows have none; t changes the view"
}

func keyHeader(kind flow.TalkerKind) string {
	return [...]string{"source", "destination", "source → destination", "port", "source network"}[kind]
}

// plan decides which columns fit in the pane's width for the visible rows.
func (p *talkersPane) plan() talkerCols {
	c := talkerCols{rank: max(2, len(strconv.Itoa(len(p.order))))}
	c.key = min(p.keyW, max(15, p.w/3))
	fixed := 1 + c.rank + 1 + c.key + 1 + markW + 1 + flowsW + 1
	bits3 := 3 * (rateW + 1)
	bits1 := rateW + 1
	pkts3 := 3 * (pktsW + 1)
	pkts1 := pktsW + 1
	room := func(used int) int { return p.w - used - 1 }
	switch {
	case room(fixed+bits3+pkts3) >= 30:
		c.allWindows, c.allPkts = true, true
		c.spark = sparkCells(room(fixed + bits3 + pkts3))
	case room(fixed+bits3+pkts1) >= 10:
		c.allWindows = true
		c.spark = sparkCells(room(fixed + bits3 + pkts1))
	default:
		c.spark = sparkCells(room(fixed + bits1 + pkts1))
	}
	return c
}

// sparkCells picks the widest sparkline (60 points shown at 1, 2, 3, 4, 5
// or 6 seconds per cell) that fits in n cells.
func sparkCells(n int) int {
	for _, c := range [...]int{60, 30, 20, 15, 12, 10} {
		if n >= c {
			return c
		}
	}
	return 0
}

// View renders the pane: title, column header and the visible rows.
func (p *talkersPane) View() string {
	if p.valid {
		return p.cache
	}
	p.cache = p.render()
	p.valid = true
	return p.cache
}

func (p *talkersPane) render() string {
	var sb strings.Builder
	sb.Grow(p.w * (p.h + 1) * 2)
	p.writeTitle(&sb)
	body := p.bodyHeight()
	first := p.cur.offset
	last := min(len(p.order), first+body)
	c := p.plan()

	// Column header.
	b := p.buf[:0]
	b = append(b, ' ')
	b = appendPadLeft(b, "#", c.rank)
	b = append(b, ' ')
	b = appendPadRight(b, keyHeader(p.view.kind), c.key)
	b = append(b, ' ')
	b = appendPadRight(b, "mark", markW)
	for w := flow.Window(0); w < flow.NumWindows; w++ {
		if !c.allWindows && w != p.view.window {
			continue
		}
		h := w.String() + " avg"
		if p.view.sort == sortBits && w == p.view.window {
			h += "▼"
		}
		b = append(b, ' ')
		b = appendPadLeft(b, h, rateW)
	}
	for w := flow.Window(0); w < flow.NumWindows; w++ {
		if !c.allPkts && w != p.view.window {
			continue
		}
		h := "pkts/s " + w.String()
		if p.view.sort == sortPkts && w == p.view.window {
			h += "▼"
		}
		b = append(b, ' ')
		b = appendPadLeft(b, h, pktsW)
	}
	b = append(b, ' ')
	if p.view.sort == sortFlows {
		b = appendPadLeft(b, "flows▼", flowsW)
	} else {
		b = appendPadLeft(b, "flows", flowsW)
	}
	if c.spark > 0 {
		b = append(b, "  "...)
		h := "last 60s"
		if c.spark < 60 {
			h += " (" + strconv.Itoa(60/c.spark) + "s/cell)"
		}
		b = appendPadRight(b, h, c.spark)
	}
	p.st.w.colHeader.writeBytes(&sb, b)
	sb.WriteByte('\n')

	if len(p.order) == 0 {
		msg := "  no talkers yet"
		switch {
		case p.view.filter.port != 0 && p.view.filter.text == "" && p.view.kind != flow.ByPort:
			msg = "  port filters apply to the by-port view: press t to reach it"
		case p.view.filter.active():
			msg = "  nothing matches the filter " + p.view.filter.describe() + " (esc clears it)"
		}
		p.st.w.empty.writeBytes(&sb, appendTrunc2(b[:0], msg, p.w))
		p.buf = b
		return sb.String()
	}
	for i := first; i < last; i++ {
		if i > first {
			sb.WriteByte('\n')
		}
		t := &p.all[p.order[i]]
		var mk mark
		var at int
		b, mk, at = p.row(b[:0], i, t, c)
		selected := i == p.cur.idx
		switch {
		case selected && p.focused:
			p.st.w.selected.writeBytes(&sb, padTo(b, p.w))
		case selected:
			p.st.w.selectedBlur.writeBytes(&sb, b)
		case mk != markNone:
			// Style the marker segment only: one Render per marked row.
			sb.Write(b[:at])
			sb.WriteString(p.markStyled(mk))
			sb.Write(b[at+markW:])
		default:
			sb.Write(b)
		}
	}
	p.buf = b
	return sb.String()
}

// padTo pads b with spaces to w cells so a reverse-video selection covers
// the whole row.
func padTo(b []byte, w int) []byte {
	n := 0
	for range string(b) {
		n++
	}
	return spaces(b, w-n)
}

// markStyled is the marker cell in its style, rendered once per pane.
func (p *talkersPane) markStyled(mk mark) string {
	if p.marksStyled[mk] == "" {
		st := p.st.Ban
		switch mk {
		case markAllow:
			st = p.st.Allow
		case markObserve:
			st = p.st.Pending
		}
		p.marksStyled[mk] = st.Render(string(appendPadRight(nil, mk.text(), markW)))
	}
	return p.marksStyled[mk]
}

// row appends one talker row and says which mark it carries and at which
// byte the marker cell starts.
func (p *talkersPane) row(b []byte, i int, t *flow.Talker, c talkerCols) ([]byte, mark, int) {
	b = appendSelMark(b, i == p.cur.idx)
	p.num = strconv.AppendInt(p.num[:0], int64(i+1), 10)
	b = appendPadLeftB(b, p.num, c.rank)
	b = append(b, ' ')
	p.num = appendKey(p.num[:0], p.view.kind, t)
	b = appendPadRightB(b, p.num, c.key)
	b = append(b, ' ')
	mk := markNone
	switch p.view.kind {
	case flow.ByPort:
	case flow.BySrcNet:
		mk = p.marks.markNet(t.Net)
	default:
		mk = max(p.marks.mark(t.Src), p.marks.mark(t.Dst))
	}
	at := len(b)
	b = appendPadRight(b, mk.text(), markW)
	for w := flow.Window(0); w < flow.NumWindows; w++ {
		if !c.allWindows && w != p.view.window {
			continue
		}
		b = append(b, ' ')
		p.num = appendRate(p.num[:0], t.Bits[w], p.view.bytes)
		b = appendPadLeftB(b, p.num, rateW)
	}
	for w := flow.Window(0); w < flow.NumWindows; w++ {
		if !c.allPkts && w != p.view.window {
			continue
		}
		b = append(b, ' ')
		p.num = appendCount(p.num[:0], t.Pkts[w])
		b = appendPadLeftB(b, p.num, pktsW)
	}
	b = append(b, ' ')
	p.num = appendInt(p.num[:0], uint64(max(0, t.Flows)))
	b = appendPadLeftB(b, p.num, flowsW)
	if c.spark > 0 {
		b = append(b, "  "...)
		b = appendSpark(b, t.Spark[:], c.spark)
	}
	return b, mk, at
}

// writeTitle writes the pane's title line: what is shown and how.
func (p *talkersPane) writeTitle(sb *strings.Builder) {
	var t []byte
	t = append(t, " 1 Top talkers by "...)
	t = append(t, p.view.kind.String()...)
	t = append(t, " · sorted by "...)
	t = append(t, p.view.sort.String()...)
	if p.view.sort != sortFlows {
		t = append(t, ", "...)
		t = append(t, p.view.window.String()...)
		t = append(t, " avg"...)
	}
	t = append(t, " · "...)
	if p.view.bytes {
		t = append(t, "bytes/s"...)
	} else {
		t = append(t, "bits/s"...)
	}
	t = append(t, " · "...)
	t = appendInt(t, uint64(len(p.order)))
	t = append(t, " shown"...)
	if p.view.filter.active() {
		t = append(t, " · filter: "...)
		t = append(t, p.view.filter.describe()...)
	}
	if p.paused {
		t = append(t, " · PAUSED"...)
	}
	title := string(padTo(truncBytes(t, p.w), p.w))
	if p.focused {
		p.st.w.paneTitleFocus.write(sb, title)
	} else {
		p.st.w.paneTitle.write(sb, title)
	}
	sb.WriteByte('\n')
}
