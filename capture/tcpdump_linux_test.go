package capture

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFileReadsTcpdumpCaptures records real TCP on loopback inside a
// throw-away namespace with tcpdump, once on lo (Ethernet link type) and
// once on "any" (LINUX_SLL2), and replays both: every frame must decode.
func TestFileReadsTcpdumpCaptures(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed")
	}
	tn := newTestNet(t, 0)
	tn.in(t, func() { exec.Command("ip", "link", "set", "lo", "up").Run() })
	for _, iface := range []string{"lo", "any"} {
		t.Run(iface, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "real.pcap")
			cmd := exec.Command("ip", "netns", "exec", tn.name, "tcpdump", "-i", iface, "--immediate-mode", "-U", "-w", path, "tcp port 7070")
			stderr := &lockedBuf{}
			cmd.Stderr = stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// tcpdump says "listening on" when it is ready.
			for i := 0; i < 300 && !strings.Contains(stderr.String(), "listening on"); i++ {
				time.Sleep(10 * time.Millisecond)
			}
			// Five short connections: even if tcpdump misses the first
			// frames while it finishes starting, plenty are left.
			tn.in(t, func() {
				ln, err := net.Listen("tcp", "127.0.0.1:7070")
				if err != nil {
					t.Error(err)
					return
				}
				defer ln.Close()
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						c.Write([]byte("hello from the server"))
						c.Close()
					}
				}()
				for i := 0; i < 5; i++ {
					c, err := net.Dial("tcp", "127.0.0.1:7070")
					if err != nil {
						t.Error(err)
						return
					}
					buf := make([]byte, 64)
					c.Read(buf)
					c.Close()
				}
			})
			time.Sleep(200 * time.Millisecond)
			cmd.Process.Signal(interruptSignal)
			cmd.Wait()

			src, err := OpenFile(path, 0)
			if err != nil {
				t.Fatalf("OpenFile(tcpdump -i %s capture): %v", iface, err)
			}
			defer src.Close()
			var h nopHandler
			if err := src.Run(context.Background(), 0, &h); err != nil {
				t.Fatal(err)
			}
			n := src.Stats().Packets
			if n < 10 {
				t.Fatalf("only %d frames captured (tcpdump: %s)", n, stderr.String())
			}
			if h.reasons[OK] != n {
				t.Fatalf("%d of %d frames decoded; reasons %v", h.reasons[OK], n, h.reasons)
			}
			if h.p.SrcPort != 7070 && h.p.DstPort != 7070 {
				t.Fatalf("last frame decoded to ports %d→%d", h.p.SrcPort, h.p.DstPort)
			}
		})
	}
}

var interruptSignal = syscall.SIGINT

// lockedBuf is an io.Writer a test can read while a process writes to it.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
