package ui

import (
	"strconv"
	"strings"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"

	"canopy/internal/latency"
	"canopy/sensor"
)

// View returns the frame. It is rebuilt only when a message changed
// something on screen; otherwise the cached frame is returned as is (View
// runs after every message, ticks included).
func (m *Model) View() tea.View {
	if m.dirty || m.frame == "" {
		m.frame = m.render()
		m.dirty = false
	}
	v := tea.NewView(m.frame)
	v.AltScreen = true
	v.WindowTitle = "canopy"
	return v
}

// render builds the whole frame.
func (m *Model) render() string {
	if m.width < MinWidth || m.height < MinHeight {
		if m.width == 0 && m.height == 0 {
			return "canopy: starting…"
		}
		return "need " + strconv.Itoa(MinWidth) + "×" + strconv.Itoa(MinHeight) +
			", have " + strconv.Itoa(m.width) + "×" + strconv.Itoa(m.height) +
			"\nenlarge the terminal (q quits; capture and blocking continue meanwhile)"
	}
	var sb strings.Builder
	sb.Grow(m.width * m.height * 2)
	m.writeHeader(&sb)
	if m.drill {
		writePane(&sb, m.flows.View(), m.flows.h)
	} else {
		writePane(&sb, m.talkers.View(), m.talkers.h)
	}
	writePane(&sb, m.blocks.View(), m.blocks.h)
	writePane(&sb, m.bans.View(), m.bans.h)
	if rest := m.writeStatus(&sb); rest != "" {
		// A long error takes the help line rather than being cut: the
		// operator must be able to read all of it.
		sb.WriteByte('\n')
		sb.WriteString(rest)
	} else {
		sb.WriteByte('\n')
		sb.WriteString(m.shortHelp())
	}
	frame := sb.String()
	switch {
	case m.dlg != nil:
		frame = overlay(frame, m.dlg.view(m.st, m.width, m.now()), m.width, m.height)
	case m.help.ShowAll:
		frame = overlay(frame, m.fullHelpBox(), m.width, m.height)
	}
	return frame
}

// overlay draws box over frame, centred across and a third of the way
// down.
func overlay(frame, box string, w, h int) string {
	x := max(0, (w-lipgloss.Width(box))/2)
	y := max(0, (h-lipgloss.Height(box))/3)
	return lipgloss.NewCompositor(
		lipgloss.NewLayer(frame),
		lipgloss.NewLayer(box).X(x).Y(y).Z(1),
	).Render()
}

// fullHelpBox is every key, in a box over the dashboard.
func (m *Model) fullHelpBox() string {
	inner := m.width - 4 - 2
	body := m.st.DialogTitle.Render("Keys") + "\n\n" + m.helpView() + "\n\n" +
		m.st.Hint.Render("any key closes this · capture and blocking never pause")
	return m.st.Dialog.MaxWidth(inner + 4).Render(body)
}

// writePane writes a pane's view followed by a newline, padded with empty
// lines to h lines so the next pane starts where the layout says.
func writePane(sb *strings.Builder, v string, h int) {
	n := strings.Count(v, "\n") + 1
	sb.WriteString(v)
	for ; n < h; n++ {
		sb.WriteByte('\n')
	}
	sb.WriteByte('\n')
}

// shortHelp is the one-line help, cached per width.
func (m *Model) shortHelp() string {
	if m.helpLine == "" || m.helpKey != m.width {
		m.helpLine = m.help.ShortHelpView(m.keys.ShortHelp())
		m.helpKey = m.width
	}
	return m.helpLine
}

// helpView is the full help's columns for the box `?` opens.
func (m *Model) helpView() string {
	return fullHelp(m.st, m.keys.FullHelp(), m.width-6)
}

// fullHelp lays the help groups out as columns and, when the terminal is
// too narrow for all of them side by side, wraps whole columns onto more
// rows (bubbles' help would cut them off, hiding keys).
func fullHelp(st *Styles, groups [][]key.Binding, w int) string {
	const gap = 4
	type column struct {
		lines []string
		w     int
	}
	var cols []column
	for _, g := range groups {
		kw := 0
		for _, b := range g {
			if b.Enabled() {
				kw = max(kw, width(b.Help().Key))
			}
		}
		var c column
		for _, b := range g {
			if !b.Enabled() {
				continue
			}
			h := b.Help()
			k := string(appendPadRight(nil, h.Key, kw))
			d := string(appendTrunc2(nil, h.Desc, max(8, w-kw-1)))
			c.lines = append(c.lines, st.Help.FullKey.Render(k)+" "+st.Help.FullDesc.Render(d))
			c.w = max(c.w, kw+1+width(d))
		}
		if len(c.lines) > 0 {
			cols = append(cols, c)
		}
	}
	var rows []string
	for len(cols) > 0 {
		n, used := 1, cols[0].w
		for n < len(cols) && used+gap+cols[n].w <= w {
			used += gap + cols[n].w
			n++
		}
		height := 0
		for _, c := range cols[:n] {
			height = max(height, len(c.lines))
		}
		for i := 0; i < height; i++ {
			var sb strings.Builder
			for j, c := range cols[:n] {
				cell, cw := "", 0
				if i < len(c.lines) {
					cell, cw = c.lines[i], lipgloss.Width(c.lines[i])
				}
				sb.WriteString(cell)
				if j < n-1 {
					sb.WriteString(strings.Repeat(" ", c.w-cw+gap))
				}
			}
			rows = append(rows, sb.String())
		}
		cols = cols[n:]
	}
	return strings.Join(rows, "\n")
}

