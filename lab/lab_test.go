package lab

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestEchoReachable proves the client reaches the server's echo over IPv4
// and IPv6 from both of its addresses, and that the server's log records
// each source separately.
func TestEchoReachable(t *testing.T) {
	for _, delay := range []time.Duration{0, 2 * time.Millisecond} {
		t.Run("delay="+delay.String(), func(t *testing.T) {
			l := NewT(t, Config{Delay: delay})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cases := []struct {
				src netip.Addr
				dst netip.Addr
			}{
				{l.ClientBanned4, l.Server4},
				{l.ClientLegit4, l.Server4},
				{l.ClientBanned6, l.Server6},
				{l.ClientLegit6, l.Server6},
			}
			for i, c := range cases {
				n := i + 2 // distinct counts per source prove per-source bookkeeping
				res, err := l.Probe(ctx, ProbeConfig{Src: c.src, Dst: netip.AddrPortFrom(c.dst, EchoPort), Conns: n, Timeout: 3 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				if res.Completed != n || res.Total() != n {
					t.Fatalf("%s -> %s: %+v, want %d completed", c.src, c.dst, res, n)
				}
				got := l.Echo.Count(c.src)
				if got.Accepted != uint64(n) || got.Requests != uint64(n) {
					t.Fatalf("echo log for %s = %+v, want %d accepted and %d lines", c.src, got, n, n)
				}
			}
		})
	}
}

// TestCloseRemovesNamespaces proves Close removes every namespace the lab
// made and that a second Close is harmless.
func TestCloseRemovesNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	l, err := New(Config{Delay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for ns := Client; ns < nsCount; ns++ {
		names = append(names, l.Name(ns))
		if _, err := os.Stat(filepath.Join(netnsDir, l.Name(ns))); err != nil {
			t.Fatalf("namespace %s missing while the lab is open: %v", ns, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still in %s after Close (stat: %v)", n, netnsDir, err)
		}
	}
}
