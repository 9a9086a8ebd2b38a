package ui

import (
	"net/netip"
	"strings"
	"time"
	"unicode"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"

	"canopy/rules"
	"canopy/sensor"
)

// field is a one-line text input: typing, backspace, ctrl+u and paste. It
// has no blinking cursor, so an open form costs no timer messages.
type field struct {
	val []rune
}

func (f *field) String() string { return string(f.val) }

func (f *field) Set(s string) { f.val = []rune(s) }

// key edits the field; it reports whether the key was text editing.
func (f *field) key(k tea.KeyPressMsg) bool {
	switch k.String() {
	case "backspace", "ctrl+h":
		if len(f.val) > 0 {
			f.val = f.val[:len(f.val)-1]
		}
		return true
	case "ctrl+u":
		f.val = f.val[:0]
		return true
	case "ctrl+w":
		i := len(f.val)
		for i > 0 && f.val[i-1] == ' ' {
			i--
		}
		for i > 0 && f.val[i-1] != ' ' {
			i--
		}
		f.val = f.val[:i]
		return true
	}
	if k.Text != "" && k.Mod&^tea.ModShift == 0 {
		f.paste(k.Text)
		return true
	}
	return false
}

// paste appends printable text (newlines and controls dropped).
func (f *field) paste(s string) {
	for _, r := range s {
		if unicode.IsPrint(r) && len(f.val) < 200 {
			f.val = append(f.val, r)
		}
	}
}

// dialogKind is which question a dialog asks.
type dialogKind uint8

const (
	dlgBan   dialogKind = iota // ban form: duration and reason
	dlgUnban                   // confirm removing an entry
	dlgMode                    // confirm switching enforce/observe
	dlgQuit                    // confirm quitting while bans are active
)

// Ban form focus: review (no field being edited: y/Enter bans) or one field.
const (
	focusReview = iota
	focusDuration
	focusReason
	numFormFocus
)

// dialog is the one modal at a time. Dialogs take every key first; Esc
// always cancels, and nothing happens without y or Enter.
type dialog struct {
	kind dialogKind

	// dlgBan
	target   netip.Prefix // an address, or a network
	context  []string     // what the operator should know: rate, existing ban, allowlist
	duration field
	reason   field
	focus    int
	err      string

	// dlgUnban
	entry rules.Entry

	// dlgMode
	mode sensor.Mode // the mode to switch to

	// dlgQuit
	bans     int
	attached bool
}

// view renders the dialog's box, at most w cells wide.
func (d *dialog) view(st *Styles, w int, now time.Time) string {
	bw := min(w-4, 76)
	inner := bw - 4 // border and padding
	var lines []string
	add := func(s string) { lines = append(lines, s) }
	wrap := func(style lipgloss.Style, s string) {
		for _, l := range wrapText(s, inner) {
			add(style.Render(l))
		}
	}
	switch d.kind {
	case dlgBan:
		add(st.DialogTitle.Render("Ban " + targetString(d.target)))
		for _, c := range d.context {
			wrap(st.Hint, c)
		}
		add("")
		add(formLine(st, "duration", d.duration.String(), d.focus == focusDuration, "e.g. 1h, 30m, 7d, never", inner))
		add(formLine(st, "reason  ", d.reason.String(), d.focus == focusReason, "optional, kept in the audit log", inner))
		add("")
		wrap(st.DialogWarn, "Resets every session of "+targetString(d.target)+" in both directions and blocks new ones until it expires.")
		if d.err != "" {
			wrap(st.StatusErr, d.err)
		}
		if d.focus == focusReview {
			add(st.Hint.Render("y/enter ban · tab edit duration/reason · esc cancel"))
		} else {
			add(st.Hint.Render("enter ban · tab next field · esc cancel"))
		}
	case dlgUnban:
		e := &d.entry
		add(st.DialogTitle.Render("Remove " + string(e.Kind) + " " + entryValue(e) + "?"))
		meta := "entry #" + itoa(int64(e.ID)) + " · origin " + string(e.Origin) + " · expires in " + fmtRemaining(e.Expires, now)
		if e.Reason != "" {
			meta += " · reason: " + e.Reason
		}
		wrap(st.Hint, meta)
		add("")
		wrap(st.DialogWarn, "Traffic from and to "+entryValue(e)+" will flow again; live sessions are not restored, new ones are allowed.")
		add(st.Hint.Render("y/enter remove · esc keep it"))
	case dlgMode:
		if d.mode == sensor.ModeObserve {
			add(st.DialogTitle.Render("Switch to OBSERVE (dry run)?"))
			add("")
			wrap(st.DialogWarn, "canopy will STOP sending resets: banned sessions keep flowing and are only logged as would-block.")
			add(st.Hint.Render("y/enter stop blocking · esc keep enforcing"))
		} else {
			add(st.DialogTitle.Render("Switch to ENFORCE?"))
			add("")
			wrap(st.DialogWarn, "canopy will START sending resets now for every ban and ACL in force ("+plural(d.bans, "entry", "entries")+"), including sessions already open.")
			add(st.Hint.Render("y/enter start blocking · esc stay in observe"))
		}
	case dlgQuit:
		add(st.DialogTitle.Render("Quit the dashboard?"))
		add("")
		if d.attached {
			wrap(st.Body, "The daemon keeps running and keeps enforcing its "+plural(d.bans, "ban", "bans")+": quitting only closes this view.")
		} else {
			wrap(st.DialogWarn, plural(d.bans, "ban is", "bans are")+" active and blocking stops with this process: banned hosts get through once canopy exits (bans are kept and return on the next start).")
		}
		add(st.Hint.Render("y/enter quit · esc stay"))
	}
	return st.Dialog.Width(bw).Render(strings.Join(lines, "\n"))
}

// formLine renders "label: [value]" with the focused field in reverse video
// and a visible end-of-text cursor.
func formLine(st *Styles, label, val string, focused bool, hint string, w int) string {
	shown := val
	if focused {
		shown += "▏"
	}
	fw := max(12, min(24, w-len(label)-2))
	cell := string(appendPadRight(nil, shown, fw))
	line := label + ": "
	if focused {
		line += st.FieldFocus.Render(cell)
	} else {
		line += st.Field.Render(cell)
	}
	if rest := w - len(label) - 2 - fw - 2; rest > 8 {
		line += "  " + st.Hint.Render(string(appendTrunc2(nil, hint, rest)))
	}
	return line
}

// wrapText breaks s into lines of at most w cells at spaces.
func wrapText(s string, w int) []string {
	if w < 10 {
		w = 10
	}
	var out []string
	var cur []byte
	for _, word := range strings.Fields(s) {
		switch {
		case len(cur) == 0:
			cur = append(cur, word...)
		case width(string(cur))+1+width(word) <= w:
			cur = append(cur, ' ')
			cur = append(cur, word...)
		default:
			out = append(out, string(cur))
			cur = append(cur[:0], word...)
		}
	}
	if len(cur) > 0 || len(out) == 0 {
		out = append(out, string(cur))
	}
	return out
}

func itoa(n int64) string { return string(appendInt(nil, uint64(max(0, n)))) }

// plural says "1 ban" or "3 bans".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return itoa(int64(n)) + " " + many
}
