package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Body limits: a single request, and a bulk NDJSON upload.
const (
	MaxBodyBytes     = 1 << 20
	MaxBulkBodyBytes = 32 << 20
	// MaxBulkLines is how many entries one bulk request may carry.
	MaxBulkLines = 100_000
)

// Timeouts of the HTTP server. Reads allow a 32 MiB bulk body over a slow
// link; writes of ordinary answers must finish within writeTimeout, SSE
// streams set their own deadline per event.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 2 * time.Minute
	idleTimeout       = 2 * time.Minute
	writeTimeout      = 30 * time.Second
	bulkWriteTimeout  = 5 * time.Minute
	shutdownGrace     = time.Second
)

// Config is what NewServer needs. Rules and Sensor are required.
type Config struct {
	// Addr is the listen address, e.g. "127.0.0.1:7850". Without Tokens it
	// must be a loopback address.
	Addr string
	// Tokens are the accepted bearer tokens (see LoadTokens). None: the API
	// is open to local users, which NewServer allows only on loopback.
	Tokens []Token
	// Rules is the rule store behind /v1/bans, /v1/acls, /v1/allowlist and
	// /v1/audit.
	Rules Rules
	// Sensor provides status, snapshots, flows, mode and events.
	Sensor Sensor
	// Version is reported by canopy_build_info; "" becomes "unknown".
	Version string
	// Logger receives access and error logs; nil discards them.
	Logger *slog.Logger
	// SetLogLevel changes the daemon's log level (debug, info, warn,
	// error) for POST /v1/loglevel; nil answers that endpoint with 501.
	SetLogLevel func(level string) error
	// TLSCertFile and TLSKeyFile (PEM), when both are set, make Serve
	// speak HTTPS. Empty: plain HTTP, and on an address other than
	// loopback NewServer warns that tokens cross the network in clear.
	TLSCertFile, TLSKeyFile string
}

// Server is canopy's HTTP API. Create it with NewServer.
type Server struct {
	cfg     Config
	log     *slog.Logger
	open    bool // no tokens: loopback-only, unauthenticated
	cop     *http.CrossOriginProtection
	handler http.Handler
	started time.Time

	// stop is closed when Serve shuts down, so that long-lived SSE streams
	// end and let the graceful shutdown finish in time.
	stop     chan struct{}
	stopOnce sync.Once

	// Tunables, fixed after NewServer; tests shrink them.
	eventQueue int           // events buffered per SSE client before it is cut off
	heartbeat  time.Duration // SSE comment interval, keeps proxies from timing out
	sseWrite   time.Duration // how long one SSE write may block before the client is dropped
	sseHook    func()        // tests: called before each SSE write; nil in production
	readLimit  time.Duration // http.Server.ReadTimeout

	stats     apiStats
	decisions decisionCursors
	tls       *tls.Config // nil: plain HTTP
}

// apiStats count the API's own work for /metrics.
type apiStats struct {
	requests    [6]atomic.Uint64 // by status class: index 1..5 = 1xx..5xx
	panics      atomic.Uint64
	sseClients  atomic.Int64
	sseSlowCuts atomic.Uint64
}

