package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Tally is what a server saw from one source address: the ground truth a
// test compares blocking against ("how many requests leaked through").
type Tally struct {
	Accepted uint64 // TCP connections accepted (0 for UDP)
	Requests uint64 // lines read (echo), requests served (HTTP), datagrams read (UDP)
	// ReadFrom holds the source ports of the first connections (at most
	// maxReadFrom) the echo server read a line from: which connections
	// leaked, for a benchmark to look up what the blocker did with them.
	ReadFrom []uint16
}

// maxReadFrom bounds Tally.ReadFrom.
const maxReadFrom = 32

// tallies counts per source address. The map lookup happens once per
// connection; per-line counting is an atomic add on the connection's entry.
type tallies struct {
	mu sync.Mutex
	m  map[netip.Addr]*tally
}

type tally struct {
	accepted, requests atomic.Uint64

	mu       sync.Mutex
	readFrom []uint16
}

// read notes the first line read on a connection from port.
func (t *tally) read(port uint16) {
	t.mu.Lock()
	if len(t.readFrom) < maxReadFrom {
		t.readFrom = append(t.readFrom, port)
	}
	t.mu.Unlock()
}

func (t *tally) snapshot() Tally {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Tally{Accepted: t.accepted.Load(), Requests: t.requests.Load(), ReadFrom: append([]uint16(nil), t.readFrom...)}
}

func (t *tallies) of(a netip.Addr) *tally {
	a = a.Unmap()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[netip.Addr]*tally)
	}
	e := t.m[a]
	if e == nil {
		e = new(tally)
		t.m[a] = e
	}
	return e
}

func (t *tallies) get(a netip.Addr) Tally {
	a = a.Unmap()
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.m[a]; e != nil {
		return e.snapshot()
	}
	return Tally{}
}

func (t *tallies) all() map[netip.Addr]Tally {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[netip.Addr]Tally, len(t.m))
	for a, e := range t.m {
		out[a] = e.snapshot()
	}
	return out
}

func (t *tallies) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.m {
		e.accepted.Store(0)
		e.requests.Store(0)
		e.mu.Lock()
		e.readFrom = nil
		e.mu.Unlock()
	}
}

// EchoServer is a TCP line-echo server in the server namespace: it echoes
// every line it reads and counts, per source address, the connections it
// accepted and the lines it read.
type EchoServer struct {
	ln     net.Listener
	counts tallies
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Addr returns the address the server listens on (all addresses, both
// families).
func (e *EchoServer) Addr() net.Addr { return e.ln.Addr() }

// Count returns what the server saw from src so far.
func (e *EchoServer) Count(src netip.Addr) Tally { return e.counts.get(src) }

// Counts returns what the server saw from every source so far.
func (e *EchoServer) Counts() map[netip.Addr]Tally { return e.counts.all() }

// Reset zeroes every count (e.g. between phases of a test).
func (e *EchoServer) Reset() { e.counts.reset() }

// Close stops accepting, closes every open connection and waits for the
// server's goroutines. Safe to call more than once.
func (e *EchoServer) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	err := e.ln.Close()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return err
}

func (e *EchoServer) serve() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (EMFILE, ECONNABORTED): back off briefly.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			c.Close()
			return
		}
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go e.handle(c)
	}
}

func (e *EchoServer) handle(c net.Conn) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
		c.Close()
	}()
	t := e.counts.of(remoteAddr(c))
	t.accepted.Add(1)
	r := bufio.NewReaderSize(c, 4096)
	for first := true; ; {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 && err == nil {
			t.requests.Add(1)
			if first {
				first = false
				if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
					t.read(uint16(a.Port))
				}
			}
			if _, werr := c.Write(line); werr != nil {
				return
			}
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: echo what we have, keep going.
			if _, werr := c.Write(line); werr != nil {
				return
			}
			continue
		}
		return // EOF, reset, or closed by Close
	}
}

func remoteAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// HTTPServer is a small HTTP server in the server namespace for the demo:
// every path answers 200 with a short text; /bytes?n=N answers N bytes. It
// counts connections and requests per source address.
type HTTPServer struct {
	srv    *http.Server
	ln     net.Listener
	counts tallies
	done   chan struct{}
}

// Addr returns the address the server listens on.
func (h *HTTPServer) Addr() net.Addr { return h.ln.Addr() }

// Count returns what the server saw from src so far.
func (h *HTTPServer) Count(src netip.Addr) Tally { return h.counts.get(src) }

// Counts returns what the server saw from every source so far.
func (h *HTTPServer) Counts() map[netip.Addr]Tally { return h.counts.all() }

