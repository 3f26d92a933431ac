package router

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Stateful sessions (SageMaker's SessionId), carried out without shared
// state between routers: the session ID a client holds names the instance
// that owns the session, sealed with an HMAC under a key every router of the
// fleet shares (Config.SessionKeys, `serai router --session-key-file`).
//
//	client ──SessionId: NEW_SESSION──▶ router ──picks an instance as usual──▶ model
//	model answers X-Amzn-SageMaker-Session-Id: <model id>; Expires=<t>
//	router answers X-Amzn-SageMaker-New-Session-Id: <token>; Expires=<t>
//	  token = base32(version | instance ref | model id | HMAC(key, endpoint, …)[:16])
//	client ──SessionId: <token>──▶ any router: checks the MAC, finds the
//	  instance by its ref among the endpoint's healthy instances, and sends
//	  the model its own id; an instance no longer healthy is SageMaker's
//	  session error, never a silent move to another instance.
//	model answers X-Amzn-SageMaker-Closed-Session-Id: <model id>
//	router answers X-Amzn-SageMaker-Closed-Session-Id: <token>
//
// The instance ref is 8 bytes of SHA-256 over the endpoint and the
// instance's identity (Consul service ID, address, variant, generation), so a
// restarted allocation on the same port is a different instance. The MAC
// covers the endpoint name too: a token from one endpoint opens nothing on
// another.

const (
	hdrSessionID       = "X-Amzn-Sagemaker-Session-Id"
	hdrNewSessionID    = "X-Amzn-Sagemaker-New-Session-Id"
	hdrClosedSessionID = "X-Amzn-Sagemaker-Closed-Session-Id"

	// NewSession is the SessionId value that opens a session.
	NewSession = "NEW_SESSION"

	sessionVersion = 1
	sessionMACLen  = 16
	// maxSessionIDLen is SageMaker's limit on SessionId (256 characters);
	// base32 turns 5 bytes into 8 characters.
	maxSessionIDLen = 256
	maxSessionRaw   = maxSessionIDLen / 8 * 5
	// MaxModelSessionIDLen is the longest session ID a model may assign
	// that still fits in a 256-character token.
	MaxModelSessionIDLen = maxSessionRaw - 1 - 8 - sessionMACLen
	// minSessionKeyLen: shorter HMAC keys would make tokens forgeable.
	minSessionKeyLen = 32
)

var sessionB32 = base32.StdEncoding.WithPadding(base32.NoPadding)

type instanceRef [8]byte

func makeInstanceRef(endpoint, key string) instanceRef {
	h := sha256.Sum256([]byte(endpoint + "\x00" + key))
	var r instanceRef
	copy(r[:], h[:8])
	return r
}

// sessionTarget is where a session's requests go.
type sessionTarget struct {
	s  *slot
	in *instance
}

// sessionCodec seals and opens session tokens. keys[0] signs; every key
// verifies, so keys rotate without breaking open sessions.
type sessionCodec struct {
	keys [][]byte
}

func newSessionCodec(keys [][]byte) (*sessionCodec, error) {
	if len(keys) == 0 {
		return nil, errors.New("router: SessionKeys is set but holds no key")
	}
	c := &sessionCodec{}
	for i, k := range keys {
		if len(k) < minSessionKeyLen {
			return nil, fmt.Errorf("router: session key %d is %d bytes; at least %d are needed", i+1, len(k), minSessionKeyLen)
		}
		c.keys = append(c.keys, append([]byte(nil), k...))
	}
	return c, nil
}

func (c *sessionCodec) mac(key []byte, endpoint string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("serai-session\x00"))
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(endpoint)))
	m.Write(l[:])
	m.Write([]byte(endpoint))
	m.Write(body)
	return m.Sum(nil)[:sessionMACLen]
}

// seal makes the client's token for a model's session on one instance.
func (c *sessionCodec) seal(endpoint string, ref instanceRef, modelID string) (string, error) {
	if len(modelID) > MaxModelSessionIDLen {
		return "", fmt.Errorf("the model's session ID is %d bytes; at most %d fit in a SessionId", len(modelID), MaxModelSessionIDLen)
	}
	raw := make([]byte, 0, 1+len(ref)+len(modelID)+sessionMACLen)
	raw = append(raw, sessionVersion)
	raw = append(raw, ref[:]...)
	raw = append(raw, modelID...)
	raw = append(raw, c.mac(c.keys[0], endpoint, raw)...)
	return sessionB32.EncodeToString(raw), nil
}

var errBadSession = errors.New("invalid session ID")

