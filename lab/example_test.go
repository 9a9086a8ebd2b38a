package lab_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"canopy/lab"
)

// A test bed with 10 ms of one-way delay: probe the echo server from the
// "banned" address, then read the server's ground truth for that address.
// (Needs root; not run by go test.)
func Example() {
	l, err := lab.New(lab.Config{Delay: 10 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	// The sensor side: capture on l.TapIface and inject on l.InjectIface
	// towards l.RouterInjectMAC, both inside the sensor namespace.
	fmt.Println("tap:", l.Name(lab.Sensor), l.TapIface)

	res, err := l.Probe(context.Background(), lab.ProbeConfig{
		Src:   l.ClientBanned4,
		Dst:   netip.AddrPortFrom(l.Server4, lab.EchoPort),
		Conns: 100,
		Rate:  500,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("completed %d, refused %d, reset %d, timeout %d\n", res.Completed, res.Refused, res.Reset, res.Timeout)
	fmt.Println("lines that reached the server:", l.Echo.Count(l.ClientBanned4).Requests)
}