// Reset zeroes every count.
func (h *HTTPServer) Reset() { h.counts.reset() }

// Close stops the server and closes its connections; safe more than once.
func (h *HTTPServer) Close() error {
	err := h.srv.Close()
	<-h.done
	return err
}

const maxHTTPBytes = 16 << 20

func (h *HTTPServer) handler(w http.ResponseWriter, r *http.Request) {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		h.counts.of(ap.Addr()).requests.Add(1)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.URL.Path == "/bytes" {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > maxHTTPBytes {
			http.Error(w, fmt.Sprintf("n must be 0..%d", maxHTTPBytes), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		chunk := make([]byte, 32<<10)
		for i := range chunk {
			chunk[i] = 'x'
		}
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
		return
	}
	fmt.Fprintf(w, "canopy lab server: %s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
}

// UDPEchoServer is a UDP echo server in the server namespace; it counts
// datagrams per source address.
type UDPEchoServer struct {
	pc     *net.UDPConn
	counts tallies
	done   chan struct{}
	once   sync.Once
}

// Addr returns the address the server listens on.
func (u *UDPEchoServer) Addr() net.Addr { return u.pc.LocalAddr() }

// Count returns what the server saw from src so far.
func (u *UDPEchoServer) Count(src netip.Addr) Tally { return u.counts.get(src) }

// Counts returns what the server saw from every source so far.
func (u *UDPEchoServer) Counts() map[netip.Addr]Tally { return u.counts.all() }

// Reset zeroes every count.
func (u *UDPEchoServer) Reset() { u.counts.reset() }

// Close stops the server; safe more than once.
func (u *UDPEchoServer) Close() error {
	var err error
	u.once.Do(func() { err = u.pc.Close() })
	<-u.done
	return err
}

func (u *UDPEchoServer) serve() {
	defer close(u.done)
	buf := make([]byte, 65536)
	var last netip.Addr
	var t *tally
	for {
		n, from, err := u.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP errors reported on the socket
		}
		if a := from.Addr().Unmap(); t == nil || a != last {
			last, t = a, u.counts.of(a)
		}
		t.requests.Add(1)
		u.pc.WriteToUDPAddrPort(buf[:n], from)
	}
}

// ListenEcho starts another TCP line-echo server in the server namespace
// on port (both address families); the lab closes it on Close.
func (l *Lab) ListenEcho(port uint16) (*EchoServer, error) {
	var ln net.Listener
	if err := l.Do(Server, func() (err error) {
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(int(port)))
		return err
	}); err != nil {
		return nil, fmt.Errorf("lab %s: echo server on port %d: %w", l.ID, port, err)
	}
	e := &EchoServer{ln: ln, conns: make(map[net.Conn]struct{})}
	e.wg.Add(1)
	go e.serve()
	l.addCloser(e.Close)
	return e, nil
}

func (l *Lab) startServers() error {
	var err error
	if l.Echo, err = l.ListenEcho(EchoPort); err != nil {
		return err
	}
	var hln net.Listener
	var upc net.PacketConn
	if err := l.Do(Server, func() (err error) {
		if hln, err = net.Listen("tcp", ":"+strconv.Itoa(HTTPPort)); err != nil {
			return fmt.Errorf("HTTP server: %w", err)
		}
		if upc, err = net.ListenPacket("udp", ":"+strconv.Itoa(UDPEchoPort)); err != nil {
			hln.Close()
			return fmt.Errorf("UDP echo server: %w", err)
		}
		return nil
	}); err != nil {
		return err
	}
	h := &HTTPServer{ln: hln, done: make(chan struct{})}
	h.srv = &http.Server{
		Handler:           http.HandlerFunc(h.handler),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				h.counts.of(remoteAddr(c)).accepted.Add(1)
			}
		},
	}
	go func() {
		defer close(h.done)
		h.srv.Serve(hln)
	}()
	l.HTTP = h
	l.addCloser(h.Close)

	u := &UDPEchoServer{pc: upc.(*net.UDPConn), done: make(chan struct{})}
	go u.serve()
	l.UDPEcho = u
	l.addCloser(u.Close)
	return nil
}

// addCloser registers a server to be closed by Lab.Close.
func (l *Lab) addCloser(fn func() error) {
	l.mu.Lock()
	l.closers = append(l.closers, fn)
	l.mu.Unlock()
}

func (l *Lab) stopServers() error {
	l.mu.Lock()
	cs := l.closers
	l.closers = nil
	l.mu.Unlock()
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		if err := cs[i](); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
