package inject

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// PacketSender sends frames out of one interface through a transmit-only
// AF_PACKET socket (SOCK_RAW bound with protocol 0, so the kernel never
// queues received frames to it). It is safe for concurrent use by any number
// of workers; Send does not allocate.
type PacketSender struct {
	iface ifaceAddr
	mac   net.HardwareAddr
	conn  *packet.Conn
	rc    syscall.RawConn

	closed  atomic.Bool
	writers sync.Pool // *frameWriter: the closure RawConn.Write needs, reused
}

// sendBuffer is the socket send buffer OpenSender asks for.
const sendBuffer = 4 << 20

// ifaceAddr names the inject interface in errors.
type ifaceAddr string

func (a ifaceAddr) Network() string { return "packet" }
func (a ifaceAddr) String() string  { return string(a) }

// frameWriter carries one frame into RawConn.Write. Its method value fn is
// built once per writer, so handing it to Write allocates nothing.
type frameWriter struct {
	frame []byte
	err   error
	fn    func(fd uintptr) bool
}

func (w *frameWriter) write(fd uintptr) bool {
	// The socket is bound to the interface, so a plain write(2) sends on it
	// with no sockaddr to build; the kernel reads the protocol from the
	// frame's own EtherType (packet_parse_headers).
	//
	// Returning true even on EAGAIN (send buffer full) makes Send fail
	// instead of parking the worker on the netpoller: a worker stuck in Send
	// stops capturing, while a lost reset is re-armed by the flow's next
	// packet.
	_, w.err = unix.Write(int(fd), w.frame)
	return true
}

// OpenSender opens a transmit-only packet socket on cfg.Iface. Call it from
// the network namespace that holds the interface; the socket stays there
// and may be used from any goroutine afterwards. It needs CAP_NET_RAW.
func OpenSender(cfg SenderConfig) (*PacketSender, error) {
	if cfg.Iface == "" {
		return nil, &net.OpError{Op: "inject", Net: "packet", Err: errors.New("no inject interface configured")}
	}
	opErr := func(err error) error {
		return &net.OpError{Op: "inject", Net: "packet", Addr: ifaceAddr(cfg.Iface), Err: err}
	}
	ifi, err := net.InterfaceByName(cfg.Iface)
	if err != nil {
		return nil, opErr(fmt.Errorf("look up inject interface: %w", err))
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, opErr(fmt.Errorf("inject interface has no Ethernet address (hardware address %q)", ifi.HardwareAddr))
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, opErr(errors.New("inject interface is down"))
	}
	conn, err := packet.Listen(ifi, packet.Raw, 0, nil)
	if err != nil {
		return nil, opErr(fmt.Errorf("open transmit-only packet socket: %w", err))
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, opErr(err)
	}
	// Room for a proactive kill's burst (hundreds of frames) while a NIC's
	// transmit completions lag. Best effort: without CAP_NET_ADMIN the
	// kernel caps SO_SNDBUF at net.core.wmem_max, which is still usable.
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)
		}
	})
	if cfg.QdiscBypass {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
		}); err != nil {
			serr = err
		}
		if serr != nil {
			conn.Close()
			return nil, opErr(os.NewSyscallError("setsockopt PACKET_QDISC_BYPASS", serr))
		}
	}
	s := &PacketSender{
		iface: ifaceAddr(cfg.Iface),
		mac:   append(net.HardwareAddr(nil), ifi.HardwareAddr...),
		conn:  conn,
		rc:    rc,
	}
	s.writers.New = func() any {
		w := &frameWriter{}
		w.fn = w.write
		return w
	}
	return s, nil
}

// Send writes frame, a complete Ethernet frame, to the wire. It never
// blocks and does not allocate. Errors are *net.OpError with Op "inject"
// wrapping the errno: EAGAIN (send buffer full) or ENOBUFS (driver queue
// full, with QdiscBypass) mean this frame was dropped and the caller should
// count it; ENETDOWN, ENXIO or ENODEV mean the interface went down or away
// (reopen the sender once it is back); net.ErrClosed after Close. A failed
// send is not retried here.
func (s *PacketSender) Send(frame []byte) error {
	if len(frame) < EthernetLen {
		return s.opError(os.NewSyscallError("write", unix.EINVAL))
	}
	if s.closed.Load() {
		return s.opError(net.ErrClosed)
	}
	w := s.writers.Get().(*frameWriter)
	w.frame, w.err = frame, nil
	err := s.rc.Write(w.fn)
	if err == nil {
		err = w.err
		if err != nil {
			err = os.NewSyscallError("write", err)
		}
	}
	w.frame, w.err = nil, nil
	s.writers.Put(w)
	if err != nil {
		if s.closed.Load() {
			err = net.ErrClosed
		}
		return s.opError(err)
	}
	return nil
}

func (s *PacketSender) opError(err error) error {
	return &net.OpError{Op: "inject", Net: "packet", Addr: s.iface, Err: err}
}

// MAC is the inject interface's own hardware address: the source MAC of
// injected frames (outside reflect mode).
func (s *PacketSender) MAC() net.HardwareAddr { return append(net.HardwareAddr(nil), s.mac...) }

// Iface is the name of the inject interface.
func (s *PacketSender) Iface() string { return string(s.iface) }

// Close closes the socket. Sends racing with Close fail with net.ErrClosed;
// closing twice is harmless.
func (s *PacketSender) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.conn.Close(); err != nil {
		return s.opError(err)
	}
	return nil
}