// open checks a token and returns the instance ref and the model's own ID.
func (c *sessionCodec) open(endpoint, token string) (instanceRef, string, error) {
	var ref instanceRef
	if len(token) > maxSessionIDLen {
		return ref, "", errBadSession
	}
	raw, err := sessionB32.DecodeString(token)
	if err != nil || len(raw) < 1+len(ref)+1+sessionMACLen || raw[0] != sessionVersion {
		return ref, "", errBadSession
	}
	// base32 ignores the unused low bits of the last character: accept
	// only the one canonical spelling, so a session has one ID.
	if sessionB32.EncodeToString(raw) != token {
		return ref, "", errBadSession
	}
	body, tag := raw[:len(raw)-sessionMACLen], raw[len(raw)-sessionMACLen:]
	ok := false
	for _, k := range c.keys {
		if hmac.Equal(tag, c.mac(k, endpoint, body)) {
			ok = true
			break
		}
	}
	if !ok {
		return ref, "", errBadSession
	}
	copy(ref[:], body[1:])
	return ref, string(body[1+len(ref):]), nil
}

// sessionRequest is what the SessionId header asked for.
type sessionRequest struct {
	open  bool   // NEW_SESSION
	token string // the client's session ID (empty for none or NEW_SESSION)
}

// validSessionID is SageMaker's pattern for SessionId:
// ^[a-zA-Z0-9](-*[a-zA-Z0-9])*$, at most 256 characters.
func validSessionID(s string) bool {
	if s == "" || len(s) > maxSessionIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		switch {
		case alnum:
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// parseSession reads the SessionId header. msg is a ValidationError
// message, empty when the header is acceptable.
func (rt *Router) parseSession(h http.Header, stream bool) (sessionRequest, string) {
	v := first(h[hdrSessionID])
	if v == "" {
		return sessionRequest{}, ""
	}
	if v != NewSession && !validSessionID(v) {
		return sessionRequest{}, "1 validation error detected: Value at 'sessionId' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(NEW_SESSION)$|^[a-zA-Z0-9](-*[a-zA-Z0-9])*$ and have length less than or equal to 256."
	}
	if rt.sessions == nil {
		return sessionRequest{}, "SessionId is not supported: stateful sessions are off on this router (start it with --session-key-file)."
	}
	if v == NewSession {
		if stream {
			return sessionRequest{}, "You can't create a stateful session with InvokeEndpointWithResponseStream; open it with InvokeEndpoint and SessionId NEW_SESSION."
		}
		return sessionRequest{open: true}, ""
	}
	return sessionRequest{token: v}, ""
}

// resolveSession finds the instance of an open session. msg is the
// ValidationError message when the session cannot be served.
func (rt *Router) resolveSession(e *endpoint, sr sessionRequest, target string, req *outRequest) (sessionTarget, string) {
	ref, modelID, err := rt.sessions.open(e.name, sr.token)
	if err != nil {
		return sessionTarget{}, "Invalid session ID " + truncString(sr.token, 64) + " for endpoint " + e.name + "."
	}
	st, ok := e.sessions[ref]
	if !ok {
		return sessionTarget{}, "The session " + truncString(sr.token, 64) + " is no longer valid: the instance that held it is no longer in service on endpoint " + e.name + ". Start a new session."
	}
	if target != "" && target != st.s.variant {
		return sessionTarget{}, "The session " + truncString(sr.token, 64) + " belongs to variant " + st.s.variant + ", not to TargetVariant " + truncString(target, 64) + "."
	}
	req.sessionID = modelID
	return st, ""
}

// sessionHeaders translates the model's session answers into the client's
// tokens. It runs before the response head is written.
func (rt *Router) sessionHeaders(hdr http.Header, e *endpoint, in *instance, req *outRequest, token string, h *respHead) error {
	if rt.sessions == nil {
		return nil
	}
	if h.NewSession != "" && req.sessionID == NewSession {
		id, rest, _ := strings.Cut(h.NewSession, ";")
		id = strings.TrimSpace(id)
		if id == "" {
			return errors.New("the model answered an empty session ID")
		}
		tok, err := rt.sessions.seal(e.name, in.ref, id)
		if err != nil {
			return err
		}
		if rest != "" {
			tok += ";" + rest
		}
		hdr[hdrNewSessionID] = []string{tok}
	}
	if h.ClosedSession != "" && token != "" && h.ClosedSession == req.sessionID {
		hdr[hdrClosedSessionID] = []string{token}
	}
	return nil
}

// LoadSessionKeys reads HMAC keys for session IDs from a file: one key per
// line, hex-encoded, at least 32 bytes each; blank lines and lines starting
// with # are skipped. The first key signs new sessions; all of them are
// accepted, so a key can be rotated in before it signs and kept after it
// stops.
func LoadSessionKeys(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var keys [][]byte
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: session key is not hex", path, line)
		}
		if len(k) < minSessionKeyLen {
			return nil, fmt.Errorf("%s:%d: session key is %d bytes; at least %d are needed", path, line, len(k), minSessionKeyLen)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no session key", path)
	}
	return keys, nil
}
