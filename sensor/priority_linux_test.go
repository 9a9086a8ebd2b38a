package sensor

import (
	"testing"

	"golang.org/x/sys/unix"
)

// pinWorker with a real-time priority makes the calling thread SCHED_FIFO
// at that priority; with none, it sets the nice value instead.
func TestPinWorkerPriority(t *testing.T) {
	type got struct {
		policy, prio, nice int
		err                error
	}
	run := func(nice, rt int) got {
		ch := make(chan got)
		go func() {
			// The goroutine ends locked to its thread, so Go retires the
			// thread with its priority instead of reusing it.
			err := pinWorker(nice, rt)
			policy, _, e := unix.RawSyscall(unix.SYS_SCHED_GETSCHEDULER, 0, 0, 0)
			if e != 0 && err == nil {
				err = e
			}
			attr, aerr := unix.SchedGetAttr(0, 0)
			if aerr != nil && err == nil {
				err = aerr
			}
			g := got{policy: int(policy), err: err}
			if attr != nil {
				g.prio, g.nice = int(attr.Priority), int(attr.Nice)
			}
			ch <- g
		}()
		return <-ch
	}
	g := run(-5, 10)
	if g.err != nil {
		t.Skipf("cannot set a real-time priority here: %v", g.err)
	}
	if g.policy != unix.SCHED_FIFO || g.prio != 10 {
		t.Errorf("rt 10: policy %d priority %d, want SCHED_FIFO (%d) 10", g.policy, g.prio, unix.SCHED_FIFO)
	}
	if g := run(-5, 0); g.err != nil || g.policy != 0 || g.nice != -5 {
		t.Errorf("nice -5: policy %d nice %d err %v, want SCHED_OTHER (0) and -5", g.policy, g.nice, g.err)
	}
}
