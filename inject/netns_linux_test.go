package inject

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"canopy/lab"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Integration tests build their own throw-away namespaces (named
// <role><random>inj, removed in t.Cleanup even when the test fails) and send
// traffic only inside them.

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces, AF_PACKET); CI runs this as root")
	}
}

// suffix is a short random tag that keeps names unique per test.
func suffix(t testing.TB) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// onThread runs fn on a fresh goroutine locked to its OS thread and returns
// its error. The thread is never unlocked, so whatever namespace fn left it
// in dies with the goroutine and no other goroutine ever runs there.
func onThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the runtime discards the thread
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("panic: %v", p)
			}
		}()
		done <- fn()
	}()
	return <-done
}

// newNS creates a named namespace and registers its removal.
func newNS(t testing.TB, name string) netns.NsHandle {
	t.Helper()
	if err := lab.ShareNetnsDir(); err != nil {
		t.Fatal(err)
	}
	var h netns.NsHandle
	err := onThread(func() error {
		var err error
		h, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("remove namespace %s: %v", name, err)
		}
	})
	return h
}

// inNS runs fn on a thread inside ns. Sockets fn opens belong to ns and can
// be used from any goroutine afterwards.
func inNS(t testing.TB, ns netns.NsHandle, fn func() error) {
	t.Helper()
	if err := onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter namespace: %w", err)
		}
		return fn()
	}); err != nil {
		t.Fatal(err)
	}
}

// nlHandle is a netlink handle working in ns.
func nlHandle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// vethPair creates a veth pair in ns a (name an) with its peer moved to ns
// b (name bn), both up, and returns the two links as seen in their namespaces.
func vethPair(t testing.TB, a netns.NsHandle, an string, b netns.NsHandle, bn string) (netlink.Link, netlink.Link) {
	t.Helper()
	ha, hb := nlHandle(t, a), nlHandle(t, b)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: an}, PeerName: bn, PeerNamespace: netlink.NsFd(b)}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s/%s: %v", an, bn, err)
	}
	la, err := ha.LinkByName(an)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := hb.LinkByName(bn)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		h *netlink.Handle
		l netlink.Link
	}{{ha, la}, {hb, lb}} {
		if err := x.h.LinkSetUp(x.l); err != nil {
			t.Fatal(err)
		}
	}
	return la, lb
}

// addAddr puts cidr on link in ns without duplicate address detection.
func addAddr(t testing.TB, ns netns.NsHandle, link netlink.Link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = unix.IFA_F_NODAD
	if err := nlHandle(t, ns).AddrAdd(link, a); err != nil {
		t.Fatalf("add %s to %s: %v", cidr, link.Attrs().Name, err)
	}
}

// linkMAC is link's hardware address as a [6]byte.
func linkMAC(t testing.TB, ns netns.NsHandle, name string) [6]byte {
	t.Helper()
	l, err := nlHandle(t, ns).LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	var m [6]byte
	copy(m[:], l.Attrs().HardwareAddr)
	return m
}

// sniffer is a raw AF_PACKET socket that receives every frame on one
// interface, with the VLAN tag the kernel strips on receive put back from
// PACKET_AUXDATA, so tests compare the frame as it was on the wire.
type sniffer struct {
	fd int
}

func newSniffer(t testing.TB, ns netns.NsHandle, iface string) *sniffer {
	t.Helper()
	s := &sniffer{fd: -1}
	inNS(t, ns, func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("sniffer socket: %w", err)
		}
		s.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("sniffer bind: %w", err)
		}
		return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1)
	})
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// next returns the next frame, or an error after timeout.
func (s *sniffer) next(timeout time.Duration) ([]byte, error) {
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	n, oobn, _, _, err := unix.Recvmsg(s.fd, buf, oob, 0)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return nil, fmt.Errorf("no frame within %v", timeout)
		}
		return nil, err
	}
	frame := buf[:n]
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA || len(m.Data) < auxdataLen {
			continue
		}
		aux := (*unix.TpacketAuxdata)(unsafePointer(m.Data))
		if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 {
			continue
		}
		tpid := uint16(unix.ETH_P_8021Q)
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			tpid = aux.Vlan_tpid
		}
		tagged := make([]byte, 0, len(frame)+4)
		tagged = append(tagged, frame[:12]...)
		tagged = append(tagged, byte(tpid>>8), byte(tpid), byte(aux.Vlan_tci>>8), byte(aux.Vlan_tci))
		frame = append(tagged, frame[12:]...)
	}
	return frame, nil
}

// await returns the first frame for which match is true, skipping others
// (neighbour discovery and the like), or fails after timeout.
func (s *sniffer) await(timeout time.Duration, match func([]byte) bool) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("no matching frame within %v", timeout)
		}
		f, err := s.next(left)
		if err != nil {
			return nil, err
		}
		if match(f) {
			return f, nil
		}
	}
}
