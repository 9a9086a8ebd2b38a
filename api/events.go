package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"canopy/sensor"
)

// sseWriteTimeout is how long one SSE write may block before the client is
// considered gone.
const sseWriteTimeout = 10 * time.Second

// EventClose is the type of the last SSE event the server sends before it
// ends a stream; its data is {"reason": "..."}.
const EventClose = "close"

// events streams sensor events as Server-Sent Events:
//
//	event: block
//	data: {"type":"block","time":...}
//
// A pump goroutine drains the sensor's subscription into a bounded queue
// without ever blocking; when the queue overflows because the client reads
// too slowly, the stream ends with a "close" event that says so. The sensor
// is never slowed down by a client.
func (s *Server) events(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := checkQuery(r.URL.Query()); err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	sub, cancel := s.cfg.Sensor.Subscribe()
	defer cancel()

	queue := make(chan sensor.Event, s.eventQueue)
	overflow := make(chan struct{})
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(queue)
		for {
			select {
			case ev, ok := <-sub:
				if !ok {
					return
				}
				select {
				case queue <- ev:
				default:
					s.stats.sseSlowCuts.Add(1)
					close(overflow)
					return
				}
			case <-done:
				return
			}
		}
	}()

	s.stats.sseClients.Add(1)
	defer s.stats.sseClients.Add(-1)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	var buf bytes.Buffer
	send := func() error {
		if s.sseHook != nil {
			s.sseHook()
		}
		_ = rc.SetWriteDeadline(time.Now().Add(s.sseWrite))
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		buf.Reset()
		return rc.Flush()
	}
	closeWith := func(reason string) {
		buf.Reset()
		b, _ := json.Marshal(map[string]string{"reason": reason})
		fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", EventClose, b)
		_ = send()
	}
	buf.WriteString("retry: 3000\n: connected to canopy\n\n")
	if err := send(); err != nil {
		return nil
	}
	beat := time.NewTicker(s.heartbeat)
	defer beat.Stop()
	for {
		select {
		case ev, ok := <-queue:
			if !ok {
				select {
				case <-overflow:
					s.log.Warn("api: SSE client too slow, disconnected", "by", c.name, "remote", r.RemoteAddr, "queued", s.eventQueue)
					closeWith(slowReason(s.eventQueue))
				default:
					closeWith("the sensor ended the event feed")
				}
				return nil
			}
			b, err := json.Marshal(ev)
			if err != nil {
				s.log.Error("api: encoding an event failed; skipped", "type", ev.Type, "err", err)
				continue
			}
			fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", ev.Type, b)
			// Batch what is already queued into one write.
			for len(queue) > 0 && buf.Len() < 64<<10 {
				ev, ok := <-queue
				if !ok {
					break
				}
				if b, err := json.Marshal(ev); err == nil {
					fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", ev.Type, b)
				}
			}
			if err := send(); err != nil {
				return nil
			}
		case <-overflow:
			s.log.Warn("api: SSE client too slow, disconnected", "by", c.name, "remote", r.RemoteAddr, "queued", s.eventQueue)
			closeWith(slowReason(s.eventQueue))
			return nil
		case <-beat.C:
			buf.WriteString(": keep-alive\n\n")
			if err := send(); err != nil {
				return nil
			}
		case <-s.stop:
			closeWith("daemon shutting down")
			return nil
		case <-r.Context().Done():
			return nil
		}
	}
}

func slowReason(n int) string {
	return fmt.Sprintf("client too slow: more than %d events waited unsent; reconnect, and resynchronise with GET /v1/bans", n)
}
