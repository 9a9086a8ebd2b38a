package lab

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Lab is one running test bed: its namespaces, links, servers and (when
// configured) delay line. Build it with New (or NewT in tests) and always
// Close it. Its exported fields are read-only after New.
type Lab struct {
	// ID is the random part shared by every namespace name of this lab.
	ID string

	ClientBanned4 netip.Addr // client source address meant to be banned
	ClientLegit4  netip.Addr // client source address that must keep working
	ClientBanned6 netip.Addr // IPv6 client source address meant to be banned
	ClientLegit6  netip.Addr // IPv6 client source address that must keep working
	Server4       netip.Addr // server address (echo, HTTP, UDP echo)
	Server6       netip.Addr // IPv6 server address
	RouterClient4 netip.Addr // router on the client subnet (client's gateway)
	RouterClient6 netip.Addr // router on the IPv6 client subnet (client's IPv6 gateway)
	RouterServer4 netip.Addr // router on the server subnet (server's gateway)
	RouterServer6 netip.Addr // router on the IPv6 server subnet (server's IPv6 gateway)
	SensorInject4 netip.Addr // sensor's inject port address
	SensorInject6 netip.Addr // sensor's IPv6 inject port address
	RouterInject4 netip.Addr // router on the inject subnet: next hop for injected frames
	RouterInject6 netip.Addr // router on the IPv6 inject subnet

	// RouterInjectMAC is the MAC of the router's inject port: the
	// destination MAC of every frame the sensor injects on InjectIface.
	RouterInjectMAC net.HardwareAddr
	// TapIface is the sensor's mirror port (inside the Sensor namespace).
	TapIface string
	// InjectIface is the sensor's inject port (inside the Sensor namespace).
	InjectIface string
	// Delay is the one-way delay of the delay line (0: no delay line).
	Delay time.Duration

	Echo    *EchoServer    // TCP line echo on EchoPort, both address families
	HTTP    *HTTPServer    // HTTP server on HTTPPort, both address families
	UDPEcho *UDPEchoServer // UDP echo on UDPEchoPort, both address families

	names   [nsCount]string
	handles [nsCount]netns.NsHandle
	delay   *delayLine
	cables  int // veth pairs made so far (numbers their ifindexes)

	mu      sync.Mutex
	closers []func() error // servers to stop on Close, in start order

	closeOnce sync.Once
	closeErr  error
}

// New builds a lab: namespaces, veth cables, addresses, routes, the tc
// mirror, the delay line when cfg.Delay > 0, and the servers. It needs
// root. On error everything it made so far is removed again.
func New(cfg Config) (*Lab, error) {
	if cfg.Delay < 0 {
		return nil, fmt.Errorf("lab: negative delay %v", cfg.Delay)
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	id, err := randomID(5)
	if err != nil {
		return nil, fmt.Errorf("lab: random name: %w", err)
	}
	l := &Lab{
		ID:            id,
		ClientBanned4: planClientBanned4,
		ClientLegit4:  planClientLegit4,
		ClientBanned6: planClientBanned6,
		ClientLegit6:  planClientLegit6,
		Server4:       planServer4,
		Server6:       planServer6,
		RouterClient4: planRouterClient4,
		RouterServer4: planRouterServer4,
		RouterClient6: planRouterClient6,
		RouterServer6: planRouterServer6,
		SensorInject4: planSensorInject4,
		SensorInject6: planSensorInject6,
		RouterInject4: planRouterInject4,
		RouterInject6: planRouterInject6,
		TapIface:      TapIface,
		InjectIface:   InjectIface,
		Delay:         cfg.Delay,
	}
	for i := range l.handles {
		l.handles[i] = netns.None()
	}
	if err := l.build(prefix, cfg); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("and cleaning up failed too: %w", cerr))
		}
		return nil, fmt.Errorf("lab %s: %w", id, err)
	}
	return l, nil
}

