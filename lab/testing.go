package lab

import "os"

// TB is the part of testing.TB that NewT uses; *testing.T and *testing.B
// satisfy it. An interface keeps package testing out of the canopy binary,
// which links lab for `canopy demo`.
type TB interface {
	Helper()
	Skip(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

// NewT builds a lab for a test or benchmark: it skips when not root, fails
// the test if the lab cannot be built, and closes the lab in t.Cleanup, so
// the namespaces go away even when the test fails.
func NewT(t TB, cfg Config) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab: needs root (network namespaces, veth, tc, AF_PACKET): run with sudo; CI runs it as root")
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return l
}
