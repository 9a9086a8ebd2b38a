package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// shareChildEnv names the namespace TestShareNetnsDirChild creates; set
// only when TestShareNetnsDir runs it.
const shareChildEnv = "CANOPY_LAB_SHARE_CHILD"

// TestShareNetnsDir reproduces a fresh boot, where /run/netns is a plain
// directory, in a child process with a mount namespace of its own (so
// nothing it mounts or unmounts reaches this machine's). There, a
// namespace is mounted, then `ip netns add` runs, then the first namespace
// is deleted. Without ShareNetnsDir first, the delete must fail with
// "device or resource busy" (that shows the test reproduces the fault);
// with it, the delete must succeed.
func TestShareNetnsDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount and network namespaces); CI runs it as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not installed")
	}
	for _, mode := range []string{"plain", "shared"} {
		t.Run(mode, func(t *testing.T) {
			name := fmt.Sprintf("labshare-%s-%d", mode, os.Getpid())
			t.Cleanup(func() {
				// The child's mounts died with its mount namespace; what
				// is left here are the plain files it created.
				os.Remove(filepath.Join(netnsDir, name))
				os.Remove(filepath.Join(netnsDir, name+"-ip"))
			})
			cmd := exec.Command(os.Args[0], "-test.run", "^TestShareNetnsDirChild$", "-test.v", "-test.count", "1")
			cmd.Env = append(os.Environ(), shareChildEnv+"="+name, "CANOPY_LAB_SHARE_MODE="+mode)
			// Go's fork makes / private (MS_REC|MS_PRIVATE) in the new
			// mount namespace, so the child's umount cannot propagate here.
			cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--- PASS: TestShareNetnsDirChild") {
				t.Fatalf("child process (%v):\n%s", err, out)
			}
		})
	}
}

// TestShareNetnsDirChild is TestShareNetnsDir's child process; on its own
// it skips.
func TestShareNetnsDirChild(t *testing.T) {
	name := os.Getenv(shareChildEnv)
	if name == "" {
		t.Skip("run by TestShareNetnsDir in a mount namespace of its own")
	}
	// Back to a fresh boot's state, in this process's mount namespace only.
	for unix.Unmount(netnsDir, unix.MNT_DETACH) == nil {
	}
	shared := os.Getenv("CANOPY_LAB_SHARE_MODE") == "shared"
	var h netns.NsHandle
	var err error
	if shared {
		h, err = newNamedNS(name)
	} else {
		err = onOwnThread(func() error {
			var err error
			h, err = netns.NewNamed(name)
			return err
		})
	}
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	h.Close()
	if out, err := exec.Command("ip", "netns", "add", name+"-ip").CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s-ip: %v\n%s", name, err, out)
	}
	defer deleteNamedNS(name + "-ip")
	err = deleteNamedNS(name)
	switch {
	case shared && err != nil:
		t.Fatalf("namespace mounted after ShareNetnsDir could not be deleted once `ip netns add` ran: %v", err)
	case !shared && err == nil:
		t.Fatalf("without ShareNetnsDir the delete succeeded: this kernel or iproute2 does not show the fault, so the test proves nothing here")
	case !shared:
		t.Logf("without ShareNetnsDir, as expected: %v", err)
	}
}
