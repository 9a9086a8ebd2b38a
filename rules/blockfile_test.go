package rules

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseBlockLine(t *testing.T) {
	cases := []struct {
		line string
		want FileEntry // zero Value: skipped line
		err  string    // substring of the error
	}{
		{line: ""},
		{line: "   \t"},
		{line: "# FireHOL header: Entries : 4385 subnets"},
		{line: "; Spamhaus DROP List 2026/05/15"},
		{line: "1.2.3.4", want: FileEntry{Value: pfx("1.2.3.4/32"), Action: ActionBlock}},
		{line: "1.2.3.4\r", want: FileEntry{Value: pfx("1.2.3.4/32"), Action: ActionBlock}},
		{line: "  10.20.0.0/16  ", want: FileEntry{Value: pfx("10.20.0.0/16"), Action: ActionBlock}},
		{line: "1.10.16.0/20 ; SBL256894", want: FileEntry{Value: pfx("1.10.16.0/20"), Action: ActionBlock, Reason: "SBL256894"}},
		{line: "1.10.16.0/20;SBL256894", want: FileEntry{Value: pfx("1.10.16.0/20"), Action: ActionBlock, Reason: "SBL256894"}},
		{line: "2001:db8::/48 # noisy scanner", want: FileEntry{Value: pfx("2001:db8::/48"), Action: ActionBlock, Reason: "noisy scanner"}},
		{line: "203.0.113.7#tight", want: FileEntry{Value: pfx("203.0.113.7/32"), Action: ActionBlock, Reason: "tight"}},
		{line: "::ffff:198.51.100.9", want: FileEntry{Value: pfx("198.51.100.9/32"), Action: ActionBlock}},
		{line: "198.51.100.77/24", want: FileEntry{Value: pfx("198.51.100.0/24"), Action: ActionBlock}},
		{line: `203.0.113.5 ttl=4h reason="ssh brute force # 12" action=observe # from fail2ban`,
			want: FileEntry{Value: pfx("203.0.113.5/32"), TTL: 4 * time.Hour, Action: ActionObserve, Reason: "ssh brute force # 12"}},
		{line: "203.0.113.5 reason=plain\tttl=90m", want: FileEntry{Value: pfx("203.0.113.5/32"), TTL: 90 * time.Minute, Action: ActionBlock, Reason: "plain"}},
		{line: `203.0.113.5 reason="with \"quotes\""`, want: FileEntry{Value: pfx("203.0.113.5/32"), Action: ActionBlock, Reason: `with "quotes"`}},
		{line: "1.2.3.4-1.2.3.9", err: "ranges are not supported"},
		{line: "1.2.3", err: "not an IP address"},
		{line: "example.com", err: "not an IP address"},
		{line: "1.2.3.4/33", err: "not an IP address"},
		{line: "fe80::1%eth0", err: "zoned"},
		{line: "1.2.3.4 ttl=forever", err: "ttl="},
		{line: "1.2.3.4 ttl=-1h", err: "ttl="},
		{line: "1.2.3.4 action=drop", err: "action="},
		{line: "1.2.3.4 color=red", err: "unknown field"},
		{line: "1.2.3.4 junk", err: "unexpected"},
		{line: `1.2.3.4 reason="open`, err: "unterminated"},
		{line: `1.2.3.4 reason="a"b`, err: "after the closing quote"},
		{line: "1.2.3.4 reason=\"a\\nb\"", err: "line breaks"},
		{line: "1.2.3.4 \xff", err: "UTF-8"},
		{line: "1.2.3.4 # a\rb", err: "line break"}, // found by FuzzParseBlockLine
	}
	for _, c := range cases {
		fe, ok, err := parseBlockLine(c.line)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err = %v, want it to mention %q", c.line, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: unexpected error %v", c.line, err)
			continue
		}
		if ok != c.want.Value.IsValid() || fe != c.want {
			t.Errorf("%q: got %+v ok=%v, want %+v", c.line, fe, ok, c.want)
		}
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestParseBlockFileReportsBadLinesAndKeepsGoodOnes(t *testing.T) {
	in := "# FireHOL level1\n" +
		"1.2.3.0/24\n" +
		"not-an-ip\n" +
		"5.6.7.8 ttl=1h\n" +
		"\n" +
		"1.2.3.0/24 # again\n" +
		strings.Repeat("x", maxLineLen+10) + "\n" +
		"9.9.9.9" // no final newline
	got, errs := ParseBlockFile(strings.NewReader(in), "/etc/canopy/block.txt")
	var vals []string
	for _, fe := range got {
		vals = append(vals, fmt.Sprintf("%d:%s", fe.Line, fe.Value))
	}
	if want := []string{"2:1.2.3.0/24", "4:5.6.7.8/32", "8:9.9.9.9/32"}; !slices.Equal(vals, want) {
		t.Fatalf("entries %v, want %v", vals, want)
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	if len(msgs) != 3 ||
		!strings.HasPrefix(msgs[0], "/etc/canopy/block.txt:3: ") ||
		!strings.HasPrefix(msgs[1], "/etc/canopy/block.txt:6: 1.2.3.0/24 is already listed on line 2") ||
		!strings.HasPrefix(msgs[2], "/etc/canopy/block.txt:7: line longer than") {
		t.Fatalf("errors:\n%s", strings.Join(msgs, "\n"))
	}
}

func TestParseBlockFileFormats(t *testing.T) {
	for _, name := range []string{"spamhaus_drop.txt", "firehol_level1.netset", "canopy.txt"} {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, errs := ParseBlockFile(f, name)
			if len(errs) != 0 {
				t.Fatalf("errors: %v", errs)
			}
			golden, err := os.ReadFile(filepath.Join("testdata", name+".want"))
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for _, fe := range got {
				lines = append(lines, fmt.Sprintf("%d %s", fe.Line, formatBlockLine(fe)))
			}
			if g, w := strings.Join(lines, "\n"), strings.TrimSpace(string(golden)); g != w {
				t.Fatalf("got:\n%s\nwant:\n%s", g, w)
			}
		})
	}
}

