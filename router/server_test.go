package router

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

func writeSelfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "serai-router-test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

func TestServeTLS(t *testing.T) {
	check := goroutineCheck(t)
	t.Run("scenario", func(t *testing.T) {
		m := model(t, "a", nil)
		cert, key := writeSelfSigned(t)
		rt, err := New(Config{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		rt.SetRoutes("demo", oneGen("demo", "a", 1))
		rt.SetInstances("demo", []Instance{inst("a", addrOf(m), "a", 1)})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		addrc := make(chan net.Addr, 1)
		served := make(chan error, 1)
		go func() {
			served <- Serve(ctx, rt, nil, ServerConfig{
				Listen: "127.0.0.1:0", TLSCert: cert, TLSKey: key, Logger: testLogger(t),
				OnListening: func(a net.Addr) { addrc <- a },
			})
		}()
		var addr net.Addr
		select {
		case addr = <-addrc:
		case err := <-served:
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := hc.Post("https://"+addr.String()+"/endpoints/demo/invocations", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "a" || resp.Header.Get("X-Amzn-Invoked-Production-Variant") != "a" {
			t.Fatalf("%s %q", resp.Status, b)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("protocol %s, want HTTP/2 over TLS", resp.Proto)
		}
		tr.CloseIdleConnections()
		cancel()
		if err := <-served; err != nil {
			t.Fatal(err)
		}
	})
	check()
}

func TestServeRefusesBadTLSFiles(t *testing.T) {
	rt, _ := New(Config{})
	defer rt.Close()
	err := Serve(context.Background(), rt, nil, ServerConfig{Listen: "127.0.0.1:0", TLSCert: "/nonexistent", TLSKey: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("got %v", err)
	}
}

// TestUnsyncedRouterSaysUnavailable: before discovery has synced once (here
// Consul is unreachable from the start), an endpoint the router does not
// know may well exist, so the answer is 503, not "not found".
func TestUnsyncedRouterSaysUnavailable(t *testing.T) {
	rt, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	consul, err := consulapi.NewClient(&consulapi.Config{Address: closedAddr(t), Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, rt, NewConsulDiscovery(ConsulConfig{Client: consul}), ServerConfig{
			Listen: "127.0.0.1:0", Logger: testLogger(t), OnListening: func(a net.Addr) { addrc <- a },
		})
	}()
	addr := <-addrc
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("http://"+addr.String()+"/endpoints/demo/invocations", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("X-Amzn-ErrorType") != CodeServiceUnavailable {
		t.Errorf("got %s %s", resp.Status, resp.Header.Get("X-Amzn-ErrorType"))
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
