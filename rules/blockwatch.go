package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

const (
	// blockDebounce is how long the watcher waits after the last event
	// before reading the file: scripts and editors write in bursts.
	blockDebounce = 150 * time.Millisecond
	// emptyGrace is how long a file that suddenly lists nothing must stay
	// that way before its bans are lifted: "truncate, then append" scripts
	// pass through an empty file, and lifting every ban for a moment would
	// let attackers back in.
	emptyGrace = time.Second
)

// FileReport says what applying a block file did.
type FileReport struct {
	Path      string      // absolute path, also RequestedBy of its entries
	Lines     int         // valid entries in the file
	Added     int         // new bans
	Removed   int         // bans lifted because their line is gone
	Updated   int         // bans whose action changed
	Unchanged int         // lines already in force
	Skipped   int         // lines not applied: already banned by another origin, or expired while the line stayed
	Errors    []LineError // unparsable lines and refused bans (too wide, allowlisted, store full)
}

// String summarises the report in one line, for logs and the audit trail.
func (r FileReport) String() string {
	return fmt.Sprintf("%s: %d lines, %d added, %d removed, %d updated, %d unchanged, %d skipped, %d errors",
		r.Path, r.Lines, r.Added, r.Removed, r.Updated, r.Unchanged, r.Skipped, len(r.Errors))
}

// LoadBlockFile reads path and applies it as a diff against the bans this
// file added before: new lines become bans (origin file, RequestedBy the
// absolute path), lines that disappeared are lifted, changed actions are
// updated. Guards apply as for any add; refused lines are reported with
// their line numbers and do not stop the others. A ttl counts from when
// the line was first applied; a line whose ban expired is not re-added
// until it disappears from the file and comes back (or canopy restarts).
// An error means the file could not be read, and nothing was changed.
func (s *Store) LoadBlockFile(path string) (FileReport, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return FileReport{Path: path}, fmt.Errorf("block file %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return FileReport{Path: abs}, fmt.Errorf("block file %s: %w", abs, err)
	}
	entries, perrs := ParseBlockFile(f, abs)
	f.Close()
	return s.applyBlockFile(abs, entries, perrs)
}

// applyBlockFile applies one parsed file. Applies are serialised (the
// watcher and a SIGHUP may race), and a big file is applied in chunks of
// walkChunk lines, releasing the mutex in between so API adds are not held
// up for the whole file; the partial state is consistent (each line is
// either applied or not yet), and subscribers see it grow.
func (s *Store) applyBlockFile(path string, entries []FileEntry, perrs []LineError) (FileReport, error) {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	rep := FileReport{Path: path, Lines: len(entries), Errors: perrs}
	closedErr := errf(CodeStorage, nil, "rules store is closed; block file not (fully) applied")
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return rep, closedErr
	}
	now := s.now()
	want := make(map[netip.Prefix]bool, len(entries))
	for i, fe := range entries {
		if i > 0 && i%walkChunk == 0 {
			s.commitLocked() // publish this chunk; the final wait below covers the disk
			s.mu.Unlock()
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				return rep, closedErr
			}
		}
		cur := s.fileRecs[path]
		exp := s.fileExpired[path]
		want[fe.Value] = true
		if r := cur[fe.Value]; r != nil {
			if r.e.Action != fe.Action {
				s.extendLocked(r, Request{Action: fe.Action, RequestedBy: path}, r.e.Expires, now)
				rep.Updated++
			} else {
				rep.Unchanged++
			}
			continue
		}
		if exp[fe.Value] {
			rep.Skipped++
			continue
		}
		if other := s.byKey[entryKey{kind: KindBan, value: fe.Value}]; other != nil {
			rep.Skipped++ // another origin (or another file) owns it; leave it as it is
			continue
		}
		_, _, err := s.addLocked(Request{
			Kind: KindBan, Value: fe.Value.String(), TTL: fe.TTL, Action: fe.Action,
			Reason: fe.Reason, Origin: OriginFile, RequestedBy: path,
		}, now)
		if err != nil {
			rep.Errors = append(rep.Errors, LineError{path, fe.Line, err.Error()})
			continue
		}
		rep.Added++
	}
	var gone []*record
	for p, r := range s.fileRecs[path] {
		if !want[p] {
			gone = append(gone, r)
		}
	}
	for i, r := range gone {
		if i > 0 && i%walkChunk == 0 {
			s.commitLocked()
			s.mu.Unlock()
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				return rep, closedErr
			}
		}
		if r.dead {
			continue // lifted meanwhile (expired, removed through the API)
		}
		s.removeLocked(r, OpRemoved, "file", "line removed from "+path, now)
		rep.Removed++
	}
	for p := range s.fileExpired[path] {
		if !want[p] {
			delete(s.fileExpired[path], p)
		}
	}
	s.auditLocked(AuditRecord{Time: now, Action: AuditReload, Who: "file", Detail: rep.String()})
	b := s.commitLocked()
	s.mu.Unlock()
	if err := b.wait(); err != nil {
		return rep, errf(CodeStorage, nil, fmt.Sprintf("block file %s applied, but the audit log write failed: %v", path, err))
	}
	return rep, nil
}

