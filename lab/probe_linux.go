package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	defaultConcurrency = 32
	defaultTimeout     = 2 * time.Second
	defaultInterval    = 50 * time.Millisecond
)

func (c *ProbeConfig) setDefaults() error {
	if !c.Src.IsValid() || !c.Dst.IsValid() {
		return errors.New("probe needs Src and Dst")
	}
	if c.Conns < 0 || c.Concurrency < 0 || c.Rate < 0 || c.Timeout < 0 || c.Hold < 0 || c.Interval < 0 {
		return errors.New("probe: negative Conns, Concurrency, Rate, Timeout, Hold or Interval")
	}
	if c.Conns == 0 {
		c.Conns = 1
	}
	if c.Concurrency == 0 {
		c.Concurrency = defaultConcurrency
	}
	c.Concurrency = min(c.Concurrency, c.Conns)
	if c.Payload == "" {
		c.Payload = "canopy probe"
	}
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.Interval == 0 {
		c.Interval = defaultInterval
	}
	return nil
}

// Probe opens cfg.Conns TCP connections from cfg.Src to cfg.Dst inside the
// client namespace, paced at cfg.Rate, cfg.Concurrency at a time; each
// sends one line, waits for the echo (and holds the connection for
// cfg.Hold if set), and its outcome is counted. Cancelling ctx stops new
// connections and ends holds early (a hold ended by ctx counts as
// completed); connections not yet started are not counted. The error is
// only for a probe that could not run at all.
func (l *Lab) Probe(ctx context.Context, cfg ProbeConfig) (ProbeResult, error) {
	if err := cfg.setDefaults(); err != nil {
		return ProbeResult{}, fmt.Errorf("lab %s: %w", l.ID, err)
	}
	jobs := make(chan struct{}, cfg.Concurrency)
	results := make([]ProbeResult, cfg.Concurrency)
	errs := make([]error, cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each worker keeps one OS thread in the client namespace for
			// the whole probe: every connect then creates its socket there.
			errs[w] = l.Do(Client, func() error {
				p := prober{cfg: &cfg, buf: make([]byte, len(cfg.Payload)+1)}
				p.line = append([]byte(cfg.Payload), '\n')
				for range jobs {
					o, key := p.one(ctx, &results[w])
					results[w].add(o, key)
				}
				return nil
			})
		}()
	}
	pace(ctx, jobs, cfg.Conns, cfg.Rate)
	close(jobs)
	wg.Wait()
	var res ProbeResult
	for _, r := range results {
		res.merge(r)
	}
	res.Elapsed = time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("lab %s: probe: %w", l.ID, err)
	}
	return res, nil
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT before the dialer binds the
// source address. Without it, bind() picks the port alone and never takes
// one held by a TIME_WAIT socket, so one source address runs dry after
// ~64k connections per minute (tcp_tw_reuse only helps when connect()
// picks the port, seeing the whole 4-tuple).
func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// pace hands out n tokens at rate per second (0: as fast as taken).
func pace(ctx context.Context, jobs chan<- struct{}, n int, rate float64) {
	start := time.Now()
	var timer *time.Timer
	for i := range n {
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-ctx.Done():
					timer.Stop()
					return
				case <-timer.C:
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case jobs <- struct{}{}:
		}
	}
}

// prober runs one worker's connections.
type prober struct {
	cfg  *ProbeConfig
	line []byte // payload + '\n'
	buf  []byte // echo buffer, len(line)
}

// one runs one connection; a successful connect's duration goes to res.
func (p *prober) one(ctx context.Context, res *ProbeResult) (Outcome, string) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(p.cfg.Src, 0)), Timeout: p.cfg.Timeout, Control: bindNoPort}
	t0 := time.Now()
	c, err := d.DialContext(ctx, "tcp", p.cfg.Dst.String())
	if err != nil {
		return classify("connect", err)
	}
	res.Connects = append(res.Connects, time.Since(t0))
	defer c.Close()
	if o, key, ok := p.exchange(c); !ok {
		return o, key
	}
	if p.cfg.Hold <= 0 {
		return Completed, ""
	}
	end := time.Now().Add(p.cfg.Hold)
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return Completed, ""
		case <-tick.C:
		}
		if o, key, ok := p.exchange(c); !ok {
			return o, key
		}
	}
	return Completed, ""
}

// exchange sends the line and reads its echo.
func (p *prober) exchange(c net.Conn) (Outcome, string, bool) {
	c.SetDeadline(time.Now().Add(p.cfg.Timeout))
	if _, err := c.Write(p.line); err != nil {
		o, key := classify("write", err)
		return o, key, false
	}
	if _, err := io.ReadFull(c, p.buf); err != nil {
		o, key := classify("read", err)
		return o, key, false
	}
	if !bytes.Equal(p.buf, p.line) {
		return Other, "read: echo differs from what was sent", false
	}
	return Completed, "", true
}

// classify maps an error to an outcome and a key for ProbeResult.Errors.
func classify(phase string, err error) (Outcome, string) {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused, phase + ": connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Reset, phase + ": " + errnoText(err)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return Timeout, phase + ": timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Other, phase + ": closed by peer before the echo"
	case errors.Is(err, context.Canceled):
		return Other, phase + ": cancelled"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout, phase + ": timeout"
	}
	return Other, phase + ": " + errnoText(err)
}

