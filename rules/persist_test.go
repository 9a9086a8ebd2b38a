package rules

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestPersistAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	cfg := Config{StateDir: dir, Now: clk.Now, ImplicitAllow: []ImplicitAllow{{Prefix: pfx("192.0.2.1/32"), Comment: "sensor"}}}
	s := newStore(t, cfg)
	keep := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.1", Reason: "keep", RequestedBy: "alice"})
	short := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.2", TTL: time.Hour, Origin: OriginTUI})
	gone := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.3", Origin: OriginCLI})
	acl := mustAdd(t, s, Request{Kind: KindACL, ACL: &ACL{Proto: ProtoTCP, DstPorts: PortRange{23, 23}}})
	allow := mustAdd(t, s, Request{Kind: KindAllow, Value: "198.51.100.0/24", Reason: "partner", TTL: 48 * time.Hour})
	mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.4", Origin: OriginConfig})
	ext, _, _ := s.Add(Request{Kind: KindBan, Value: "203.0.113.2", TTL: 3 * time.Hour})
	if _, err := s.Remove(gone.ID, "bob", "mistake"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	clk.Advance(2 * time.Hour) // the 1 h ban was extended to 3 h: still alive
	s2 := newStore(t, cfg)
	for _, want := range []Entry{keep, ext, acl, allow} {
		got, ok := s2.Get(want.ID)
		if !ok {
			t.Fatalf("entry %d (%s %s) lost across restart", want.ID, want.Kind, want.Value)
		}
		want.Hits, got.Hits = 0, 0
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		if string(gj) != string(wj) {
			t.Fatalf("entry changed across restart:\n got %+v\nwant %+v", got, want)
		}
	}
	if _, ok := s2.Get(gone.ID); ok {
		t.Fatal("removed entry came back")
	}
	if _, total := s2.List(Filter{Origin: OriginConfig}); total != 0 {
		t.Fatal("config entry was persisted; it should be re-derived from the config")
	}
	if v := s2.Set().Match(ip("203.0.113.2"), ip("10.0.0.1"), 6, 1, 2); v.RuleID != short.ID {
		t.Fatalf("restored ban does not match: %+v", v)
	}
	n := mustAdd(t, s2, Request{Kind: KindBan, Value: "203.0.113.9"})
	if n.ID <= allow.ID {
		t.Fatalf("id %d reused after restart (last was %d)", n.ID, allow.ID)
	}
	s2.Close()

	clk.Advance(2 * time.Hour) // now past the extended expiry
	s3 := newStore(t, cfg)
	if _, ok := s3.Get(short.ID); ok {
		t.Fatal("entry that expired while down was resurrected")
	}
	recs, err := s3.ReadAudit(time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sawExpire, sawRemove bool
	for _, r := range recs {
		sawExpire = sawExpire || (r.Action == AuditExpire && r.Entry.ID == short.ID && strings.Contains(r.Detail, "not running"))
		sawRemove = sawRemove || (r.Action == AuditRemove && r.Entry.ID == gone.ID && r.Who == "bob" && r.Detail == "mistake")
	}
	if !sawExpire || !sawRemove {
		t.Fatalf("audit trail misses expire-while-down (%v) or remove (%v)", sawExpire, sawRemove)
	}
	since, _ := s3.ReadAudit(clk.Now(), 0)
	for _, r := range since {
		if r.Time.Before(clk.Now()) {
			t.Fatalf("ReadAudit(since) returned an older record %+v", r)
		}
	}
}

func TestCompactionKeepsState(t *testing.T) {
	old := compactAfter
	compactAfter = 50
	defer func() { compactAfter = old }()
	dir := t.TempDir()
	s := newStore(t, Config{StateDir: dir})
	want := map[uint64]bool{}
	for i := range 400 {
		e := mustAdd(t, s, Request{Kind: KindBan, Value: fmt.Sprintf("10.%d.%d.1", i/256, i%256)})
		want[e.ID] = true
		if i%3 == 0 {
			s.Remove(e.ID, "t", "")
			delete(want, e.ID)
		}
	}
	s.Close()
	gens, _ := journalGens(dir)
	if len(gens) != 1 {
		t.Errorf("old journals not cleaned up after compaction: %v", gens)
	}
	s2 := newStore(t, Config{StateDir: dir})
	if s2.Len() != len(want) {
		t.Fatalf("after compaction and restart: %d entries, want %d", s2.Len(), len(want))
	}
	for id := range want {
		if _, ok := s2.Get(id); !ok {
			t.Fatalf("entry %d lost", id)
		}
	}
}

func TestCorruptStateIsMovedAsideAndReported(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, Config{StateDir: dir})
	e := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.1"})
	s.Close()
	// Garbage over the snapshot; the journal from the last run is gone
	// after the compaction at Open, so the entry lives only in the
	// snapshot, whose readable lines must still be used.
	state := filepath.Join(dir, stateFile)
	data, _ := os.ReadFile(state)
	os.WriteFile(state, append(data, []byte("{garbage\n")...), 0o640)

	s2 := newStore(t, Config{StateDir: dir})
	if _, ok := s2.Get(e.ID); !ok {
		t.Fatal("readable entry of a damaged snapshot was dropped")
	}
	aside, _ := filepath.Glob(state + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("corrupt state not moved aside: %v", aside)
	}
	recs, _ := s2.ReadAudit(time.Time{}, 0)
	last := recs[len(recs)-1]
	if last.Action != AuditLoad || !strings.Contains(last.Detail, "corrupt") || !strings.Contains(last.Detail, aside[0]) {
		t.Fatalf("load not reported in the audit trail: %+v", last)
	}
	s2.Close()

	// Pure garbage: nothing readable, still reported, never silently empty.
	os.WriteFile(state, []byte("\x00\x01 this is not json"), 0o640)
	s3 := newStore(t, Config{StateDir: dir})
	if aside, _ := filepath.Glob(state + ".corrupt-*"); len(aside) < 1 {
		t.Fatal("garbage state not moved aside")
	}
	recs, _ = s3.ReadAudit(time.Time{}, 0)
	if last := recs[len(recs)-1]; !strings.Contains(last.Detail, "corrupt") {
		t.Fatalf("garbage state not reported: %+v", last)
	}
}

