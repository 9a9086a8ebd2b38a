package inject

import (
	"sync"
	"sync/atomic"

	"canopy/capture"
)

// Sender puts a finished frame on the wire. It is the seam between the
// sensor and the kernel: PacketSender sends, Recorder only records (dry
// run). Implementations are safe for concurrent use, and Send must not
// retain frame after it returns.
type Sender interface {
	Send(frame []byte) error
}

var (
	_ Sender = (*PacketSender)(nil)
	_ Sender = (*Recorder)(nil)
)

// SenderConfig configures OpenSender.
type SenderConfig struct {
	// Iface is the inject interface (--inject-iface). Required.
	Iface string
	// QdiscBypass sets PACKET_QDISC_BYPASS: frames go straight to the
	// driver instead of queueing behind other traffic in the qdisc, which
	// keeps a reset's latency independent of load. The price: a full driver
	// queue makes Send fail (ENOBUFS/EBUSY) instead of waiting, tc rules on
	// the interface are ignored, and tcpdump on the inject interface no
	// longer sees the injected frames. The last point is also a benefit:
	// in reflect mode (injecting on a capture port) the sensor's own capture
	// sockets do not see its resets either. canopy's default
	// (DefaultSenderConfig and the command line) is true; the zero value,
	// false, goes through the qdisc.
	QdiscBypass bool
}

// DefaultSenderConfig is the configuration canopy runs with for iface.
func DefaultSenderConfig(iface string) SenderConfig {
	return SenderConfig{Iface: iface, QdiscBypass: true}
}

// ReflectMACs returns the Ethernet addresses for a frame going back to p's
// sender out of the port p was captured on ("reflect" mode, injecting on the
// capture port itself): the destination is p's source and the source is
// p's destination, so the frame looks like the peer's reply to the switch.
// The caller swaps the observed MACs this way and rebuilds p's VLAN stack.
// Sending with the peer's source MAC out of the sensor's port can make the
// switch relearn that MAC on the sensor's port (MAC flapping, port-security
// shutdowns), and many SPAN ports drop ingress frames anyway: prefer a
// dedicated inject port, with the next hop's MAC (NextHop) and the port's
// own (PacketSender.MAC).
func ReflectMACs(p *capture.Packet) (dst, src [6]byte) {
	return p.SrcMAC, p.DstMAC
}

// Recorder is the dry-run sink: a Sender that counts frames and keeps the
// Describe line of the most recent ones instead of sending them. It backs
// observe mode ("would block") and lets tests see what the sensor decided
// to send. It is not a mock of the kernel: it accepts every frame and tells
// nothing about whether a real stack would act on it.
type Recorder struct {
	count atomic.Uint64

	mu   sync.Mutex
	last []string // ring of Describe lines
	next int      // where the next line goes in last
	full bool     // last has wrapped
}

// NewRecorder returns a Recorder keeping the last keep descriptions (at
// least 1).
func NewRecorder(keep int) *Recorder {
	return &Recorder{last: make([]string, max(keep, 1))}
}

// Send records frame: it counts it and stores Describe(frame). It never
// fails. It allocates (Describe), which is acceptable in observe mode.
func (r *Recorder) Send(frame []byte) error {
	d := Describe(frame)
	r.count.Add(1)
	r.mu.Lock()
	r.last[r.next] = d
	r.next++
	if r.next == len(r.last) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
	return nil
}

// Count is how many frames Send has recorded.
func (r *Recorder) Count() uint64 { return r.count.Load() }

// Last returns the kept descriptions, oldest first.
func (r *Recorder) Last() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]string(nil), r.last[:r.next]...)
	}
	out := make([]string, 0, len(r.last))
	out = append(out, r.last[r.next:]...)
	return append(out, r.last[:r.next]...)
}