func (l *Lab) build(prefix string, cfg Config) error {
	roles := []NS{Client, Server, Router, Sensor}
	if cfg.Delay > 0 {
		roles = append(roles, DelayLine)
	}
	for _, r := range roles {
		name := prefix + l.ID + "-" + r.String()
		h, err := newNamedNS(name)
		if err != nil {
			return err
		}
		l.names[r], l.handles[r] = name, h
	}
	for _, r := range roles {
		if err := l.Do(r, func() error { return prepareNS(r) }); err != nil {
			return fmt.Errorf("prepare %s namespace: %w", r, err)
		}
	}

	// Cables. Each end is created directly inside its namespace, so names
	// never meet in the caller's namespace.
	if cfg.Delay > 0 {
		if err := l.cable(Client, ClientIface, DelayLine, DelayCli); err != nil {
			return err
		}
		if err := l.cable(DelayLine, DelayRtr, Router, RouterCli); err != nil {
			return err
		}
	} else if err := l.cable(Client, ClientIface, Router, RouterCli); err != nil {
		return err
	}
	if err := l.cable(Server, ServerIface, Router, RouterSrv); err != nil {
		return err
	}
	if err := l.cable(Router, RouterTap, Sensor, TapIface); err != nil {
		return err
	}
	if err := l.cable(Router, RouterInj, Sensor, InjectIface); err != nil {
		return err
	}

	if err := l.Do(Router, l.setupRouter); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if err := l.Do(Client, func() error {
		return setupHost(ClientIface,
			[]netip.Prefix{
				netip.PrefixFrom(l.ClientBanned4, prefixLen4), netip.PrefixFrom(l.ClientLegit4, prefixLen4),
				netip.PrefixFrom(l.ClientBanned6, prefixLen6), netip.PrefixFrom(l.ClientLegit6, prefixLen6),
			},
			[]netip.Addr{l.RouterClient4, l.RouterClient6})
	}); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := l.Do(Server, func() error {
		return setupHost(ServerIface,
			[]netip.Prefix{netip.PrefixFrom(l.Server4, prefixLen4), netip.PrefixFrom(l.Server6, prefixLen6)},
			[]netip.Addr{l.RouterServer4, l.RouterServer6})
	}); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := l.Do(Sensor, l.setupSensor); err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	if cfg.Delay > 0 {
		if err := l.Do(DelayLine, setupDelayNS); err != nil {
			return fmt.Errorf("delay line namespace: %w", err)
		}
		d, err := startDelayLine(l, cfg.Delay)
		if err != nil {
			return fmt.Errorf("delay line: %w", err)
		}
		l.delay = d
	}
	if err := l.waitLinksUp(roles, 5*time.Second); err != nil {
		return err
	}
	return l.startServers()
}

