// Package tlsreload owns serai's TLS settings. On the serving side (serai
// server, serai router) a Cert loads a PEM certificate and key, hands the
// pair to every new handshake through tls.Config.GetCertificate, and
// Reload swaps it atomically, so SIGHUP rotates a certificate without a
// restart or a dropped connection; connections already open keep the
// certificate they were made with. A reload that fails (a missing or
// unreadable file, a key that does not match the certificate, a
// certificate that has expired or is not for server authentication) keeps
// the pair in use and returns the reason: a botched rotation never takes
// a server down. On the calling side ClientConfig trusts a private CA.
//
// Both sides accept TLS 1.2 and 1.3 only, with Go's default cipher
// suites (which leave out RSA key exchange, 3DES and RC4).
package tlsreload

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MinVersion is the oldest TLS version served or spoken.
const MinVersion = tls.VersionTLS12

// Cert is a reloadable server certificate. It is safe for concurrent use.
type Cert struct {
	certFile, keyFile string
	now               func() time.Time

	mu  sync.Mutex // one Reload at a time
	cur atomic.Pointer[tls.Certificate]
}

// Load reads certFile and keyFile (PEM). The certificate file may hold
// intermediates after the leaf; they are sent too.
func Load(certFile, keyFile string) (*Cert, error) {
	return load(certFile, keyFile, time.Now)
}

func load(certFile, keyFile string, now func() time.Time) (*Cert, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tls: both a certificate file and a key file are required")
	}
	c := &Cert{certFile: certFile, keyFile: keyFile, now: now}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again and, when they hold a usable pair, serves
// it to every later handshake. On error the pair in use stays.
func (c *Cert) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls: certificate %s with key %s: %w", c.certFile, c.keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("tls: certificate %s: %w", c.certFile, err)
		}
	}
	if err := usable(pair.Leaf, c.now()); err != nil {
		return fmt.Errorf("tls: certificate %s: %w", c.certFile, err)
	}
	c.cur.Store(&pair)
	return nil
}

// usable refuses what no client would accept: an expired certificate,
// or one whose extended key usage leaves out server authentication.
func usable(leaf *x509.Certificate, now time.Time) error {
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) &&
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return errors.New("its extended key usage does not include server authentication")
	}
	return nil
}

// Leaf is the certificate in use.
func (c *Cert) Leaf() *x509.Certificate { return c.cur.Load().Leaf }

// GetCertificate is tls.Config's hook: the pair in use.
func (c *Cert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// ServerConfig is a tls.Config serving this certificate. nextProtos are
// the ALPN protocols offered (none: the client's choice stands, which for
// every client means HTTP/1.1).
func (c *Cert) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:     MinVersion,
		GetCertificate: c.GetCertificate,
		NextProtos:     nextProtos,
	}
}

// ServerName is the name a verifying client (a Consul health check)
// should expect when it connects to host: host itself when the
// certificate names it, else the certificate's first DNS name, else its
// first IP address. ok is false when the certificate names nothing.
func (c *Cert) ServerName(host string) (name string, ok bool) {
	leaf := c.Leaf()
	if host != "" && leaf.VerifyHostname(host) == nil {
		return host, true
	}
	if len(leaf.DNSNames) > 0 {
		return leaf.DNSNames[0], true
	}
	if len(leaf.IPAddresses) > 0 {
		return leaf.IPAddresses[0].String(), true
	}
	return "", false
}

// Describe is the certificate in use as log key/value pairs.
func (c *Cert) Describe() []any {
	leaf := c.Leaf()
	names := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return []any{"tls_subject", leaf.Subject.String(), "tls_serial", leaf.SerialNumber.String(),
		"tls_names", names, "tls_not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "tls_cert_file", c.certFile}
}

// ClientConfig is the TLS configuration of a client that trusts the CA
// certificates in the PEM file caFile instead of the system's roots (as
// curl --cacert and AWS_CA_BUNDLE do). An empty caFile is nil: the
// system's roots.
func ClientConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: CA file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{MinVersion: MinVersion, RootCAs: pool}, nil
}
