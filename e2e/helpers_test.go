package e2e

// Helpers shared by the suites that run the control plane (serai server,
// the SDK client, load loops, waiting).

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker"
	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
)

type seraiServer struct {
	id, url string
	cmd     *exec.Cmd
	done    chan struct{}
	once    sync.Once
}

func (s *seraiServer) kill() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
	})
}

// startServer runs `serai server` as its own process, with extra flags,
// stopped (SIGINT) and waited for when the test ends. It talks to consul
// with the server's token when consul runs with ACLs.
func startServer(t *testing.T, serai, id, dir string, consul *testagents.Consul, vault *testagents.Vault, nomad *testagents.Nomad, extra ...string) *seraiServer {
	t.Helper()
	addr := testagents.FreeLoopbackAddr(t)
	logPath := filepath.Join(dir, "server-"+id+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// The suites' models are host processes (raw_exec).
	cmd := exec.Command(serai, append([]string{"server", "--listen", addr, "--id", id, "--serai-binary", serai,
		"--tick", "250ms", "--drain-period", "2s", "--log-level", "debug", "--allow-drivers", "raw_exec,exec,docker"}, extra...)...)
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR="+consul.Addr, "NOMAD_ADDR="+nomad.Addr,
		"VAULT_ADDR="+vault.Addr, "VAULT_TOKEN="+vault.Token)
	cmd.Env = withConsulToken(cmd.Env, consul.Tokens.Server)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	s := &seraiServer{id: id, url: "http://" + addr, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-s.done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-s.done
				t.Errorf("server %s did not stop within 20s of SIGINT", id)
			}
		})
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("server %s log (last 8 KB):\n%s", id, tail(b, 8<<10))
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(s.url + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server %s did not answer /ping on %s", id, addr)
	return nil
}

// withConsulToken sets CONSUL_HTTP_TOKEN in env when token is given (an
// agent with ACLs); otherwise env keeps whatever the caller has.
func withConsulToken(env []string, token string) []string {
	if token == "" {
		return env
	}
	return append(env, "CONSUL_HTTP_TOKEN="+token)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func sageMakerClient(url string, optFns ...func(*sagemaker.Options)) *sagemaker.Client {
	return sagemaker.New(sagemaker.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDSERAIE2E", "secret", ""),
	}, optFns...)
}

func describe(t *testing.T, ctx context.Context, sm *sagemaker.Client) *sagemaker.DescribeEndpointOutput {
	t.Helper()
	d, err := sm.DescribeEndpoint(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String(endpointName)})
	if err != nil {
		t.Fatalf("DescribeEndpoint: %v", err)
	}
	return d
}

// history is the endpoint's status sequence as the server recorded it,
// read from the Serai extension of DescribeEndpoint (which the SDK's
// shapes do not carry), e.g. "Updating → RollingBack → InService".
func history(t *testing.T, serverURL string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, serverURL+"/", strings.NewReader(`{"EndpointName":"`+endpointName+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "SageMaker.DescribeEndpoint")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "unknown: " + err.Error()
	}
	defer resp.Body.Close()
	var d struct {
		Serai struct {
			StatusHistory []struct{ Status string }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return "unknown: " + err.Error()
	}
	var seq []string
	for _, h := range d.Serai.StatusHistory {
		seq = append(seq, h.Status)
	}
	return strings.Join(seq, " → ")
}

func waitInService(t *testing.T, ctx context.Context, sm *sagemaker.Client) {
	t.Helper()
	w := sagemaker.NewEndpointInServiceWaiter(sm, func(o *sagemaker.EndpointInServiceWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 2*time.Second })
	if err := w.Wait(ctx, &sagemaker.DescribeEndpointInput{EndpointName: aws.String(endpointName)}, 5*time.Minute); err != nil {
		t.Fatalf("EndpointInService waiter: %v", err)
	}
}

func waitUntil(t *testing.T, ctx context.Context, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if ok() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, limit)
}

