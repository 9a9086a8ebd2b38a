package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// DefaultAddr is where the daemon's API listens unless --api says otherwise.
const DefaultAddr = "127.0.0.1:7850"

// clientTimeout bounds a call whose context has no deadline (not streams).
const clientTimeout = 30 * time.Second

// APIError is an error answer of the API.
type APIError struct {
	Status  int    // HTTP status, e.g. 409
	Message string // the API's "error": what went wrong
	Detail  string // the API's "detail": specifics and what to do
}

// Error returns the API's message.
func (e *APIError) Error() string { return e.Message }

// Client talks to a canopy daemon's API. It is safe for concurrent use.
type Client struct {
	addr  string // as the user gave it, for messages
	base  string // scheme://host:port
	token string
	hc    *http.Client
}

// NewClient returns a client of the daemon at addr ("HOST:PORT", or a URL
// such as "https://canopy.example:7850"); token may be empty for an
// unauthenticated loopback daemon. Proxy settings from the environment are
// ignored: the token must go to the daemon, not to a proxy.
func NewClient(addr, token string) *Client {
	base := strings.TrimRight(strings.TrimSpace(addr), "/")
	if base == "" {
		base = DefaultAddr
	}
	if !strings.Contains(base, "://") {
		if strings.HasPrefix(base, ":") {
			base = "127.0.0.1" + base
		}
		base = "http://" + base
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: clientTimeout,
		ForceAttemptHTTP2:     true,
	}
	return &Client{addr: addr, base: base, token: token, hc: &http.Client{Transport: tr}}
}

// TrustCAFile makes the client accept the daemon's TLS certificate when it
// is signed by a CA in the PEM file (or is that self-signed certificate),
// besides the system's roots. Call it before the first request.
func (c *Client) TrustCAFile(path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("api CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("api CA file %s holds no PEM certificate", path)
	}
	tr := c.hc.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return nil
}

// do sends one request and decodes a JSON answer into out (unless nil).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, clientTimeout)
		defer cancel()
	}
	resp, err := c.send(ctx, method, path, q, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("canopy API at %s: %s %s: unreadable answer: %w", c.addr, method, path, err)
	}
	return nil
}

// send performs the request and turns transport failures and error answers
// into errors; on success the caller owns resp.Body.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body any, accept string) (*http.Response, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encoding the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("canopy API address %q: %w", c.addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "canopy-client")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no canopy daemon answers at %s: start one with `canopy --daemon --api %s …`, or pass --api HOST:PORT of a running daemon", c.addr, strings.TrimPrefix(c.base, "http://"))
		}
		return nil, fmt.Errorf("canopy API at %s: %w", c.addr, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp, nil
}

func readAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb errorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error == "" {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		return &APIError{Status: resp.StatusCode, Message: http.StatusText(resp.StatusCode), Detail: msg}
	}
	return &APIError{Status: resp.StatusCode, Message: eb.Error, Detail: eb.Detail}
}

// kindPath maps a rule kind to its collection path.
func kindPath(k rules.Kind) (string, error) {
	switch k {
	case "", rules.KindBan:
		return "/v1/bans", nil
	case rules.KindACL:
		return "/v1/acls", nil
	case rules.KindAllow:
		return "/v1/allowlist", nil
	}
	return "", fmt.Errorf("unknown rule kind %q: want ban, acl or allow", k)
}

func ttlString(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}