func TestTornAndCorruptJournal(t *testing.T) {
	dir := t.TempDir()
	good := `{"op":"put","entry":{"id":7,"kind":"ban","value":"203.0.113.7/32","action":"block","origin":"api","created":"2026-01-01T00:00:00Z","hits":0}}`
	good2 := `{"op":"put","entry":{"id":8,"kind":"ban","value":"203.0.113.8/32","action":"block","origin":"api","created":"2026-01-01T00:00:00Z","hits":0}}`
	// Torn: the final record lacks its end (crash mid-write).
	os.WriteFile(filepath.Join(dir, journalName(1)), []byte(good+"\n"+`{"op":"put","entry":{"id":9,"ki`), 0o640)
	s := newStore(t, Config{StateDir: dir})
	if _, ok := s.Get(7); !ok {
		t.Fatal("record before a torn tail lost")
	}
	recs, _ := s.ReadAudit(time.Time{}, 0)
	if last := recs[len(recs)-1]; !strings.Contains(last.Detail, "torn") {
		t.Fatalf("torn tail not reported: %+v", last)
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, "*.corrupt-*")); len(aside) != 0 {
		t.Fatalf("a torn tail is not corruption, but %v was moved aside", aside)
	}
	s.Close()

	// Corrupt in the middle: applied around it, moved aside, reported.
	gens, _ := journalGens(dir)
	bad := filepath.Join(dir, journalName(gens[len(gens)-1]+1))
	os.WriteFile(bad, []byte(good2+"\nnot json at all\n"+`{"op":"del","id":7}`+"\n"), 0o640)
	s2 := newStore(t, Config{StateDir: dir})
	if _, ok := s2.Get(8); !ok {
		t.Fatal("good record of a corrupt journal lost")
	}
	if _, ok := s2.Get(7); ok {
		t.Fatal("delete after the corrupt line not applied")
	}
	if aside, _ := filepath.Glob(bad + ".corrupt-*"); len(aside) != 1 {
		t.Fatalf("corrupt journal not moved aside: %v", aside)
	}
}

