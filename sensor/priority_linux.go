package sensor

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// pinWorker locks the calling goroutine (a capture worker) to its OS thread
// and sets that thread's priority. The worker does everything from the
// packet's arrival to the reset leaving, so on a busy box the scheduler
// must not keep it waiting behind bulk work: its reaction time decides
// whether a reset wins its race. rt > 0 makes the thread SCHED_FIFO with
// that real-time priority (it then preempts every ordinary thread the
// moment a frame wakes it; the kernel's RT throttling still leaves the
// rest of the box 5 % of each CPU under a flood); otherwise nice sets its
// nice value, 0 leaving it alone.
func pinWorker(nice, rt int) error {
	runtime.LockOSThread()
	if rt > 0 {
		// pid 0: the calling thread only.
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(rt)}
		err := unix.SchedSetAttr(0, &attr, 0)
		if err == nil {
			return nil
		}
		err = fmt.Errorf("capture worker real-time priority %d not set: %w (needs CAP_SYS_NICE: run as root, add AmbientCapabilities=CAP_SYS_NICE to the unit, or set capture.worker_rt_priority = 0)", rt, err)
		if nice != 0 {
			if nerr := unix.Setpriority(unix.PRIO_PROCESS, 0, nice); nerr == nil {
				return fmt.Errorf("%w; running at nice %d instead", err, nice)
			}
		}
		return err
	}
	if nice == 0 {
		return nil
	}
	// On Linux, PRIO_PROCESS with id 0 applies to the calling thread only.
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, nice); err != nil {
		return fmt.Errorf("capture worker priority (nice %d) not set: %w (needs CAP_SYS_NICE: run as root, add Nice=%d or AmbientCapabilities=CAP_SYS_NICE to the unit, or set capture.worker_nice = 0)", nice, err, nice)
	}
	return nil
}
