package lab

import (
	"net/netip"
	"time"
)

// DefaultPrefix starts the name of every namespace a lab creates unless
// Config.Prefix says otherwise; CleanupStale(DefaultPrefix) finds leftovers.
const DefaultPrefix = "cnp"

// Well-known ports of the servers every lab runs in the server namespace.
const (
	EchoPort    = 7  // TCP line echo (EchoServer)
	UDPEchoPort = 7  // UDP datagram echo (UDPEchoServer)
	HTTPPort    = 80 // small HTTP server for the demo (HTTPServer)
)

// Interface names as seen inside the namespaces. Each namespace is private
// to one lab, so the names are fixed and several labs never collide.
const (
	ClientIface = "cli0"  // client's port towards the router (or the delay line)
	ServerIface = "srv0"  // server's port towards the router
	TapIface    = "tap0"  // sensor's mirror port: promiscuous, no address, IPv6 off
	InjectIface = "inj0"  // sensor's inject port, routed by the router
	RouterCli   = "r-cli" // router's client-side port (mirrored)
	RouterSrv   = "r-srv" // router's server-side port (mirrored)
	RouterTap   = "r-tap" // router's end of the tap cable (mirror destination)
	RouterInj   = "r-inj" // router's end of the inject cable (next hop for injection)
	DelayCli    = "d-cli" // delay line's client-side port
	DelayRtr    = "d-rtr" // delay line's router-side port
)

// The address plan. Every lab has its own namespaces, so every lab uses the
// same plan; it is fixed to make demos and tests easy to read. Lab exposes
// each address as a field.
var (
	planClientBanned4 = netip.MustParseAddr("10.77.1.10")
	planClientLegit4  = netip.MustParseAddr("10.77.1.20")
	planRouterClient4 = netip.MustParseAddr("10.77.1.1")
	planServer4       = netip.MustParseAddr("10.77.2.2")
	planRouterServer4 = netip.MustParseAddr("10.77.2.1")
	planSensorInject4 = netip.MustParseAddr("10.77.3.2")
	planRouterInject4 = netip.MustParseAddr("10.77.3.1")
	planClientBanned6 = netip.MustParseAddr("fd00:77:1::10")
	planClientLegit6  = netip.MustParseAddr("fd00:77:1::20")
	planRouterClient6 = netip.MustParseAddr("fd00:77:1::1")
	planServer6       = netip.MustParseAddr("fd00:77:2::2")
	planRouterServer6 = netip.MustParseAddr("fd00:77:2::1")
	planSensorInject6 = netip.MustParseAddr("fd00:77:3::2")
	planRouterInject6 = netip.MustParseAddr("fd00:77:3::1")
)

// Prefix lengths of the lab's subnets.
const (
	prefixLen4 = 24
	prefixLen6 = 64
)

// Config says what lab to build. The zero value is a lab without delay.
type Config struct {
	// Delay is the one-way delay the L2 delay line adds between client and
	// router, in each direction (so a round trip gains 2×Delay). Zero cables
	// the client straight to the router and starts no delay line.
	Delay time.Duration
	// Prefix starts every namespace name; empty means DefaultPrefix.
	Prefix string
}

// NS names one of a lab's network namespaces.
type NS int

// The namespaces of a lab.
const (
	Client    NS = iota // client: banned and legit source addresses
	Server              // server: echo, HTTP and UDP-echo servers
	Router              // router: forwards, mirrors to the tap
	Sensor              // sensor: tap port and inject port
	DelayLine           // delay line between client and router (only when Config.Delay > 0)
	nsCount
)

// String returns the namespace's role as used in its name ("client", …).
func (n NS) String() string {
	switch n {
	case Client:
		return "client"
	case Server:
		return "server"
	case Router:
		return "router"
	case Sensor:
		return "sensor"
	case DelayLine:
		return "delay"
	}
	return "ns?"
}
