package inject

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"canopy/capture"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// wireBed is one namespace holding a veth pair: the sender writes on tx, a
// sniffer reads what arrives on rx.
type wireBed struct {
	ns     netns.NsHandle
	tx, rx string
}

func newWireBed(t testing.TB) *wireBed {
	requireRoot(t)
	sfx := suffix(t)
	b := &wireBed{tx: "t" + sfx + "inj", rx: "r" + sfx + "inj"}
	b.ns = newNS(t, "w"+sfx+"inj")
	vethPair(t, b.ns, b.tx, b.ns, b.rx)
	return b
}

func (b *wireBed) open(t testing.TB, bypass bool) *PacketSender {
	t.Helper()
	var s *PacketSender
	inNS(t, b.ns, func() error {
		var err error
		s, err = OpenSender(SenderConfig{Iface: b.tx, QdiscBypass: bypass})
		return err
	})
	t.Cleanup(func() { s.Close() })
	return s
}

func testFrames(t *testing.T) map[string][]byte {
	frames := map[string][]byte{}
	v4a, v4b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for name, r := range map[string]Reset{
		"rst v4":      {Src: v4a, Dst: v4b, SrcPort: 80, DstPort: 5555, Seq: 1, Ack: 2, Flags: capture.FlagRST | capture.FlagACK, TTL: 64},
		"rst v6 vlan": {Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), Flags: capture.FlagRST, TTL: 64, VLANs: [2]capture.VLAN{{TPID: 0x8100, TCI: 0x2064}}, NumVLANs: 1},
		"rst v4 qinq": {Src: v4a, Dst: v4b, Flags: capture.FlagRST, TTL: 64, VLANs: [2]capture.VLAN{{TPID: 0x88a8, TCI: 200}, {TPID: 0x8100, TCI: 100}}, NumVLANs: 2},
	} {
		r.DstMAC = mac6(macA)
		r.SrcMAC = mac6(macB)
		buf := make([]byte, MaxFrameLen)
		n, err := BuildReset(buf, &r)
		if err != nil {
			t.Fatal(err)
		}
		frames[name] = buf[:n]
	}
	frames["icmp v4 vlan"] = unhex(t, wantICMP4)
	frames["icmpv6 qinq"] = unhex(t, wantICMP6QQ)
	return frames
}

// TestPacketSenderWire proves that what Send is given is, byte for byte,
// what the other end of the link receives — tags included.
func TestPacketSenderWire(t *testing.T) {
	b := newWireBed(t)
	sn := newSniffer(t, b.ns, b.rx)
	for _, bypass := range []bool{true, false} {
		s := b.open(t, bypass)
		if want := linkMAC(t, b.ns, b.tx); !bytes.Equal(s.MAC(), want[:]) {
			t.Errorf("MAC() = %v, want %x", s.MAC(), want)
		}
		for name, f := range testFrames(t) {
			if err := s.Send(f); err != nil {
				t.Fatalf("bypass=%v %s: %v", bypass, name, err)
			}
			var seen []string
			if _, err := sn.await(2*time.Second, func(got []byte) bool {
				if bytes.Equal(got, f) {
					return true
				}
				seen = append(seen, Describe(got))
				return false
			}); err != nil {
				t.Errorf("bypass=%v %s: %v; sent %s, saw %q", bypass, name, err, Describe(f), seen)
			}
		}
	}
}

