// Package rules owns what canopy blocks: bans (IPv4/IPv6 addresses and
// prefixes), layer-4 ACLs and the allowlist, each with an origin, a reason
// and an optional expiry; the safety guards every addition passes (width
// limits, allowlist overlap, an entry cap, the implicit allowlist of the
// sensor's own addresses); the compiled, immutable Set that capture workers
// match packets against without locks or allocations; the block file that
// scripts write and canopy watches; persistence of operator-made entries in
// the state directory; and the append-only audit log of every change.
//
// # Matching
//
// Set.Match checks the allowlist first — if either address is allowlisted
// the verdict is Allowlisted and nothing else is consulted. A ban forced
// past the allowlist guard is stored and audited, but it never makes Match
// block an allowlisted address: the allowlist always wins at match time.
// Then bans: the most specific prefix covering the source or destination
// decides (longest-prefix match; IPv4-mapped IPv6 addresses are unmapped
// first, and so are mapped values given to Add). Then ACLs, in the order
// they were created, first match.
//
// Bans are compiled into a base (rules sorted by address in cache-line
// blocks behind a small fence index, see lpm.go) plus a small overlay of
// recent additions and removals (tombstones). Changes are committed in
// groups: a single committer goroutine applies every change queued since
// its last round to a copy of the overlay, publishes the new Set through an
// atomic pointer, hands the changes to subscribers, and then writes and
// fsyncs the journal. Add returns only after that round, so when Add
// returns Store.Set already matches the new entry and subscribers have been
// handed the change; the visibility delay is the wait for the committer
// (microseconds when idle, at most one fsync when busy). When the overlay
// grows past 4,096 entries (or has been non-empty for two seconds while Run
// is running) it is folded into a new base in the background; a full
// rebuild of a million bans never sits on the path of an Add.
//
// # Persistence
//
// Entries made through the API, the dashboard, the CLI and feeds are
// persisted in Config.StateDir; config and block-file entries are derived
// again from their sources at start, and implicit entries from the
// configuration, so they are not. Each change is one JSON line in a journal;
// Add waits for the fsync of the batch its line went into (group commit:
// concurrent adds share one fsync, so thousands of adds per second cost a
// few hundred fsyncs). Compaction writes a snapshot (temp file, fsync,
// rename, directory fsync) and starts a new journal generation; at start the
// snapshot is read and newer journals replayed. Entries that expired while
// canopy was down are dropped (and audited as expired). A corrupt snapshot
// or journal is moved aside as <name>.corrupt-<time> after its readable
// records are applied, and reported in the log and the audit trail; a torn
// final journal line (a crash mid-write, whose Add never returned) is
// tolerated and reported. We chose plain files over bbolt: the write
// pattern is an append-only log that must group-commit thousands of small
// writes a second (bbolt serialises write transactions, each with its own
// fsync, unless batched through Batch with its own latency), the data is
// read whole at start and never queried on disk, and JSON lines can be read
// and repaired with a text editor at 3 a.m.
//
// # Audit
//
// Every add, extend, update, remove, expire and forced override is appended
// to StateDir/audit.jsonl in the same group commit as the journal; other
// packages add mode changes and reloads through Store.Audit.
package rules