// waitLinksUp waits until every link of the lab is operationally up. The
// kernel's linkwatch attaches a device's real qdisc only when it handles
// the carrier-up event, and until then every frame sent on it is dropped
// silently: the first ARP or SYN of a test would vanish and cost a
// one-second retransmission. With distinct ifindexes (see cable) this is
// normally immediate; the wait makes it certain.
func (l *Lab) waitLinksUp(roles []NS, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, r := range roles {
		err := l.Do(r, func() error {
			for {
				links, err := netlink.LinkList()
				if err != nil {
					return fmt.Errorf("list links: %w", err)
				}
				var down string
				for _, link := range links {
					a := link.Attrs()
					if a.Name != "lo" && a.OperState != netlink.OperUp {
						down = a.Name + " (" + a.OperState.String() + ")"
						break
					}
				}
				if down == "" {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("link %s not up after %v", down, limit)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
		if err != nil {
			return fmt.Errorf("%s namespace: %w", r, err)
		}
	}
	return nil
}

// prepareNS sets the sysctls a namespace needs before any interface exists
// in it, so that the interfaces inherit them from "default".
func prepareNS(role NS) error {
	kv := [][2]string{
		// Addresses are usable at once: no duplicate address detection.
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
		// Nobody here sends router advertisements; do not wait for them.
		{"net.ipv6.conf.default.accept_ra", "0"},
	}
	switch role {
	case Router:
		kv = append(kv,
			[2]string{"net.ipv4.ip_forward", "1"},
			[2]string{"net.ipv6.conf.all.forwarding", "1"},
			[2]string{"net.ipv6.conf.default.forwarding", "1"},
			// Injected RSTs arrive on the inject port with the source
			// address of the host they impersonate: forward them anyway.
			[2]string{"net.ipv4.conf.all.rp_filter", "0"},
			[2]string{"net.ipv4.conf.default.rp_filter", "0"},
			[2]string{"net.ipv4.conf.all.send_redirects", "0"},
			[2]string{"net.ipv4.conf.default.send_redirects", "0"},
		)
	case Client:
		// Thousands of short connections per second from one address:
		// widen the port range and let connect reuse TIME_WAIT ports.
		kv = append(kv,
			[2]string{"net.ipv4.ip_local_port_range", "1024 65535"},
			[2]string{"net.ipv4.tcp_tw_reuse", "1"},
		)
	case Server:
		kv = append(kv,
			[2]string{"net.core.somaxconn", "8192"},
			[2]string{"net.ipv4.tcp_max_syn_backlog", "8192"},
		)
	case DelayLine:
		// The delay line is a wire: its namespace must never send anything.
		kv = append(kv,
			[2]string{"net.ipv6.conf.all.disable_ipv6", "1"},
			[2]string{"net.ipv6.conf.default.disable_ipv6", "1"},
		)
	}
	for _, e := range kv {
		if err := writeSysctl(e[0], e[1]); err != nil {
			return err
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// cable creates a veth pair with one end in each namespace.
//
// The first end gets an explicit ifindex (100 and up, distinct per cable).
// In fresh namespaces both ends would otherwise get the same ifindex (2,
// the first after lo), and the kernel's linkwatch treats a device whose
// ifindex equals its iflink as non-urgent and activates its qdisc up to a
// second late: every frame sent before that is dropped.
func (l *Lab) cable(aNS NS, aName string, bNS NS, bName string) error {
	l.cables++
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName, Index: 100 + l.cables, Namespace: netlink.NsFd(int(l.handles[aNS]))},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(l.handles[bNS])),
	}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s/%s <-> %s/%s: %w", aNS, aName, bNS, bName, err)
	}
	return nil
}

// setupHost configures an end host's port: offloads off (checksum offload
// too, so the tap sees the checksums a NIC would have filled in),
// addresses, interface up, default routes via the given gateways.
func setupHost(ifname string, addrs []netip.Prefix, gateways []netip.Addr) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifname, err)
	}
	if err := disableOffloads(ifname, offTSO, offGSO, offGRO, offTxCsum); err != nil {
		return err
	}
	for _, p := range addrs {
		if err := addAddr(link, p); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", ifname, err)
	}
	for _, gw := range gateways {
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(dst), Gw: net.IP(gw.AsSlice())}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %s on %s: %w", gw, ifname, err)
		}
	}
	return nil
}

