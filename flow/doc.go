// Package flow owns canopy's view of every session on the mirror port: a
// sharded flow table (one Table per capture worker, no locks) that keeps, per
// direction, the exact TCP sequence state the injector computes its resets
// from, plus counters, L2 details and a sensor-owned enforcement record; and
// the top-talkers pipeline, where the hot path only adds to a per-second
// Bucket that the sensor swaps out once a second and an Aggregator (on the
// snapshotter goroutine) merges into immutable Snapshots with iftop-style
// 2 s / 10 s / 40 s rates. Time always comes from the caller (packet
// timestamps or a clock it owns), so pcap replay and tests get sensible rates.
//
// Memory: a flow is 192 bytes (three cache lines; see Flow) and a full
// table just under 200 bytes per flow with its indexes. To get there, the MACs
// and VLAN tags of each direction live in a reference-counted per-table
// dictionary (Table.L2), timestamps are 32-bit ticks read back relative to
// the table's clock (Table.Seen: last to the millisecond, first to 100 ms),
// and the counters share 96 bits (56 for bytes, 40 for packets, both
// saturating). Sequence numbers, acks, windows, TTLs, flags and state bits
// are kept exactly as seen.
//
// Speed: with a million flows nearly every packet's flow is a cache miss.
// Table.Prefetch lets a caller with a batch of packets (the sensor with a
// capture block) put those misses in flight together before it updates
// them one by one, with Table.UpdateAhead, which uses the keys, hashes and
// candidate flows Prefetch worked out instead of finding them again. In a
// full table Prefetch also fetches what the batch's new flows will read to
// evict and link (see prefetchNewFlows). For the misses to overlap,
// nothing a packet's Update computes may wait on the previous packet's
// miss: keys are built in place from address words (internal/ipword),
// never by copying a [16]byte or a struct that was just written in pieces,
// because the CPU cannot forward such a copy from the stores before it and
// makes it wait until they retire. The 5-tuple index (see ibucket) makes finding a flow exactly two
// dependent misses, an index line then the flow, with no chains. Talker
// accounting, the largest part of an in-cache Update, is cut to one
// counter for a flow's later packets in a second by the Bucket's flow
// rows (flowRow), whose index the flow keeps.
//
// Where the time goes with uniformly random flows of a million, batched
// (measured by cutting Update short): finding the flow, three lines from
// DRAM (BenchmarkDRAMLine puts those at 45-50 ns here), and the
// direction's state about 85 ns together; the four talker keys of a
// direction's first packet in a second about 35 ns more, which no cache
// can save: every packet is one. Talkers cost Zipf-distributed flows
// about 14 ns a packet (a quarter of their packets take the long way), a
// 16k-flow hot set about 8, trains of 8 about 10. The hot set paid about
// 36 ns with the row cache flow rows replaced (its 32k directions
// outnumbered the cache's 4096 entries). Those figures are from an Intel
// Xeon. On the AMD EPYC that followed, Update (at 80a2dbe) with the
// talkers call cut out measured, batched, side by side over 3 rounds (a
// noisy machine): random 116-174 → 86-97 ns, Zipf 97-110 → 77-91, trains
// 80-116 → 69-87, so talker accounting is the largest part there too,
// about a third of a random packet. DRAMLine/chase shows where a working
// set lands there.
package flow
