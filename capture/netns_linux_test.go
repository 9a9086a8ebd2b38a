package capture

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"

	"canopy/lab"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNet is a throw-away network namespace holding veth pairs. Traffic in
// these tests only ever goes between the two ends of a pair inside it.
type testNet struct {
	name  string
	ns    netns.NsHandle
	pairs [][2]string // [tx end, capture end]
}

// needRoot skips a test that needs namespaces and raw sockets.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, AF_PACKET sockets); CI runs these as root")
	}
}

// newTestNet creates a namespace with n veth pairs, all up, IPv6 off (so
// the kernel sends no router solicitations or MLD reports into the
// capture). Everything is removed when the test ends, pass or fail.
func newTestNet(t testing.TB, n int) *testNet {
	t.Helper()
	needRoot(t)
	sfx := fmt.Sprintf("%04x", rand.IntN(0x10000))
	tn := &testNet{name: "capture-" + sfx + fmt.Sprintf("-%d", rand.IntN(1e6))}
	for i := 0; i < n; i++ {
		tn.pairs = append(tn.pairs, [2]string{fmt.Sprintf("capt%d%s", i, sfx), fmt.Sprintf("capr%d%s", i, sfx)})
	}
	if err := lab.ShareNetnsDir(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		// This thread enters the new namespace and is never unlocked, so
		// Go discards it when the goroutine ends instead of reusing a
		// thread in the wrong namespace.
		runtime.LockOSThread()
		ns, err := netns.NewNamed(tn.name)
		if err != nil {
			errc <- fmt.Errorf("create namespace: %w", err)
			return
		}
		tn.ns = ns
		for _, f := range []string{"/proc/sys/net/ipv6/conf/default/disable_ipv6", "/proc/sys/net/ipv6/conf/all/disable_ipv6"} {
			os.WriteFile(f, []byte("1"), 0o644)
		}
		for _, p := range tn.pairs {
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p[0], MTU: 9000}, PeerName: p[1]}
			if err := netlink.LinkAdd(v); err != nil {
				errc <- fmt.Errorf("add veth %s: %w", p[0], err)
				return
			}
			for _, name := range p {
				l, err := netlink.LinkByName(name)
				if err == nil {
					err = netlink.LinkSetUp(l)
				}
				if err != nil {
					errc <- fmt.Errorf("up %s: %w", name, err)
					return
				}
			}
		}
		errc <- nil
	}()
	err := <-errc
	t.Cleanup(func() {
		if tn.ns.IsOpen() {
			tn.ns.Close()
		}
		netns.DeleteNamed(tn.name)
	})
	if err != nil {
		t.Fatalf("test namespace: %v", err)
	}
	return tn
}

// in runs fn on a thread inside the namespace. Sockets fn opens stay there.
func (tn *testNet) in(t testing.TB, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		if err := netns.Set(tn.ns); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("enter namespace %s: %v", tn.name, err)
	}
}

// txSock is an AF_PACKET socket that only sends (protocol 0: the kernel
// delivers it nothing), bound to one interface.
type txSock struct {
	fd      int
	ifindex int
}

func (tn *testNet) openTx(t testing.TB, iface string) *txSock {
	t.Helper()
	var tx txSock
	var err error
	tn.in(t, func() {
		var l netlink.Link
		if l, err = netlink.LinkByName(iface); err != nil {
			return
		}
		tx.ifindex = l.Attrs().Index
		if tx.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			return
		}
		err = unix.Bind(tx.fd, &unix.SockaddrLinklayer{Ifindex: tx.ifindex})
	})
	if err != nil {
		t.Fatalf("tx socket on %s: %v", iface, err)
	}
	t.Cleanup(func() { unix.Close(tx.fd) })
	return &tx
}

func (tx *txSock) send(t testing.TB, frame []byte) {
	for {
		_, err := unix.Write(tx.fd, frame)
		if err == unix.ENOBUFS || err == unix.EAGAIN {
			runtime.Gosched()
			continue
		}
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		return
	}
}

// openLiveIn opens a Live inside the namespace and closes it at cleanup.
func (tn *testNet) openLiveIn(t testing.TB, cfg LiveConfig) *Live {
	t.Helper()
	var l *Live
	var err error
	tn.in(t, func() { l, err = OpenLive(cfg) })
	if err != nil {
		t.Fatalf("OpenLive: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// netInterfaceByName returns the index of an interface in the current
// thread's namespace.
func netInterfaceByName(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}