// fileCount is how many bans the block file at path has in force.
func (s *Store) fileCount(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.fileRecs[path])
}

// WatchBlockFile applies path now and again after every change until ctx
// is done. It watches the directory, not the file, so it follows editors
// that write a temp file and rename it over, scripts that truncate and
// append, and in-place edits; events are debounced (150 ms) and a change
// is applied within a second of the write. If the file disappears, its
// bans stay in force and the watcher says so; they are diffed again when
// it comes back. A file that suddenly lists nothing is applied only after
// it stayed empty for a second. Parse errors and refusals are logged with
// file:line. It returns an error only if the directory cannot be watched.
func (s *Store) WatchBlockFile(ctx context.Context, path string, log *slog.Logger) error {
	if log == nil {
		log = s.log
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("block file %s: %w", path, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("block file %s: cannot watch: %w", abs, err)
	}
	defer w.Close()
	dir, base := filepath.Dir(abs), filepath.Base(abs)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("block file %s: cannot watch directory %s: %w; create it or fix its permissions", abs, dir, err)
	}
	timer := time.NewTimer(0) // apply once at start
	defer timer.Stop()
	var vanished bool
	var emptySince time.Time
	apply := func() {
		f, err := os.Open(abs)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				if !vanished {
					log.Warn("block file is missing; its bans stay in force until it comes back", "path", abs, "bans_kept", s.fileCount(abs))
					vanished = true
				}
				return
			}
			log.Error("block file cannot be read; its bans stay in force", "path", abs, "err", err)
			return
		}
		entries, perrs := ParseBlockFile(f, abs)
		f.Close()
		if vanished {
			log.Info("block file is back", "path", abs)
			vanished = false
		}
		if len(entries) == 0 && s.fileCount(abs) > 0 {
			if emptySince.IsZero() {
				emptySince = time.Now()
			}
			if wait := emptyGrace - time.Since(emptySince); wait > 0 {
				timer.Reset(wait)
				return
			}
		}
		emptySince = time.Time{}
		rep, err := s.applyBlockFile(abs, entries, perrs)
		if err != nil {
			log.Error("block file not applied", "path", abs, "err", err)
			return
		}
		for _, le := range rep.Errors {
			log.Warn("block file line not applied", "error", le.Error())
		}
		log.Info("block file applied", "path", abs, "lines", rep.Lines, "added", rep.Added, "removed", rep.Removed,
			"updated", rep.Updated, "unchanged", rep.Unchanged, "skipped", rep.Skipped, "errors", len(rep.Errors))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			// Only events for the file itself count; an editor's rename
			// of its temp file onto it arrives as a Create for it.
			if filepath.Base(ev.Name) != base || ev.Op == fsnotify.Chmod {
				continue
			}
			timer.Reset(blockDebounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflowed event queue means we may have missed a
			// change: re-read to be sure.
			log.Warn("block file watcher", "path", abs, "err", err)
			timer.Reset(blockDebounce)
		case <-timer.C:
			apply()
		}
	}
}
