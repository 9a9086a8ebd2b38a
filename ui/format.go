package ui

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/charmbracelet/x/ansi"

	"canopy/internal/si"
)

// Plain formatting helpers. They append to a caller's buffer so a frame of a
// thousand rows costs no per-cell allocation and no fmt; styles are applied
// per row or per segment by the callers, never per cell (see research/tui.md
// §4.2: per-cell lipgloss styling is ~35x slower).

// appendRate appends a bit rate in bits/s ("812 Mb/s") or, when bytes is
// set, the same rate in bytes/s ("101 MB/s").
func appendRate(dst []byte, bitsPerSec float64, bytes bool) []byte {
	if bytes {
		return si.AppendByteRate(dst, bitsPerSec)
	}
	return si.AppendBitRate(dst, bitsPerSec)
}

// appendCount appends a per-second count such as packets/s ("45.6k").
func appendCount(dst []byte, v float64) []byte {
	return si.AppendCount(dst, v)
}

// appendInt appends n with thousands separators ("12,345").
func appendInt(dst []byte, n uint64) []byte {
	var tmp [32]byte
	s := strconv.AppendUint(tmp[:0], n, 10)
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, c)
	}
	return dst
}

// fmtRemaining says how long until t: "59m12s", "3h05m", "2d04h", "never"
// for the zero time and "expired" once past.
func fmtRemaining(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := t.Sub(now)
	if d <= 0 {
		return "expired"
	}
	return fmtDuration(d)
}

// fmtDuration prints a duration at most two units deep: "45s", "59m12s",
// "3h05m", "2d04h".
func fmtDuration(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	var b []byte
	two := func(n int64) { b = append(b, byte('0'+n/10), byte('0'+n%10)) }
	switch {
	case s < 60:
		b = strconv.AppendInt(b, s, 10)
		b = append(b, 's')
	case s < 3600:
		b = strconv.AppendInt(b, s/60, 10)
		b = append(b, 'm')
		two(s % 60)
		b = append(b, 's')
	case s < 86400:
		b = strconv.AppendInt(b, s/3600, 10)
		b = append(b, 'h')
		two(s % 3600 / 60)
		b = append(b, 'm')
	default:
		b = strconv.AppendInt(b, s/86400, 10)
		b = append(b, 'd')
		two(s % 86400 / 3600)
		b = append(b, 'h')
	}
	return string(b)
}

// fmtTTL names a ban duration the way the operator typed it: "1h", "30m",
// "1d", "never".
func fmtTTL(d time.Duration) string {
	if d <= 0 {
		return "never"
	}
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	// time.Duration prints 1h0m0s; trim the zero tails.
	for _, z := range [...]string{"0s", "0m"} {
		if len(s) > len(z)+1 && s[len(s)-len(z):] == z && s[len(s)-len(z)-1] >= 'a' {
			s = s[:len(s)-len(z)]
		}
	}
	return s
}

// parseTTL reads the ban form's duration: Go durations ("90m", "1h30m"),
// days ("7d"), or "never"/"0" for a ban without expiry.
func parseTTL(s string) (time.Duration, error) {
	switch s {
	case "never", "0", "perm", "permanent":
		return 0, nil
	case "":
		return 0, errEmptyTTL
	}
	if n := len(s); n > 1 && s[n-1] == 'd' {
		days, err := strconv.ParseFloat(s[:n-1], 64)
		if err != nil || days <= 0 {
			return 0, errBadTTL
		}
		return time.Duration(days * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errBadTTL
	}
	if d < time.Second {
		return 0, errBadTTL
	}
	return d, nil
}

type ttlError string

func (e ttlError) Error() string { return string(e) }

const (
	errEmptyTTL ttlError = `duration is empty: type e.g. 1h, 30m, 7d or "never"`
	errBadTTL   ttlError = `duration not understood: type e.g. 1h, 30m, 7d or "never"`
)

// sparkRunes are the eight levels of a sparkline cell.
var sparkRunes = [...]rune{'▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'}

// appendSpark appends a sparkline of vals in exactly cells cells. Each cell
// is the maximum of len(vals)/cells consecutive points (so a burst is never
// averaged away), scaled to the row's own peak; a silent cell is a space.
func appendSpark(dst []byte, vals []float32, cells int) []byte {
	if cells <= 0 || len(vals) == 0 {
		return dst
	}
	per := len(vals) / cells
	if per < 1 {
		per = 1
	}
	var peak float32
	for _, v := range vals {
		if v > peak {
			peak = v
		}
	}
	start := len(vals) - per*cells
	for c := 0; c < cells; c++ {
		lo := start + c*per
		var m float32
		for i := lo; i < lo+per; i++ {
			if i >= 0 && vals[i] > m {
				m = vals[i]
			}
		}
		if m <= 0 || peak <= 0 {
			dst = append(dst, ' ')
			continue
		}
		lvl := int(m / peak * float32(len(sparkRunes)))
		if lvl >= len(sparkRunes) {
			lvl = len(sparkRunes) - 1
		}
		dst = utf8.AppendRune(dst, sparkRunes[lvl])
	}
	return dst
}

// width is the display width of plain text. Everything the dashboard prints
// (ASCII, block elements, arrows, µ, …) is one cell per rune.
func width(s string) int { return utf8.RuneCountInString(s) }

// appendPadRight appends s then spaces up to w cells, truncating s with "…"
// when it is wider.
func appendPadRight(dst []byte, s string, w int) []byte {
	n := width(s)
	if n > w {
		return appendTrunc(dst, s, w)
	}
	dst = append(dst, s...)
	for ; n < w; n++ {
		dst = append(dst, ' ')
	}
	return dst
}

// appendPadLeft appends spaces then s, right-aligned in w cells.
func appendPadLeft(dst []byte, s string, w int) []byte {
	n := width(s)
	if n > w {
		return appendTrunc(dst, s, w)
	}
	for ; n < w; n++ {
		dst = append(dst, ' ')
	}
	return append(dst, s...)
}

// appendTrunc appends the first w-1 cells of s and "…".
func appendTrunc(dst []byte, s string, w int) []byte {
	if w <= 0 {
		return dst
	}
	i, n := 0, 0
	for i < len(s) && n < w-1 {
		_, sz := utf8.DecodeRuneInString(s[i:])
		i += sz
		n++
	}
	dst = append(dst, s[:i]...)
	return append(dst, "…"...)
}

// spaces appends n spaces.
func spaces(dst []byte, n int) []byte {
	for ; n > 0; n-- {
		dst = append(dst, ' ')
	}
	return dst
}

// appendPadRightB is appendPadRight for bytes.
func appendPadRightB(dst, s []byte, w int) []byte {
	n := utf8.RuneCount(s)
	if n > w {
		return appendTrunc(dst, string(s), w)
	}
	dst = append(dst, s...)
	return spaces(dst, w-n)
}

// appendPadLeftB is appendPadLeft for bytes.
func appendPadLeftB(dst, s []byte, w int) []byte {
	n := utf8.RuneCount(s)
	if n > w {
		return appendTrunc(dst, string(s), w)
	}
	dst = spaces(dst, w-n)
	return append(dst, s...)
}

// ansiTruncate cuts a styled string to w cells, keeping its escapes intact.
func ansiTruncate(s string, w int) string { return ansi.Truncate(s, w, "…") }
