package capture

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// latencyProbe is a Handler recording when each marked frame reached it.
type latencyProbe struct {
	mu   sync.Mutex
	lane bool // which deliveries count: lane or bulk
	at   map[uint32]int64
	kts  map[uint32]int64
	p    Packet
}

func (h *latencyProbe) Frame(b []byte, m *Meta) {
	now := time.Now().UnixNano()
	if m.Lane != h.lane || Decode(b, m, &h.p) != OK || h.p.PayloadLen < uint16(len(marker)+4) {
		return
	}
	start := len(b) - int(h.p.PayloadLen)
	if string(b[start:start+len(marker)]) != string(marker) {
		return
	}
	id := be.Uint32(b[start+len(marker):])
	h.mu.Lock()
	h.at[id], h.kts[id] = now, m.Timestamp
	h.mu.Unlock()
}

func (h *latencyProbe) Idle(int64) {}

// TestLiveLaneLatency measures, at low traffic (one SYN every 2 ms), how
// long a SYN takes from the sender's write to the worker's handler, for
// the V3 bulk ring (1 ms block timeout), the V2 lane ring, and a plain
// recvfrom socket with the same filter (the alternative the lane could
// have used). It asserts delivery only; the figures are logged and
// recorded in lanefilter.go; `go run ./bench` tabulates them. Run with -v to see them.
func TestLiveLaneLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("latency measurement takes a few seconds")
	}
	tn := newTestNet(t, 1)
	tx := tn.openTx(t, tn.pairs[0][0])
	f := randomFlow(rand.New(rand.NewPCG(9, 9)), false)
	const n = 300
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = f.frame(t, false, FlagSYN, uint32(i), 0)
	}

	// Optional background: pure ACKs (never lane traffic) at ~20 kpps,
	// which fills V3 blocks faster than the timer at low rates.
	var background bool
	bgTx := tn.openTx(t, tn.pairs[0][0])
	bgFrame := pureACK(t, f.frame(t, true, FlagACK, 0, 0))
	startBackground := func() (stop func()) {
		if !background {
			return func() {}
		}
		done := make(chan struct{})
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					for i := 0; i < 20; i++ {
						bgTx.send(t, bgFrame)
					}
				}
			}
		}()
		return func() { close(done); <-finished }
	}

	measure := func(name string, start func(h *latencyProbe) (stop func())) {
		stopBG := startBackground()
		defer stopBG()
		if background {
			name += "+bg"
		}
		h := &latencyProbe{at: map[uint32]int64{}, kts: map[uint32]int64{}}
		h.lane = strings.HasPrefix(name, "lane") || name == "recvfrom"
		stop := start(h)
		time.Sleep(50 * time.Millisecond)
		sentAt := make([]int64, n)
		for i, fr := range frames {
			sentAt[i] = time.Now().UnixNano()
			tx.send(t, fr)
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		stop()
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.at) != n {
			t.Errorf("%s: %d of %d SYNs delivered", name, len(h.at), n)
			return
		}
		var wire, kern []time.Duration
		for i := 0; i < n; i++ {
			wire = append(wire, time.Duration(h.at[uint32(i)]-sentAt[i]))
			kern = append(kern, time.Duration(h.at[uint32(i)]-h.kts[uint32(i)]))
		}
		w50, w99, wmax := latencies(wire)
		k50, k99, kmax := latencies(kern)
		kern3 := []any{k50.Round(time.Microsecond), k99.Round(time.Microsecond), kmax.Round(time.Microsecond)}
		if name == "recvfrom" { // a plain socket read carries no kernel timestamp here
			kern3 = []any{"n/a", "n/a", "n/a"}
		}
		t.Logf("%-16s send→handler p50 %8v p99 %8v max %8v | kernel ts→handler p50 %8v p99 %8v max %8v",
			append([]any{name, w50.Round(time.Microsecond), w99.Round(time.Microsecond), wmax.Round(time.Microsecond)}, kern3...)...)
	}

	liveStart := func(lane bool) func(h *latencyProbe) func() {
		return func(h *latencyProbe) func() {
			l := tn.openLiveIn(t, LiveConfig{Ifaces: []string{tn.pairs[0][1]}, Workers: 1, Lane: lane, NumBlocks: 64, BlockSize: 1 << 16})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { l.Run(ctx, 0, h); close(done) }()
			return func() { cancel(); <-done; l.Close() }
		}
	}
	measure("v3-bulk-tov-1ms", liveStart(false))
	measure("lane-v2-ring", liveStart(true))
	background = true
	measure("v3-bulk-tov-1ms", liveStart(false))
	measure("lane-v2-ring", liveStart(true))
	background = false
	measure("recvfrom", func(h *latencyProbe) func() {
		var fd int
		tn.in(t, func() {
			var err error
			fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Error(err)
				return
			}
			prog, _ := laneFilter()
			if err := attachFilter(fd, prog); err != nil {
				t.Error(err)
			}
			ifi, _ := netInterfaceByName(tn.pairs[0][1])
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAllBE, Ifindex: ifi}); err != nil {
				t.Error(err)
			}
		})
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 20000})
		stopReq := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 2048)
			m := Meta{Lane: true}
			for {
				select {
				case <-stopReq:
					return
				default:
				}
				k, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil {
					continue
				}
				m.Timestamp = time.Now().UnixNano() // no kernel ts without SO_TIMESTAMPNS cmsg
				m.WireLen = uint32(k)
				h.Frame(buf[:k], &m)
			}
		}()
		return func() { close(stopReq); <-done; unix.Close(fd) }
	})
}