func leaderOf(t *testing.T, c *consulapi.Client) string {
	p, _, err := c.KV().Get(contract.LeaderKey, nil)
	if err != nil || p == nil || p.Session == "" {
		return ""
	}
	return string(p.Value)
}

func endpointJobs(t *testing.T, c *nomadapi.Client) []string {
	t.Helper()
	stubs, _, err := c.Jobs().PrefixList(contract.ServiceName(endpointName) + ".g")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range stubs {
		if s.Status != "dead" {
			out = append(out, s.ID)
		}
	}
	sort.Strings(out)
	return out
}

func runningAllocs(t *testing.T, c *nomadapi.Client) []string {
	t.Helper()
	var out []string
	for _, j := range endpointJobs(t, c) {
		allocs, _, err := c.Jobs().Allocations(j, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range allocs {
			if a.ClientStatus == nomadapi.AllocClientStatusRunning {
				out = append(out, a.ID)
			}
		}
	}
	sort.Strings(out)
	return out
}

// loadLoop invokes the endpoint continuously from four workers and counts
// failures, until stopped.
type loadLoop struct {
	stopc         chan struct{}
	wg            sync.WaitGroup
	total, failed atomic.Int64
	rate          atomic.Int64
	mu            sync.Mutex
	firstErrs     []string
}

func startLoad(url string) *loadLoop {
	l := &loadLoop{stopc: make(chan struct{})}
	client := &http.Client{Timeout: 30 * time.Second}
	for w := 0; w < 4; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				r := invokeOnce(client, url)
				l.total.Add(1)
				if r.err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.firstErrs) < 5 {
						l.firstErrs = append(l.firstErrs, r.err.Error())
					}
					l.mu.Unlock()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *loadLoop) stop() (failed, total int64) {
	close(l.stopc)
	l.wg.Wait()
	return l.failed.Load(), l.total.Load()
}

func (l *loadLoop) errs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.firstErrs...)
}

// startRateLoad invokes the endpoint at a fixed rate (requests per second),
// spreading requests over urls in turn (e.g. one per router), each request
// in its own goroutine so a slow answer does not lower the rate. setRate
// changes the rate while it runs.
func startRateLoad(urls []string, perSec int) *loadLoop {
	l := &loadLoop{stopc: make(chan struct{})}
	l.rate.Store(int64(perSec))
	client := &http.Client{Timeout: 30 * time.Second}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		next := time.Now()
		for i := 0; ; i++ {
			r := l.rate.Load()
			if r <= 0 {
				r = 1
			}
			next = next.Add(time.Second / time.Duration(r))
			select {
			case <-l.stopc:
				return
			case <-time.After(time.Until(next)):
			}
			url := urls[i%len(urls)]
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.record(invokeOnce(client, url).err)
			}()
		}
	}()
	return l
}

func (l *loadLoop) setRate(perSec int) { l.rate.Store(int64(perSec)) }

func (l *loadLoop) record(err error) {
	l.total.Add(1)
	if err != nil {
		l.failed.Add(1)
		l.mu.Lock()
		if len(l.firstErrs) < 5 {
			l.firstErrs = append(l.firstErrs, err.Error())
		}
		l.mu.Unlock()
	}
}

// startDaemon starts cmd with its output in logPath, waits until readyURL
// answers 200, and interrupts it (killing it after 15s) when the test ends;
// the log's tail is printed when the test failed.
func startDaemon(t *testing.T, name, logPath string, cmd *exec.Cmd, readyURL string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s did not stop within 15s of SIGINT", name)
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s log (last 8 KB):\n%s", name, tail(b, 8<<10))
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited at start:\n%s", name, tail(b, 4<<10))
		default:
		}
		if resp, err := http.Get(readyURL); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %s within 30s", name, readyURL)
}

// routerMetrics is a router's /metrics text.
func routerMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("router metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