func FuzzParseBlockLine(f *testing.F) {
	for _, s := range []string{
		"1.2.3.4", "10.0.0.0/8 ; SBL1", "2001:db8::/32 # c", `1.2.3.4 ttl=4h reason="x y" action=observe`,
		"::ffff:1.2.3.4/120", "# comment", "; header", `1.2.3.4 reason="\u00e9\t"`, "1.2.3.4 ttl=1ns",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		fe, ok, err := parseBlockLine(line)
		if err != nil || !ok {
			if ok {
				t.Fatalf("ok with error %v", err)
			}
			return
		}
		if !fe.Value.IsValid() || fe.Value != fe.Value.Masked() || fe.Value.Addr().Is4In6() {
			t.Fatalf("%q: non-canonical value %v", line, fe.Value)
		}
		if fe.Action != ActionBlock && fe.Action != ActionObserve {
			t.Fatalf("%q: action %q", line, fe.Action)
		}
		// What we parsed, written back, parses to the same entry.
		back := formatBlockLine(fe)
		fe2, ok2, err2 := parseBlockLine(back)
		if err2 != nil || !ok2 || fe2 != fe {
			t.Fatalf("%q -> %q -> %+v %v %v, want %+v", line, back, fe2, ok2, err2, fe)
		}
	})
}

func TestLoadBlockFileDiff(t *testing.T) {
	s := newStore(t, Config{ImplicitAllow: []ImplicitAllow{{Prefix: pfx("192.0.2.1/32"), Comment: "sensor"}}})
	dir := t.TempDir()
	path := filepath.Join(dir, "block.txt")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	api := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.99"})
	write("203.0.113.1\n203.0.113.2 action=observe\n203.0.113.99\n192.0.2.1\n1.0.0.0/8\nbad\n")
	rep, err := s.LoadBlockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Added != 2 || rep.Skipped != 1 || len(rep.Errors) != 3 {
		t.Fatalf("first load: %+v", rep)
	}
	for _, want := range []string{":6: ", ":4: refused: 192.0.2.1 is allowlisted by 192.0.2.1/32 (sensor)", ":5: refused: 1.0.0.0/8 is wider than /16"} {
		found := false
		for _, le := range rep.Errors {
			found = found || strings.Contains(le.Error(), want)
		}
		if !found {
			t.Errorf("no error containing %q in %v", want, rep.Errors)
		}
	}
	v := s.Set().Match(ip("203.0.113.2"), ip("10.0.0.1"), 6, 1, 2)
	if v.Action != ActionObserve {
		t.Fatalf("observe line: %+v", v)
	}
	list, _ := s.List(Filter{Origin: OriginFile})
	if len(list) != 2 || list[0].RequestedBy != path {
		t.Fatalf("file entries: %+v", list)
	}
	write("203.0.113.2\n203.0.113.3\n")
	rep, err = s.LoadBlockFile(path)
	if err != nil || rep.Added != 1 || rep.Removed != 1 || rep.Updated != 1 {
		t.Fatalf("second load: %+v %v", rep, err)
	}
	if v := s.Set().Match(ip("203.0.113.1"), ip("10.0.0.1"), 6, 1, 2); v.Matched() {
		t.Fatalf("removed line still matches: %+v", v)
	}
	if v := s.Set().Match(ip("203.0.113.2"), ip("10.0.0.1"), 6, 1, 2); v.Action != ActionBlock {
		t.Fatalf("updated line: %+v", v)
	}
	if _, ok := s.Get(api.ID); !ok {
		t.Fatal("the API ban for a value the file listed was lifted with the file line")
	}
	if _, err := s.LoadBlockFile(filepath.Join(dir, "nope.txt")); err == nil {
		t.Fatal("missing file: no error")
	}
}

