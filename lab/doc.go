// Package lab builds a throw-away test bed of Linux network namespaces that
// looks, to canopy, like a real mirror-port deployment: a client namespace
// with a "banned" and a "legit" source address, a server namespace running
// echo, HTTP and UDP-echo servers, a router namespace that forwards IPv4 and
// IPv6 and mirrors every frame it receives from client and server to a tap
// (tc clsact + u32 + mirred, because this kernel has no matchall/flower), and
// a sensor namespace holding the tap (promiscuous, no address) and an inject
// port routed by the router. An optional L2 delay line between client and
// router emulates WAN latency (netem is not available). The package owns the
// topology, running code inside a namespace, the servers' ground-truth logs,
// the client probes, and tearing all of it down again; integration tests,
// benchmarks and `canopy demo` use it. Everything needs root (CAP_NET_ADMIN
// and CAP_SYS_ADMIN for namespaces, CAP_NET_RAW for the delay line).
package lab