// writeHeader writes the two header lines: what is watched and in which
// mode, then the headline numbers.
func (m *Model) writeHeader(sb *strings.Builder) {
	st := m.st
	s := &m.latest.Status
	var l []string
	l = append(l, st.App.Render(" canopy"))
	ifaces := m.cfg.Ifaces
	if len(ifaces) == 0 {
		ifaces = s.Ifaces
	}
	src := strings.Join(ifaces, ",")
	if s.Source != "" && s.Source != "live" {
		src = "replay " + s.Source
	}
	if src == "" {
		src = "no interface"
	}
	l = append(l, src)
	switch {
	case !m.haveSnap:
		l = append(l, st.Stale.Render("waiting for the first snapshot…"))
	case s.Mode == sensor.ModeObserve:
		l = append(l, st.ModeObserve.Render("[ OBSERVE · not blocking ]"))
	default:
		l = append(l, st.ModeEnforce.Render("[ ENFORCE ]"))
	}
	if m.paused {
		l = append(l, st.Paused.Render("[ PAUSED · p resumes ]"))
	}
	if m.cfg.Attached {
		l = append(l, "attached to daemon")
	}
	if m.haveSnap && !m.traffic.At.IsZero() {
		l = append(l, m.traffic.At.In(m.loc).Format("15:04:05"))
	}
	if m.isStale() {
		msg := "STALE"
		if m.haveSnap {
			msg += ": no snapshot for " + fmtDuration(m.now().Sub(m.lastOK))
		}
		if m.fetchErr != nil {
			msg += ": " + m.fetchErr.Error()
		}
		l = append(l, st.Stale.Render(msg))
	}
	sb.WriteString(truncLine(strings.Join(l, "  "), m.width))
	sb.WriteByte('\n')

	// Line 2: the numbers, most urgent first.
	w := m.view.window
	t := &m.traffic.Totals
	var b []byte
	b = append(b, ' ')
	b = appendRate(b, t.Bits[w], m.view.bytes)
	b = append(b, "  "...)
	b = appendCount(b, t.Pkts[w])
	b = append(b, " pkts/s ("...)
	b = append(b, w.String()...)
	b = append(b, " avg) │ kernel drops "...)
	line := string(b)
	drops := string(appendInt(nil, s.Capture.Drops))
	if s.Capture.Drops > 0 {
		drops = st.Warn.Render(drops + " !")
	}
	b = append(b[:0], " │ flows "...)
	b = appendInt(b, uint64(max(0, s.Flows)))
	line2 := truncLine(line+drops+string(b), m.width)
	b = b[:0]
	if m.headerH() == 2 {
		b = append(b, " │"...)
	}
	b = append(b, " bans "...)
	b = appendInt(b, uint64(activeBans(m.latest.Rules)))
	b = append(b, " │ blocks "...)
	bs := &s.Blocks
	if s.Mode == sensor.ModeObserve {
		b = append(b, "would-block "...)
		b = appendInt(b, bs.Observed)
	} else if bs.Confirmed+bs.Failed == 0 {
		b = append(b, "none decided yet"...)
	} else {
		b = strconv.AppendFloat(b, bs.SuccessRate*100, 'f', 1, 64)
		b = append(b, "% ok ("...)
		b = appendInt(b, bs.Confirmed)
		b = append(b, '/')
		b = appendInt(b, bs.Confirmed+bs.Failed)
		b = append(b, ')')
	}
	if bs.Killing > 0 {
		// A wide ban's kill goes on at the injection ceiling's pace: say
		// so until its last session is reset (before the reaction, which
		// a narrow terminal cuts first).
		b = append(b, " │ killing sessions of "...)
		b = appendInt(b, uint64(bs.Killing))
		b = append(b, " ban"...)
		if bs.Killing > 1 {
			b = append(b, 's')
		}
	}
	b = append(b, " │ reaction p99 "...)
	b = latency.Append(b, bs.ReactionP99)
	if m.headerH() == 2 {
		sb.WriteString(truncLine(line2+string(b), m.width))
	} else {
		sb.WriteString(line2)
		sb.WriteByte('\n')
		sb.WriteString(truncLine(string(b), m.width))
	}
	sb.WriteByte('\n')
}

// headerH is the header's height: the numbers take two lines on narrow
// terminals rather than losing their tail.
func (m *Model) headerH() int {
	if m.width >= 116 {
		return 2
	}
	return 3
}

// writeStatus writes the status line: the filter being typed, or the last
// action's progress or result. An error too long for one line returns its
// second line, styled, for the caller to put where the help goes.
func (m *Model) writeStatus(sb *strings.Builder) string {
	st := m.st
	switch {
	case m.editing:
		line := " filter / " + m.filterIn.String() + "▏"
		hint := "   IP (10.0.0.5), prefix (10.0.0.0/8) or port (443) · enter keeps · esc clears"
		sb.WriteString(truncLine(st.FieldFocus.Render(line)+st.Hint.Render(hint), m.width))
	case m.status == "":
		if !m.haveSnap {
			sb.WriteString(st.Hint.Render(" connecting to the sensor…"))
		}
	default:
		style := st.StatusBusy
		switch m.statusKind {
		case statusOK:
			style = st.StatusOK
		case statusErr:
			style = st.StatusErr
		}
		s := m.status
		if m.statusKind == statusErr {
			s += " (esc dismisses)"
		}
		lines := wrapText(s, m.width-2)
		sb.WriteString(style.Render(" " + string(appendTrunc2(nil, lines[0], m.width-2)) + " "))
		if len(lines) > 1 && m.statusKind == statusErr {
			rest := strings.Join(lines[1:], " ")
			return style.Render(" " + string(appendTrunc2(nil, rest, m.width-2)) + " ")
		}
	}
	return ""
}

// truncLine cuts a styled line to w cells.
func truncLine(s string, w int) string {
	if lipgloss.Width(s) <= w {
		return s
	}
	return ansiTruncate(s, w)
}
