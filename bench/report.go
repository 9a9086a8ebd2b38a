package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Section is one benchmark's results: a table with its own columns, the
// command that reproduces it, and notes that explain the figures.
type Section struct {
	Name    string   // the -only name: block, kill, capture, …
	Title   string   // heading in BENCHMARKS.md
	Target  string   // what the issues ask for, one line
	Columns []string // column headings of Rows
	Key     int      // leading columns that name the case (the rest are results)
	Rows    []Row
	Notes   []string // paragraphs under the table
}

// Row is one measured line of a section.
type Row struct {
	Cells   []string // one per Section.Columns
	Command string   // the command that produced this row
}

// add appends a row produced by command.
func (s *Section) add(command string, cells ...string) {
	s.Rows = append(s.Rows, Row{Cells: cells, Command: command})
}

// note appends a paragraph under the table.
func (s *Section) note(format string, args ...any) {
	s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
}

// summaryRows flattens every section into the one table printed at the
// end: benchmark, case, results ("column value; …"), command.
func summaryRows(secs []*Section) [][]string {
	var out [][]string
	for _, s := range secs {
		for _, r := range s.Rows {
			key := strings.Join(nonEmpty(r.Cells[:s.Key]), " · ")
			var res []string
			for i := s.Key; i < len(r.Cells) && i < len(s.Columns); i++ {
				if r.Cells[i] == "" {
					continue
				}
				res = append(res, s.Columns[i]+" "+r.Cells[i])
			}
			out = append(out, []string{s.Name, key, strings.Join(res, "; "), r.Command})
		}
	}
	return out
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// writeText prints rows as an aligned plain-text table with a header.
func writeText(w io.Writer, header []string, rows [][]string) {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = utf8.RuneCountInString(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if i < len(width) {
				width[i] = max(width[i], utf8.RuneCountInString(c))
			}
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c)
			if i < len(cells)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)))
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
}

// writeMarkdown prints rows as a GitHub-flavoured Markdown table.
func writeMarkdown(w io.Writer, header []string, rows [][]string) {
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	fmt.Fprintf(w, "| %s |\n", strings.Join(mapStrings(header, esc), " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(header)))
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(mapStrings(r, esc), " | "))
	}
}

func mapStrings(ss []string, f func(string) string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// sectionRows returns a section's rows with the command as last column.
func sectionRows(s *Section) (header []string, rows [][]string) {
	header = append(append([]string{}, s.Columns...), "command")
	for _, r := range s.Rows {
		cmd := "`" + r.Command + "`"
		rows = append(rows, append(append([]string{}, r.Cells...), cmd))
	}
	return header, rows
}
