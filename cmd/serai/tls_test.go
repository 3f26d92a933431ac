package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker"
	"github.com/aws/aws-sdk-go-v2/service/sagemakerruntime"
	consulapi "github.com/hashicorp/consul/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
	"github.com/seraihq/serai/internal/tlsreload"
	"github.com/seraihq/serai/internal/tlsreload/tlstest"
)

// buildSerai builds the serai binary into the test's directory.
func buildSerai(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "serai")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// seraiProc is a serai process a test started; the test stops it.
type seraiProc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

func startSerai(t *testing.T, bin string, args ...string) *seraiProc {
	t.Helper()
	return startSeraiEnv(t, nil, bin, args...)
}

// startSeraiEnv is startSerai with env added to the test's environment.
func startSeraiEnv(t *testing.T, env []string, bin string, args ...string) *seraiProc {
	t.Helper()
	p := &seraiProc{cmd: exec.Command(bin, args...), logs: &syncBuffer{}, done: make(chan error, 1)}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", args[0], p.logs.String())
		}
	})
	return p
}

// running fails the test when the process has exited.
func (p *seraiProc) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("serai %s exited: %v", p.cmd.Args[1], err)
	default:
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// presented is the CommonName of the certificate a new connection to addr
// sees, verified against the CA file ("" when the handshake fails).
func presented(t *testing.T, addr, caFile string) string {
	t.Helper()
	cfg, err := tlsreload.ClientConfig(caFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return ""
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// sdkHTTPClient is the AWS SDK's default HTTP client trusting caFile.
func sdkHTTPClient(t *testing.T, caFile string) *awshttp.BuildableClient {
	t.Helper()
	cfg, err := tlsreload.ClientConfig(caFile)
	if err != nil {
		t.Fatal(err)
	}
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) { tr.TLSClientConfig = cfg })
}

// rotateAndBreak rewrites the pair with a new certificate, sends SIGHUP
// and waits for new connections to see it while the process keeps its
// PID; then writes a broken certificate, sends SIGHUP, and checks the
// failure is logged and the certificate in use stays.
func rotateAndBreak(t *testing.T, p *seraiProc, ca *tlstest.CA, certFile, keyFile, addr string) {
	t.Helper()
	pid := p.cmd.Process.Pid
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "second", Serial: 2})
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "new connections to see the rotated certificate", func() bool {
		return presented(t, addr, ca.File) == "second"
	})
	p.running(t)
	if p.cmd.Process.Pid != pid {
		t.Fatalf("PID changed from %d to %d", pid, p.cmd.Process.Pid)
	}
	waitUntil(t, 5*time.Second, "the reload to be logged", func() bool { return strings.Contains(p.logs.String(), "TLS certificate reloaded") })

	tlstest.WriteFile(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n"))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "the failed reload to be logged", func() bool {
		return strings.Contains(p.logs.String(), "TLS certificate not reloaded")
	})
	if got := presented(t, addr, ca.File); got != "second" {
		t.Fatalf("after a broken file and SIGHUP the server presents %q, want \"second\"", got)
	}
	p.running(t)
}