func addAddr(link netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrAdd(link, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// setupRouter addresses and raises the router's ports, switches their
// offloads off and installs the mirror.
func (l *Lab) setupRouter() error {
	// The tap cable carries only mirrored frames: no IPv6 (which would
	// send router solicitations and MLD reports to the sensor), no address.
	if err := writeSysctl("net.ipv6.conf."+RouterTap+".disable_ipv6", "1"); err != nil {
		return err
	}
	ports := []struct {
		name  string
		addrs []netip.Prefix
	}{
		{RouterCli, []netip.Prefix{netip.PrefixFrom(l.RouterClient4, prefixLen4), netip.PrefixFrom(l.RouterClient6, prefixLen6)}},
		{RouterSrv, []netip.Prefix{netip.PrefixFrom(l.RouterServer4, prefixLen4), netip.PrefixFrom(l.RouterServer6, prefixLen6)}},
		{RouterInj, []netip.Prefix{netip.PrefixFrom(l.RouterInject4, prefixLen4), netip.PrefixFrom(l.RouterInject6, prefixLen6)}},
		{RouterTap, nil},
	}
	for _, p := range ports {
		link, err := netlink.LinkByName(p.name)
		if err != nil {
			return fmt.Errorf("find %s: %w", p.name, err)
		}
		// rp_filter takes the maximum of "all" and the interface's value.
		if err := writeSysctl("net.ipv4.conf."+p.name+".rp_filter", "0"); err != nil {
			return err
		}
		if err := disableOffloads(p.name, offTSO, offGSO, offGRO); err != nil {
			return err
		}
		for _, a := range p.addrs {
			if err := addAddr(link, a); err != nil {
				return err
			}
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring %s up: %w", p.name, err)
		}
		if p.name == RouterInj {
			l.RouterInjectMAC = link.Attrs().HardwareAddr
		}
	}
	tap, err := netlink.LinkByName(RouterTap)
	if err != nil {
		return fmt.Errorf("find %s: %w", RouterTap, err)
	}
	for _, src := range []string{RouterCli, RouterSrv} {
		if err := mirrorIngress(src, tap.Attrs().Index); err != nil {
			return err
		}
	}
	return nil
}

// setupSensor raises the tap (promiscuous, no address, IPv6 off so it
// never transmits) and addresses the inject port.
func (l *Lab) setupSensor() error {
	if err := writeSysctl("net.ipv6.conf."+TapIface+".disable_ipv6", "1"); err != nil {
		return err
	}
	tap, err := netlink.LinkByName(TapIface)
	if err != nil {
		return fmt.Errorf("find %s: %w", TapIface, err)
	}
	if err := disableOffloads(TapIface, offTSO, offGSO, offGRO); err != nil {
		return err
	}
	if err := netlink.SetPromiscOn(tap); err != nil {
		return fmt.Errorf("promiscuous mode on %s: %w", TapIface, err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return fmt.Errorf("bring %s up: %w", TapIface, err)
	}
	return setupHost(InjectIface,
		[]netip.Prefix{netip.PrefixFrom(l.SensorInject4, prefixLen4), netip.PrefixFrom(l.SensorInject6, prefixLen6)},
		nil)
}

// setupDelayNS raises both delay ports, promiscuous and without offloads.
func setupDelayNS() error {
	for _, name := range []string{DelayCli, DelayRtr} {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if err := disableOffloads(name, offTSO, offGSO, offGRO); err != nil {
			return err
		}
		if err := netlink.SetPromiscOn(link); err != nil {
			return fmt.Errorf("promiscuous mode on %s: %w", name, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring %s up: %w", name, err)
		}
	}
	return nil
}

// Do runs fn on an OS thread switched into namespace ns and switches the
// thread back afterwards (a thread that cannot be switched back is
// destroyed, never reused). Sockets fn creates stay in ns and can then be
// used from any goroutine. fn runs on a goroutine of its own: report
// failures through its error, do not call t.Fatal inside it.
func (l *Lab) Do(ns NS, fn func() error) error {
	if ns < 0 || ns >= nsCount || !l.handles[ns].IsOpen() {
		return fmt.Errorf("lab %s: no %s namespace (the delay namespace exists only with Config.Delay > 0)", l.ID, ns)
	}
	return inNS(l.handles[ns], fn)
}

// Name returns the name of namespace ns under /run/netns, for
// `ip netns exec NAME …` or `ip -n NAME …`; "" if the lab has no such
// namespace.
func (l *Lab) Name(ns NS) string {
	if ns < 0 || ns >= nsCount {
		return ""
	}
	return l.names[ns]
}

// Handle returns the lab's handle on namespace ns (for netlink.NewHandleAt
// and the like). It belongs to the lab: do not close it; it is invalid after
// Close.
func (l *Lab) Handle(ns NS) netns.NsHandle {
	if ns < 0 || ns >= nsCount {
		return netns.None()
	}
	return l.handles[ns]
}

// Close stops the servers and the delay line and removes every namespace
// and link the lab made. It is safe to call more than once and from a
// failing test's cleanup; later calls return the first call's result.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		errs = append(errs, l.stopServers())
		if l.delay != nil {
			errs = append(errs, l.delay.Close())
		}
		for i := range l.handles {
			h := l.handles[i]
			if !h.IsOpen() {
				continue
			}
			// Delete the links explicitly: a socket someone leaked in the
			// namespace would keep it (and its veths) alive after the name
			// is gone.
			errs = append(errs, inNS(h, deleteAllLinks))
			h.Close()
			l.handles[i] = netns.None()
		}
		for _, name := range l.names {
			if name != "" {
				errs = append(errs, deleteNamedNS(name))
			}
		}
		if err := errors.Join(errs...); err != nil {
			l.closeErr = fmt.Errorf("lab %s: close: %w", l.ID, err)
		}
	})
	return l.closeErr
}

// deleteAllLinks deletes every link but lo in the current namespace. The
// peer of a veth goes with it, so a link already gone is not an error.
func deleteAllLinks() error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, link := range links {
		if link.Attrs().Name == "lo" {
			continue
		}
		if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", link.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// randomID returns n random characters from [a-z0-9].
func randomID(n int) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}
