package ui

import "strings"

// listSpec describes a simple scrolling pane (blocks, bans, flows) for
// renderList: its title, column header and a row writer.
type listSpec struct {
	title  string
	header string
	n      int
	empty  string
	// row appends row i's text and may return a style for the whole row
	// (nil for none): row-level styling, never per cell.
	row func(b []byte, i int) ([]byte, *wrap)
}

// renderList renders a pane of height h: a title line, a column header and
// the visible rows around the cursor.
func renderList(st *Styles, w, h int, focused bool, cur *cursor, buf []byte, ls listSpec) (string, []byte) {
	var sb strings.Builder
	sb.Grow(w * h * 2)
	title := string(padTo(appendTrunc2(nil, ls.title, w), w))
	if focused {
		st.w.paneTitleFocus.write(&sb, title)
	} else {
		st.w.paneTitle.write(&sb, title)
	}
	if h < 2 {
		return sb.String(), buf
	}
	sb.WriteByte('\n')
	st.w.colHeader.writeBytes(&sb, appendTrunc2(buf[:0], ls.header, w))
	body := max(1, h-2)
	cur.clamp(ls.n, body)
	if ls.n == 0 {
		sb.WriteByte('\n')
		st.w.empty.writeBytes(&sb, appendTrunc2(buf[:0], ls.empty, w))
		return sb.String(), buf
	}
	last := min(ls.n, cur.offset+body)
	for i := cur.offset; i < last; i++ {
		sb.WriteByte('\n')
		b, style := ls.row(appendSelMark(buf[:0], i == cur.idx), i)
		b = truncBytes(b, w)
		buf = b
		switch {
		case i == cur.idx && focused:
			st.w.selected.writeBytes(&sb, padTo(b, w))
		case style != nil:
			style.writeBytes(&sb, b)
		default:
			sb.Write(b)
		}
	}
	return sb.String(), buf
}

// appendTrunc2 appends s, cut to w cells with "…" when wider.
func appendTrunc2(dst []byte, s string, w int) []byte {
	if width(s) <= w {
		return append(dst, s...)
	}
	return appendTrunc(dst, s, w)
}

// truncBytes cuts b to w cells, ending in "…" when it was wider.
func truncBytes(b []byte, w int) []byte {
	n := 0
	for i := range string(b) {
		if n == w-1 {
			rest := 0
			for range string(b[i:]) {
				rest++
				if rest > 1 {
					break
				}
			}
			if rest > 1 {
				return append(b[:i], "…"...)
			}
			return b
		}
		n++
	}
	return b
}

// appendSelMark starts a row with "▸" when it is the selection, so the
// selection shows in a plain-text capture and without any styling.
func appendSelMark(b []byte, selected bool) []byte {
	if selected {
		return append(b, "▸"...)
	}
	return append(b, ' ')
}