// TestServerTLSReload runs the built `serai server` with --tls-cert and
// --tls-key against a real Consul: the AWS SDK's SageMaker client and the
// serai CLI (--ca-cert) reach it over HTTPS, clients without the CA and
// plain HTTP do not, SIGHUP rotates the certificate in place, and a broken
// file on SIGHUP keeps the certificate in use.
func TestServerTLSReload(t *testing.T) {
	ca := tlstest.NewCA(t, "serai test CA")
	consul := testagents.StartConsulWith(t, testagents.ConsulOptions{CheckCAFile: ca.File})
	bin := buildSerai(t)
	certFile, keyFile := tlstest.Pair(t)
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "first", Serial: 1})
	addr := testagents.FreeLoopbackAddr(t)
	p := startSerai(t, bin, "server", "--listen", addr, "--consul-addr", consul.Addr,
		"--nomad-addr", "http://"+testagents.FreeLoopbackAddr(t), "--tls-cert", certFile, "--tls-key", keyFile)
	url := "https://" + addr
	waitUntil(t, 30*time.Second, "the API to answer over HTTPS", func() bool { return presented(t, addr, ca.File) == "first" })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sm := sagemaker.New(sagemaker.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: aws.AnonymousCredentials{},
		HTTPClient: sdkHTTPClient(t, ca.File),
	})
	if _, err := sm.ListEndpoints(ctx, &sagemaker.ListEndpointsInput{}); err != nil {
		t.Fatalf("ListEndpoints with the AWS SDK over HTTPS: %v", err)
	}
	// An SDK with the system's roots does not trust a private CA.
	sys := sagemaker.New(sagemaker.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: aws.AnonymousCredentials{}, RetryMaxAttempts: 1})
	if _, err := sys.ListEndpoints(ctx, &sagemaker.ListEndpointsInput{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("ListEndpoints trusting the system's roots: %v", err)
	}

	// The CLI: --ca-cert, SERAI_CA_CERT, and neither.
	cli := func(env []string, args ...string) (string, error) {
		c := exec.CommandContext(ctx, bin, append([]string{"endpoint", "list", "--addr", url}, args...)...)
		c.Env = append(os.Environ(), env...)
		out, err := c.CombinedOutput()
		return string(out), err
	}
	if out, err := cli(nil, "--ca-cert", ca.File); err != nil {
		t.Fatalf("serai endpoint list --ca-cert: %v\n%s", err, out)
	}
	if out, err := cli([]string{"SERAI_CA_CERT=" + ca.File}); err != nil {
		t.Fatalf("serai endpoint list with SERAI_CA_CERT: %v\n%s", err, out)
	}
	if out, err := cli([]string{"SERAI_CA_CERT="}); err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("serai endpoint list without the CA: %v\n%s", err, out)
	}

	// Plain HTTP to the TLS port gets no API answer.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Post("http://"+addr+"/", "application/x-amz-json-1.1", strings.NewReader("{}"))
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "HTTPS") {
			t.Fatalf("plain HTTP to the TLS port: %s %q", resp.Status, b)
		}
	}

	// Consul checks the API over HTTPS, verifying the certificate.
	waitUntil(t, 20*time.Second, "Consul's HTTPS check of the API to pass", func() bool {
		checks, err := consul.Client.Agent().Checks()
		if err != nil {
			return false
		}
		for _, ck := range checks {
			if ck.Name == "serai API" {
				return ck.Status == consulapi.HealthPassing && strings.Contains(ck.Output, "200")
			}
		}
		return false
	})

	rotateAndBreak(t, p, ca, certFile, keyFile, addr)
	if _, err := sm.ListEndpoints(ctx, &sagemaker.ListEndpointsInput{}); err != nil {
		t.Fatalf("ListEndpoints after the reloads: %v", err)
	}
}

