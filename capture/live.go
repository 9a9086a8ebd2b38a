package capture

import (
	"fmt"
	"runtime"
	"time"
)

// Defaults for the zero values of LiveConfig.
const (
	// DefaultBlockSize is 128 KiB: a power of two (the kernel allocates
	// blocks as page orders; anything else wastes memory), big enough for
	// a 64 KiB defragmented or GRO-merged packet (Suricata moved to 128 KiB
	// for the same reason), small enough (order 5) to allocate on a box
	// with fragmented memory. At low rates the 1 ms retire timer, not the
	// block size, decides latency; at high rates a block holds ~900
	// minimum-size frames, so the per-block costs (status flip, poll) are
	// amortized.
	DefaultBlockSize = 128 << 10
	// DefaultNumBlocks gives 32 MiB per socket. Two limits matter: at
	// line rate, bytes (~270 ms of a full 1 Gb/s on one worker); at low
	// rates, blocks, because the retire timer closes a block every
	// BlockTimeout even if it holds one frame, so a reader stalled for
	// longer than NumBlocks × BlockTimeout (256 ms) loses frames with the
	// ring nearly empty. Many small blocks serve both.
	DefaultNumBlocks = 256
	// DefaultBlockTimeout is the V3 retire timer. 1 ms is the kernel's
	// granularity; gopacket's 64 ms default would make every reaction
	// tens of milliseconds late.
	DefaultBlockTimeout = time.Millisecond
	// DefaultLaneFrames is the size of each lane ring in frames of
	// laneFrameSize bytes (8 MiB per lane socket).
	DefaultLaneFrames = 4096
	// DefaultLaneNap is how long a worker naps between lane frames during
	// a flood (see napRate): a 20 µs nap cut a SYN flood's capture CPU
	// from about 2 µs to 0.5 µs a frame.
	DefaultLaneNap = 20 * time.Microsecond
	// maxLaneNap bounds LaneNap: a nap longer than the bulk path's
	// block timeout would make the lane slower than the path it shortcuts.
	maxLaneNap = time.Millisecond
)

// laneFrameSize is the V2 ring slot. A slot holds the header (~66 bytes)
// and up to ~1,980 bytes of frame: every header the worker reads, for any
// frame; longer frames are truncated and decoded via their wire length.
const laneFrameSize = 2048

// LiveConfig configures live capture. Every zero value means the default
// documented on its field.
type LiveConfig struct {
	// Ifaces are the interfaces to capture on (e.g. the two legs of a TAP).
	// Meta.Port is the index in this list. At least one is required.
	Ifaces []string
	// Workers is the number of independent frame streams (fanout members
	// per interface). Zero: runtime.NumCPU().
	Workers int
	// BlockSize is the TPACKET_V3 block size in bytes, a power of two and a
	// multiple of the page size. Zero: DefaultBlockSize.
	BlockSize int
	// NumBlocks is the number of blocks per socket. Zero: DefaultNumBlocks.
	NumBlocks int
	// BlockTimeout is how long the kernel holds a partly filled block
	// before handing it over, rounded up to whole milliseconds (the
	// kernel's unit). Zero: DefaultBlockTimeout (1 ms).
	BlockTimeout time.Duration
	// Lane adds the low-latency lane: per worker and interface a second
	// socket with a TPACKET_V2 ring and a BPF filter passing SYN/FIN/RST,
	// TCP payload and UDP, delivered with Meta.Lane set ahead of the bulk
	// copy of the same frame. Zero: no lane.
	Lane bool
	// LaneFrames is the number of frames in each lane ring. Zero:
	// DefaultLaneFrames.
	LaneFrames int
	// LaneNap is how long a worker that has run out of frames sleeps,
	// while its lane rings bring napRate frames a second or more (a
	// flood), instead of waking for every lane frame; a lane frame then
	// waits at most this long plus the thread's timer slack. Zero:
	// DefaultLaneNap. Negative: never nap, a wake-up per lane frame (the
	// lowest latency under a flood, and several times the CPU).
	LaneNap time.Duration
	// Promiscuous puts the interfaces in promiscuous mode for as long as the
	// sockets are open (a mirror port needs it unless the NIC already
	// accepts every frame). Zero: the NIC filter is left alone.
	Promiscuous bool
	// FanoutID is the first PACKET_FANOUT group id; each interface uses two
	// (FanoutID+2k for bulk, +2k+1 for the lane). Zero: the kernel assigns
	// unused ids (PACKET_FANOUT_FLAG_UNIQUEID), so two sensors in one
	// network namespace can never join each other's group by accident.
	// With a fixed id, a second process using the same id and settings
	// would be joined silently and split the flows; leave it zero unless
	// something outside canopy must find the group.
	FanoutID uint16
}

// withDefaults validates c and fills in its zero values.
func (c LiveConfig) withDefaults() (LiveConfig, error) {
	if len(c.Ifaces) == 0 {
		return c, fmt.Errorf("live capture: no interface given: name the mirror port(s) to capture on")
	}
	if len(c.Ifaces) > 255 {
		return c, fmt.Errorf("live capture: %d interfaces; at most 255 fit Meta.Port", len(c.Ifaces))
	}
	seen := map[string]bool{}
	for _, n := range c.Ifaces {
		if seen[n] {
			return c, fmt.Errorf("live capture: interface %s listed twice: every frame would be seen twice", n)
		}
		seen[n] = true
	}
	if c.Workers == 0 {
		c.Workers = runtime.NumCPU()
	}
	if c.Workers < 0 || c.Workers > 256 {
		return c, fmt.Errorf("live capture: %d workers: use 1..256 (the kernel's fanout group limit)", c.Workers)
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.BlockSize < 4096 || c.BlockSize&(c.BlockSize-1) != 0 {
		return c, fmt.Errorf("live capture: block size %d: use a power of two of at least 4096 bytes", c.BlockSize)
	}
	if c.NumBlocks == 0 {
		c.NumBlocks = DefaultNumBlocks
	}
	if c.NumBlocks < 2 {
		return c, fmt.Errorf("live capture: %d blocks: use at least 2, so the kernel can fill one while a worker reads another", c.NumBlocks)
	}
	if c.BlockTimeout == 0 {
		c.BlockTimeout = DefaultBlockTimeout
	}
	if c.BlockTimeout < 0 || c.BlockTimeout > time.Second {
		return c, fmt.Errorf("live capture: block timeout %v: use 1ms..1s", c.BlockTimeout)
	}
	if c.LaneFrames == 0 {
		c.LaneFrames = DefaultLaneFrames
	}
	if c.LaneFrames < 16 {
		return c, fmt.Errorf("live capture: %d lane frames: use at least 16", c.LaneFrames)
	}
	if c.LaneNap == 0 {
		c.LaneNap = DefaultLaneNap
	}
	if c.LaneNap > maxLaneNap {
		return c, fmt.Errorf("live capture: lane nap %v: use at most %v (longer than a block timeout, the lane would lag the bulk path), or a negative value for none", c.LaneNap, maxLaneNap)
	}
	if c.FanoutID != 0 && int(c.FanoutID)+2*len(c.Ifaces) > 0xffff {
		return c, fmt.Errorf("live capture: fanout id %d leaves no room for %d interfaces (two ids each)", c.FanoutID, len(c.Ifaces))
	}
	return c, nil
}

// timeoutMillis is the block timeout in the kernel's unit, rounded up.
func (c LiveConfig) timeoutMillis() uint32 {
	return uint32((c.BlockTimeout + time.Millisecond - 1) / time.Millisecond)
}