// NewServer validates cfg and builds the API. It refuses to run without
// tokens on an address other than loopback.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Rules == nil {
		return nil, errors.New("api: Config.Rules is nil")
	}
	if cfg.Sensor == nil {
		return nil, errors.New("api: Config.Sensor is nil")
	}
	if cfg.Addr == "" {
		return nil, errors.New("api: no listen address: pass --api HOST:PORT, e.g. --api 127.0.0.1:7850")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("api: listen address %q: %w: write it as HOST:PORT, e.g. 127.0.0.1:7850", cfg.Addr, err)
	}
	seen := map[[32]byte]bool{}
	for _, t := range cfg.Tokens {
		if err := validTokenName(t.Name); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		if seen[t.Hash] {
			return nil, fmt.Errorf("api: token %q is configured twice", t.Name)
		}
		seen[t.Hash] = true
	}
	if len(cfg.Tokens) == 0 && !isLoopbackAddr(cfg.Addr) {
		return nil, fmt.Errorf("api: refusing to listen on %s without authentication: anyone who can reach it could ban or unban; add --api-token-file FILE (lines of name:token), or listen on loopback, e.g. --api 127.0.0.1:7850", cfg.Addr)
	}
	if cfg.Version == "" {
		cfg.Version = "unknown"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:        cfg,
		log:        log.With("component", "api"),
		open:       len(cfg.Tokens) == 0,
		cop:        http.NewCrossOriginProtection(),
		started:    time.Now(),
		stop:       make(chan struct{}),
		eventQueue: 1024,
		heartbeat:  15 * time.Second,
		sseWrite:   sseWriteTimeout,
		readLimit:  readTimeout,
	}
	s.decisions.init()
	s.handler = s.routes()
	switch {
	case (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == ""):
		return nil, errors.New("api: TLS needs both a certificate and a key file (--api-tls-cert and --api-tls-key)")
	case cfg.TLSCertFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("api: TLS certificate %s / key %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case !isLoopbackAddr(cfg.Addr):
		s.log.Warn("api: serving plain HTTP on a network address: bearer tokens cross the network in clear text; add a TLS certificate or put the API behind a TLS proxy", "addr", cfg.Addr)
	}
	return s, nil
}

// Handler returns the API as an http.Handler, for tests and for callers
// that run their own http.Server.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve listens on Config.Addr and serves until ctx is done, then shuts down
// gracefully: open SSE streams are told and closed, requests in flight get
// up to one second to finish, and the rest are cut. It returns nil after a
// shutdown caused by ctx, or the error that stopped it.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("api: listen on %s: %w: is another canopy daemon running? stop it or pick another --api address", s.cfg.Addr, err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener is Serve on a listener the caller opened (systemd socket
// activation, or ":0" in tests). It closes ln. The listener's address is not
// re-checked against the loopback rule: the caller owns that choice.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       s.readLimit,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	s.log.Info("api listening", "addr", ln.Addr().String(), "auth", !s.open, "tokens", len(s.cfg.Tokens), "tls", s.tls != nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		s.closeStreams()
		return fmt.Errorf("api: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.closeStreams()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("api shutdown: cutting connections still busy", "err", err)
		srv.Close()
	}
	<-errc
	s.log.Info("api stopped")
	return nil
}

func (s *Server) closeStreams() { s.stopOnce.Do(func() { close(s.stop) }) }

// isLoopbackAddr reports whether a HOST:PORT listen address only accepts
// connections from this machine.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return isLoopbackHost(host)
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return err == nil && ip.Unmap().IsLoopback()
}

// caller is who sent a request.
type caller struct {
	name     string // token name, or "local"
	readOnly bool
}

// handlerFunc serves one method of one route. A returned error is written
// as the JSON error answer (unless the handler already started its answer).
type handlerFunc func(w http.ResponseWriter, r *http.Request, c caller) error

