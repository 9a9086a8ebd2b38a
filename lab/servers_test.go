package lab

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestHTTPAndUDPServers reaches the HTTP server (IPv4 and IPv6) and the UDP
// echo from the client and checks their per-source counts.
func TestHTTPAndUDPServers(t *testing.T) {
	l := NewT(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct{ src, dst netip.Addr }{{l.ClientLegit4, l.Server4}, {l.ClientLegit6, l.Server6}} {
		client := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, n, a string) (net.Conn, error) { return l.Dial(ctx, c.src, n, a) },
		}}
		for _, path := range []string{"/", "/bytes?n=100000"} {
			url := "http://" + netip.AddrPortFrom(c.dst, HTTPPort).String() + path
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
			}
			if path == "/" && !strings.Contains(string(body), c.src.String()) {
				t.Errorf("GET %s answered %q, want the client's address in it", url, body)
			}
			if path != "/" && len(body) != 100000 {
				t.Errorf("GET %s: %d bytes, want 100000", url, len(body))
			}
		}
		client.CloseIdleConnections()
		if got := l.HTTP.Count(c.src); got.Requests != 2 || got.Accepted != 1 {
			t.Errorf("HTTP log for %s = %+v, want 2 requests on 1 connection", c.src, got)
		}
	}

	conn, err := l.Dial(ctx, l.ClientBanned6, "udp", netip.AddrPortFrom(l.Server6, UDPEchoPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	for i := range 3 {
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("UDP echo %d: %q, %v", i, buf[:n], err)
		}
	}
	if got := l.UDPEcho.Count(l.ClientBanned6); got.Requests != 3 {
		t.Errorf("UDP log for %s = %+v, want 3 datagrams", l.ClientBanned6, got)
	}
	l.UDPEcho.Reset()
	if got := l.UDPEcho.Count(l.ClientBanned6); got.Requests != 0 {
		t.Errorf("after Reset the UDP log says %+v", got)
	}
}
