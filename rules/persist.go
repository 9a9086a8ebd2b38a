package rules

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Files in Config.StateDir.
const (
	stateFile     = "state.jsonl"
	journalPrefix = "journal-"
	journalSuffix = ".jsonl"
	auditFile     = "audit.jsonl"
	stateVersion  = 1
	auditMemMax   = 10_000
)

// compactAfter is how many journal records trigger a compaction, on top of
// the number of persisted entries (so a big store does not rewrite its
// snapshot every few thousand changes). A variable so tests can force
// compactions.
var compactAfter = 100_000

// persisted reports whether entries of this origin are saved in the state
// directory. Config and file entries are re-derived from their sources at
// start; system entries come from the configuration.
func persisted(o Origin) bool {
	switch o {
	case OriginConfig, OriginFile, OriginSystem:
		return false
	}
	return true
}

// batch is one group commit: every change queued before it was cut waits
// for the same write+fsync.
type batch struct {
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

func (b *batch) wait() error {
	if b == nil {
		return nil
	}
	<-b.done
	return b.err
}

// persister owns the journal and audit files. jbuf, abuf and jrecs are
// guarded by Store.mu; the files belong to the writer goroutine (writeLoop).
type persister struct {
	s   *Store
	dir string

	jf  *os.File
	gen uint64
	af  *os.File

	jbuf, abuf []byte
	jrecs      int
	compacting atomic.Bool
	queue      chan writeReq // committer → writer, in commit order
	catJ, catA []byte        // writer's reusable concatenation buffers
}

// writeReq is one commit round's lines for the writer.
type writeReq struct {
	b       *batch
	jb, ab  []byte
	compact bool // rotate the journal and write a snapshot after this write
}

// writeLoop appends and fsyncs what the committer hands over. Rounds that
// queued up during an fsync share the next one.
func (p *persister) writeLoop() {
	defer p.s.bg.Done()
	for w := range p.queue {
		reqs := []writeReq{w}
	drain:
		for len(reqs) < 256 {
			select {
			case w, ok := <-p.queue:
				if !ok {
					break drain
				}
				reqs = append(reqs, w)
			default:
				break drain
			}
		}
		jb, ab := reqs[0].jb, reqs[0].ab
		compact := reqs[0].compact
		if len(reqs) > 1 {
			// Concatenate into buffers kept across rounds: this runs a
			// few hundred times a second.
			p.catJ, p.catA = p.catJ[:0], p.catA[:0]
			for _, r := range reqs {
				p.catJ = append(p.catJ, r.jb...)
				p.catA = append(p.catA, r.ab...)
				compact = compact || r.compact
			}
			jb, ab = p.catJ, p.catA
		}
		err := p.write(jb, ab)
		for _, r := range reqs {
			r.b.err = err
			close(r.b.done)
		}
		if compact {
			p.rotateAndCompact()
		}
	}
}

// journalRec is one line of a journal: put (upsert the entry) or del.
type journalRec struct {
	Op    string `json:"op"`
	Entry *Entry `json:"entry,omitempty"`
	ID    uint64 `json:"id,omitempty"`
}

// stateHeader is the first line of state.jsonl; entries follow, one a
// line, then a stateTrailer.
type stateHeader struct {
	Version    int       `json:"version"`
	JournalGen uint64    `json:"journal_gen"` // journals from this generation on apply on top
	NextID     uint64    `json:"next_id"`
	Saved      time.Time `json:"saved"`
}

// stateTrailer is the last line of a complete state.jsonl.
type stateTrailer struct {
	End     bool `json:"end"`
	Entries int  `json:"entries"`
}

func (s *Store) journalPutLocked(r *record) {
	p := s.p
	if p == nil || !persisted(r.e.Origin) {
		return
	}
	e := r.e
	e.Hits = 0
	p.appendJournal(journalRec{Op: "put", Entry: &e})
}

func (s *Store) journalDelLocked(r *record) {
	p := s.p
	if p == nil || !persisted(r.e.Origin) {
		return
	}
	p.appendJournal(journalRec{Op: "del", ID: r.e.ID})
}

func (p *persister) appendJournal(j journalRec) {
	b, err := json.Marshal(j)
	if err != nil { // cannot happen for these types; say so loudly if it does
		p.s.log.Error("rules: cannot encode journal record", "err", err)
		return
	}
	p.jbuf = append(append(p.jbuf, b...), '\n')
	p.jrecs++
}

func (s *Store) auditLocked(rec AuditRecord) {
	if s.p == nil {
		if len(s.auditMem) >= auditMemMax {
			s.auditMem = slices.Delete(s.auditMem, 0, auditMemMax/10)
		}
		s.auditMem = append(s.auditMem, rec)
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		s.log.Error("rules: cannot encode audit record", "err", err)
		return
	}
	s.p.abuf = append(append(s.p.abuf, b...), '\n')
}

// write appends the journal and audit lines of one batch and fsyncs them,
// both files at once so a batch waits for one fsync, not two in a row.
func (p *persister) write(jb, ab []byte) error {
	var err, aerr error
	var wg sync.WaitGroup
	if len(ab) > 0 {
		p.followAudit()
		wg.Go(func() { aerr = writeSync(p.af, ab) })
	}
	if len(jb) > 0 {
		err = writeSync(p.jf, jb)
	}
	wg.Wait()
	if aerr != nil && err == nil {
		err = fmt.Errorf("audit log: %w", aerr)
	}
	if err != nil {
		p.s.writeErrors.Add(1)
		p.s.log.Error("rules: state write failed; changes are in force but not durable", "dir", p.dir, "err", err)
	}
	return err
}

// followAudit reopens the audit log when the file at its path is no longer
// the one open: logrotate (or an operator) renamed or removed it. Records
// then go on in a file at the path, where people and shippers look, not
// into the rotated one; no signal or copytruncate needed. If the new file
// cannot be opened, writing goes on into the old one and the error is
// logged. Runs on the writer goroutine, which owns p.af; a stat per write
// round costs little next to the fsync.
func (p *persister) followAudit() {
	path := filepath.Join(p.dir, auditFile)
	if st, err := os.Stat(path); err == nil {
		if cur, err := p.af.Stat(); err == nil && os.SameFile(st, cur) {
			return
		}
	}
	f, err := openAudit(p.dir)
	if err != nil {
		p.s.log.Error("rules: the audit log was moved, and a new one cannot be opened; writing on into the moved file", "path", path, "err", err)
		return
	}
	p.af.Close()
	p.af = f
	p.s.log.Info("rules: audit log was rotated; reopened", "path", path)
}

func writeSync(f *os.File, b []byte) error {
	if _, err := f.Write(b); err != nil {
		return err
	}
	return f.Sync()
}

func (p *persister) close() error {
	for p.compacting.Load() {
		time.Sleep(10 * time.Millisecond)
	}
	err := errors.Join(p.jf.Close(), p.af.Close())
	if err != nil {
		return fmt.Errorf("rules: closing state files in %s: %w", p.dir, err)
	}
	return nil
}

// rotateAndCompact starts a new journal generation and writes a snapshot
// of the state as of the switch in the background; older journals are
// deleted once the snapshot is safely renamed into place. Runs on the
// writer goroutine, so no journal write races the switch. Lines cut before
// the switch are in the old journal and in the snapshot; lines cut after
// it go to the new journal and are replayed over the snapshot (replay is
// idempotent: put upserts, del deletes).
func (p *persister) rotateAndCompact() {
	s := p.s
	nf, err := openJournal(p.dir, p.gen+1)
	if err != nil {
		s.log.Error("rules: cannot start a new journal; compaction postponed", "err", err)
		p.compacting.Store(false)
		return
	}
	s.mu.Lock()
	// Lines cut from now on go to the new journal. The snapshot is read
	// afterwards, in chunks, so the mutex is never held for the whole
	// store: each entry is saved as it is when its chunk is read, at or
	// after the switch, and the new journal holds every change made since
	// the switch, so replaying it over the snapshot gives the live state
	// (a put or del replayed over a newer copy of the same entry lands on
	// the same final state).
	old := p.jf
	p.jf = nf
	p.gen++
	gen := p.gen
	p.jrecs = 0
	ord := s.order // append-only between compactions of order, which copy
	nextID := s.nextID
	s.mu.Unlock()
	if err := old.Close(); err != nil {
		s.log.Warn("rules: closing old journal", "err", err)
	}
	go func() {
		defer p.compacting.Store(false)
		i := 0
		next := func() ([]Entry, bool) {
			if i >= len(ord) {
				return nil, false
			}
			chunk := ord[i:min(i+walkChunk, len(ord))]
			i += walkChunk
			out := make([]Entry, 0, len(chunk))
			s.mu.Lock()
			for _, r := range chunk {
				if !r.dead && persisted(r.e.Origin) {
					e := r.e
					e.Hits = 0
					out = append(out, e)
				}
			}
			s.mu.Unlock()
			return out, true
		}
		if err := writeSnapshot(p.dir, gen, nextID, next, s.now()); err != nil {
			s.log.Error("rules: snapshot failed; the journals are kept and still complete", "err", err)
			return
		}
		removeJournalsBefore(p.dir, gen, s)
	}()
}

func (s *Store) persistedEntriesLocked() []Entry {
	out := make([]Entry, 0, len(s.byID))
	for _, r := range s.order {
		if !r.dead && persisted(r.e.Origin) {
			e := r.e
			e.Hits = 0
			out = append(out, e)
		}
	}
	return out
}

func journalName(gen uint64) string {
	return fmt.Sprintf("%s%016d%s", journalPrefix, gen, journalSuffix)
}

func openJournal(dir string, gen uint64) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, journalName(gen)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeSnapshot writes state.jsonl through a temp file, fsync, rename and
// a directory fsync, so a crash leaves either the old or the new file.
func writeSnapshot(dir string, gen, nextID uint64, next func() ([]Entry, bool), now time.Time) error {
	tmp := filepath.Join(dir, stateFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	enc := json.NewEncoder(w)
	err = enc.Encode(stateHeader{Version: stateVersion, JournalGen: gen, NextID: nextID, Saved: now.UTC()})
	n := 0
	for err == nil {
		chunk, more := next()
		if !more {
			break
		}
		for i := range chunk {
			if err = enc.Encode(&chunk[i]); err != nil {
				break
			}
		}
		n += len(chunk)
	}
	if err == nil {
		// The trailer proves the file is complete.
		err = enc.Encode(stateTrailer{End: true, Entries: n})
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, stateFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("snapshot %s: %w", filepath.Join(dir, stateFile), err)
	}
	return nil
}

// journalGens lists the journal generations present in dir, ascending.
func journalGens(dir string) ([]uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var gens []uint64
	for _, de := range des {
		n := de.Name()
		if !strings.HasPrefix(n, journalPrefix) || !strings.HasSuffix(n, journalSuffix) {
			continue
		}
		g, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, journalPrefix), journalSuffix), 10, 64)
		if err != nil {
			continue
		}
		gens = append(gens, g)
	}
	slices.Sort(gens)
	return gens, nil
}

