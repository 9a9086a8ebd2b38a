package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted (the same
// place `ip netns` uses, so an operator can inspect a lab with `ip -n NAME`).
const netnsDir = "/run/netns"

// errGoexit is reported when the function given to inNS ended its goroutine
// (runtime.Goexit, e.g. t.FailNow) instead of returning.
var errGoexit = errors.New("function ended its goroutine (runtime.Goexit, e.g. t.FailNow) instead of returning an error")

// onOwnThread runs fn on a fresh goroutine whose OS thread is locked for
// the duration, and puts that thread back into the network namespace it
// started in afterwards, whatever fn did to it. The caller's own thread is
// never touched. If switching back fails, the thread stays locked, so the
// runtime destroys it when the goroutine ends and no goroutine can ever run
// in the wrong namespace. A panic in fn is re-raised on the caller's
// goroutine once the thread is safe.
func onOwnThread(fn func() error) error {
	type outcome struct {
		err      error
		panicVal any
		panicked bool
	}
	done := make(chan outcome, 1)
	go func() {
		var out outcome
		returned := false
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- outcome{err: fmt.Errorf("read the current network namespace: %w", err)}
			return
		}
		defer func() {
			if !returned {
				if p := recover(); p != nil {
					out.panicked, out.panicVal = true, p
				} else {
					out.err = errGoexit
				}
			}
			if err := netns.Set(orig); err != nil {
				// Keep the thread locked: it is terminated with this goroutine.
				if out.err == nil {
					out.err = fmt.Errorf("switch the thread back to its network namespace (thread discarded): %w", err)
				}
			} else {
				runtime.UnlockOSThread()
			}
			orig.Close()
			done <- out
		}()
		out.err = fn()
		returned = true
	}()
	out := <-done
	if out.panicked {
		panic(out.panicVal)
	}
	return out.err
}

// inNS runs fn on a locked OS thread switched into target (see onOwnThread).
// Sockets fn creates belong to target and may be used from any goroutine
// afterwards; goroutines fn starts do not run in target.
func inNS(target netns.NsHandle, fn func() error) error {
	return onOwnThread(func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		return fn()
	})
}

// ShareNetnsDir makes /run/netns a shared mount point of its own, as
// `ip netns add` does before it mounts a namespace there. Call it before
// bind-mounting a namespace into /run/netns by any other means
// (netns.NewNamed does not do it).
//
// Without it, a namespace mounted while /run/netns is still a plain
// directory sits on the mount below; the first `ip netns add` afterwards
// binds /run/netns over itself and hides that mount, and from then on
// neither `ip netns delete` nor netns.DeleteNamed can remove the entry
// ("Device or resource busy"): the namespace and its veths live until
// reboot. Calling it when /run/netns is already a mount point only marks it
// shared again.
func ShareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("lab: create %s: %w", netnsDir, err)
	}
	// Two processes doing this at once could stack binds on each other
	// (https://bugs.debian.org/949235); iproute2 takes this same lock.
	if dir, err := os.Open(netnsDir); err == nil {
		defer dir.Close()
		unix.Flock(int(dir.Fd()), unix.LOCK_EX)
	}
	bound := false
	for {
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		// EINVAL: not a mount point yet. Bind it over itself and mark that
		// shared. MS_REC copies what is already mounted in it, so those
		// names still resolve, but their originals stay below and cannot
		// be deleted: hence "call it before mounting a namespace there".
		if err != unix.EINVAL || bound {
			return fmt.Errorf("lab: make %s a shared mount point: %w", netnsDir, err)
		}
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("lab: bind %s over itself: %w", netnsDir, err)
		}
		bound = true
	}
}

// newNamedNS creates a network namespace bind-mounted at /run/netns/name
// and returns a handle to it, leaving every thread where it was.
func newNamedNS(name string) (netns.NsHandle, error) {
	if err := ShareNetnsDir(); err != nil {
		return netns.None(), err
	}
	h := netns.None()
	err := onOwnThread(func() error {
		var err error
		h, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		if h.IsOpen() {
			h.Close()
		}
		if errors.Is(err, os.ErrPermission) {
			return netns.None(), fmt.Errorf("create network namespace %s: %w (the lab needs root: CAP_SYS_ADMIN and CAP_NET_ADMIN)", name, err)
		}
		return netns.None(), fmt.Errorf("create network namespace %s: %w", name, err)
	}
	return h, nil
}

// writeSysctl writes value to /proc/sys/<key with dots as slashes> as seen
// from the calling thread's network namespace; call it inside inNS.
func writeSysctl(key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// CleanupStale removes every named network namespace in /run/netns whose
// name starts with prefix and that no running process uses: the leftovers
// of a lab whose process died before Close (SIGKILL, a test timeout). A lab
// alive in another process holds its namespaces open, so it is left alone;
// that makes CleanupStale safe to call while other labs run. It returns
// the names it removed. An empty prefix is refused, so it can never delete
// unrelated namespaces.
func CleanupStale(prefix string) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("lab: CleanupStale needs a non-empty prefix (e.g. lab.DefaultPrefix)")
	}
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: list %s: %w", netnsDir, err)
	}
	var inUse map[uint64]bool
	var removed []string
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if inUse == nil {
			inUse = netnsInUse()
		}
		if ino, ok := nsInode(filepath.Join(netnsDir, e.Name())); ok && inUse[ino] {
			continue
		}
		if err := deleteNamedNS(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// nsInode returns the inode of the namespace file at path.
func nsInode(path string) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// netnsInUse returns the inodes of the network namespaces that some
// process's thread is in or holds an open file descriptor to.
func netnsInUse() map[uint64]bool {
	use := make(map[uint64]bool)
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if p.Name()[0] < '0' || p.Name()[0] > '9' {
			continue
		}
		base := filepath.Join("/proc", p.Name())
		tasks, _ := os.ReadDir(filepath.Join(base, "task"))
		for _, t := range tasks {
			if ino, ok := nsInode(filepath.Join(base, "task", t.Name(), "ns", "net")); ok {
				use[ino] = true
			}
		}
		fds, _ := os.ReadDir(filepath.Join(base, "fd"))
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(base, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "net:[") {
				continue
			}
			if ino, err := strconv.ParseUint(strings.TrimSuffix(link[len("net:["):], "]"), 10, 64); err == nil {
				use[ino] = true
			}
		}
	}
	return use
}

// deleteNamedNS unmounts and removes /run/netns/name; a missing entry is
// not an error.
func deleteNamedNS(name string) error {
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		// DeleteNamed unmounts first; a name that is a plain file (mount
		// already gone) only needs removing.
		if rmErr := os.Remove(filepath.Join(netnsDir, name)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			if errors.Is(rmErr, unix.EBUSY) {
				return fmt.Errorf("lab: remove network namespace %s: %w (its mount is hidden under a later bind of %s over itself, made by `ip netns add` before the lab called ShareNetnsDir; it goes at reboot, or after `umount %s` once no other namespace is mounted there)", name, rmErr, netnsDir, netnsDir)
			}
			return fmt.Errorf("lab: remove network namespace %s: %w", name, err)
		}
	}
	return nil
}