// TestKillDuringAdds re-executes the test binary as a child that adds bans
// as fast as it can and prints each one after Add returned, SIGKILLs it,
// and checks that the reopened store has every acknowledged ban.
func TestKillDuringAdds(t *testing.T) {
	if dir := os.Getenv("CANOPY_RULES_KILL_CHILD"); dir != "" {
		killChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("subprocess test")
	}
	for round := range 3 {
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillDuringAdds$")
		cmd.Env = append(os.Environ(), "CANOPY_RULES_KILL_CHILD="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[uint64]string{}
		sc := bufio.NewScanner(out)
		deadline := time.Now().Add(time.Duration(300+200*round) * time.Millisecond)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ok" {
				continue
			}
			id, _ := strconv.ParseUint(f[1], 10, 64)
			acked[id] = f[2]
			if time.Now().After(deadline) && len(acked) > 100 {
				break
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		// Lines already printed before the kill are acknowledged too.
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "ok" {
				id, _ := strconv.ParseUint(f[1], 10, 64)
				acked[id] = f[2]
			}
		}
		cmd.Wait()

		s, err := Open(Config{StateDir: dir, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		for id, v := range acked {
			e, ok := s.Get(id)
			if !ok || e.Value.Addr().String() != v {
				t.Fatalf("round %d: acknowledged ban %d %s missing after SIGKILL (got %+v)", round, id, v, e)
			}
		}
		if aside, _ := filepath.Glob(filepath.Join(dir, "*.corrupt-*")); len(aside) != 0 {
			t.Fatalf("round %d: kill -9 produced corrupt files: %v", round, aside)
		}
		t.Logf("round %d: %d acknowledged adds, %d entries after reopen", round, len(acked), s.Len())
		s.Close()
	}
}

// killChild adds bans from 8 goroutines until killed, printing "ok id ip"
// after each Add returns. Compaction is forced often so kills land in it.
func killChild(dir string) {
	compactAfter = 500
	s, err := Open(Config{StateDir: dir, Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				v := fmt.Sprintf("10.%d.%d.%d", g, (i/256)%256, i%256)
				e, _, err := s.Add(Request{Kind: KindBan, Value: v, TTL: time.Hour, Reason: "kill test"})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child add:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ok %d %s\n", e.ID, v)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestAuditFromOtherPackages(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		s := newStore(t, Config{StateDir: dir})
		if err := s.Audit(AuditRecord{Action: AuditMode, Who: "alice", Detail: "enforce -> observe"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Audit(AuditRecord{}); CodeOf(err) != CodeInvalid {
			t.Fatalf("record without action: %v", err)
		}
		e := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.1", RequestedBy: "bob", Reason: "scan"})
		s.Add(Request{Kind: KindBan, Value: "203.0.113.1", TTL: time.Hour}) // permanent: no change, no record
		recs, err := s.ReadAudit(time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			if r.Action == AuditLoad {
				continue
			}
			s := r.Action + ":" + r.Who
			if r.Entry != nil {
				s += fmt.Sprintf(":%d:%s:%s:%s", r.Entry.ID, r.Entry.Value, r.Entry.Origin, r.Entry.Reason)
			}
			got = append(got, s)
		}
		want := []string{"mode:alice", fmt.Sprintf("add:bob:%d:203.0.113.1/32:api:scan", e.ID)}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("state dir %q: audit %v, want %v", dir, got, want)
		}
		if recs, _ := s.ReadAudit(time.Time{}, 1); len(recs) != 1 {
			t.Fatalf("limit not applied: %d records", len(recs))
		}
	}
}

// A snapshot cut short (no end line) is reported and moved aside; its
// complete lines are kept.
func TestTruncatedSnapshot(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, Config{StateDir: dir})
	a := mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.1"})
	mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.2"})
	s.Close()
	newStore(t, Config{StateDir: dir}).Close() // Open compacts: the snapshot now holds both
	state := filepath.Join(dir, stateFile)
	data, _ := os.ReadFile(state)
	lines := strings.SplitAfter(string(data), "\n")
	os.WriteFile(state, []byte(lines[0]+lines[1]), 0o640) // header + first entry
	s2 := newStore(t, Config{StateDir: dir})
	if _, ok := s2.Get(a.ID); !ok {
		t.Fatal("complete line of a truncated snapshot lost")
	}
	if aside, _ := filepath.Glob(state + ".corrupt-*"); len(aside) != 1 {
		t.Fatalf("truncated snapshot not moved aside: %v", aside)
	}
	recs, _ := s2.ReadAudit(time.Time{}, 0)
	if last := recs[len(recs)-1]; !strings.Contains(last.Detail, "truncated") {
		t.Fatalf("truncation not reported: %+v", last)
	}
}

// logrotate's default renames audit.jsonl (and may remove it later): the
// next records must land in a new audit.jsonl, not in the rotated file.
func TestAuditFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, Config{StateDir: dir})
	path := filepath.Join(dir, auditFile)
	mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.1", Reason: "before"})
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.2", Reason: "after rename"})
	if err := os.Remove(path); err != nil {
		t.Fatalf("no new audit log after the rename: %v", err)
	}
	mustAdd(t, s, Request{Kind: KindBan, Value: "203.0.113.3", Reason: "after removal"})
	old, _ := os.ReadFile(path + ".1")
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(old), `"before"`) || strings.Contains(string(old), "after") {
		t.Errorf("rotated file holds:\n%s", old)
	}
	if !strings.Contains(string(cur), `"after removal"`) || strings.Contains(string(cur), `"before"`) {
		t.Errorf("audit.jsonl holds:\n%s", cur)
	}
}
