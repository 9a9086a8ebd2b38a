// Package api owns canopy's HTTP surface: the JSON API of `canopy --daemon`
// under /v1 (bans, ACLs, allowlist, state, audit, mode), Server-Sent Events
// of blocks and rule changes, Prometheus metrics, liveness and readiness
// probes, and the Go client that the `canopy ban|unban|bans|status` commands
// and the dashboard's attach mode use to talk to a running daemon.
//
// The server depends on two seams, [Rules] and [Sensor], so that it can be
// tested without a capture socket and built in parallel with the packages
// that implement them. It never blocks the sensor: events reach each SSE
// client through a bounded queue, and a client that cannot keep up is
// disconnected with a final event that says why.
//
// # Authentication
//
// Every endpoint except /livez and /readyz needs a bearer token
// ("Authorization: Bearer TOKEN", or "X-Api-Key: TOKEN" as CrowdSec
// bouncers send it to the LAPI-compatible /v1/decisions endpoints). Tokens
// come from the file given to --api-token-file, one per line:
//
//	# name:token[:ro]
//	soar:3f0c9d2e8b7a4c1f9e6d5b4a3c2d1e0f
//	grafana:8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d:ro
//
// The name is what the audit log records as requested_by. A ":ro" suffix
// makes the token read-only: it may GET (and HEAD) but any write answers 403.
// Blank lines and lines starting with '#' are ignored. Tokens must be at least
// 16 characters; generate them with `openssl rand -hex 32`. Only SHA-256
// hashes of the tokens are kept in memory and they are compared in constant
// time. Keep the file readable by the canopy user only (chmod 600).
//
// Without a token file the server runs unauthenticated only when it listens
// on a loopback address (127.0.0.0/8, ::1, localhost): every local user can
// then read and write, and writes are recorded as requested by "local". To
// blunt browser-borne attacks on such a listener (CSRF, DNS rebinding), it
// refuses cross-origin browser requests and requests whose Host header is
// not a loopback name. On any other address [NewServer] refuses to start
// without tokens, and warns unless it is given a TLS certificate
// (Config.TLSCertFile and TLSKeyFile), since bearer tokens would otherwise
// cross the network in clear text.
//
// # Errors
//
// Every error is JSON, {"error": "...", "detail": "..."}, with the status
// that fits: 400 malformed request, 401 missing or wrong token, 403
// read-only token writing, 404 unknown id or path, 405 wrong method, 409
// covered by the allowlist, 413 body too large, 422 prefix wider than the
// configured guard, 507 rule store full, 500 a bug (logged with its stack,
// never shown to the client).
//
// README.md in this directory lists every endpoint with curl examples.
package api
