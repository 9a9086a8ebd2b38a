package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinTokenLen is the shortest secret LoadTokens and NewToken accept.
const MinTokenLen = 16

// Token is one API credential. Only the SHA-256 hash of the secret is kept.
type Token struct {
	Name     string   // who the audit log says made a request, e.g. "soar"
	Hash     [32]byte // SHA-256 of the secret
	ReadOnly bool     // may only GET and HEAD
}

// NewToken hashes secret into a Token. It rejects empty names, names with
// characters other than letters, digits and ".-_@", and secrets shorter than
// MinTokenLen.
func NewToken(name, secret string, readOnly bool) (Token, error) {
	if err := validTokenName(name); err != nil {
		return Token{}, err
	}
	if len(secret) < MinTokenLen {
		return Token{}, fmt.Errorf("token %q is %d characters, want at least %d: generate one with `openssl rand -hex 32`", name, len(secret), MinTokenLen)
	}
	if strings.ContainsAny(secret, " \t\r\n") {
		return Token{}, fmt.Errorf("token %q contains white space, which an HTTP header cannot carry reliably", name)
	}
	return Token{Name: name, Hash: sha256.Sum256([]byte(secret)), ReadOnly: readOnly}, nil
}

func validTokenName(name string) error {
	if name == "" {
		return errors.New("token name is empty: write lines as name:token")
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_@", r)
		if !ok {
			return fmt.Errorf("token name %q: use only letters, digits and .-_@", name)
		}
	}
	if name == localName {
		return fmt.Errorf("token name %q is reserved for unauthenticated loopback access: pick another", name)
	}
	return nil
}

// LoadTokens reads a token file: one "name:token" per line, with an optional
// ":ro" suffix for read-only tokens; blank lines and lines starting with '#'
// are ignored. Names and tokens must be unique. An error names the file and
// line; no token of a bad file is returned.
func LoadTokens(path string) ([]Token, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api token file: %w", err)
	}
	var (
		out    []Token
		names  = map[string]int{}
		hashes = map[[32]byte]int{}
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, secret, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("api token file %s line %d: want name:token[:ro]", path, n)
		}
		name = strings.TrimSpace(name)
		ro := false
		if s, found := strings.CutSuffix(secret, ":ro"); found {
			secret, ro = s, true
		}
		secret = strings.TrimSpace(secret)
		t, err := NewToken(name, secret, ro)
		if err != nil {
			return nil, fmt.Errorf("api token file %s line %d: %w", path, n, err)
		}
		if prev, dup := names[name]; dup {
			return nil, fmt.Errorf("api token file %s line %d: name %q already used on line %d", path, n, name, prev)
		}
		if prev, dup := hashes[t.Hash]; dup {
			return nil, fmt.Errorf("api token file %s line %d: same token as line %d: give every client its own", path, n, prev)
		}
		names[name], hashes[t.Hash] = n, n
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("api token file %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("api token file %s holds no token: add lines like name:token", path)
	}
	return out, nil
}

// localName is RequestedBy for requests on an unauthenticated loopback API.
const localName = "local"

// lookupToken finds the token whose hash matches secret. It hashes the
// secret and compares against every token without stopping early, so the
// time taken says nothing about which token (or how much of one) matched.
func lookupToken(tokens []Token, secret string) (Token, bool) {
	h := sha256.Sum256([]byte(secret))
	found := -1
	for i := range tokens {
		if subtle.ConstantTimeCompare(h[:], tokens[i].Hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Token{}, false
	}
	return tokens[found], true
}

// ClientTokenEnv is the environment variable the CLI reads its token from
// when no token file is given.
const ClientTokenEnv = "CANOPY_API_TOKEN"

// LoadClientToken reads the secret a client should send from path: the
// first line that is not blank or a '#' comment, either a bare token or a
// "name:token[:ro]" line of a daemon token file (so an operator can point
// the CLI at a copy of one line of it). An empty path reads $CANOPY_API_TOKEN
// instead, and no token at all is not an error: the daemon may be an
// unauthenticated loopback one.
func LoadClientToken(path string) (string, error) {
	if path == "" {
		return strings.TrimSpace(os.Getenv(ClientTokenEnv)), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if name, secret, ok := strings.Cut(line, ":"); ok && validTokenName(name) == nil {
			secret = strings.TrimSuffix(secret, ":ro")
			if len(secret) >= MinTokenLen {
				return strings.TrimSpace(secret), nil
			}
		}
		return line, nil
	}
	return "", fmt.Errorf("api token file %s holds no token", path)
}
