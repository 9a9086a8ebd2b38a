package rules

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxLineLen bounds one block-file line; longer lines are reported, not read.
const maxLineLen = 4096

// FileEntry is one ban read from a block file.
type FileEntry struct {
	Line   int           // 1-based line number
	Value  netip.Prefix  // canonical: unmapped, host bits cleared
	TTL    time.Duration // ttl=…; zero: until the line is removed
	Action Action        // action=…; default block
	Reason string        // reason=…, else the trailing # or ; comment
}

// LineError is a block-file line that was not applied.
type LineError struct {
	File   string
	Line   int
	Reason string
}

// Error formats the line error as "file:line: reason".
func (e LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

// ParseBlockFile reads a block file: one IP or CIDR per line, optionally
// followed by fields (ttl=4h reason="…" action=observe) and a "# comment".
// Spamhaus DROP lines ("1.2.3.0/24 ; SBL123", header lines starting with
// ';') and FireHOL netset/ipset files are read unchanged. A bad line
// becomes a LineError ("name:line: reason") and does not stop the others;
// a value listed twice is reported on its second line.
func ParseBlockFile(r io.Reader, name string) ([]FileEntry, []LineError) {
	br := bufio.NewReaderSize(r, maxLineLen+1)
	var out []FileEntry
	var errs []LineError
	seen := map[netip.Prefix]int{}
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		tooLong := false
		for errors.Is(err, bufio.ErrBufferFull) {
			tooLong = true
			_, err = br.ReadSlice('\n')
		}
		if len(line) == 0 && err != nil {
			if !errors.Is(err, io.EOF) {
				errs = append(errs, LineError{name, n, "read error: " + err.Error()})
			}
			break
		}
		if tooLong {
			errs = append(errs, LineError{name, n, fmt.Sprintf("line longer than %d bytes", maxLineLen)})
		} else {
			text := string(line)
			if n == 1 {
				text = strings.TrimPrefix(text, "\ufeff") // byte order mark from Windows editors
			}
			fe, ok, perr := parseBlockLine(text)
			switch {
			case perr != nil:
				errs = append(errs, LineError{name, n, perr.Error()})
			case ok:
				if first, dup := seen[fe.Value]; dup {
					errs = append(errs, LineError{name, n, fmt.Sprintf("%s is already listed on line %d; this line is ignored", fe.Value, first)})
					break
				}
				seen[fe.Value] = n
				fe.Line = n
				out = append(out, fe)
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				errs = append(errs, LineError{name, n, "read error: " + err.Error()})
			}
			break
		}
	}
	return out, errs
}

// parseBlockLine parses one line. ok is false for blank and comment lines.
func parseBlockLine(line string) (fe FileEntry, ok bool, err error) {
	line = strings.TrimRight(line, "\r\n")
	if !utf8.ValidString(line) {
		return fe, false, errors.New("not valid UTF-8")
	}
	if i := strings.IndexAny(line, "\r\n"); i >= 0 {
		// A lone CR (old Mac line ending) inside a line would end up in a
		// reason and break every log line that quotes it.
		return fe, false, fmt.Errorf("line break (CR or LF) at column %d inside the line", i+1)
	}
	s := strings.TrimSpace(line)
	if s == "" || s[0] == '#' || s[0] == ';' {
		return fe, false, nil
	}
	// The address runs up to the first space, tab, '#' or ';'.
	end := strings.IndexAny(s, " \t#;")
	if end < 0 {
		end = len(s)
	}
	addr, rest := s[:end], s[end:]
	if strings.Contains(addr, "-") {
		return fe, false, fmt.Errorf("%q: ranges are not supported; write it as CIDR prefixes", addr)
	}
	p, perr := parseValue(addr)
	if perr != nil {
		return fe, false, perr
	}
	fe.Value = p
	fe.Action = ActionBlock
	var comment string
	var haveReason bool
	for {
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			break
		}
		if rest[0] == '#' || rest[0] == ';' {
			comment = strings.TrimSpace(rest[1:])
			break
		}
		eq := strings.IndexByte(rest, '=')
		sp := strings.IndexAny(rest, " \t")
		if eq < 0 || (sp >= 0 && sp < eq) {
			word := rest
			if sp >= 0 {
				word = rest[:sp]
			}
			return fe, false, fmt.Errorf("unexpected %q after the address: fields are key=value (ttl, reason, action), comments start with #", word)
		}
		key := rest[:eq]
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, qerr := strconv.QuotedPrefix(rest)
			if qerr != nil {
				return fe, false, fmt.Errorf("%s: unterminated or malformed quoted value", key)
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
			if rest != "" && rest[0] != ' ' && rest[0] != '\t' && rest[0] != '#' && rest[0] != ';' {
				return fe, false, fmt.Errorf("%s: text right after the closing quote", key)
			}
		} else {
			e := strings.IndexAny(rest, " \t#;")
			if e < 0 {
				e = len(rest)
			}
			val, rest = rest[:e], rest[e:]
		}
		switch key {
		case "ttl":
			d, derr := time.ParseDuration(val)
			if derr != nil || d <= 0 {
				return fe, false, fmt.Errorf("ttl=%q: want a positive duration such as 30m, 4h or 168h", val)
			}
			fe.TTL = d
		case "reason":
			if strings.ContainsAny(val, "\n\r") {
				return fe, false, errors.New("reason: line breaks are not allowed")
			}
			fe.Reason, haveReason = val, true
		case "action":
			switch Action(val) {
			case ActionBlock, ActionObserve:
				fe.Action = Action(val)
			default:
				return fe, false, fmt.Errorf("action=%q: want block or observe", val)
			}
		default:
			return fe, false, fmt.Errorf("unknown field %q: known fields are ttl, reason and action", key)
		}
	}
	if !haveReason {
		fe.Reason = comment
	}
	return fe, true, nil
}

// formatBlockLine writes fe back in block-file syntax (for round-trip
// tests and exports).
func formatBlockLine(fe FileEntry) string {
	var b bytes.Buffer
	b.WriteString(fe.Value.String())
	if fe.TTL > 0 {
		b.WriteString(" ttl=" + fe.TTL.String())
	}
	if fe.Action == ActionObserve {
		b.WriteString(" action=observe")
	}
	if fe.Reason != "" {
		b.WriteString(" reason=" + strconv.Quote(fe.Reason))
	}
	return b.String()
}
