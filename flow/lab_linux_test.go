package flow_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canopy/capture"
	"canopy/flow"
	"canopy/lab"
)

// recorder is a capture worker that feeds one flow table, and, as ground
// truth independent of the table, remembers every SYN's sequence number.
type recorder struct {
	tb  *flow.Table
	pkt capture.Packet
	isn map[[2]netip.AddrPort]uint32 // initial sequence number by (sender, receiver)
	// frames counts what the rings handed over, for waitDelivered.
	frames atomic.Uint64
}

func (r *recorder) Frame(frame []byte, m *capture.Meta) {
	r.frames.Add(1)
	if capture.Decode(frame, m, &r.pkt) != capture.OK {
		return
	}
	r.tb.Update(&r.pkt)
	if r.pkt.IsTCP() && r.pkt.Flags&capture.FlagSYN != 0 {
		r.isn[[2]netip.AddrPort{netip.AddrPortFrom(r.pkt.Src, r.pkt.SrcPort), netip.AddrPortFrom(r.pkt.Dst, r.pkt.DstPort)}] = r.pkt.Seq
	}
}

func (r *recorder) Idle(int64) {}

// TestLabFlowsMatchWhatWasSent runs N echo connections and a one-way UDP
// blast through the lab's router, captures the mirror with live TPACKET
// rings, and checks that the tables hold exactly the N TCP flows with the
// byte counts the client and server really sent (from the tracked sequence
// numbers), fully closed, and that the talkers rank the blaster first.
func TestLabFlowsMatchWhatWasSent(t *testing.T) {
	if testing.Short() {
		t.Skip("lab test")
	}
	l := lab.NewT(t, lab.Config{})
	var src *capture.Live
	if err := l.Do(lab.Sensor, func() (err error) {
		src, err = capture.OpenLive(capture.LiveConfig{Ifaces: []string{l.TapIface}, Workers: 2, Promiscuous: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	recs := make([]*recorder, src.Workers())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range recs {
		recs[i] = &recorder{tb: flow.NewTable(flow.Config{MaxFlows: 1 << 12}), isn: map[[2]netip.AddrPort]uint32{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := src.Run(ctx, i, recs[i]); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		}()
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	defer stop()

	// N echo sessions from the legit address, each sending a different
	// number of bytes, reading all of it back, then closing.
	const n = 12
	sent := map[uint16]int{} // client port → bytes sent (and echoed)
	for i := range n {
		c, err := l.Dial(ctx, l.ClientLegit4, "tcp4", netip.AddrPortFrom(l.Server4, lab.EchoPort).String())
		if err != nil {
			t.Fatal(err)
		}
		line := append(bytes.Repeat([]byte{'a' + byte(i)}, 99), '\n')
		var want int
		for range (i + 1) * 7 {
			if _, err := c.Write(line); err != nil {
				t.Fatal(err)
			}
			want += len(line)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(bufio.NewReader(c), make([]byte, want)); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		sent[uint16(c.LocalAddr().(*net.TCPAddr).Port)] = want
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c) // wait for the server's FIN
		c.Close()
	}
	// The heavy talker: 1 MB of UDP to a closed port (the server answers
	// with a few rate-limited ICMP errors, nothing like 1 MB).
	u, err := l.Dial(ctx, l.ClientBanned4, "udp4", netip.AddrPortFrom(l.Server4, 9).String())
	if err != nil {
		t.Fatal(err)
	}
	dgram := make([]byte, 1000)
	for range 1000 {
		u.Write(dgram) // ECONNREFUSED from earlier ICMP errors is expected
	}
	u.Close()
	waitDelivered(t, src, recs)
	stop()

	// Exactly N flows of the legit client, all to the echo port.
	legit := netip.PrefixFrom(l.ClientLegit4, 32)
	var flows []*flow.Flow
	var owner []*recorder
	for _, r := range recs {
		r.tb.ForEach(legit, func(f *flow.Flow) bool {
			flows = append(flows, f)
			owner = append(owner, r)
			return true
		})
	}
	if len(flows) != n {
		t.Fatalf("tables hold %d flows of %v, want %d", len(flows), l.ClientLegit4, n)
	}
	for i, f := range flows {
		r := owner[i]
		port := f.APort()
		want, ok := sent[port]
		if !ok || f.A() != l.ClientLegit4 || f.B() != l.Server4 || f.BPort() != lab.EchoPort {
			t.Fatalf("flow %v:%d > %v:%d is not one of ours", f.A(), port, f.B(), f.BPort())
		}
		ea, eb := netip.AddrPortFrom(f.A(), port), netip.AddrPortFrom(f.B(), f.BPort())
		isnA, okA := r.isn[[2]netip.AddrPort{ea, eb}]
		isnB, okB := r.isn[[2]netip.AddrPort{eb, ea}]
		if !okA || !okB {
			t.Fatalf("port %d: handshake not seen", port)
		}
		// NextSeq = ISN + 1 (SYN) + payload + 1 (FIN).
		a, b := &f.Dirs[flow.AtoB], &f.Dirs[flow.BtoA]
		if got := int(a.NextSeq - isnA - 2); got != want {
			t.Errorf("port %d: client sent %d payload bytes by the table, %d really", port, got, want)
		}
		if got := int(b.NextSeq - isnB - 2); got != want {
			t.Errorf("port %d: server sent %d payload bytes by the table, %d really", port, got, want)
		}
		// Each side's last ack is the other's NextSeq: everything was acknowledged.
		if a.Ack != b.NextSeq || b.Ack != a.NextSeq {
			t.Errorf("port %d: acks %d/%d, next %d/%d", port, a.Ack, b.Ack, a.NextSeq, b.NextSeq)
		}
		if !f.State().Closed() || f.State()&flow.StateEstablished == 0 || f.StateName() != "closed" {
			t.Errorf("port %d: state %s", port, f.StateName())
		}
		if a.Bytes() < uint64(want)+40*a.Pkts() || b.Bytes() < uint64(want)+40*b.Pkts() {
			t.Errorf("port %d: IP bytes %d/%d for %d payload bytes", port, a.Bytes(), b.Bytes(), want)
		}
		t.Logf("%v:%d>%v:%d %s a>b %d pkts %d B  b>a %d pkts %d B  payload %d each way",
			f.A(), port, f.B(), f.BPort(), f.StateName(), a.Pkts(), a.Bytes(), b.Pkts(), b.Bytes(), want)
	}

	agg := flow.NewAggregator(0)
	total := 0
	for i, r := range recs {
		agg.Add(i, r.tb.SwapBucket(nil), 1)
		total += r.tb.Len()
	}
	snap := agg.Snapshot(3, total)
	top := snap.Talkers[flow.BySrc]
	if len(top) == 0 || top[0].Src != l.ClientBanned4 {
		t.Fatalf("top source %v, want the UDP blaster %v", top, l.ClientBanned4)
	}
	if p := snap.Talkers[flow.ByPort]; len(p) == 0 || p[0].Port != 9 || p[0].Proto != capture.ProtoUDP {
		t.Fatalf("top port %+v, want udp/9", p)
	}
	if n := snap.Talkers[flow.BySrcNet]; len(n) == 0 || !n[0].Net.Contains(l.ClientBanned4) || n[0].Net.Bits() != flow.SrcNetBits4 || n[0].Bits[flow.Win2s] < top[0].Bits[flow.Win2s] {
		t.Fatalf("top source network %+v, want the blaster's /24 with at least its rate", n)
	}
	for _, r := range top {
		t.Logf("top src %-12v %s bit/s (2s)", r.Src, strconv.FormatFloat(r.Bits[flow.Win2s], 'f', 0, 64))
	}
}

// waitDelivered waits until the workers have been handed every frame the
// kernel put in their rings (a block is handed over when it fills or its
// timeout retires it, later on a loaded machine) instead of sleeping a
// fixed time, at most 5 s; then the checks that follow say what is
// missing.
func waitDelivered(t *testing.T, src *capture.Live, recs []*recorder) {
	deadline := time.Now().Add(5 * time.Second)
	time.Sleep(50 * time.Millisecond) // frames still on their way through the lab's mirror
	for {
		st := src.Stats()
		var got uint64
		for _, r := range recs {
			got += r.frames.Load()
		}
		if got >= st.Packets-st.Drops || time.Now().After(deadline) {
			t.Logf("rings delivered %d of %d frames (%d dropped)", got, st.Packets, st.Drops)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
