package lab

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkDelayLine sends b.N small UDP datagrams from the client to the
// server's UDP echo through a 1 ms delay line, paced at 35k/s (the echoes
// make the same rate in the other direction), and reports the frames per
// second forwarded each way, drops and the line's lateness (its jitter).
// Run: go test -run '^$' -bench DelayLine -benchtime 70000x ./lab/
func BenchmarkDelayLine(b *testing.B) {
	const rate = 35000
	l := NewT(b, Config{Delay: time.Millisecond})
	var conn net.Conn
	if err := l.Do(Client, func() (err error) {
		conn, err = net.Dial("udp", netip.AddrPortFrom(l.Server4, UDPEchoPort).String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	// Drain echoes so the client's socket never backs up.
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
		}
	}()
	msg := make([]byte, 64)
	before := l.DelayLineStats()
	// allocs/op covers the whole process per datagram: sender, UDP echo
	// server and both delay-line directions (~2 frames per op).
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if due := start.Add(time.Duration(i) * time.Second / rate); time.Until(due) > 0 {
			time.Sleep(time.Until(due))
		}
		conn.Write(msg)
	}
	time.Sleep(50 * time.Millisecond) // let the last frames and echoes cross
	elapsed := time.Since(start)
	b.StopTimer()
	st := l.DelayLineStats()
	c2r, r2c := st.ClientToRouter, st.RouterToClient
	c2r.Frames -= before.ClientToRouter.Frames
	r2c.Frames -= before.RouterToClient.Frames
	b.ReportMetric(float64(c2r.Frames)/elapsed.Seconds(), "c2r-frames/s")
	b.ReportMetric(float64(r2c.Frames)/elapsed.Seconds(), "r2c-frames/s")
	b.ReportMetric(float64(c2r.Drops+r2c.Drops), "drops")
	if n := c2r.Frames + r2c.Frames; n > 0 {
		b.ReportMetric(float64((st.ClientToRouter.SumLate+st.RouterToClient.SumLate).Microseconds())/float64(n), "mean-late-µs")
	}
	b.ReportMetric(float64(max(c2r.MaxLate, r2c.MaxLate).Microseconds()), "max-late-µs")
	b.ReportMetric(float64(max(st.ClientToRouter.LateQuantile(0.5), st.RouterToClient.LateQuantile(0.5)).Microseconds()), "p50-late-µs≤")
	b.ReportMetric(float64(max(st.ClientToRouter.LateQuantile(0.99), st.RouterToClient.LateQuantile(0.99)).Microseconds()), "p99-late-µs≤")
	b.ReportMetric(float64(l.UDPEcho.Count(l.ClientBanned4).Requests+l.UDPEcho.Count(l.ClientLegit4).Requests), "server-datagrams")
}

// BenchmarkProbe opens b.N echo connections from one client address as
// fast as 32 workers go and reports connections per second.
// Run: go test -run '^$' -bench Probe -benchtime 20000x ./lab/
func BenchmarkProbe(b *testing.B) {
	l := NewT(b, Config{})
	ctx := context.Background()
	b.ResetTimer()
	res, err := l.Probe(ctx, ProbeConfig{Src: l.ClientBanned4, Dst: netip.AddrPortFrom(l.Server4, EchoPort), Conns: b.N})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Completed != b.N {
		b.Fatalf("probe: %+v", res)
	}
	b.ReportMetric(float64(res.Completed)/res.Elapsed.Seconds(), "conns/s")
}

// BenchmarkParseCmsgs measures the delay line's per-frame control-message
// parsing (VLAN tag and kernel timestamp).
func BenchmarkParseCmsgs(b *testing.B) {
	oob := auxCmsg(0x202a, 0x88a8, unix.TP_STATUS_VLAN_VALID|unix.TP_STATUS_VLAN_TPID_VALID)
	b.ReportAllocs()
	for b.Loop() {
		parseCmsgs(oob)
	}
}
