package lab

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tapCounter counts the frames of one TCP connection seen on the sensor's
// tap, per direction, with a raw AF_PACKET socket opened in the sensor ns.
type tapCounter struct {
	fd       int
	a, b     netip.AddrPort // a: client side, b: server side
	mu       sync.Mutex
	aToB     int
	bToA     int
	payloadA []byte // client payload bytes seen, in order of arrival
	payloadB []byte
	flagsA   uint8 // OR of TCP flags client→server
	flagsB   uint8
	maxFrame int
	badSum   int
	stop     atomic.Bool
	done     chan struct{}
}

// openTap opens a raw socket on the sensor's tap (the delay line's own
// socket setup) with a receive timeout so the counter can stop.
func openTap(t *testing.T, l *Lab) int {
	t.Helper()
	var fd int
	if err := l.Do(Sensor, func() (err error) { fd, err = openWire(l.TapIface); return err }); err != nil {
		t.Fatalf("tap socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

func (tc *tapCounter) run() {
	defer close(tc.done)
	buf := make([]byte, 65536)
	for !tc.stop.Load() {
		n, _, err := unix.Recvfrom(tc.fd, buf, 0)
		if err != nil {
			continue
		}
		tc.frame(buf[:n])
	}
}

// frame parses Ethernet + IPv4/IPv6 + TCP just enough to attribute it.
func (tc *tapCounter) frame(f []byte) {
	if len(f) < 14 {
		return
	}
	var src, dst netip.Addr
	var tcp []byte
	var pseudo []byte
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_IP:
		ip := f[14:]
		if len(ip) < 20 || ip[9] != unix.IPPROTO_TCP {
			return
		}
		ihl := int(ip[0]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:4]))
		if tot > len(ip) || ihl > tot {
			return
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		tcp = ip[ihl:tot]
		pseudo = append(append(append([]byte{}, ip[12:20]...), 0, unix.IPPROTO_TCP), byte(len(tcp)>>8), byte(len(tcp)))
	case unix.ETH_P_IPV6:
		ip := f[14:]
		if len(ip) < 40 || ip[6] != unix.IPPROTO_TCP {
			return
		}
		pl := int(binary.BigEndian.Uint16(ip[4:6]))
		if 40+pl > len(ip) {
			return
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		tcp = ip[40 : 40+pl]
		pseudo = append(append([]byte{}, ip[8:40]...), 0, 0, byte(len(tcp)>>8), byte(len(tcp)), 0, 0, 0, unix.IPPROTO_TCP)
	default:
		return
	}
	if len(tcp) < 20 {
		return
	}
	sp := netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2]))
	dp := netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4]))
	payload := tcp[int(tcp[12]>>4)*4:]
	tc.mu.Lock()
	defer tc.mu.Unlock()
	switch {
	case sp == tc.a && dp == tc.b:
		tc.aToB++
		tc.flagsA |= tcp[13]
		tc.payloadA = append(tc.payloadA, payload...)
	case sp == tc.b && dp == tc.a:
		tc.bToA++
		tc.flagsB |= tcp[13]
		tc.payloadB = append(tc.payloadB, payload...)
	default:
		return
	}
	tc.maxFrame = max(tc.maxFrame, len(f))
	if checksum(pseudo, tcp) != 0 {
		tc.badSum++
	}
}

// checksum returns the folded one's-complement sum of pseudo header and
// segment: 0 for a segment whose checksum is right.
func checksum(pseudo, seg []byte) uint16 {
	var s uint32
	for _, b := range [][]byte{pseudo, seg} {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// TestTapSeesBothDirections proves the router mirrors both directions of a
// TCP exchange to the tap: for one connection, the frames on the tap per
// direction equal the segments the client's kernel sent and received
// (TCP_INFO), the payloads are the exact bytes exchanged, checksums are
// valid and no frame is larger than the wire MTU (offloads are off).
func TestTapSeesBothDirections(t *testing.T) {
	l := NewT(t, Config{})
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
	}{
		{"ipv4", l.ClientBanned4, l.Server4},
		{"ipv6", l.ClientLegit6, l.Server6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd := openTap(t, l)
			var conn *net.TCPConn
			if err := l.Do(Client, func() error {
				d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(tc.src, 0)), Timeout: 3 * time.Second}
				c, err := d.Dial("tcp", netip.AddrPortFrom(tc.dst, EchoPort).String())
				if err != nil {
					return err
				}
				conn = c.(*net.TCPConn)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// The tap socket was open before the connect, so it holds the
			// handshake too: compare against the client's whole-life counts.
			cnt := &tapCounter{fd: fd, done: make(chan struct{})}
			la, ra := conn.LocalAddr().(*net.TCPAddr).AddrPort(), conn.RemoteAddr().(*net.TCPAddr).AddrPort()
			cnt.a = netip.AddrPortFrom(la.Addr().Unmap(), la.Port())
			cnt.b = netip.AddrPortFrom(ra.Addr().Unmap(), ra.Port())
			go cnt.run()
			// Big enough for several full-size segments, so TSO would show.
			line := append(bytes.Repeat([]byte("0123456789abcdef"), 1024), '\n')
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(line); err != nil {
				t.Fatal(err)
			}
			echo := make([]byte, len(line))
			if _, err := io.ReadFull(conn, echo); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // let the last ACKs cross and reach the tap
			segsOut, segsIn := tcpSegs(t, conn)
			time.Sleep(100 * time.Millisecond)
			cnt.stop.Store(true)
			<-cnt.done
			cnt.mu.Lock()
			defer cnt.mu.Unlock()
			wantAB, wantBA := int(segsOut), int(segsIn)
			t.Logf("tap saw client→server %d frames (client sent %d), server→client %d (client received %d), largest frame %d bytes",
				cnt.aToB, wantAB, cnt.bToA, wantBA, cnt.maxFrame)
			if cnt.aToB == 0 || cnt.bToA == 0 {
				t.Fatalf("tap missed a direction: client→server %d, server→client %d", cnt.aToB, cnt.bToA)
			}
			if cnt.aToB != wantAB || cnt.bToA != wantBA {
				t.Errorf("tap frames client→server %d, server→client %d; client kernel sent %d, received %d", cnt.aToB, cnt.bToA, wantAB, wantBA)
			}
			if cnt.flagsA&0x02 == 0 || cnt.flagsB&0x12 != 0x12 {
				t.Errorf("tap missed the handshake: flags seen client→server %#x, server→client %#x", cnt.flagsA, cnt.flagsB)
			}
			if !bytes.Equal(cnt.payloadA, line) || !bytes.Equal(cnt.payloadB, line) {
				t.Errorf("tap payload client→server %d bytes, server→client %d bytes, want %d each, equal to the line", len(cnt.payloadA), len(cnt.payloadB), len(line))
			}
			if cnt.maxFrame > 1514 {
				t.Errorf("largest frame on the tap is %d bytes: segmentation offload is still on", cnt.maxFrame)
			}
			if cnt.badSum != 0 {
				t.Errorf("%d frames on the tap with a wrong TCP checksum: checksum offload is still on", cnt.badSum)
			}
		})
	}
}

// tcpSegs returns the segments the socket's kernel sent and received.
func tcpSegs(t *testing.T, c *net.TCPConn) (out, in uint32) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return info.Segs_out, info.Segs_in
}
