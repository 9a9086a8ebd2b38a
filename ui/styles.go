package ui

import (
	"image/color"
	"os"

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
	Label       lipgloss.Style // quiet labels in the header ("flows", "drops")
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

	Dialog      lipgloss.Style // confirmation and form box
	DialogTitle lipgloss.Style
	DialogWarn  lipgloss.Style // the consequence line of a confirmation
	Field       lipgloss.Style // an input field
	FieldFocus  lipgloss.Style // the input field being edited
	Hint        lipgloss.Style // key hints inside dialogs

	Help help.Styles // short and full help
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
		Label:       s().Faint(true),
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