// route is one path with its methods.
type route struct {
	methods   map[string]handlerFunc
	public    bool          // no token needed (probes)
	roWrites  bool          // read-only tokens may use every method (a write that changes nothing)
	bodyLimit int64         // 0: MaxBodyBytes
	deadline  time.Duration // write deadline; 0: writeTimeout; <0: none (SSE sets its own)
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	add := func(pattern string, rt route) { mux.Handle(pattern, s.wrap(pattern, rt)) }
	for _, k := range entryKinds {
		add("/v1/"+k.path, route{methods: map[string]handlerFunc{
			"GET":    s.listEntries(k),
			"POST":   s.addEntry(k),
			"DELETE": s.removeEntryByValue(k),
		}})
		add("/v1/"+k.path+"/{id}", route{methods: map[string]handlerFunc{
			"GET":    s.getEntry(k),
			"DELETE": s.removeEntry(k),
		}})
		add("/v1/"+k.path+":bulk", route{methods: map[string]handlerFunc{
			"POST": s.bulkEntries(k),
		}, bodyLimit: MaxBulkBodyBytes, deadline: bulkWriteTimeout})
	}
	add("/v1/allowlist/check/{ip}", route{methods: map[string]handlerFunc{"GET": s.checkAllow}})
	add("/v1/status", route{methods: map[string]handlerFunc{"GET": s.status}})
	add("/v1/snapshot", route{methods: map[string]handlerFunc{"GET": s.snapshot}})
	add("/v1/talkers", route{methods: map[string]handlerFunc{"GET": s.talkers}})
	add("/v1/flows", route{methods: map[string]handlerFunc{"GET": s.flows}})
	add("/v1/audit", route{methods: map[string]handlerFunc{"GET": s.audit}})
	add("/v1/events", route{methods: map[string]handlerFunc{"GET": s.events}, deadline: -1})
	add("/v1/mode", route{methods: map[string]handlerFunc{"GET": s.getMode, "POST": s.setMode}})
	add("/v1/loglevel", route{methods: map[string]handlerFunc{"POST": s.setLogLevel}})
	add("/v1/decisions", route{methods: map[string]handlerFunc{"GET": s.lapiDecisions}})
	add("/v1/decisions/stream", route{methods: map[string]handlerFunc{"GET": s.lapiStream}, deadline: bulkWriteTimeout})
	add("/v1/usage-metrics", route{methods: map[string]handlerFunc{"POST": s.lapiUsageMetrics}, roWrites: true})
	add("/metrics", route{methods: map[string]handlerFunc{"GET": s.metrics}})
	add("/livez", route{methods: map[string]handlerFunc{"GET": s.livez}, public: true})
	add("/readyz", route{methods: map[string]handlerFunc{"GET": s.readyz}, public: true})
	add("/", route{methods: map[string]handlerFunc{}})
	return mux
}

// wrap adds to a route everything every endpoint needs: panic recovery,
// browser-attack checks, method dispatch, authentication, body limit,
// deadlines, metrics and the access log.
func (s *Server) wrap(pattern string, rt route) http.Handler {
	allow := make([]string, 0, len(rt.methods)+1)
	for m := range rt.methods {
		allow = append(allow, m)
		if m == http.MethodGet {
			allow = append(allow, http.MethodHead)
		}
	}
	slices.Sort(allow)
	allowHeader := strings.Join(allow, ", ")
	limit := rt.bodyLimit
	if limit == 0 {
		limit = MaxBodyBytes
	}
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw}
		c := caller{}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.stats.panics.Add(1)
				s.log.Error("api handler panicked: this is a bug, please report it", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !w.wrote {
					s.writeError(w, errorf(http.StatusInternalServerError, "internal error", "the request was not completed; the daemon logged the cause"))
				}
			}
			s.stats.requests[min(max(w.status/100, 0), 5)].Add(1)
			// Requests are logged at debug: the audit log records every
			// change with its requester, and a SOAR pushing thousands of
			// bans a second must not flood the daemon's log. Failures of
			// the daemon itself stand out at warn.
			lvl := slog.LevelDebug
			if w.status >= 500 {
				lvl = slog.LevelWarn
			}
			if s.log.Enabled(r.Context(), lvl) {
				s.log.Log(r.Context(), lvl, "api request", "method", r.Method, "path", r.URL.Path, "status", w.status,
					"by", c.name, "remote", r.RemoteAddr, "duration", time.Since(start))
			}
		}()

		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")

		if err := s.cop.Check(r); err != nil {
			s.writeError(w, errorf(http.StatusForbidden, "cross-origin browser request refused", "%v", err))
			return
		}
		if s.open && !isLoopbackHost(hostOnly(r.Host)) {
			s.writeError(w, errorf(http.StatusForbidden, "Host header is not a loopback name", "this API runs without tokens and answers only to localhost, 127.0.0.1 or [::1]; got Host %q", r.Host))
			return
		}
		if pattern == "/" {
			s.writeError(w, errorf(http.StatusNotFound, "no such endpoint", "%s %s: see the API documentation for the paths under /v1", r.Method, r.URL.Path))
			return
		}
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		fn, ok := rt.methods[method]
		if !ok {
			h.Set("Allow", allowHeader)
			s.writeError(w, errorf(http.StatusMethodNotAllowed, "method not allowed", "%s takes %s", pattern, allowHeader))
			return
		}
		if !rt.public {
			var herr *httpError
			c, herr = s.authenticate(r)
			if herr != nil {
				if herr.status == http.StatusUnauthorized {
					h.Set("WWW-Authenticate", `Bearer realm="canopy"`)
				}
				s.writeError(w, herr)
				return
			}
			if c.readOnly && method != http.MethodGet && !rt.roWrites {
				s.writeError(w, errorf(http.StatusForbidden, "read-only token", "token %q may only read; use a token without :ro to %s %s", c.name, r.Method, r.URL.Path))
				return
			}
		}
		if r.ContentLength > limit {
			s.writeError(w, errorf(http.StatusRequestEntityTooLarge, "request body too large", "%d bytes sent, limit is %d", r.ContentLength, limit))
			return
		}
		r.Body = http.MaxBytesReader(rw, r.Body, limit)
		switch {
		case rt.deadline > 0:
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(rt.deadline))
		case rt.deadline == 0:
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		if err := fn(w, r, c); err != nil {
			if w.wrote {
				s.log.Warn("api request failed after its answer started", "method", r.Method, "path", r.URL.Path, "err", err)
				return
			}
			s.writeError(w, fromStore(err))
		}
	})
}

