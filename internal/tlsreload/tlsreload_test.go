package tlsreload

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seraihq/serai/internal/tlsreload/tlstest"
)

// serve accepts TLS connections with cfg on loopback until the test ends,
// completing each handshake and closing the connection after a read.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					c.Read(make([]byte, 1))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// dial connects with cfg and returns the server's leaf certificate.
func dial(t *testing.T, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

func clientConfig(t *testing.T, ca *tlstest.CA) *tls.Config {
	t.Helper()
	cfg, err := ClientConfig(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestReloadSwapsCertificateForNewConnections(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := tlstest.Pair(t)
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "first", Serial: 10})
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, c.ServerConfig())
	ccfg := clientConfig(t, ca)

	// A connection made before the reload keeps its certificate.
	before, err := tls.Dial("tcp", addr, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "second", Serial: 11})
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	leaf, err := dial(t, addr, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "second" || leaf.SerialNumber.Int64() != 11 {
		t.Fatalf("after reload the server presents %s serial %s", leaf.Subject.CommonName, leaf.SerialNumber)
	}
	if got := before.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "first" {
		t.Fatalf("open connection's certificate changed to %s", got)
	}
	if c.Leaf().SerialNumber.Int64() != 11 {
		t.Fatalf("Leaf serial %s", c.Leaf().SerialNumber)
	}
}

// TestFailedReloadKeepsPairInUse tries each way a rotation goes wrong;
// every one is refused with the reason and the old pair keeps serving.
func TestFailedReloadKeepsPairInUse(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := tlstest.Pair(t)
	good := tlstest.Leaf{CommonName: "good", Serial: 20}
	ca.Write(t, certFile, keyFile, good)
	goodCert, _ := os.ReadFile(certFile)
	goodKey, _ := os.ReadFile(keyFile)
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, c.ServerConfig())
	ccfg := clientConfig(t, ca)

	otherCert, otherKey := ca.Issue(t, tlstest.Leaf{CommonName: "other", Serial: 21})
	expired, expiredKey := ca.Issue(t, tlstest.Leaf{CommonName: "expired", Serial: 22,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	clientOnly, clientOnlyKey := ca.Issue(t, tlstest.Leaf{CommonName: "client", Serial: 23,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	cases := []struct {
		name      string
		cert, key []byte // nil: remove the file
		want      string
	}{
		{"missing certificate", nil, goodKey, "no such file"},
		{"missing key", goodCert, nil, "no such file"},
		{"key of another certificate", otherCert, goodKey, "private key does not match"},
		{"certificate of another key", goodCert, otherKey, "private key does not match"},
		{"expired", expired, expiredKey, "expired at"},
		{"client-only certificate", clientOnly, clientOnlyKey, "server authentication"},
		{"not PEM", []byte("garbage"), goodKey, "failed to find any PEM data"},
		{"half written", goodCert[:len(goodCert)/2], goodKey, "certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range []struct {
				path string
				b    []byte
			}{{certFile, tc.cert}, {keyFile, tc.key}} {
				if f.b == nil {
					os.Remove(f.path)
				} else {
					tlstest.WriteFile(t, f.path, f.b)
				}
			}
			err := c.Reload()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), certFile) {
				t.Fatalf("Reload: %v; want an error naming %s and saying %q", err, certFile, tc.want)
			}
			leaf, err := dial(t, addr, ccfg)
			if err != nil {
				t.Fatal(err)
			}
			if leaf.SerialNumber.Int64() != good.Serial {
				t.Fatalf("after a failed reload the server presents serial %s", leaf.SerialNumber)
			}
		})
	}
}

func TestLoadRefusesUnusablePairs(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := tlstest.Pair(t)
	if _, err := Load(certFile, ""); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("Load without a key: %v", err)
	}
	if _, err := Load(certFile, keyFile); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("Load of missing files: %v", err)
	}
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "x"})
	if _, err := load(certFile, keyFile, func() time.Time { return time.Now().Add(48 * time.Hour) }); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Load of an expired certificate: %v", err)
	}
}

// TestOldTLSVersionsRefused: a client limited to TLS 1.1 (a downgrade)
// gets no connection.
func TestOldTLSVersionsRefused(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := tlstest.Pair(t)
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "x"})
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, c.ServerConfig())
	old := clientConfig(t, ca)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := dial(t, addr, old); err == nil {
		t.Fatal("a TLS 1.1 client connected")
	}
	tls12 := clientConfig(t, ca)
	tls12.MaxVersion = tls.VersionTLS12
	if _, err := dial(t, addr, tls12); err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
}

// TestClientTrustsOnlyItsCA: a server with a certificate from another CA
// (an impostor) is refused by a client given a CA file, and the client's
// own CA's server by one with the system roots.
func TestClientTrustsOnlyItsCA(t *testing.T) {
	ca, impostorCA := tlstest.NewCA(t, "test CA"), tlstest.NewCA(t, "impostor CA")
	certFile, keyFile := tlstest.Pair(t)
	impostorCA.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "impostor"})
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, c.ServerConfig())
	if _, err := dial(t, addr, clientConfig(t, ca)); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("impostor accepted: %v", err)
	}
	if _, err := dial(t, addr, &tls.Config{}); err == nil {
		t.Fatal("a private CA's certificate passed the system roots")
	}

	if cfg, err := ClientConfig(""); cfg != nil || err != nil {
		t.Fatalf("ClientConfig(\"\") = %v, %v; want the system roots (nil)", cfg, err)
	}
	if _, err := ClientConfig(filepath.Join(t.TempDir(), "missing.pem")); err == nil || !strings.Contains(err.Error(), "CA file") {
		t.Fatalf("missing CA file: %v", err)
	}
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	tlstest.WriteFile(t, notPEM, []byte("not a certificate"))
	if _, err := ClientConfig(notPEM); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("CA file without PEM: %v", err)
	}
}

func TestServerName(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := tlstest.Pair(t)
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "x", Hosts: []string{"router.service.consul", "10.0.0.7"}})
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"10.0.0.7":              "10.0.0.7",
		"router.service.consul": "router.service.consul",
		"127.0.0.1":             "router.service.consul",
		"":                      "router.service.consul",
	} {
		if got, ok := c.ServerName(host); !ok || got != want {
			t.Errorf("ServerName(%q) = %q, %v; want %q", host, got, ok, want)
		}
	}
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "x", Hosts: []string{}})
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.ServerName("127.0.0.1"); ok {
		t.Errorf("a certificate naming nothing gave %q", got)
	}
}

// TestReloadUnderLoad: handshakes racing reloads always see a whole pair
// (run with -race).
func TestReloadUnderLoad(t *testing.T) {
	ca := tlstest.NewCA(t, "test CA")
	certFile, keyFile := tlstest.Pair(t)
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "x", Serial: 1})
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, c.ServerConfig())
	ccfg := clientConfig(t, ca)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if _, err := dial(t, addr, ccfg); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range 10 {
		ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "x", Serial: int64(100 + i)})
		if err := c.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
