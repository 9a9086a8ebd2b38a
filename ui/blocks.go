package ui

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"canopy/internal/latency"
	"canopy/sensor"
)

// blocksPane is the live-blocks feed: the sensor's most recent blocked (or
// would-be-blocked) flows, newest first, as the snapshot lists them.
type blocksPane struct {
	st      *Styles
	w, h    int
	focused bool
	loc     *time.Location

	all    []sensor.Block
	shown  []int
	filter filterSpec
	cur    cursor
	selID  uint64

	cache string
	valid bool
	buf   []byte
}

func (p *blocksPane) SetSize(w, h int) {
	if p.w != w || p.h != h {
		p.w, p.h, p.valid = w, h, false
	}
}

func (p *blocksPane) SetFocused(f bool) {
	if p.focused != f {
		p.focused, p.valid = f, false
	}
}

// SetData replaces the blocks and applies the filter; the selection stays
// on the same block ID.
func (p *blocksPane) SetData(bs []sensor.Block, f filterSpec) {
	p.all, p.filter = bs, f
	p.shown = p.shown[:0]
	for i := range bs {
		if f.matchBlock(&bs[i]) {
			p.shown = append(p.shown, i)
		}
	}
	for i, j := range p.shown {
		if bs[j].ID == p.selID {
			p.cur.idx = i
			break
		}
	}
	p.cur.clamp(len(p.shown), max(1, p.h-2))
	p.valid = false
}

// Move shifts the selection by delta rows.
func (p *blocksPane) Move(delta int) {
	p.cur.move(delta, len(p.shown), max(1, p.h-2))
	if len(p.shown) > 0 {
		p.selID = p.all[p.shown[p.cur.idx]].ID
	}
	p.valid = false
}

// appendEndpoint appends ip:port, bracketing IPv6 ("[2001:db8::1]:443").
func appendEndpoint(b []byte, a netip.Addr, port uint16) []byte {
	if !a.IsValid() {
		return append(b, '?')
	}
	if port == 0 {
		return a.AppendTo(b)
	}
	return netip.AddrPortFrom(a, port).AppendTo(b)
}

func outcomeText(o sensor.Outcome, compact bool) string {
	switch o {
	case sensor.OutcomeFailed:
		return "FAILED"
	case sensor.OutcomeObserved:
		if compact {
			return "observed"
		}
		return "would-block"
	case "":
		return "pending"
	}
	return string(o)
}

// View renders the pane.
func (p *blocksPane) View() string {
	if p.valid {
		return p.cache
	}
	// Narrow terminals drop the protocol and the initiator's port from the
	// flow column rather than cutting off the destination.
	compact := p.w < 110
	ruleW, rstW, outW, reactW := 16, 14, 11, 9
	rstHead := "RSTs →src/→dst"
	if compact {
		ruleW, rstW, outW, reactW = 10, 5, 9, 8
		rstHead = "RSTs"
	}
	flowText := func(b []byte, k *sensor.Block) []byte {
		if compact {
			b = appendEndpoint(b, k.Src, 0)
		} else {
			b = append(b, k.Proto...)
			b = append(b, ' ')
			b = appendEndpoint(b, k.Src, k.SrcPort)
		}
		b = append(b, " → "...)
		return appendEndpoint(b, k.Dst, k.DstPort)
	}
	flowW := 20
	for _, j := range p.shown {
		flowW = max(flowW, utf8.RuneCount(flowText(p.buf[:0], &p.all[j])))
	}
	fixed := 2 + 8 + 2 + 2 + ruleW + 1 + rstW + 2 + outW + 1 + reactW
	flowW = max(16, min(flowW, p.w-fixed))
	// The reason is last and only worth showing with some room.
	withReason := p.w-fixed-flowW >= 10
	var hb []byte
	hb = append(hb, "  "...)
	hb = appendPadRight(hb, "time", 8)
	hb = append(hb, "  "...)
	hb = appendPadRight(hb, "flow", flowW)
	hb = append(hb, "  "...)
	hb = appendPadRight(hb, "rule", ruleW)
	hb = append(hb, ' ')
	hb = appendPadLeft(hb, rstHead, rstW)
	hb = append(hb, "  "...)
	hb = appendPadRight(hb, "outcome", outW)
	hb = append(hb, ' ')
	hb = appendPadLeft(hb, "reaction", reactW)
	if withReason {
		hb = append(hb, "  reason"...)
	}
	title := " 2 Live blocks · " + strconv.Itoa(len(p.shown)) + " recent, newest first"
	if p.filter.active() {
		title += " · filter: " + p.filter.describe()
	}
	var scratch []byte
	spec := listSpec{
		title:  title,
		header: string(hb),
		n:      len(p.shown),
		empty:  "  no blocks yet: when a ban or ACL matches live traffic its sessions show here",
		row: func(b []byte, i int) ([]byte, *wrap) {
			k := &p.all[p.shown[i]]
			b = append(b, ' ')
			b = k.At.In(p.loc).AppendFormat(b, "15:04:05")
			b = append(b, "  "...)
			scratch = flowText(scratch[:0], k)
			b = appendPadRightB(b, scratch, flowW)
			b = append(b, "  "...)
			scratch = append(scratch[:0], k.RuleKind...)
			scratch = append(scratch, '#')
			scratch = strconv.AppendUint(scratch, k.RuleID, 10)
			scratch = append(scratch, ' ')
			scratch = append(scratch, k.Origin...)
			if k.Proactive {
				scratch = append(scratch, " pro"...)
			}
			b = appendPadRightB(b, scratch, ruleW)
			b = append(b, ' ')
			scratch = strconv.AppendInt(scratch[:0], int64(k.ToSrc), 10)
			scratch = append(scratch, '/')
			scratch = strconv.AppendInt(scratch, int64(k.ToDst), 10)
			b = appendPadLeftB(b, scratch, rstW)
			b = append(b, "  "...)
			b = appendPadRight(b, outcomeText(k.Outcome, compact), outW)
			b = append(b, ' ')
			scratch = latency.Append(scratch[:0], k.Reaction)
			b = appendPadLeftB(b, scratch, reactW)
			if withReason && k.Reason != "" {
				b = append(b, "  "...)
				b = append(b, k.Reason...)
			}
			switch k.Outcome {
			case sensor.OutcomeFailed:
				return b, &p.st.w.failed
			case sensor.OutcomeConfirmed:
				return b, &p.st.w.confirmed
			case sensor.OutcomeObserved, sensor.OutcomeRetrying:
				return b, &p.st.w.pending
			}
			return b, nil
		},
	}
	p.cache, p.buf = renderList(p.st, p.w, p.h, p.focused, &p.cur, p.buf, spec)
	p.valid = true
	return p.cache
}