func portsString(p rules.PortRange) string {
	switch {
	case p == (rules.PortRange{}), p == rules.PortRange{From: 0, To: 65535}:
		return ""
	case p.From == p.To:
		return strconv.Itoa(int(p.From))
	}
	return fmt.Sprintf("%d-%d", p.From, p.To)
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// Ban adds (or extends) a ban, ACL or allowlist entry, by req.Kind (empty
// means ban). RequestedBy is ignored: the daemon records the token's name.
func (c *Client) Ban(ctx context.Context, req rules.Request) (rules.Entry, error) {
	path, err := kindPath(req.Kind)
	if err != nil {
		return rules.Entry{}, err
	}
	var body any
	switch req.Kind {
	case "", rules.KindBan:
		body = banBody{Value: req.Value, TTL: ttlString(req.TTL), Reason: req.Reason, Action: string(req.Action), Force: req.Force, Origin: string(req.Origin)}
	case rules.KindAllow:
		body = allowBody{Value: req.Value, TTL: ttlString(req.TTL), Comment: req.Reason, Origin: string(req.Origin)}
	case rules.KindACL:
		if req.ACL == nil {
			return rules.Entry{}, errors.New("an ACL request needs its ACL")
		}
		a := req.ACL
		body = aclBody{Proto: string(a.Proto), Src: prefixString(a.Src), Dst: prefixString(a.Dst),
			SrcPorts: portsString(a.SrcPorts), DstPorts: portsString(a.DstPorts), Direction: string(a.Direction),
			TTL: ttlString(req.TTL), Reason: req.Reason, Action: string(req.Action), Force: req.Force, Origin: string(req.Origin)}
	}
	e, _, err := c.post(ctx, path, body)
	return e, err
}

// ban is Ban that also tells whether the entry is new (201) or an existing
// one was extended (200).
func (c *Client) ban(ctx context.Context, req rules.Request) (rules.Entry, bool, error) {
	path, _ := kindPath(req.Kind)
	body := banBody{Value: req.Value, TTL: ttlString(req.TTL), Reason: req.Reason, Action: string(req.Action), Force: req.Force, Origin: string(req.Origin)}
	return c.post(ctx, path, body)
}

func (c *Client) post(ctx context.Context, path string, body any) (rules.Entry, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	var e rules.Entry
	resp, err := c.send(ctx, http.MethodPost, path, nil, body, "application/json")
	if err != nil {
		return e, false, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return e, false, fmt.Errorf("canopy API at %s: POST %s: unreadable answer: %w", c.addr, path, err)
	}
	return e, resp.StatusCode == http.StatusCreated, nil
}

// Unban lifts a ban given its id or its value (IP or CIDR).
func (c *Client) Unban(ctx context.Context, idOrValue string) (rules.Entry, error) {
	return c.Remove(ctx, rules.KindBan, idOrValue, "")
}

// Remove lifts an entry of kind k given its id or its value; reason goes to
// the audit log.
func (c *Client) Remove(ctx context.Context, k rules.Kind, idOrValue, reason string) (rules.Entry, error) {
	path, err := kindPath(k)
	if err != nil {
		return rules.Entry{}, err
	}
	idOrValue = strings.TrimSpace(idOrValue)
	q := url.Values{}
	if reason != "" {
		q.Set("reason", reason)
	}
	if _, err := strconv.ParseUint(idOrValue, 10, 64); err == nil {
		path += "/" + idOrValue
	} else {
		q.Set("value", idOrValue)
	}
	var e rules.Entry
	err = c.do(ctx, http.MethodDelete, path, q, nil, &e)
	return e, err
}

// Bans lists one page of entries of f.Kind (empty means bans) and returns
// how many match in all. f.Limit 0 asks for the server's default page.
func (c *Client) Bans(ctx context.Context, f RuleFilter) ([]rules.Entry, int, error) {
	path, err := kindPath(f.Kind)
	if err != nil {
		return nil, 0, err
	}
	q := url.Values{}
	if f.Contains.IsValid() {
		q.Set("contains", f.Contains.String())
	}
	if f.Origin != "" {
		q.Set("origin", string(f.Origin))
	}
	if f.Offset > 0 {
		q.Set("offset", strconv.Itoa(f.Offset))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var l EntryList
	if err := c.do(ctx, http.MethodGet, path, q, nil, &l); err != nil {
		return nil, 0, err
	}
	return l.Items, l.Total, nil
}

// Status returns the sensor's status.
func (c *Client) Status(ctx context.Context) (sensor.Status, error) {
	v, err := c.StatusView(ctx)
	return v.Status, err
}

// StatusView returns the status with the API's additions (uptime, ready).
func (c *Client) StatusView(ctx context.Context) (StatusView, error) {
	var v StatusView
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil, &v)
	return v, err
}

// Snapshot returns the whole latest sensor snapshot (for attach mode).
func (c *Client) Snapshot(ctx context.Context) (sensor.Snapshot, error) {
	return c.SnapshotRules(ctx, -1)
}

// SnapshotRules returns the latest sensor snapshot with at most maxRules
// entries in its Rules list (negative: all). Dashboards polling every
// second should cap it and page through Bans instead.
func (c *Client) SnapshotRules(ctx context.Context, maxRules int) (sensor.Snapshot, error) {
	var q url.Values
	if maxRules >= 0 {
		q = url.Values{"rules": {strconv.Itoa(maxRules)}}
	}
	var s sensor.Snapshot
	err := c.do(ctx, http.MethodGet, "/v1/snapshot", q, nil, &s)
	return s, err
}

// Flows returns up to max live flows with an endpoint inside p.
func (c *Client) Flows(ctx context.Context, p netip.Prefix, max int) ([]flow.Info, error) {
	q := url.Values{"ip": {p.String()}, "max": {strconv.Itoa(max)}}
	var l FlowList
	err := c.do(ctx, http.MethodGet, "/v1/flows", q, nil, &l)
	return l.Items, err
}

// Talkers returns the top n talkers by src, dst, pair, port or srcnet,
// their rates averaged over window (2s, 10s or 40s).
func (c *Client) Talkers(ctx context.Context, by, window string, n int) (Talkers, error) {
	q := url.Values{"by": {by}, "window": {window}, "n": {strconv.Itoa(n)}}
	var t Talkers
	err := c.do(ctx, http.MethodGet, "/v1/talkers", q, nil, &t)
	return t, err
}

// SetMode switches the sensor between enforce and observe.
func (c *Client) SetMode(ctx context.Context, m sensor.Mode) error {
	return c.do(ctx, http.MethodPost, "/v1/mode", nil, ModeBody{Mode: m}, nil)
}

// Events follows the daemon's event stream until ctx is done, the daemon
// ends the stream (shutdown, or this client read too slowly), or the
// connection breaks; the channel is then closed. Reconnect to continue,
// and resynchronise with Bans: events missed in between are not replayed.
func (c *Client) Events(ctx context.Context) (<-chan sensor.Event, error) {
	resp, err := c.send(ctx, http.MethodGet, "/v1/events", nil, nil, "text/event-stream")
	if err != nil {
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("canopy API at %s: /v1/events answered %q, not an event stream", c.addr, ct)
	}
	out := make(chan sensor.Event, 256)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		readSSE(resp.Body, func(typ string, data []byte) bool {
			if typ == EventClose {
				return false
			}
			var ev sensor.Event
			if json.Unmarshal(data, &ev) != nil {
				return true // an event this client version does not know
			}
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	return out, nil
}

// readSSE parses a text/event-stream, calling fn for each event until fn
// returns false or the stream ends.
func readSSE(r io.Reader, fn func(typ string, data []byte) bool) {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		typ  string
		data []byte
	)
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// An oversized line: skip the rest of it.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			continue
		}
		if err != nil {
			return
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if len(data) > 0 {
				if typ == "" {
					typ = "message"
				}
				if !fn(typ, data) {
					return
				}
			}
			typ, data = "", data[:0]
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("event:")):
			typ = string(bytes.TrimSpace(line[len("event:"):]))
		case bytes.HasPrefix(line, []byte("data:")):
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(line[len("data:"):], []byte(" "))...)
		}
	}
}
