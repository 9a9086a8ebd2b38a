package lab

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// connectRTT returns the median time of n TCP connects from the client to
// the server's echo port: one connect is one round trip (SYN, SYN-ACK).
func connectRTT(t *testing.T, l *Lab, src, dst netip.Addr, n int) time.Duration {
	t.Helper()
	var rtts []time.Duration
	err := l.Do(Client, func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 3 * time.Second}
		for range n {
			start := time.Now()
			c, err := d.Dial("tcp", netip.AddrPortFrom(dst, EchoPort).String())
			if err != nil {
				return err
			}
			rtts = append(rtts, time.Since(start))
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}

// TestDelayLineAddsDelay measures the TCP connect RTT without a delay line
// and with a 10 ms one-way delay: the second must be 2×10 ms plus the
// bed's own small latency. The bounds check correctness (the delay is
// applied once per direction, not zero or twice), not speed.
func TestDelayLineAddsDelay(t *testing.T) {
	base := NewT(t, Config{})
	// Warm up neighbour caches so the median measures the path only.
	connectRTT(t, base, base.ClientLegit4, base.Server4, 2)
	rtt0 := connectRTT(t, base, base.ClientLegit4, base.Server4, 21)

	const oneWay = 10 * time.Millisecond
	l := NewT(t, Config{Delay: oneWay})
	connectRTT(t, l, l.ClientLegit4, l.Server4, 2)
	rtt4 := connectRTT(t, l, l.ClientLegit4, l.Server4, 21)
	rtt6 := connectRTT(t, l, l.ClientLegit6, l.Server6, 21)
	st := l.DelayLineStats()
	t.Logf("median connect RTT: no delay %v; Delay=%v: IPv4 %v, IPv6 %v", rtt0, oneWay, rtt4, rtt6)
	t.Logf("delay line: %+v", st)
	for _, c := range []struct {
		name string
		rtt  time.Duration
	}{{"IPv4", rtt4}, {"IPv6", rtt6}} {
		if c.rtt < 2*oneWay || c.rtt >= 3*oneWay {
			t.Errorf("%s connect RTT with Delay=%v is %v, want in [%v, %v)", c.name, oneWay, c.rtt, 2*oneWay, 3*oneWay)
		}
	}
	if rtt0 >= oneWay {
		t.Errorf("connect RTT without delay line is %v, want well under %v", rtt0, oneWay)
	}
	if st.ClientToRouter.Frames == 0 || st.RouterToClient.Frames == 0 {
		t.Errorf("delay line forwarded nothing in a direction: %+v", st)
	}
}

// TestDelayLineKeepsVLANTags writes an 802.1Q-tagged frame on the client's
// port and checks it leaves the delay line towards the router still
// tagged (the kernel strips tags into metadata on receive; the line must
// put them back).
func TestDelayLineKeepsVLANTags(t *testing.T) {
	l := NewT(t, Config{Delay: time.Millisecond})
	// Listen on the router's client-side port for what the line writes.
	var rfd int
	if err := l.Do(Router, func() (err error) { rfd, err = openWire(RouterCli); return err }); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	var wfd int
	if err := l.Do(Client, func() (err error) { wfd, err = openWire(ClientIface); return err }); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(wfd)
	frame := []byte{
		0x02, 0, 0, 0, 0, 0x01, // dst
		0x02, 0, 0, 0, 0, 0x02, // src
		0x81, 0x00, 0x20, 0x2a, // 802.1Q, PCP 1, VID 42
		0x88, 0xb5, // local experimental ethertype
	}
	frame = append(frame, []byte("canopy vlan test payload padding to 60 bytes......")...)
	if _, err := unix.Write(wfd, frame); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		n, oobn, _, err := recvmsg(rfd, buf, oob)
		if err != nil {
			continue
		}
		got := buf[:n]
		if tci, tpid, ok := auxVLAN(oob[:oobn]); ok {
			// The router's kernel strips it again; the metadata must carry it.
			if tci != 0x202a || tpid != 0x8100 {
				t.Fatalf("frame arrived with VLAN tpid %#x tci %#x, want 0x8100/0x202a", tpid, tci)
			}
			if len(got) >= 14 && got[12] == 0x88 && got[13] == 0xb5 {
				return
			}
		}
	}
	t.Fatal("the tagged frame did not come out of the delay line tagged")
}
