package capture

// Our own TPACKET ring code rather than gopacket/afpacket (v1.7.7), because
// that package:
//   - passes an 8-byte optlen to PACKET_FANOUT, which kernels before 5.11
//     reject with EINVAL (we pass the classic 4-byte (type|flags)<<16 | id);
//   - exposes no fd, so PACKET_IGNORE_OUTGOING, PACKET_FANOUT_DATA and the
//     statistics we need cannot be set or read;
//   - allocates per VLAN-tagged packet in OptAddVLANHeader (we hand the
//     stripped tag to Decode in Meta instead of copying bytes);
//   - races Close against a concurrent read (use after munmap). Here an
//     eventfd in every worker's poll set stops the readers, Close joins
//     them, and only then unmaps and closes.

import (
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Offsets into the TPACKET_V3 block descriptor (struct tpacket_block_desc
// with tpacket_hdr_v1), see linux/if_packet.h.
const (
	v3BlockStatus   = 8
	v3BlockNumPkts  = 12
	v3BlockFirstOff = 16
	v3BlockLen      = 20

	// sll_pkttype of the struct sockaddr_ll the kernel places after each
	// frame header (at TPACKET_ALIGN(sizeof header)).
	v3PktType = 48 + 10
	v2PktType = 32 + 10
)

// ethPAllBE is ETH_P_ALL in network byte order, as socket(2) and bind(2)
// want it.
var ethPAllBE = htons(unix.ETH_P_ALL)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sock is one AF_PACKET socket with its mmapped receive ring.
type sock struct {
	fd    int
	mem   []byte
	iface string
	port  uint8
	lane  bool

	// V3 geometry (bulk) or V2 geometry (lane).
	blockSize, numBlocks int
	frameSize, numFrames int
	framesPerBlock       int
	cur                  int // next block (V3) or frame (V2) to read

	// Kernel counters, accumulated: PACKET_STATISTICS clears on read.
	// Guarded by Live.statsMu.
	packets, drops, freezes uint64
	// linkDowns counts ENETDOWN errors the worker saw on this socket.
	linkDowns atomic.Uint64
}

// openSock creates a packet socket bound to ifindex with a receive ring.
// It starts with a drop-everything filter, so nothing lands in the ring
// until the whole fanout group is joined (until then a socket outside the
// group would get a copy of every frame: start-up duplicates).
func openSock(ifi *net.Interface, port uint8, cfg *LiveConfig, lane bool) (*sock, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if err == unix.EPERM || err == unix.EACCES {
			return nil, fmt.Errorf("packet socket on %s: %w: capture needs root or CAP_NET_RAW", ifi.Name, err)
		}
		return nil, fmt.Errorf("packet socket on %s: %w", ifi.Name, err)
	}
	s := &sock{fd: fd, iface: ifi.Name, port: port, lane: lane}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	if err := attachFilter(fd, []bpf.RawInstruction{{Op: 0x06, K: 0}}); err != nil { // ret #0
		return nil, fmt.Errorf("packet socket on %s: attach start-up filter: %w", ifi.Name, err)
	}
	if lane {
		if err := s.setupV2(cfg); err != nil {
			return nil, fmt.Errorf("lane ring on %s: %w", ifi.Name, err)
		}
	} else if err := s.setupV3(cfg); err != nil {
		return nil, fmt.Errorf("capture ring on %s: %w", ifi.Name, err)
	}
	// Our own injected frames must never come back as traffic. This
	// covers the socket while it is outside a fanout group; the group
	// flag (joinFanout) and the sll_pkttype check in the readers cover
	// the rest. Kernels before 4.20 lack it: the pkttype check suffices.
	unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	// Ask for software receive timestamps: this makes the core stamp each
	// skb once on receive, so the lane copy and the bulk copy of a frame
	// carry the same kernel timestamp (without it each ring samples the
	// clock itself and the copies differ by a few hundred ns; the
	// integration test fails without this). The kernel switches stamping
	// on through a work item, so it takes effect within microseconds.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return nil, fmt.Errorf("packet socket on %s: SO_TIMESTAMPNS: %w", ifi.Name, err)
	}
	if cfg.Promiscuous && !lane {
		mreq := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return nil, fmt.Errorf("packet socket on %s: promiscuous mode: %w", ifi.Name, err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAllBE, Ifindex: ifi.Index}); err != nil {
		return nil, fmt.Errorf("packet socket on %s: bind: %w", ifi.Name, err)
	}
	ok = true
	return s, nil
}

