package lab

import (
	"net/netip"
	"slices"
	"time"
)

// Outcome is how one probe connection (or session) ended.
type Outcome uint8

// Outcomes of a probe connection.
const (
	Completed Outcome = iota // the echo came back (and the hold, if any, was survived)
	Refused                  // connect failed with ECONNREFUSED (RST to the SYN)
	Reset                    // ECONNRESET or EPIPE after connecting
	Timeout                  // a connect or an echo did not finish within Timeout
	Other                    // anything else (EOF before echo, wrong echo, unreachable…)
)

// String returns the outcome's name in lower case.
func (o Outcome) String() string {
	switch o {
	case Completed:
		return "completed"
	case Refused:
		return "refused"
	case Reset:
		return "reset"
	case Timeout:
		return "timeout"
	case Other:
		return "other"
	}
	return "outcome?"
}

// ProbeConfig describes a burst of client connections. Src and Dst are
// required; every other zero value picks the default named on the field.
type ProbeConfig struct {
	Src         netip.Addr     // source address, one of the client's (e.g. Lab.ClientBanned4)
	Dst         netip.AddrPort // where to connect (e.g. Server4:EchoPort)
	Conns       int            // connections to open; 0 means 1
	Rate        float64        // new connections per second; 0 means as fast as the workers go
	Concurrency int            // connections in flight at once; 0 means 32
	Payload     string         // the line each connection sends (no newline); "" means "canopy probe"
	Timeout     time.Duration  // limit for the connect and for each echo; 0 means 2s
	Hold        time.Duration  // after the first echo keep the connection open this long, one line per Interval
	Interval    time.Duration  // pace of the lines during Hold; 0 means 50ms
}

// ProbeResult counts how the probe's connections ended.
type ProbeResult struct {
	Completed int // echo received (and hold survived)
	Refused   int // connection refused
	Reset     int // reset after connecting
	Timeout   int // connect or echo timed out
	Other     int // anything else; see Errors
	// Errors counts every failure by phase and error text, e.g.
	// "connect: connection refused" or "read: connection reset by peer".
	Errors  map[string]int
	Elapsed time.Duration // from the first connection to the last outcome
	// Connects holds how long each successful connect took (the handshake
	// round trip, as the client saw it), in no particular order: the lab's
	// round trip while the probe ran, loaded as it was.
	Connects []time.Duration
}

// ConnectQuantile returns the q-quantile (0..1) of Connects, 0 if none.
func (r ProbeResult) ConnectQuantile(q float64) time.Duration {
	if len(r.Connects) == 0 {
		return 0
	}
	c := slices.Clone(r.Connects)
	slices.Sort(c)
	return c[min(len(c)-1, int(q*float64(len(c))))]
}

// Total returns the number of connections that have an outcome.
func (r ProbeResult) Total() int {
	return r.Completed + r.Refused + r.Reset + r.Timeout + r.Other
}

func (r *ProbeResult) add(o Outcome, key string) {
	switch o {
	case Completed:
		r.Completed++
	case Refused:
		r.Refused++
	case Reset:
		r.Reset++
	case Timeout:
		r.Timeout++
	default:
		r.Other++
	}
	if key != "" {
		if r.Errors == nil {
			r.Errors = make(map[string]int)
		}
		r.Errors[key]++
	}
}

func (r *ProbeResult) merge(o ProbeResult) {
	r.Completed += o.Completed
	r.Refused += o.Refused
	r.Reset += o.Reset
	r.Timeout += o.Timeout
	r.Other += o.Other
	r.Connects = append(r.Connects, o.Connects...)
	for k, v := range o.Errors {
		if r.Errors == nil {
			r.Errors = make(map[string]int)
		}
		r.Errors[k] += v
	}
}

// SessionsConfig describes a set of long-lived sessions: N connections
// from Src to Dst that each send one line per Interval and wait for its
// echo, until they die or are closed.
type SessionsConfig struct {
	Src      netip.Addr     // source address, one of the client's
	Dst      netip.AddrPort // where to connect (an echo server)
	N        int            // number of sessions; 0 means 1
	Interval time.Duration  // one line per Interval; 0 means 50ms
	Timeout  time.Duration  // connect limit, and how long past Interval an echo may take; 0 means 2s
	Payload  string         // the line each session sends; "" means "canopy session"
}

// Session is the state of one long-lived session.
type Session struct {
	Local  netip.AddrPort // the session's client address and port
	Opened time.Time      // when the connection was established
	Died   time.Time      // when the first error was observed; zero while alive or if closed cleanly
	Cause  Outcome        // why it died (Reset, Timeout or Other); meaningful only if Died is set
	Err    string         // the error that killed it
	Echoes int            // echoes received
}

// Alive reports whether the session had not died (yet).
func (s Session) Alive() bool { return s.Died.IsZero() }
