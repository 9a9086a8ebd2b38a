package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzBanRequest throws arbitrary bodies at POST /v1/bans (and the same
// bytes at the ACL and allowlist decoders, and as a bulk body): the answer
// must never be a 500, never a panic, and always JSON with an error
// message when it is an error. Run: go test -fuzz FuzzBanRequest -parallel 1 ./api/
func FuzzBanRequest(f *testing.F) {
	for _, seed := range []string{
		`{"value":"203.0.113.7","ttl":"1h","reason":"brute force","action":"block","force":false}`,
		`{"value":"2001:db8::/48","ttl":"7d","action":"observe","origin":"cli"}`,
		`{"value":"10.0.0.0/8","force":true}`,
		`{"value":"fe80::1%eth0"}`,
		`{"value":"1.2.3.4","ttl":"1d12h"}`,
		`{"value":"1.2.3.4","ttl":"99999999999d"}`,
		`{"value":"1.2.3.4","ttl":3600}`,
		`{"value":null}`,
		`{"value":"1.2.3.4","colour":"red"}`,
		`{"proto":"tcp","dst":"192.0.2.1","dst_ports":"1-65535","direction":"in"}`,
		`{"value":"1.2.3.4"} trailing`,
		`[]`, `null`, `"x"`, `{`, ``, "\x00\xff", `{"value":"1.2.3.4","reason":"\ud800"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		// A fresh store per input keeps every failure reproducible alone.
		srv, err := NewServer(Config{Addr: "127.0.0.1:0", Rules: newFakeRules(), Sensor: newFakeSensor()})
		if err != nil {
			t.Fatal(err)
		}
		h := srv.Handler()
		for _, path := range []string{"/v1/bans", "/v1/acls", "/v1/allowlist", "/v1/bans:bulk"} {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			req.Host = "127.0.0.1"
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s: status %d for body %q: %s", path, rec.Code, body, rec.Body)
			}
			if path == "/v1/bans:bulk" && rec.Code == http.StatusOK {
				for _, line := range bytes.Split(bytes.TrimSpace(rec.Body.Bytes()), []byte("\n")) {
					var br BulkResult
					if err := json.Unmarshal(line, &br); err != nil || br.Status >= 500 || br.Status == 0 {
						t.Fatalf("bulk result %q for body %q", line, body)
					}
				}
				continue
			}
			if rec.Code >= 400 {
				var eb errorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
					t.Fatalf("%s: error answer %d not JSON with a message: %q", path, rec.Code, rec.Body)
				}
			}
		}
	})
}