func (s *sock) setupV3(cfg *LiveConfig) error {
	if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fmt.Errorf("TPACKET_V3: %w (kernel 3.2 or later needed)", err)
	}
	s.blockSize, s.numBlocks = cfg.BlockSize, cfg.NumBlocks
	req := unix.TpacketReq3{
		Block_size: uint32(cfg.BlockSize),
		Block_nr:   uint32(cfg.NumBlocks),
		// In V3 the frame size only has to pass the kernel's geometry
		// check; packets are packed with variable length.
		Frame_size:     uint32(cfg.BlockSize),
		Frame_nr:       uint32(cfg.NumBlocks),
		Retire_blk_tov: cfg.timeoutMillis(),
	}
	if err := unix.SetsockoptTpacketReq3(s.fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("PACKET_RX_RING %d×%d bytes: %w (lower BlockSize/NumBlocks if memory is short)", cfg.NumBlocks, cfg.BlockSize, err)
	}
	return s.mmap(cfg.BlockSize * cfg.NumBlocks)
}

func (s *sock) setupV2(cfg *LiveConfig) error {
	if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fmt.Errorf("TPACKET_V2: %w", err)
	}
	const laneBlock = 64 << 10
	s.frameSize = laneFrameSize
	s.framesPerBlock = laneBlock / laneFrameSize
	s.numBlocks = (cfg.LaneFrames + s.framesPerBlock - 1) / s.framesPerBlock
	s.numFrames = s.numBlocks * s.framesPerBlock
	s.blockSize = laneBlock
	req := unix.TpacketReq{
		Block_size: laneBlock,
		Block_nr:   uint32(s.numBlocks),
		Frame_size: laneFrameSize,
		Frame_nr:   uint32(s.numFrames),
	}
	if err := unix.SetsockoptTpacketReq(s.fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("PACKET_RX_RING %d frames: %w", s.numFrames, err)
	}
	return s.mmap(laneBlock * s.numBlocks)
}

func (s *sock) mmap(size int) error {
	mem, err := unix.Mmap(s.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	s.mem = mem
	return nil
}

// joinFanout joins the socket to fanout group id. When id is 0 the kernel
// picks an unused id (PACKET_FANOUT_FLAG_UNIQUEID) and the id actually used
// is returned so the other members can join it. The option is the classic
// 4-byte int every kernel since 3.1 accepts.
//
// *ignoreOut asks for PACKET_FANOUT_FLAG_IGNORE_OUTGOING: a fanout member's
// own PACKET_IGNORE_OUTGOING does not apply (the kernel delivers through the
// group's hook, not the socket's), so the group needs the flag. Kernels
// before 6.1 reject it with EINVAL; then *ignoreOut is cleared, the join
// retried without it, and the workers drop outgoing frames by their
// sll_pkttype instead (same result, one ring copy more per injected frame).
func (s *sock) joinFanout(id uint16, flags int, ignoreOut *bool) (uint16, error) {
	mode := unix.PACKET_FANOUT_HASH | flags
	if id == 0 {
		mode |= unix.PACKET_FANOUT_FLAG_UNIQUEID
	}
	var err error = unix.EINVAL
	if *ignoreOut {
		err = unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_FANOUT, (mode|unix.PACKET_FANOUT_FLAG_IGNORE_OUTGOING)<<16|int(id))
		if err == unix.EINVAL {
			*ignoreOut = false
		}
	}
	if err == unix.EINVAL && !*ignoreOut {
		err = unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_FANOUT, mode<<16|int(id))
	}
	if err != nil && id == 0 {
		return 0, fmt.Errorf("join a new fanout group on %s: %w (a kernel without PACKET_FANOUT_FLAG_UNIQUEID: set FanoutID explicitly)", s.iface, err)
	}
	if err != nil {
		return 0, fmt.Errorf("join fanout group %d on %s: %w (another program may use this id with other settings: set a different FanoutID)", id, s.iface, err)
	}
	if id == 0 {
		v, err := unix.GetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			return 0, fmt.Errorf("read fanout group id on %s: %w", s.iface, err)
		}
		id = uint16(v)
	}
	return id, nil
}