// The watcher applies edits done the three ways scripts and editors do
// them, each within a second, and keeps bans when the file vanishes.
func TestWatchBlockFile(t *testing.T) {
	s := newStore(t, Config{})
	dir := t.TempDir()
	path := filepath.Join(dir, "block.txt")
	if err := os.WriteFile(path, []byte("198.51.100.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.WatchBlockFile(ctx, path, quietLogger()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	banned := func(a string) bool { return s.Set().Match(ip(a), ip("10.0.0.1"), 6, 1, 2).Matched() }
	within := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not applied within %s", what, d)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	within("initial load", time.Second, func() bool { return banned("198.51.100.1") })

	// 1. Editor style: write a temp file, rename it over.
	tmp := filepath.Join(dir, ".block.txt.swp")
	os.WriteFile(tmp, []byte("198.51.100.1\n198.51.100.2\n"), 0o644)
	os.Rename(tmp, path)
	within("rename", time.Second, func() bool { return banned("198.51.100.2") })

	// 2. Script style: truncate, then append line by line.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"198.51.100.2\n", "198.51.100.3\n"} {
		f.WriteString(l)
		time.Sleep(20 * time.Millisecond)
	}
	f.Close()
	within("truncate+append", time.Second, func() bool { return banned("198.51.100.3") && !banned("198.51.100.1") })

	// 3. In place: rewrite bytes without truncating (same length line).
	f, err = os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("198.51.100.4\n"), 0)
	f.Close()
	within("in-place edit", time.Second, func() bool { return banned("198.51.100.4") && !banned("198.51.100.2") })

	// 4. The file vanishes: bans stay.
	os.Remove(path)
	time.Sleep(3 * blockDebounce)
	if !banned("198.51.100.4") || !banned("198.51.100.3") {
		t.Fatal("bans lifted when the file vanished")
	}
	// ... and it comes back with one line less.
	os.WriteFile(path, []byte("198.51.100.3\n"), 0o644)
	within("file back", time.Second, func() bool { return !banned("198.51.100.4") && banned("198.51.100.3") })
}

// A line whose ttl ran out is not re-added while it stays in the file, and
// is re-added once it was removed and comes back.
func TestBlockFileTTLExpiry(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
	s := newStore(t, Config{Now: clk.Now})
	path := filepath.Join(t.TempDir(), "block.txt")
	load := func(content string) FileReport {
		t.Helper()
		os.WriteFile(path, []byte(content), 0o644)
		rep, err := s.LoadBlockFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	banned := func() bool { return s.Set().Match(ip("203.0.113.9"), ip("10.0.0.1"), 6, 1, 2).Matched() }
	load("203.0.113.9 ttl=1m\n")
	if !banned() {
		t.Fatal("not banned")
	}
	clk.Advance(2 * time.Minute)
	s.expireDue()
	if banned() {
		t.Fatal("not expired")
	}
	if rep := load("203.0.113.9 ttl=1m\n"); rep.Skipped != 1 || banned() {
		t.Fatalf("expired line re-added while it stayed: %+v", rep)
	}
	load("")
	if rep := load("203.0.113.9 ttl=1m\n"); rep.Added != 1 || !banned() {
		t.Fatalf("line that came back not re-added: %+v", rep)
	}
}

// A file bigger than one chunk is applied completely, both ways, and List
// (which also walks in chunks) counts every entry.
func TestBigBlockFileInChunks(t *testing.T) {
	s := newStore(t, Config{StateDir: t.TempDir()})
	path := filepath.Join(t.TempDir(), "big.txt")
	var sb strings.Builder
	n := 2*walkChunk + 123
	for i := range n {
		fmt.Fprintf(&sb, "10.%d.%d.%d\n", i>>16, (i>>8)&255, i&255)
	}
	os.WriteFile(path, []byte(sb.String()), 0o644)
	rep, err := s.LoadBlockFile(path)
	if err != nil || rep.Added != n || len(rep.Errors) != 0 {
		t.Fatalf("load: %v %+v", err, rep)
	}
	if _, total := s.List(Filter{Origin: OriginFile}); total != n {
		t.Fatalf("List total %d, want %d", total, n)
	}
	if st := s.Stats(); st.ByOrigin[OriginFile] != n {
		t.Fatalf("stats: %+v", st.ByOrigin)
	}
	// Keep only the first 100 lines.
	lines := strings.SplitAfterN(sb.String(), "\n", 101)
	os.WriteFile(path, []byte(strings.Join(lines[:100], "")), 0o644)
	rep, err = s.LoadBlockFile(path)
	if err != nil || rep.Removed != n-100 || rep.Unchanged != 100 {
		t.Fatalf("shrink: %v %+v", err, rep)
	}
	got, total := s.List(Filter{Origin: OriginFile, Offset: 90})
	if total != 100 || len(got) != 10 {
		t.Fatalf("after shrink: total %d, page %d", total, len(got))
	}
	if s.Set().Match(ip("10.0.200.1"), ip("192.0.2.1"), 6, 1, 2).Matched() {
		t.Fatal("a removed line still matches")
	}
}