func removeJournalsBefore(dir string, gen uint64, s *Store) {
	gens, err := journalGens(dir)
	if err != nil {
		s.log.Warn("rules: listing old journals", "err", err)
		return
	}
	for _, g := range gens {
		if g < gen {
			if err := os.Remove(filepath.Join(dir, journalName(g))); err != nil {
				s.log.Warn("rules: removing old journal", "err", err)
			}
		}
	}
}

// moveAside renames a damaged file to name.corrupt-<time> so nothing is
// lost and an operator can look at it.
func moveAside(path string, now time.Time) (string, error) {
	to := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(path, to); err != nil {
		return "", err
	}
	return to, nil
}

// loadProblem is something wrong found while loading, for log and audit.
type loadProblem struct {
	msg string
}

// openPersister loads the state directory into s (called from Open with no
// concurrency yet) and starts a fresh journal generation after writing a
// clean snapshot.
func openPersister(s *Store, dir string) (*persister, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("rules: state directory %s: %w; create it or fix its permissions", dir, err)
	}
	p := &persister{s: s, dir: dir, queue: make(chan writeReq, 1024)}
	s.p = p // audit records from here on go to p.abuf
	now := s.now()
	var problems []string
	entries := map[uint64]*Entry{}
	var order []uint64
	var snapGen, nextID uint64

	put := func(e *Entry) {
		if _, ok := entries[e.ID]; !ok {
			order = append(order, e.ID)
		}
		entries[e.ID] = e
	}

	statePath := filepath.Join(dir, stateFile)
	if f, err := os.Open(statePath); err == nil {
		hdr, bad, err := readState(f, put)
		f.Close()
		switch {
		case err != nil || bad > 0:
			what := fmt.Sprintf("%d unreadable lines", bad)
			if err != nil {
				what = err.Error()
			}
			to, merr := moveAside(statePath, now)
			if merr != nil {
				return nil, fmt.Errorf("rules: state file %s is corrupt (%s) and cannot be moved aside: %w; move it away by hand", statePath, what, merr)
			}
			problems = append(problems, fmt.Sprintf("state file %s is corrupt (%s); moved to %s, kept %d readable entries and replayed every journal", statePath, what, to, len(entries)))
			snapGen = 0
			if err == nil {
				nextID = hdr.NextID
			}
		default:
			snapGen, nextID = hdr.JournalGen, hdr.NextID
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("rules: reading state file: %w", err)
	}

	gens, err := journalGens(dir)
	if err != nil {
		return nil, fmt.Errorf("rules: listing journals in %s: %w", dir, err)
	}
	maxGen := snapGen
	for _, g := range gens {
		maxGen = max(maxGen, g)
		if g < snapGen {
			continue
		}
		path := filepath.Join(dir, journalName(g))
		torn, bad, err := replayJournal(path, put, func(id uint64) { delete(entries, id) })
		if err != nil {
			return nil, fmt.Errorf("rules: reading journal %s: %w", path, err)
		}
		if torn {
			problems = append(problems, fmt.Sprintf("journal %s ended in a torn record (crash mid-write); that one unacknowledged change was dropped", path))
		}
		if bad > 0 {
			to, merr := moveAside(path, now)
			if merr != nil {
				return nil, fmt.Errorf("rules: journal %s has %d corrupt lines and cannot be moved aside: %w", path, bad, merr)
			}
			problems = append(problems, fmt.Sprintf("journal %s has %d corrupt lines; applied the readable ones, moved it to %s", path, bad, to))
		}
	}

	var expired, invalid int
	for _, id := range order {
		e := entries[id]
		if e == nil {
			continue
		}
		nextID = max(nextID, e.ID+1)
		if err := validLoaded(e); err != nil {
			invalid++
			problems = append(problems, fmt.Sprintf("entry %d skipped: %v", e.ID, err))
			continue
		}
		if !e.Expires.IsZero() && !e.Expires.After(now) {
			expired++
			s.auditLocked(AuditRecord{Time: now, Action: AuditExpire, Entry: auditEntry(e), Who: "system", Detail: "expired while canopy was not running"})
			continue
		}
		k := entryKey{kind: e.Kind, value: e.Value}
		if e.ACL != nil {
			k.acl = *e.ACL
		}
		if s.byKey[k] != nil {
			continue
		}
		s.insertLocked(&record{e: *e, key: k})
	}
	if nextID > s.nextID {
		s.nextID = nextID
	}

	gen := maxGen + 1
	all, done := s.persistedEntriesLocked(), false
	once := func() ([]Entry, bool) {
		if done {
			return nil, false
		}
		done = true
		return all, true
	}
	if err := writeSnapshot(dir, gen, s.nextID, once, now); err != nil {
		return nil, fmt.Errorf("rules: %w; check free space and permissions of %s", err, dir)
	}
	removeJournalsBefore(dir, gen, s)
	if p.jf, err = openJournal(dir, gen); err != nil {
		return nil, fmt.Errorf("rules: opening journal in %s: %w", dir, err)
	}
	p.gen = gen
	if p.af, err = openAudit(dir); err != nil {
		p.jf.Close()
		return nil, fmt.Errorf("rules: opening audit log in %s: %w", dir, err)
	}
	detail := fmt.Sprintf("loaded %d entries from %s (%d expired while down, %d invalid)", s.nUser, dir, expired, invalid)
	for _, pr := range problems {
		s.log.Error("rules: "+pr, "dir", dir)
	}
	if len(problems) > 0 {
		detail += "; problems: " + strings.Join(problems, "; ")
	}
	s.auditLocked(AuditRecord{Time: now, Action: AuditLoad, Who: "system", Detail: detail})
	s.log.Info("rules: state loaded", "dir", dir, "entries", s.nUser, "expired_while_down", expired, "problems", len(problems))
	if err := writeSync(p.af, p.abuf); err != nil {
		return nil, fmt.Errorf("rules: writing audit log in %s: %w", dir, err)
	}
	p.abuf = p.abuf[:0]
	return p, nil
}