// errnoText returns the innermost error's text (the errno string when
// there is one), without addresses, so that keys aggregate.
func errnoText(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en.Error()
	}
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// Sessions is a set of long-lived sessions opened by OpenSessions. Each
// session sends one line per Interval and a reader waits for echoes, so a
// reset is seen the moment it arrives.
type Sessions struct {
	cfg    SessionsConfig
	mu     sync.Mutex
	s      []Session
	conns  []net.Conn
	stop   chan struct{}
	wg     sync.WaitGroup
	closed bool
}

// OpenSessions connects cfg.N sessions from cfg.Src to cfg.Dst in the
// client namespace and starts their traffic. It returns once all are
// connected, or an error (closing those already open) if one cannot.
func (l *Lab) OpenSessions(ctx context.Context, cfg SessionsConfig) (*Sessions, error) {
	if !cfg.Src.IsValid() || !cfg.Dst.IsValid() {
		return nil, fmt.Errorf("lab %s: sessions need Src and Dst", l.ID)
	}
	if cfg.N < 0 || cfg.Interval < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("lab %s: sessions: negative N, Interval or Timeout", l.ID)
	}
	if cfg.N == 0 {
		cfg.N = 1
	}
	if cfg.Interval == 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Payload == "" {
		cfg.Payload = "canopy session"
	}
	ss := &Sessions{cfg: cfg, stop: make(chan struct{})}
	err := l.Do(Client, func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(cfg.Src, 0)), Timeout: cfg.Timeout, Control: bindNoPort}
		for i := range cfg.N {
			c, err := d.DialContext(ctx, "tcp", cfg.Dst.String())
			if err != nil {
				return fmt.Errorf("session %d of %d: %w", i+1, cfg.N, err)
			}
			ss.conns = append(ss.conns, c)
			ss.s = append(ss.s, Session{
				Local:  c.LocalAddr().(*net.TCPAddr).AddrPort(),
				Opened: time.Now(),
			})
		}
		return nil
	})
	if err != nil {
		for _, c := range ss.conns {
			c.Close()
		}
		return nil, fmt.Errorf("lab %s: open sessions: %w", l.ID, err)
	}
	line := []byte(cfg.Payload + "\n")
	for i, c := range ss.conns {
		ss.wg.Add(2)
		go ss.writer(i, c, line)
		go ss.reader(i, c, len(line))
	}
	return ss, nil
}

func (ss *Sessions) writer(i int, c net.Conn, line []byte) {
	defer ss.wg.Done()
	tick := time.NewTicker(ss.cfg.Interval)
	defer tick.Stop()
	for {
		c.SetWriteDeadline(time.Now().Add(ss.cfg.Timeout))
		if _, err := c.Write(line); err != nil {
			ss.died(i, "write", err)
			return
		}
		select {
		case <-ss.stop:
			return
		case <-tick.C:
		}
	}
}

func (ss *Sessions) reader(i int, c net.Conn, n int) {
	defer ss.wg.Done()
	buf := make([]byte, n)
	for {
		c.SetReadDeadline(time.Now().Add(ss.cfg.Interval + ss.cfg.Timeout))
		if _, err := io.ReadFull(c, buf); err != nil {
			ss.died(i, "read", err)
			return
		}
		ss.mu.Lock()
		ss.s[i].Echoes++
		ss.mu.Unlock()
	}
}

// died records the first failure of session i (not the ones Close causes).
func (ss *Sessions) died(i int, phase string, err error) {
	now := time.Now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed || !ss.s[i].Died.IsZero() {
		return
	}
	o, key := classify(phase, err)
	ss.s[i].Died, ss.s[i].Cause, ss.s[i].Err = now, o, key
	ss.conns[i].Close() // wake the session's other goroutine
}

// Snapshot returns the current state of every session.
func (ss *Sessions) Snapshot() []Session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]Session(nil), ss.s...)
}

// Alive returns how many sessions have not died.
func (ss *Sessions) Alive() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n := 0
	for _, s := range ss.s {
		if s.Alive() {
			n++
		}
	}
	return n
}

// WaitDead waits until at most alive sessions are still alive, or ctx
// ends; it returns the number alive.
func (ss *Sessions) WaitDead(ctx context.Context, alive int) int {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		n := ss.Alive()
		if n <= alive {
			return n
		}
		select {
		case <-ctx.Done():
			return ss.Alive()
		case <-t.C:
		}
	}
}

// Close ends every session still alive (they stay marked alive: they were
// closed, not killed) and returns the final state. Safe more than once.
func (ss *Sessions) Close() []Session {
	ss.mu.Lock()
	first := !ss.closed
	ss.closed = true
	ss.mu.Unlock()
	if first {
		close(ss.stop)
		for _, c := range ss.conns {
			c.Close()
		}
		ss.wg.Wait()
	}
	return ss.Snapshot()
}

// Dial connects from src (one of the client's addresses; invalid means
// let the kernel choose) to address in the client namespace, like
// net.Dialer.DialContext; network is "tcp", "tcp4", "tcp6", "udp", "udp4"
// or "udp6". The connection can be used from any goroutine. It fits
// http.Transport.DialContext:
//
//	DialContext: func(ctx context.Context, n, a string) (net.Conn, error) { return l.Dial(ctx, src, n, a) }
func (l *Lab) Dial(ctx context.Context, src netip.Addr, network, address string) (net.Conn, error) {
	var d net.Dialer
	if src.IsValid() {
		switch network {
		case "udp", "udp4", "udp6":
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		default:
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
	}
	var c net.Conn
	err := l.Do(Client, func() (err error) {
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}
