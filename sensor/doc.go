// Package sensor joins capture, flow, rules and inject into the engine that
// blocks: one worker per capture stream decodes each frame, updates its own
// flow-table shard, asks the current rule set for a verdict (cached per flow
// per rule generation) and, for a blocked flow, sends the resets planned by
// ACK-chasing (kill.go) within a per-flow budget and the global ceiling. It
// tracks each blocked flow's outcome (confirmed, retrying, failed) and the
// reaction latency, kills the live sessions of a newly banned address at
// once, and publishes an immutable Snapshot once a second for the dashboard
// and the API. Workers share no locks: everything they own is touched only
// on their goroutine; other goroutines reach them through a control queue
// and the capture source's Wake.
package sensor