// TestRouterTLSReload runs the built `serai router` with --tls-cert and
// --tls-key against a real Consul: the AWS SDK's SageMaker Runtime client
// invokes a model through it over HTTPS (HTTP/1.1, though the SDK would
// take HTTP/2), the router registers with meta scheme=https and a check
// Consul verifies, plain HTTP gets no answer, SIGHUP rotates the
// certificate in place, and a broken file on SIGHUP keeps the one in use.
func TestRouterTLSReload(t *testing.T) {
	ca := tlstest.NewCA(t, "serai test CA")
	consul := testagents.StartConsulWith(t, testagents.ConsulOptions{CheckCAFile: ca.File})
	bin := buildSerai(t)

	m := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Write(append([]byte("model saw "), b...))
	}))
	defer m.Close()
	routes, err := contract.EncodeRoutes(&contract.Routes{Version: contract.RoutesVersion, Endpoint: "demo",
		Generations: []contract.Generation{{Generation: 1, Weight: 1, Variants: []contract.Variant{{Name: "a", Weight: 1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := consul.Client.KV().Put(&consulapi.KVPair{Key: contract.RoutesKey("demo"), Value: routes}, nil); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(m.Listener.Addr().String())
	pn, _ := strconv.Atoi(port)
	if err := consul.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: "demo-a-1", Name: contract.ServiceName("demo"), Address: host, Port: pn,
		Tags:  contract.InstanceTags{Variant: "a", Generation: 1, Model: "m"}.Format(),
		Meta:  contract.ServiceMeta("demo", 1),
		Check: &consulapi.AgentServiceCheck{TTL: "10m", Status: consulapi.HealthPassing},
	}); err != nil {
		t.Fatal(err)
	}

	certFile, keyFile := tlstest.Pair(t)
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "first", Serial: 1})
	addr := testagents.FreeLoopbackAddr(t)
	p := startSerai(t, bin, "router", "--listen", addr, "--consul-addr", consul.Addr,
		"--tls-cert", certFile, "--tls-key", keyFile, "--scale-from-zero=false")
	url := "https://" + addr

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rtc := sagemakerruntime.New(sagemakerruntime.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(url), Credentials: aws.AnonymousCredentials{},
		HTTPClient: sdkHTTPClient(t, ca.File), RetryMaxAttempts: 1,
	})
	invoke := func() (string, error) {
		out, err := rtc.InvokeEndpoint(ctx, &sagemakerruntime.InvokeEndpointInput{
			EndpointName: aws.String("demo"), ContentType: aws.String("text/plain"), Body: []byte("hello"),
		})
		if err != nil {
			return "", err
		}
		return string(out.Body), nil
	}
	waitUntil(t, 30*time.Second, "an invocation through the TLS router", func() bool {
		body, err := invoke()
		return err == nil && body == "model saw hello"
	})

	// HTTP/1.1 over TLS even for a transport that would take HTTP/2.
	tc, _ := tlsreload.ClientConfig(ca.File)
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Post(url+"/endpoints/demo/invocations", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Fatalf("%s %s, want 200 over HTTP/1.1", resp.Proto, resp.Status)
	}

	// Plain HTTP to the TLS port gets no answer.
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Post("http://"+addr+"/endpoints/demo/invocations", "text/plain", strings.NewReader("x")); err == nil {
		resp.Body.Close()
		t.Fatalf("plain HTTP to the TLS port answered %s", resp.Status)
	}

	// Registered as https, with a check Consul runs and verifies.
	waitUntil(t, 20*time.Second, "the router's verified HTTPS check to pass", func() bool {
		entries, _, err := consul.Client.Health().Service(contract.RouterServiceName, "", true, nil)
		if err != nil || len(entries) != 1 || entries[0].Service.Meta[contract.RouterMetaScheme] != "https" {
			return false
		}
		checks, _ := consul.Client.Agent().Checks()
		for _, ck := range checks {
			if ck.ServiceName == contract.RouterServiceName {
				return ck.Status == consulapi.HealthPassing && strings.Contains(ck.Output, "200")
			}
		}
		return false
	})

	// serai invoke with --ca-cert, and without it.
	body := filepath.Join(t.TempDir(), "body")
	os.WriteFile(body, []byte("from cli"), 0o600)
	out, err := exec.CommandContext(ctx, bin, "invoke", "demo", "--router", url, "--ca-cert", ca.File, "--body", body, "--content-type", "text/plain").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "model saw from cli") {
		t.Fatalf("serai invoke --ca-cert: %v\n%s", err, out)
	}
	c := exec.CommandContext(ctx, bin, "invoke", "demo", "--router", url, "--body", body, "--content-type", "text/plain")
	c.Env = append(os.Environ(), "SERAI_CA_CERT=")
	if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "certificate") {
		t.Fatalf("serai invoke without the CA: %v\n%s", err, out)
	}

	rotateAndBreak(t, p, ca, certFile, keyFile, addr)
	if body, err := invoke(); err != nil || body != "model saw hello" {
		t.Fatalf("invoke after the reloads: %q, %v", body, err)
	}
}

// TestTLSFlagsRefusedByName: half a pair, or a pair that does not load,
// stops the command before it listens, naming the flag.
func TestTLSFlagsRefusedByName(t *testing.T) {
	ca := tlstest.NewCA(t, "serai test CA")
	certFile, keyFile := tlstest.Pair(t)
	ca.Write(t, certFile, keyFile, tlstest.Leaf{CommonName: "x"})
	other, _ := tlstest.Pair(t)
	tlstest.WriteFile(t, other, []byte("not PEM"))
	for _, cmd := range []string{"router", "server"} {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--tls-cert", certFile}, "--tls-cert needs --tls-key"},
			{[]string{"--tls-key", keyFile}, "--tls-key needs --tls-cert"},
			{[]string{"--tls-cert", other, "--tls-key", keyFile}, "--tls-cert/--tls-key: tls: certificate " + other},
			{[]string{"--tls-cert", certFile, "--tls-key", filepath.Join(t.TempDir(), "missing")}, "no such file"},
		} {
			code, _, errs := runCLI(t, append([]string{cmd, "--listen", "127.0.0.1:0"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errs, tc.want) {
				t.Errorf("serai %s %v: exit %d %q, want %d naming %q", cmd, tc.args, code, errs, exitUsage, tc.want)
			}
		}
	}
	code, _, errs := runCLI(t, "server", "--router-ca-cert", other)
	if code != exitUsage || !strings.Contains(errs, "--router-ca-cert") {
		t.Errorf("serai server --router-ca-cert (not PEM): exit %d %q", code, errs)
	}
	code, _, errs = runCLI(t, "endpoint", "list", "--ca-cert", other)
	if code != exitUsage || !strings.Contains(errs, "--ca-cert") {
		t.Errorf("serai endpoint list --ca-cert (not PEM): exit %d %q", code, errs)
	}
}