func attachFilter(fd int, prog []bpf.RawInstruction) error {
	f := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &f)
}

// readStats adds the kernel counters since the last call to the socket's
// totals. Caller holds Live.statsMu.
func (s *sock) readStats() {
	if s.fd < 0 {
		return
	}
	if s.lane {
		st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err == nil {
			s.packets += uint64(st.Packets)
			s.drops += uint64(st.Drops)
		}
		return
	}
	st, err := unix.GetsockoptTpacketStatsV3(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err == nil {
		s.packets += uint64(st.Packets)
		s.drops += uint64(st.Drops)
		s.freezes += uint64(st.Freeze_q_cnt)
	}
}

func (s *sock) close() {
	if s.mem != nil {
		unix.Munmap(s.mem)
		s.mem = nil
	}
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// status returns the status word at off, which the kernel writes
// concurrently.
func (s *sock) status(off int) uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&s.mem[off])))
}

// release hands the block or frame at off back to the kernel.
func (s *sock) release(off int) {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&s.mem[off])), unix.TP_STATUS_KERNEL)
}

// v3Ready reports whether the next V3 block is ours to read.
func (s *sock) v3Ready() bool {
	return s.status(s.cur*s.blockSize+v3BlockStatus)&unix.TP_STATUS_USER != 0
}

// frameBatch collects a block's frames for a BatchHandler.
type frameBatch struct {
	frames [MaxBatch][]byte
	metas  [MaxBatch]Meta
	n      int
}

// flush hands the collected frames to h.
func (b *frameBatch) flush(h BatchHandler) {
	if b.n > 0 {
		h.Frames(b.frames[:b.n], b.metas[:b.n])
		clear(b.frames[:b.n])
		b.n = 0
	}
}

// v3Block delivers every frame of the current block to h and releases it:
// through Frame, or in batches through Frames if h is a BatchHandler (fb
// holds the batch; the block stays ours until every batch was handled).
// It returns the number of frames and their bytes. Offsets written by the
// kernel are still checked against the block, so a corrupt ring ends the
// block instead of crashing the sensor.
func (s *sock) v3Block(h Handler, m *Meta, fb *frameBatch) (n, bytes int) {
	bh, batched := h.(BatchHandler)
	base := s.cur * s.blockSize
	blk := s.mem[base : base+s.blockSize : base+s.blockSize]
	num := int(nativeU32(blk, v3BlockNumPkts))
	off := int(nativeU32(blk, v3BlockFirstOff))
	for i := 0; i < num; i++ {
		if off < 0 || off+unix.SizeofTpacket3Hdr > len(blk) {
			break
		}
		hdr := (*unix.Tpacket3Hdr)(unsafe.Pointer(&blk[off]))
		start := off + int(hdr.Mac)
		end := start + int(hdr.Snaplen)
		if start < off || end > len(blk) {
			break
		}
		if blk[off+v3PktType] == unix.PACKET_OUTGOING {
			goto next // sent by this host (e.g. our own RSTs): never traffic
		}
		if batched {
			m = &fb.metas[fb.n]
		}
		*m = Meta{
			Timestamp: int64(hdr.Sec)*1e9 + int64(hdr.Nsec),
			WireLen:   hdr.Len,
			Port:      s.port,
		}
		if hdr.Status&unix.TP_STATUS_VLAN_VALID != 0 {
			m.HasVLAN = true
			m.VLANTCI = uint16(hdr.Hv1.Vlan_tci)
			if hdr.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
				m.VLANTPID = hdr.Hv1.Vlan_tpid
			}
			m.WireLen += vlanTagLen
		}
		if batched {
			fb.frames[fb.n] = blk[start:end:end]
			if fb.n++; fb.n == MaxBatch {
				fb.flush(bh)
			}
		} else {
			h.Frame(blk[start:end:end], m)
		}
		n++
		bytes += end - start
	next:
		if hdr.Next_offset == 0 {
			break
		}
		off += int(hdr.Next_offset)
	}
	if batched {
		fb.flush(bh)
	}
	s.release(base + v3BlockStatus)
	s.cur++
	if s.cur == s.numBlocks {
		s.cur = 0
	}
	return n, bytes
}