func validLoaded(e *Entry) error {
	switch e.Kind {
	case KindBan, KindAllow:
		if !e.Value.IsValid() {
			return fmt.Errorf("%s without a valid value", e.Kind)
		}
		e.Value = unmapPrefix(e.Value).Masked()
	case KindACL:
		if e.ACL == nil {
			return fmt.Errorf("acl without its acl part")
		}
	default:
		return fmt.Errorf("unknown kind %q", e.Kind)
	}
	if e.Action != ActionBlock && e.Action != ActionObserve {
		return fmt.Errorf("unknown action %q", e.Action)
	}
	if e.ID == 0 {
		return fmt.Errorf("id 0")
	}
	return nil
}

// readState reads a snapshot. bad counts unreadable entry lines; err is
// set when the header itself is unreadable.
func readState(r io.Reader, put func(*Entry)) (stateHeader, int, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var hdr stateHeader
	line, err := br.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return hdr, 0, fmt.Errorf("empty or unreadable header")
	}
	if err := json.Unmarshal(line, &hdr); err != nil || hdr.Version == 0 {
		return hdr, 0, fmt.Errorf("header is not a canopy state header")
	}
	if hdr.Version > stateVersion {
		return hdr, 0, fmt.Errorf("written by a newer canopy (state version %d)", hdr.Version)
	}
	bad, n := 0, 0
	var trailer *stateTrailer
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if trailer != nil {
				bad++ // anything after the trailer
			} else if bytes.HasPrefix(line, []byte(`{"end":`)) {
				trailer = new(stateTrailer)
				if json.Unmarshal(line, trailer) != nil || !trailer.End {
					bad++
				}
			} else {
				var e Entry
				if json.Unmarshal(line, &e) != nil {
					bad++
				} else {
					put(&e)
					n++
				}
			}
		}
		if err != nil {
			break
		}
	}
	if bad == 0 && trailer == nil {
		return hdr, 0, fmt.Errorf("truncated: no end line after %d entries", n)
	}
	if bad == 0 && trailer.Entries != n {
		return hdr, 0, fmt.Errorf("truncated: end line says %d entries, found %d", trailer.Entries, n)
	}
	return hdr, bad, nil
}

