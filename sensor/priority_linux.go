package sensor

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// pinWorker locks the calling goroutine (a capture worker) to its OS thread
// and sets that thread's nice value. The worker does everything from the
// packet's arrival to the reset leaving, so on a busy box the scheduler
// must not keep it waiting behind bulk work: its reaction time decides
// whether a reset wins its race. nice 0 leaves the priority alone.
func pinWorker(nice int) error {
	runtime.LockOSThread()
	if nice == 0 {
		return nil
	}
	// On Linux, PRIO_PROCESS with id 0 applies to the calling thread only.
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, nice); err != nil {
		return fmt.Errorf("capture worker priority (nice %d) not set: %w (needs CAP_SYS_NICE: run as root, add Nice=%d or AmbientCapabilities=CAP_SYS_NICE to the unit, or set capture.worker_nice = 0)", nice, err, nice)
	}
	return nil
}
