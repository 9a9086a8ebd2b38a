package ui

import (
	"image/color"
	"os"
	"strings"

	"charm.land/bubbles/v2/help"
	"charm.land/lipgloss/v2"
)

// Styles holds every style the dashboard uses. States never rely on colour
// alone: each one also has a text marker ("[ ENFORCE ]", "BAN", "FAILED",
// "PAUSED") and, where it matters, bold or reverse video, which survive
// NO_COLOR.
type Styles struct {
	App         lipgloss.Style // product name in the header
	ModeEnforce lipgloss.Style // "[ ENFORCE ]" badge
	ModeObserve lipgloss.Style // "[ OBSERVE · not blocking ]" badge
	Paused      lipgloss.Style // "PAUSED" marker
	Stale       lipgloss.Style // data older than expected, or the backend failing
	Warn        lipgloss.Style // a number that needs attention (kernel drops)

	PaneTitle      lipgloss.Style // an unfocused pane's title line
	PaneTitleFocus lipgloss.Style // the focused pane's title line
	ColHeader      lipgloss.Style // column headers
	Selected       lipgloss.Style // the selected row of the focused pane
	SelectedBlur   lipgloss.Style // the selected row of an unfocused pane
	Empty          lipgloss.Style // "no talkers yet" and similar

	Ban   lipgloss.Style // BAN marker
	Allow lipgloss.Style // ALLOW marker

	Confirmed lipgloss.Style // block outcome: confirmed
	Failed    lipgloss.Style // block outcome: FAILED
	Pending   lipgloss.Style // block outcome: pending / retrying / would-block

	StatusBusy lipgloss.Style // "banning 10.0.0.5…"
	StatusOK   lipgloss.Style // "banned 10.0.0.5 for 1h"
	StatusErr  lipgloss.Style // the backend's refusal, verbatim

	Body        lipgloss.Style // plain dialog text
	Dialog      lipgloss.Style // confirmation and form box
	DialogTitle lipgloss.Style
	DialogWarn  lipgloss.Style // the consequence line of a confirmation
	Field       lipgloss.Style // an input field
	FieldFocus  lipgloss.Style // the input field being edited
	Hint        lipgloss.Style // key hints inside dialogs

	Help help.Styles // short and full help

	// Row-level styles reduced to their escape sequences, so a row costs a
	// string concatenation instead of a lipgloss Render (which measures
	// and splits its input on every call).
	w rowStyles
}

// rowStyles are the styles applied to whole rows and titles, pre-split.
type rowStyles struct {
	paneTitle, paneTitleFocus, colHeader, selected, selectedBlur, empty wrap
	confirmed, failed, pending, allow                                   wrap
}

// wrap is a style as the escape sequences before and after its text. Only
// for styles without width, padding, margins or borders.
type wrap struct{ pre, post string }

func wrapOf(st lipgloss.Style) wrap {
	r := st.Render("X") // SGR sequences never contain an X
	i := strings.IndexByte(r, 'X')
	return wrap{pre: r[:i], post: r[i+1:]}
}

// write writes s in the style.
func (w wrap) write(sb *strings.Builder, s string) {
	sb.WriteString(w.pre)
	sb.WriteString(s)
	sb.WriteString(w.post)
}

// writeBytes writes b in the style.
func (w wrap) writeBytes(sb *strings.Builder, b []byte) {
	sb.WriteString(w.pre)
	sb.Write(b)
	sb.WriteString(w.post)
}

// noColor reports whether the NO_COLOR convention (https://no-color.org)
// asks for no colour: any non-empty value.
func noColor() bool { return os.Getenv("NO_COLOR") != "" }

// NewStyles returns the dashboard's styles. With noColor set they use only
// bold, reverse, underline and faint; otherwise they add the 16 ANSI
// colours, which follow the terminal's own theme on light and dark
// backgrounds alike.
func NewStyles(noColor bool) Styles {
	s := lipgloss.NewStyle
	fg := func(st lipgloss.Style, c color.Color) lipgloss.Style {
		if noColor {
			return st
		}
		return st.Foreground(c)
	}
	bg := func(st lipgloss.Style, c color.Color) lipgloss.Style {
		if noColor {
			return st
		}
		return st.Background(c).Foreground(lipgloss.Black).Reverse(false)
	}
	st := Styles{
		App:         s().Bold(true),
		ModeEnforce: bg(s().Bold(true).Reverse(true), lipgloss.Red),
		ModeObserve: bg(s().Bold(true).Reverse(true), lipgloss.Yellow),
		Paused:      bg(s().Bold(true).Reverse(true), lipgloss.Cyan),
		Stale:       fg(s().Bold(true), lipgloss.Red),
		Warn:        fg(s().Bold(true), lipgloss.Red),

		PaneTitle:      s().Bold(true),
		PaneTitleFocus: s().Bold(true).Reverse(true),
		ColHeader:      s().Underline(true),
		Selected:       s().Reverse(true),
		SelectedBlur:   s().Underline(true),
		Empty:          s().Faint(true),

		Ban:   fg(s().Bold(true), lipgloss.Red),
		Allow: fg(s().Bold(true), lipgloss.Green),

		Confirmed: fg(s(), lipgloss.Green),
		Failed:    fg(s().Bold(true), lipgloss.Red),
		Pending:   fg(s(), lipgloss.Yellow),

		StatusBusy: fg(s().Bold(true), lipgloss.Yellow),
		StatusOK:   fg(s().Bold(true), lipgloss.Green),
		StatusErr:  fg(s().Bold(true).Reverse(true), lipgloss.Red),

		Body:        s(),
		Dialog:      s().Border(lipgloss.RoundedBorder()).Padding(0, 1),
		DialogTitle: s().Bold(true),
		DialogWarn:  fg(s().Bold(true), lipgloss.Red),
		Field:       s().Underline(true),
		FieldFocus:  s().Reverse(true),
		Hint:        s().Faint(true),
	}
	if noColor {
		// Without colour the error line must still stand out: reverse video
		// is a decoration NO_COLOR keeps.
		st.StatusErr = s().Bold(true).Reverse(true)
	}
	st.w = rowStyles{
		paneTitle: wrapOf(st.PaneTitle), paneTitleFocus: wrapOf(st.PaneTitleFocus),
		colHeader: wrapOf(st.ColHeader), selected: wrapOf(st.Selected),
		selectedBlur: wrapOf(st.SelectedBlur), empty: wrapOf(st.Empty),
		confirmed: wrapOf(st.Confirmed), failed: wrapOf(st.Failed),
		pending: wrapOf(st.Pending), allow: wrapOf(st.Allow),
	}
	st.Help = help.Styles{
		Ellipsis:       s().Faint(true),
		ShortKey:       s().Bold(true),
		ShortDesc:      s().Faint(true),
		ShortSeparator: s().Faint(true),
		FullKey:        s().Bold(true),
		FullDesc:       s(),
		FullSeparator:  s().Faint(true),
	}
	return st
}