// replayJournal applies one journal. A bad final line without its newline
// is a torn write (the Add it belonged to never returned) and is reported
// as torn; any other unreadable line counts as bad.
func replayJournal(path string, put func(*Entry), del func(uint64)) (torn bool, bad int, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, 0, err
	}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		var line []byte
		last := i < 0
		if last {
			line, data = data, nil
		} else {
			line, data = data[:i], data[i+1:]
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var j journalRec
		if json.Unmarshal(line, &j) != nil || (j.Op == "put" && j.Entry == nil) || (j.Op != "put" && j.Op != "del") {
			if last {
				torn = true
			} else {
				bad++
			}
			continue
		}
		if j.Op == "put" {
			put(j.Entry)
		} else {
			del(j.ID)
		}
	}
	return torn, bad, nil
}

func openAudit(dir string) (*os.File, error) {
	path := filepath.Join(dir, auditFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	// A crash mid-line leaves no newline; start the next record on a line
	// of its own so one torn record does not take the next one with it.
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		var b [1]byte
		if _, err := f.ReadAt(b[:], st.Size()-1); err == nil && b[0] != '\n' {
			f.Write([]byte{'\n'})
		}
	}
	return f, nil
}

// Audit appends a record to the audit log (mode changes, reloads and the
// like from other packages). Time defaults to now. It returns once the
// record is on disk.
func (s *Store) Audit(rec AuditRecord) error {
	if rec.Action == "" {
		return errf(CodeInvalid, nil, "audit record without an action")
	}
	if rec.Time.IsZero() {
		rec.Time = s.now()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errf(CodeStorage, nil, "rules store is closed; audit record not written")
	}
	s.auditLocked(rec)
	b := s.commitLocked()
	s.mu.Unlock()
	if err := b.wait(); err != nil {
		return fmt.Errorf("rules: audit record not saved: %w", err)
	}
	return nil
}

// ReadAudit returns up to limit audit records at or after since (zero: from
// the beginning), oldest first. limit <= 0 means 1,000. Unreadable lines
// (a torn final record after a crash) are skipped.
func (s *Store) ReadAudit(since time.Time, limit int) ([]AuditRecord, error) {
	if limit <= 0 {
		limit = 1000
	}
	var out []AuditRecord
	if s.p == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, r := range s.auditMem {
			if !r.Time.Before(since) {
				out = append(out, r)
				if len(out) == limit {
					break
				}
			}
		}
		return out, nil
	}
	f, err := os.Open(filepath.Join(s.p.dir, auditFile))
	if err != nil {
		return nil, fmt.Errorf("rules: reading audit log: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var r AuditRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if !r.Time.Before(since) {
			out = append(out, r)
			if len(out) == limit {
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("rules: reading audit log: %w", err)
	}
	return out, nil
}