// v2FrameOff is where V2 frame i starts in the ring.
func (s *sock) v2FrameOff(i int) int {
	return (i/s.framesPerBlock)*s.blockSize + (i%s.framesPerBlock)*s.frameSize
}

// v2Drain delivers every ready frame of a V2 ring, flagged Lane: through
// Frame, or, if h is a BatchHandler, through Frames, each call taking the
// frames that are ready when it starts (up to MaxBatch; fb holds them, and
// they stay ours until the call returns). A frame that arrives alone goes
// to Frames alone, so an idle lane waits for nothing; frames that queued
// up behind a busy worker (a SYN flood, a burst of data) are handled
// together, so the flow table can prefetch them as it does a bulk block's.
func (s *sock) v2Drain(h Handler, m *Meta, fb *frameBatch) (n int) {
	bh, batched := h.(BatchHandler)
	if !batched {
		for {
			off := s.v2FrameOff(s.cur)
			if s.status(off)&unix.TP_STATUS_USER == 0 {
				return n
			}
			if fr, ok := s.v2Frame(off, m); ok {
				h.Frame(fr, m)
				n++
			}
			s.release(off)
			s.nextFrame()
		}
	}
	for {
		first, taken := s.cur, 0 // ring frames this round holds, handed on or skipped
		for fb.n < MaxBatch && taken < s.numFrames {
			off := s.v2FrameOff(s.cur)
			if s.status(off)&unix.TP_STATUS_USER == 0 {
				break
			}
			if fr, ok := s.v2Frame(off, &fb.metas[fb.n]); ok {
				fb.frames[fb.n] = fr
				fb.n++
			}
			taken++
			s.nextFrame()
		}
		if taken == 0 {
			return n
		}
		n += fb.n
		fb.flush(bh)
		// The handler is done with them: hand them back, in ring order.
		for i := range taken {
			s.release(s.v2FrameOff((first + i) % s.numFrames))
		}
	}
}

// nextFrame moves a V2 ring's cursor on by one frame.
func (s *sock) nextFrame() {
	if s.cur++; s.cur == s.numFrames {
		s.cur = 0
	}
}

// v2Frame returns the frame at off in a V2 ring and sets *m to its
// metadata, or reports false for a frame that is not traffic: sent by this
// host (our own resets), or with offsets outside the frame (the kernel
// wrote them, but a corrupt ring must not crash the sensor).
func (s *sock) v2Frame(off int, m *Meta) ([]byte, bool) {
	fr := s.mem[off : off+s.frameSize : off+s.frameSize]
	hdr := (*unix.Tpacket2Hdr)(unsafe.Pointer(&fr[0]))
	start := int(hdr.Mac)
	end := start + int(hdr.Snaplen)
	if start < unix.SizeofTpacket2Hdr || end > len(fr) || fr[v2PktType] == unix.PACKET_OUTGOING {
		return nil, false
	}
	*m = Meta{
		Timestamp: int64(hdr.Sec)*1e9 + int64(hdr.Nsec),
		WireLen:   hdr.Len,
		Port:      s.port,
		Lane:      true,
	}
	if hdr.Status&unix.TP_STATUS_VLAN_VALID != 0 {
		m.HasVLAN = true
		m.VLANTCI = hdr.Vlan_tci
		if hdr.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			m.VLANTPID = hdr.Vlan_tpid
		}
		m.WireLen += vlanTagLen
	}
	return fr[start:end:end], true
}

func nativeU32(b []byte, off int) uint32 {
	return *(*uint32)(unsafe.Pointer(&b[off]))
}

// osPageSize is checked against BlockSize.
var osPageSize = os.Getpagesize()
