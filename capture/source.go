package capture

import "context"

// Meta is what the kernel (or the capture file) tells about a frame besides
// its bytes.
type Meta struct {
	Timestamp int64  // receive time, ns since the Unix epoch (kernel time for live capture)
	WireLen   uint32 // original length on the wire
	Port      uint8  // index of the interface in the source's list
	Lane      bool   // delivered by the low-latency lane (a copy of it also arrives in bulk)

	// A VLAN tag the kernel stripped from the frame (VLAN offload). When
	// HasVLAN is set, the decoder puts it back as the outermost tag.
	HasVLAN  bool
	VLANTPID uint16
	VLANTCI  uint16
}

// Handler consumes frames on one worker. A source calls it from a single
// goroutine per worker, so a handler owns its state without locks.
type Handler interface {
	// Frame is called for every captured frame. frame is valid only until
	// Frame returns: the ring reuses it.
	Frame(frame []byte, m *Meta)
	// Idle is called when the source has nothing to deliver for a while
	// (at most every 100 ms of silence) and promptly after Wake. now is the
	// source's clock in ns since the Unix epoch (wall clock for live capture,
	// the last frame's time for a file).
	Idle(now int64)
}

// MaxBatch is the most frames one BatchHandler.Frames call carries. With
// a large flow table the handler's cost per frame is mostly waiting for
// memory, and flow.Prefetch makes a batch's misses overlap, so a batch of
// twice the frames waits about as long. Measured with 1M flows, 32
// against 16, medians of runs side by side: the whole sensor worker
// 117.4 → 105.6 ns a frame (BenchmarkWorkerFrames, 7 rounds; 10k flows
// 76.8 → 70.7, 1000 and 100k unchanged); the flow table's Update of
// trains of 8 packets a flow 76.3 → 62.4, Zipf 86.8 → 84.4, random
// 109.7 → 103.5. 64 was no faster with 1M flows and slower with 10k
// (104.5). A batch is decoded before any of it is handled, which delays
// its first frame by about half a microsecond more than 16 did. The lane,
// whose frames decide a race, hands over only the frames already waiting,
// so a frame that comes alone is not held for others.
const MaxBatch = 32

// BatchHandler is a Handler that can also take frames several at a time,
// to look ahead (the sensor prefetches the flows of a batch so their cache
// misses overlap). A live source hands it the frames of each bulk ring
// block through Frames, up to MaxBatch per call, in ring order, and the
// lane's the same way, each call taking the lane frames waiting when it
// starts (often just one); capture files still go through Frame. Frames
// must handle its frames exactly as that many Frame calls in the same
// order would.
type BatchHandler interface {
	Handler
	// Frames is called with up to MaxBatch frames and their metadata,
	// ms[i] describing frames[i]. Both are valid only until Frames returns.
	Frames(frames [][]byte, ms []Meta)
}

// Source is where frames come from: live AF_PACKET rings or a capture file.
// Both feed the same worker code.
type Source interface {
	// Workers is the number of independent frame streams; the fanout hash
	// sends both directions of a flow to the same one.
	Workers() int
	// Run delivers worker i's frames to h until ctx is done (returns nil),
	// the source ends (a file: returns nil after the last frame), or fails.
	Run(ctx context.Context, worker int, h Handler) error
	// Wake makes worker i's Run call h.Idle promptly, from any goroutine.
	Wake(worker int)
	// Stats returns the counters so far; safe from any goroutine.
	Stats() Stats
	// Close releases sockets and rings; call it after every Run returned.
	Close() error
}

// Stats are capture counters, per socket and in total.
type Stats struct {
	Packets      uint64 // frames received by the sockets (kernel count, includes Drops)
	Bytes        uint64 // bytes of the frames handed to handlers
	Drops        uint64 // frames the kernel dropped because a ring was full
	QueueFreezes uint64 // TPACKET_V3 queue freezes
	LanePackets  uint64 // frames delivered through the low-latency lane
	LaneNaps     uint64 // times a worker napped instead of polling, lane frames coming at a flood's rate (see LiveConfig.LaneNap)
	Sockets      []SocketStats
}

// SocketStats are the counters of one capture socket.
type SocketStats struct {
	Iface        string
	Worker       int
	Lane         bool
	Packets      uint64
	Drops        uint64
	QueueFreezes uint64
	LinkDowns    uint64 // times the interface went down under this socket (capture resumes when it comes back up)
}
