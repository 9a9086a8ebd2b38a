package ui

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"canopy/flow"
	"canopy/internal/si"
)

// flowsPane is the drill-down: the live flows of one address, fetched with
// Backend.Flows when the operator presses Enter on a talker.
type flowsPane struct {
	st      *Styles
	w, h    int
	focused bool

	target  netip.Prefix // an address, or a network
	flows   []flow.Info
	err     error
	loading bool
	now     time.Time
	cur     cursor

	cache string
	valid bool
	buf   []byte
}

func (p *flowsPane) SetSize(w, h int) {
	if p.w != w || p.h != h {
		p.w, p.h, p.valid = w, h, false
	}
}

func (p *flowsPane) SetFocused(f bool) {
	if p.focused != f {
		p.focused, p.valid = f, false
	}
}

// Open starts showing the flows of target (loading until SetData).
func (p *flowsPane) Open(target netip.Prefix) {
	*p = flowsPane{st: p.st, w: p.w, h: p.h, focused: p.focused, target: target, loading: true, buf: p.buf}
}

// SetData replaces the flows (or records the error fetching them), the
// heaviest first.
func (p *flowsPane) SetData(fs []flow.Info, err error, now time.Time) {
	fs = slices.Clone(fs)
	slices.SortStableFunc(fs, func(a, b flow.Info) int {
		if c := cmp.Compare(b.BytesAB+b.BytesBA, a.BytesAB+a.BytesBA); c != 0 {
			return c
		}
		return b.LastSeen.Compare(a.LastSeen)
	})
	p.flows, p.err, p.now, p.loading = fs, err, now, false
	p.cur.clamp(len(fs), max(1, p.h-2))
	p.valid = false
}

// Move shifts the selection by delta rows.
func (p *flowsPane) Move(delta int) {
	p.cur.move(delta, len(p.flows), max(1, p.h-2))
	p.valid = false
}

// View renders the pane.
func (p *flowsPane) View() string {
	if p.valid {
		return p.cache
	}
	epW := 21
	for i := range p.flows {
		f := &p.flows[i]
		epW = max(epW, len(appendEndpoint(p.buf[:0], f.A, f.APort))+3+len(appendEndpoint(p.buf[:0], f.B, f.BPort)))
	}
	epW = min(epW, max(21, p.w/2))
	var hb []byte
	hb = append(hb, "  proto  "...)
	hb = appendPadRight(hb, "initiator → responder", epW)
	hb = append(hb, "  "...)
	hb = appendPadRight(hb, "state", 11)
	for _, h := range [...]string{"pkts →", "pkts ←", "bytes →", "bytes ←"} {
		hb = append(hb, ' ')
		hb = appendPadLeft(hb, h, 9)
	}
	hb = append(hb, ' ')
	hb = appendPadLeft(hb, "age", 6)
	hb = append(hb, ' ')
	hb = appendPadLeft(hb, "idle", 6)
	title := " Flows of " + targetString(p.target)
	switch {
	case p.loading:
		title += " · loading…"
	case p.err != nil:
		title += " · error: " + p.err.Error()
	default:
		title += " · " + strconv.Itoa(len(p.flows)) + " live"
	}
	title += " · esc back · b bans " + targetString(p.target)
	empty := "  no live flows"
	if p.loading {
		empty = "  loading…"
	}
	var scratch []byte
	spec := listSpec{
		title:  title,
		header: string(hb),
		n:      len(p.flows),
		empty:  empty,
		row: func(b []byte, i int) ([]byte, *wrap) {
			f := &p.flows[i]
			b = append(b, ' ')
			b = appendPadRight(b, protoName(f.Proto), 5)
			b = append(b, "  "...)
			scratch = appendEndpoint(scratch[:0], f.A, f.APort)
			scratch = append(scratch, " → "...)
			scratch = appendEndpoint(scratch, f.B, f.BPort)
			b = appendPadRightB(b, scratch, epW)
			b = append(b, "  "...)
			b = appendPadRight(b, f.State, 11)
			for _, n := range [...]uint64{f.PktsAB, f.PktsBA} {
				b = append(b, ' ')
				scratch = appendInt(scratch[:0], n)
				b = appendPadLeftB(b, scratch, 9)
			}
			for _, n := range [...]uint64{f.BytesAB, f.BytesBA} {
				b = append(b, ' ')
				scratch = si.AppendSize(scratch[:0], n)
				b = appendPadLeftB(b, scratch, 9)
			}
			b = append(b, ' ')
			b = appendPadLeft(b, ago(f.FirstSeen, p.now), 6)
			b = append(b, ' ')
			b = appendPadLeft(b, ago(f.LastSeen, p.now), 6)
			if f.Blocked {
				b = append(b, "  BLOCKED"...)
				return b, &p.st.w.failed
			}
			return b, nil
		},
	}
	p.cache, p.buf = renderList(p.st, p.w, p.h, p.focused, &p.cur, p.buf, spec)
	p.valid = true
	return p.cache
}

// ago is how long before now t was: "3s", "12m05s"; "-" when unknown.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return fmtDuration(d)
}