// authenticate finds the token of a request. Tokens arrive as
// "Authorization: Bearer T" or, for CrowdSec bouncers, "X-Api-Key: T".
func (s *Server) authenticate(r *http.Request) (caller, *httpError) {
	if s.open {
		return caller{name: localName}, nil
	}
	secret := ""
	if a := r.Header.Get("Authorization"); a != "" {
		scheme, rest, _ := strings.Cut(a, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return caller{}, errorf(http.StatusUnauthorized, "unsupported authorization scheme", "send Authorization: Bearer TOKEN")
		}
		secret = strings.TrimSpace(rest)
	} else {
		secret = r.Header.Get("X-Api-Key")
	}
	if secret == "" {
		return caller{}, errorf(http.StatusUnauthorized, "missing token", "send Authorization: Bearer TOKEN with a token from the daemon's --api-token-file")
	}
	t, ok := lookupToken(s.cfg.Tokens, secret)
	if !ok {
		return caller{}, errorf(http.StatusUnauthorized, "invalid token", "the token matches none in the daemon's --api-token-file")
	}
	return caller{name: t.Name, readOnly: t.ReadOnly}, nil
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// statusWriter records the status for the access log and metrics, and
// whether the answer has started.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes through, for SSE and streamed bulk answers.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if !w.wrote {
			w.status, w.wrote = http.StatusOK, true
		}
		f.Flush()
	}
}

// writeJSON encodes v completely before writing, so an encoding failure
// still becomes a proper error answer.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("api: encoding the answer failed", "err", err)
		s.writeError(w, errorf(http.StatusInternalServerError, "internal error", "the answer could not be encoded; the daemon logged the cause"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func (s *Server) writeError(w http.ResponseWriter, e *httpError) {
	if e.status >= 500 {
		s.log.Error("api error", "status", e.status, "error", e.msg, "detail", e.detail)
	}
	b, _ := json.Marshal(errorBody{Error: e.msg, Detail: e.detail})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(e.status)
	w.Write(append(b, '\n'))
}

// readBody reads a request body already limited by wrap.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(http.StatusRequestEntityTooLarge, "request body too large", "limit is %d bytes", mbe.Limit)
		}
		return nil, errorf(http.StatusBadRequest, "could not read the request body", "%v", err)
	}
	return b, nil
}