func TestPacketSenderConcurrent(t *testing.T) {
	b := newWireBed(t)
	sn := newSniffer(t, b.ns, b.rx)
	if err := unix.SetsockoptInt(sn.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		t.Fatal(err)
	}
	s := b.open(t, true)
	const workers, each = 4, 100
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, MaxFrameLen)
			r := Reset{DstMAC: mac6(macA), SrcMAC: mac6(macB), Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
				SrcPort: uint16(w), DstPort: 9, Flags: capture.FlagRST, TTL: 64}
			for i := range each {
				r.Seq = uint32(i)
				n, err := BuildReset(buf, &r)
				if err == nil {
					err = s.Send(buf[:n])
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := map[[2]uint32]bool{}
	for len(got) < workers*each {
		f, err := sn.await(2*time.Second, func(f []byte) bool {
			var p capture.Packet
			return capture.Decode(f, &capture.Meta{WireLen: uint32(len(f))}, &p) == capture.OK && p.IsTCP() && p.DstPort == 9
		})
		if err != nil {
			t.Fatalf("received %d of %d frames: %v", len(got), workers*each, err)
		}
		var p capture.Packet
		capture.Decode(f, &capture.Meta{WireLen: uint32(len(f))}, &p)
		got[[2]uint32{uint32(p.SrcPort), p.Seq}] = true
	}
}

func TestPacketSenderErrors(t *testing.T) {
	b := newWireBed(t)
	isInjectOpErr := func(err error) *net.OpError {
		t.Helper()
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "inject" {
			t.Fatalf("error %v (%T) is not a *net.OpError with op inject", err, err)
		}
		return oe
	}
	inNS(t, b.ns, func() error {
		_, err := OpenSender(SenderConfig{Iface: "nosuch0inj"})
		isInjectOpErr(err)
		if !strings.Contains(err.Error(), "nosuch0inj") {
			t.Errorf("error does not name the interface: %v", err)
		}
		_, err = OpenSender(SenderConfig{})
		isInjectOpErr(err)
		return nil
	})

	// A down interface is refused at open: the operator learns it at start-up.
	h := nlHandle(t, b.ns)
	l, _ := h.LinkByName(b.tx)
	if err := h.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	inNS(t, b.ns, func() error {
		_, err := OpenSender(SenderConfig{Iface: b.tx})
		if oe := isInjectOpErr(err); !strings.Contains(oe.Error(), "down") {
			t.Errorf("down interface: %v", err)
		}
		return nil
	})
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}

	s := b.open(t, true)
	if err := s.Send(make([]byte, 13)); !errors.Is(err, unix.EINVAL) {
		t.Errorf("13-byte frame: %v, want EINVAL", err)
	} else {
		isInjectOpErr(err)
	}
	// The link going down under a running sender surfaces as a send error.
	if err := h.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	f := testFrames(t)["rst v4"]
	if err := s.Send(f); err == nil {
		t.Error("send on a down link succeeded")
	} else {
		t.Logf("send on a down link: %v", err)
		isInjectOpErr(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Send(f); !errors.Is(err, net.ErrClosed) {
		t.Errorf("send after Close: %v, want net.ErrClosed", err)
	} else {
		isInjectOpErr(err)
	}
}

// BenchmarkPacketSend measures Send on a veth inside a namespace: the cost
// of one injected frame from the sensor's point of view. Target: 0
// allocs/op; ns/op is dominated by the write(2) and veth's receive path.
func BenchmarkPacketSend(b *testing.B) {
	for _, bypass := range []bool{true, false} {
		name := "qdisc"
		if bypass {
			name = "bypass"
		}
		b.Run(name, func(b *testing.B) {
			bed := newWireBed(b)
			s := bed.open(b, bypass)
			buf := make([]byte, MaxFrameLen)
			n, err := BuildReset(buf, &Reset{DstMAC: mac6(macA), SrcMAC: mac6(macB), Src: netip.MustParseAddr("10.0.0.1"),
				Dst: netip.MustParseAddr("10.0.0.2"), Flags: capture.FlagRST, TTL: 64})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Send(buf[:n]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPacketSendParallel is Send from several workers at once.
func BenchmarkPacketSendParallel(b *testing.B) {
	bed := newWireBed(b)
	s := bed.open(b, true)
	buf := make([]byte, MaxFrameLen)
	n, err := BuildReset(buf, &Reset{DstMAC: mac6(macA), SrcMAC: mac6(macB), Src: netip.MustParseAddr("10.0.0.1"),
		Dst: netip.MustParseAddr("10.0.0.2"), Flags: capture.FlagRST, TTL: 64})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Send(buf[:n]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMdlayherWriteTo is the road not taken: packet.Conn.WriteTo with a
// *packet.Addr builds a sockaddr per call. It is here to show why Send
// writes on the bound socket instead (compare allocs/op).
func BenchmarkMdlayherWriteTo(b *testing.B) {
	bed := newWireBed(b)
	s := bed.open(b, true)
	buf := make([]byte, MaxFrameLen)
	n, err := BuildReset(buf, &Reset{DstMAC: mac6(macA), SrcMAC: mac6(macB), Src: netip.MustParseAddr("10.0.0.1"),
		Dst: netip.MustParseAddr("10.0.0.2"), Flags: capture.FlagRST, TTL: 64})
	if err != nil {
		b.Fatal(err)
	}
	addr := &packet.Addr{HardwareAddr: net.HardwareAddr(macA)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.conn.WriteTo(buf[:n], addr); err != nil {
			b.Fatal(err)
		}
	}
}

// throttle puts a tbf qdisc of 1000 bytes/s with a 16 MB queue on the
// sender's interface: through the qdisc, frames pile up in the socket's
// send buffer.
func (b *wireBed) throttle(t testing.TB) {
	t.Helper()
	h := nlHandle(t, b.ns)
	l, err := h.LinkByName(b.tx)
	if err != nil {
		t.Fatal(err)
	}
	q := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate:       1000, Limit: 16 << 20, Buffer: netlink.Xmittime(1000, 1600),
	}
	if err := h.QdiscAdd(q); err != nil {
		t.Fatalf("add tbf qdisc: %v", err)
	}
}

// TestPacketSenderNeverBlocks: with the send buffer full, Send fails with
// EAGAIN at once instead of parking the worker; with QdiscBypass the qdisc
// (and its backlog) is not in the path at all.
func TestPacketSenderNeverBlocks(t *testing.T) {
	b := newWireBed(t)
	b.throttle(t)
	f := testFrames(t)["rst v4"]
	sendMany := func(s *PacketSender, n int) (int, error) {
		type result struct {
			sent int
			err  error
		}
		done := make(chan result, 1)
		go func() {
			for i := range n {
				if err := s.Send(f); err != nil {
					done <- result{i, err}
					return
				}
			}
			done <- result{n, nil}
		}()
		select {
		case r := <-done:
			return r.sent, r.err
		case <-time.After(20 * time.Second):
			t.Fatal("Send blocked")
			return 0, nil
		}
	}

	sent, err := sendMany(b.open(t, false), 100000)
	if !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("through a stalled qdisc: %d sent, then %v; want EAGAIN", sent, err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "inject" {
		t.Errorf("error %v is not an inject *net.OpError", err)
	}
	t.Logf("through a stalled qdisc: %d frames queued, then %v", sent, err)

	if sent, err := sendMany(b.open(t, true), 20000); err != nil {
		t.Errorf("with QDISC_BYPASS past the same qdisc: %d sent, then %v", sent, err)
	}
}
