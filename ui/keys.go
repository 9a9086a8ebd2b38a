package ui

import "charm.land/bubbles/v2/key"

// KeyMap is every key binding of the dashboard, with its help text. It is
// the only place keys are defined.
type KeyMap struct {
	// Navigation within the focused pane.
	Up, Down, PageUp, PageDown, Top, Bottom key.Binding
	// Focus.
	NextPane, PrevPane, Talkers, Blocks, Bans key.Binding
	// Drill-down into the selected talker's flows, and back.
	Open, Back key.Binding

	// Actions. Ban, Unban, Mode and Quit (with bans active) confirm first.
	Ban, Unban, Mode, Quit key.Binding

	// View.
	Filter, Sort, Window, Kind, Pause, Units, Help key.Binding

	// Inside dialogs and the filter line.
	Confirm, Cancel, NextField, PrevField key.Binding
}

// DefaultKeyMap returns the dashboard's bindings.
func DefaultKeyMap() KeyMap {
	b := func(keys []string, k, desc string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(k, desc))
	}
	return KeyMap{
		Up:       b([]string{"up", "k"}, "↑/k", "up"),
		Down:     b([]string{"down", "j"}, "↓/j", "down"),
		PageUp:   b([]string{"pgup", "ctrl+b"}, "pgup", "page up"),
		PageDown: b([]string{"pgdown", "ctrl+f"}, "pgdn", "page down"),
		Top:      b([]string{"home", "g"}, "g", "top"),
		Bottom:   b([]string{"end", "G"}, "G", "bottom"),

		NextPane: b([]string{"tab"}, "tab", "pane"),
		PrevPane: b([]string{"shift+tab"}, "shift+tab", "previous pane"),
		Talkers:  b([]string{"1"}, "1", "talkers"),
		Blocks:   b([]string{"2"}, "2", "live blocks"),
		Bans:     b([]string{"3"}, "3", "bans"),
		Open:     b([]string{"enter"}, "enter", "flows of selected IP"),
		Back:     b([]string{"esc"}, "esc", "back / clear"),

		Ban:   b([]string{"b"}, "b", "ban"),
		Unban: b([]string{"u"}, "u", "unban"),
		Mode:  b([]string{"o"}, "o", "observe/enforce"),
		Quit:  b([]string{"q", "ctrl+c"}, "q", "quit"),

		Filter: b([]string{"/"}, "/", "filter"),
		Sort:   b([]string{"s"}, "s", "sort"),
		Window: b([]string{"w"}, "w", "window"),
		Kind:   b([]string{"t"}, "t", "by src/dst/pair/port/net"),
		Pause:  b([]string{"p"}, "p", "pause"),
		Units:  b([]string{"U"}, "U", "bits/bytes"),
		Help:   b([]string{"?"}, "?", "more"),

		Confirm:   b([]string{"y", "enter"}, "y/enter", "confirm"),
		Cancel:    b([]string{"esc", "n"}, "esc", "cancel"),
		NextField: b([]string{"tab", "down"}, "tab", "next field"),
		PrevField: b([]string{"shift+tab", "up"}, "shift+tab", "previous field"),
	}
}

// ShortHelp is the one-line help under the panes.
func (k KeyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Ban, k.Unban, k.Filter, k.Pause, k.Mode, k.Help, k.Quit, k.Sort, k.Window, k.NextPane}
}

// FullHelp is the help `?` opens, in columns, with the longer
// explanations the one-line help has no room for.
func (k KeyMap) FullHelp() [][]key.Binding {
	long := func(b key.Binding, desc string) key.Binding {
		b.SetHelp(b.Help().Key, desc)
		return b
	}
	return [][]key.Binding{
		{
			long(k.Ban, "ban selected IP (asks)"),
			long(k.Unban, "unban selected ban (asks)"),
			long(k.Mode, "observe ⇄ enforce (asks)"),
			long(k.Quit, "quit (asks if bans active)"),
		},
		{
			long(k.Filter, "filter: IP, prefix or port"),
			long(k.Sort, "sort: bits/s, pkts/s, flows"),
			long(k.Window, "window: 2s, 10s, 40s avg"),
			long(k.Kind, "talkers by src, dst, pair, port, net"),
			long(k.Units, "bits/s ⇄ bytes/s"),
		},
		{
			long(k.Pause, "pause numbers (capture, blocking go on)"),
			k.Open, k.Back,
			long(k.Help, "this help"),
		},
		{long(k.NextPane, "next pane"), k.PrevPane, k.Talkers, k.Blocks, k.Bans},
		{k.Up, k.Down, k.PageUp, k.PageDown, k.Top, k.Bottom},
	}
}
