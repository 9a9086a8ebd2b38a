// Package flow owns canopy's view of every session on the mirror port: a
// sharded flow table (one Table per capture worker, no locks) that keeps, per
// direction, the exact TCP sequence state the injector computes its resets
// from, plus counters, L2 details and a sensor-owned enforcement record; and
// the top-talkers pipeline, where the hot path only adds to a per-second
// Bucket that the sensor swaps out once a second and an Aggregator (on the
// snapshotter goroutine) merges into immutable Snapshots with iftop-style
// 2 s / 10 s / 40 s rates. Time always comes from the caller (packet
// timestamps or a clock it owns), so pcap replay and tests get sensible rates.
package flow
